"""What reading a USB stick did shows on the OLED in every phase, for a few
seconds, over whatever the screen showed; a bad file is logged once per
insertion. A registered phone (mock pins, dummy OLED, in-process exchange)
with a provisioner answering tokens on 127.0.0.1 and a directory as the
stick."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import ImageChops

from appliance.exchange.server import ExchangeServer
from appliance.provisioning import usb
from appliance.provisioning.credential import (
    StoredCredential,
    load_credential,
    save_credential,
)
from appliance.provisioning.phone import PhoneProvisioning, UsbSource
from appliance.provisioning.usb import FILE_NAME, MAX_SIZE, sign_bundle
from appliance.ui.panel import Panel
from appliance.ui.screens import render
from appliance.ui.view import PanelState, Screen
from tests.conftest import make_token, wait_until
from tests.ui.test_controller import panel_phone

KEY = Ed25519PrivateKey.generate()
URI = "http://127.0.0.1:8470/device?user_code=BCDF-GHJK"


def test_the_result_shows_over_every_screen_and_goes_away():
    panel = Panel(error_display_s=3.0)
    # Unprovisioned, on the code screen.
    panel.provisioning("BCDF-GHJK", URI, "", 0.0)
    panel.usb_result("Bad signature", 20151, 1.0)
    view = panel.view()
    assert view.screen is Screen.PROVISIONING
    assert (view.usb_message, view.usb_code) == ("Bad signature", 20151)
    assert panel.next_deadline() == 4.0
    panel.tick(4.0)
    assert panel.view().usb_message == "" and panel.next_deadline() is None
    assert panel.state is PanelState.PROVISIONING
    # Registered and ringing: the call stays; the result shows on top.
    panel.registered("alice", 5.0)
    panel.incoming("client:bob", {}, 6.0)
    panel.usb_result("Provisioned as alice", None, 6.5)
    assert panel.state is PanelState.RINGING
    assert panel.view().usb_message == "Provisioned as alice"
    panel.button("accept", 7.0)
    panel.accepted(7.1)
    assert panel.state is PanelState.IN_CALL
    panel.tick(9.5)
    assert panel.view().usb_message == ""
    # Revoked: on the message screen.
    panel.disconnected(10.0)
    panel.provisioning("", "", "Phone revoked by the administrator", 10.0)
    panel.usb_result("For another phone", 31201, 11.0)
    view = panel.view()
    assert view.screen is Screen.PROVISIONING and view.usb_code == 31201
    # The box changes the picture, and only its lower half.
    plain, boxed = render(replace(view, usb_message="")), render(view)
    changed = ImageChops.difference(plain, boxed).getbbox()
    assert changed is not None and changed[1] >= 32


@pytest.fixture
async def token_server() -> AsyncIterator[str]:
    """A provisioner that hands every credential a token for bob."""

    async def token(_request: web.Request) -> web.Response:
        return web.json_response(
            {"token": make_token("bob"), "identity": "bob", "ttl": 3600}
        )

    app = web.Application()
    app.router.add_post("/api/token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_a_registered_phone_shows_each_stick_result_and_logs_a_file_once(
    exchange: ExchangeServer,
    token_server: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(usb, "POLL_S", 0.05)
    looks: list[Path] = []
    real_stick_file = usb.stick_file

    def counted(directory: Path) -> tuple[int, int] | None:
        looks.append(directory)
        return real_stick_file(directory)

    monkeypatch.setattr(usb, "stick_file", counted)
    caplog.set_level(logging.INFO, "appliance.provisioning.phone")
    (tmp_path / "usb.pub").write_bytes(
        KEY.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
    )
    (tmp_path / "machine-id").write_text("phone-0001\n")
    stick = tmp_path / "stick"
    stick.mkdir()
    credential_file = tmp_path / "credential"
    save_credential(
        credential_file,
        StoredCredential("PH" + "0" * 32 + ".old", "alice", token_server),
    )
    before = credential_file.read_bytes()

    def file_for(device: str) -> bytes:
        return sign_bundle(
            KEY,
            provisioner_url=token_server,
            identity="bob",
            credential="PH" + "1" * 32 + ".new",
            expires_at=4e9,
            device_id=device,
        )

    async with panel_phone(exchange, "alice", Panel(error_display_s=2.0)) as phone:
        assert phone.panel.state is PanelState.IDLE
        tokens: list[str] = []

        async def apply(token: str) -> None:
            tokens.append(token)

        client = PhoneProvisioning(
            token_server,
            credential_file,
            stick=UsbSource(stick, tmp_path / "usb.pub", (tmp_path / "machine-id",)),
            apply_token=apply,
            show=lambda _view: None,
            status=lambda _line: None,
            usb_result=phone.controller.show_usb_result,
        )
        task = asyncio.get_running_loop().create_task(client.run())
        try:
            await wait_until(lambda: tokens, 10.0)

            # A file too large: refused on screen with its code, over idle.
            (stick / FILE_NAME).write_bytes(b" " * (MAX_SIZE + 1))
            await wait_until(lambda: phone.panel.view().usb_message, 10.0)
            view = phone.panel.view()
            assert (view.screen, view.usb_message, view.usb_code) == (
                Screen.IDLE,
                "Bad USB file",
                31400,
            )
            await phone.screen_shows_view()
            # Many more looks at the stick: still one log line for the file.
            seen = len(looks)
            await wait_until(lambda: len(looks) >= seen + 5, 10.0)
            refusals = [m for m in caplog.messages if "refused" in m]
            assert len(refusals) == 1 and "error 31400" in refusals[0]
            # The box goes after the display time; the idle screen stays.
            await wait_until(lambda: not phone.panel.view().usb_message, 10.0)
            assert phone.panel.state is PanelState.IDLE
            await phone.screen_shows_view()

            # Another file (new size and time): for another phone.
            (stick / FILE_NAME).unlink()
            (stick / FILE_NAME).write_bytes(file_for("phone-0002"))
            await wait_until(
                lambda: phone.panel.view().usb_message == "For another phone", 10.0
            )
            assert phone.panel.view().usb_code == 31201
            assert credential_file.read_bytes() == before

            # The right file: applied, and said so on the screen.
            (stick / FILE_NAME).unlink()
            (stick / FILE_NAME).write_bytes(file_for("phone-0001"))
            await wait_until(
                lambda: phone.panel.view().usb_message == "Provisioned as bob", 10.0
            )
            assert phone.panel.view().usb_code is None
            stored = load_credential(credential_file)
            assert stored is not None and stored.identity == "bob"
            assert not task.done()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
