"""A phone with neither a token nor a provisioner (the image's defaults) stays
up and waits: a real ``appliance run`` (mock pins, dummy OLED) registers
with the local exchange once the token file appears; a USB stick that names
its provisioner enrolls it instead."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.exchange.server import ExchangeServer
from appliance.provisioning import usb
from appliance.provisioning.credential import load_credential
from appliance.provisioning.phone import UsbSource
from appliance.provisioning.usb import FILE_NAME, sign_bundle
from appliance.provisioning.waiting import saved_provisioner, wait_for_token_or_stick
from tests.conftest import ACCOUNT_SID, make_token, scaled, wait_until
from tests.provisioning.test_reset_service import Phone, phone  # noqa: F401
from tests.test_service import HW

pytestmark = pytest.mark.slow


def fresh_config(tmp_path: Path, exchange_url: str) -> Path:
    config = tmp_path / "appliance.toml"
    config.write_text(
        f"""
[phone]
token_file = "{tmp_path / "token"}"
credential_file = "{tmp_path / "phone" / "credential"}"

[device]
signaling_url = "{exchange_url}"
local_addresses = ["127.0.0.1"]
input_device = "null"
output_device = "null"

[ui]
enabled = true
pinmap = "{HW / "pinmap-reference.toml"}"
pin_factory = "mock"
display_driver = "dummy"
state_file = "{tmp_path / "panel.json"}"
"""
    )
    return config


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    temporary.rename(path)


async def test_a_fresh_phone_waits_then_registers_when_the_token_file_appears(
    exchange: ExchangeServer,
    phone: Callable[[Path], Awaitable[Phone]],  # noqa: F811  # the fixture
    tmp_path: Path,
):
    svc = await phone(fresh_config(tmp_path, exchange.url))
    await wait_until(lambda: svc.saw("READY=1"), 30.0)
    await wait_until(
        lambda: svc.saw("STATUS=not registered: waiting for a token or a USB stick"),
        5.0,
    )
    await wait_until(lambda: "screen: provisioning" in svc.screens, 10.0)
    assert svc.process.returncode is None  # up, not restart-looping

    write_atomically(tmp_path / "token", make_token("desk-1"))
    await wait_until(lambda: svc.saw("STATUS=registered as desk-1"), 20.0)
    await wait_until(lambda: svc.screens[-1] == "screen: idle", 10.0)
    assert exchange.core.registered_sessions(ACCOUNT_SID, "desk-1")
    assert svc.process.returncode is None


KEY = Ed25519PrivateKey.generate()


async def test_a_stick_naming_its_provisioner_enrolls_a_fresh_phone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(usb, "POLL_S", 0.05)
    (tmp_path / "usb.pub").write_bytes(
        KEY.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
    )
    (tmp_path / "machine-id").write_text("phone-0001\n")
    stick = tmp_path / "stick"
    stick.mkdir()
    credential_file = tmp_path / "phone" / "credential"
    results: list[tuple[str, int | None]] = []

    def signed(device: str) -> bytes:
        return sign_bundle(
            KEY,
            provisioner_url="https://phones.example.com/",
            identity="bob",
            credential="PH" + "1" * 32 + ".new",
            expires_at=4e9,
            device_id=device,
        )

    (stick / FILE_NAME).write_bytes(signed("phone-0002"))
    waiting = asyncio.get_running_loop().create_task(
        wait_for_token_or_stick(
            lambda: False,
            UsbSource(stick, tmp_path / "usb.pub", (tmp_path / "machine-id",)),
            credential_file,
            usb_result=lambda message, code: results.append((message, code)),
        )
    )
    try:
        await wait_until(lambda: results, 10.0)
        assert results == [("For another phone", 31201)]
        assert not credential_file.exists() and not waiting.done()
        (stick / FILE_NAME).unlink()
        (stick / FILE_NAME).write_bytes(signed("phone-0001"))
        url = await asyncio.wait_for(waiting, scaled(10))
    finally:
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
    assert url == "https://phones.example.com"
    assert results[-1] == ("Provisioned as bob", None)
    stored = load_credential(credential_file)
    assert stored is not None and stored.identity == "bob"
    # The next start finds its provisioner in the saved credential.
    assert saved_provisioner(credential_file) == url
