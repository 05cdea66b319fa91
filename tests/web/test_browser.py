"""The web page of a real phone service, in Debian's headless chromium.

The service runs as a process with a finger on its mock pins
(``appliance_dev.finger``) and its page on an ephemeral HTTPS port; the
browser is driven over the DevTools protocol (``tests/provisioning/cdp.py``).
With ``APPLIANCE_WEB_SHOTS=DIR`` the pages are also saved as PNG in DIR
(docs/screens holds the ones docs/web.md shows).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from appliance.exchange.server import ExchangeServer
from appliance_dev.exchange_process import stop_process
from tests.conftest import local_device, make_token, scaled, wait_until
from tests.provisioning.cdp import Page, chromium

HW = Path(__file__).resolve().parents[2] / "hw"
PASSWORD = "blue-desk-42"
NEW_PASSWORD = "green-desk-43"
# The page's certificate is self-signed: made by the phone on first start.
FLAGS = ("--ignore-certificate-errors",)


class Service:
    """The service process and what it printed."""

    def __init__(self, process: asyncio.subprocess.Process, tmp: Path) -> None:
        self.process = process
        self.tmp = tmp
        self.lines: list[str] = []

    def saw(self, needle: str) -> bool:
        return any(needle in line for line in self.lines)

    def count(self, needle: str) -> int:
        return sum(needle in line for line in self.lines)

    def say(self, line: str) -> None:
        """A line for the finger on the panel (``tap accept``)."""
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")

    def port(self) -> int:
        for line in self.lines:
            found = re.search(r"web page on port (\d+)", line)
            if found:
                return int(found.group(1))
        return 0

    def saved(self) -> dict[str, object]:
        path = self.tmp / "panel.json"
        try:
            loaded = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return loaded if isinstance(loaded, dict) else {}


@pytest.fixture
async def service(tmp_path: Path, exchange: ExchangeServer) -> AsyncIterator[Service]:
    (tmp_path / "token").write_text(make_token("desk-1"))
    (tmp_path / "token").chmod(0o600)
    config = tmp_path / "appliance.toml"
    config.write_text(
        f"""
[phone]
token_file = "{tmp_path / "token"}"

[device]
signaling_url = "{exchange.url}"
local_addresses = ["127.0.0.1"]
input_device = "null"
output_device = "null"

[ui]
enabled = true
pinmap = "{HW / "pinmap-reference.toml"}"
pin_factory = "mock"
display_driver = "dummy"
state_file = "{tmp_path / "panel.json"}"
call_log_file = "{tmp_path / "calls.db"}"
clock_sync_file = ""
country = "GB"

[ui.directory]
"7" = "reception"

[web]
address = "127.0.0.1"
port = 0
state_dir = "{tmp_path / "web"}"
"""
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "appliance_dev.finger", "--config", str(config)),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    service = Service(process, tmp_path)

    async def read(stream: asyncio.StreamReader | None) -> None:
        assert stream is not None
        async for line in stream:
            service.lines.append(line.decode(errors="replace").strip())

    readers = [
        asyncio.get_running_loop().create_task(read(s))
        for s in (process.stdout, process.stderr)
    ]
    try:
        yield service
    finally:
        await stop_process(process, grace_s=scaled(10))
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


async def shot(page: Page, tmp: Path, name: str, *, whole: bool = False) -> None:
    """Save the page as ``web-NAME.png`` (and in $APPLIANCE_WEB_SHOTS); with
    ``whole``, all of a page longer than the window."""
    options: dict[str, object] = {}
    if whole:
        size = (await page.send("Page.getLayoutMetrics"))["cssContentSize"]
        clip = {"x": 0, "y": 0, "scale": 1}
        options = {"captureBeyondViewport": True, "clip": clip}
        clip.update(width=size["width"], height=size["height"])
    result = await page.send("Page.captureScreenshot", format="png", **options)
    data = base64.b64decode(result["data"])
    assert data.startswith(b"\x89PNG")
    targets = [tmp]
    if os.environ.get("APPLIANCE_WEB_SHOTS"):
        targets.append(Path(os.environ["APPLIANCE_WEB_SHOTS"]))
    for target in targets:
        (target / f"web-{name}.png").write_bytes(data)


async def submit(page: Page, button: str, then: str) -> None:
    await page.click_and_load(button, then)
    await page.wait_for("document.readyState === 'complete'")


async def test_the_owner_sets_up_logs_in_and_changes_the_phone(
    service: Service, exchange: ExchangeServer, tmp_path: Path
) -> None:
    await wait_until(lambda: service.saw("screen: idle") and service.port(), 30.0)
    base = f"https://127.0.0.1:{service.port()}"
    async with chromium(*FLAGS) as page:
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            width=900,
            height=960,
            deviceScaleFactor=1,
            mobile=False,
        )
        # First visit: no password yet, so the page asks for one.
        await page.goto(f"{base}/")
        await page.wait_for("location.pathname === '/setup'")
        await shot(page, tmp_path, "setup")
        await page.fill("#password", PASSWORD)
        await page.fill("#repeat", PASSWORD)
        await submit(page, "#submit", "location.pathname === '/status'")
        assert await page.text("#identity") == "desk-1"
        assert await page.text("#registration") == "ready"
        assert await page.text("#network-address") == "127.0.0.1"
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d", await page.text("#token-expires"))
        stored = (tmp_path / "web" / "web-password").read_text()
        assert stored.startswith("scrypt$") and PASSWORD not in stored
        assert await page.text("#call") == "none yet"

        # The ringer volume, applied on the phone and kept in ui.state_file.
        await page.goto(f"{base}/settings")
        await page.fill("#level-ringtone", "2")
        await submit(page, "#save-volume", "!!document.querySelector('#notice')")
        await wait_until(lambda: service.saw("ringtone volume level 2"), 10.0)
        await wait_until(
            lambda: service.saved().get("volume") == {"speaker": 6, "ringtone": 2},
            10.0,
        )
        assert (
            await page.evaluate("document.querySelector('#level-ringtone').value")
            == "2"
        )

        assert "reception" in await page.text("#directory")
        assert await page.text("#country") == "GB"
        assert service.saved().get("directory") is None  # the configuration's

        # The directory: an entry added, a bad one refused, one removed; the
        # panel dials from it at once and it is kept in ui.state_file.
        await page.fill("#entry-code", "42")
        await page.fill("#entry-name", "carol")
        await submit(page, "#save-entry", "!!document.querySelector('#notice')")
        await wait_until(
            lambda: (
                service.saved().get("directory") == {"7": "reception", "42": "carol"}
            ),
            10.0,
        )
        await page.fill("#entry-code", "4#")
        await page.fill("#entry-name", "dave")
        await submit(page, "#save-entry", "!!document.querySelector('#notice')")
        assert (await page.text("#notice")).startswith("Not saved: code must be")
        await submit(page, "#remove-7", "!!document.querySelector('#notice')")
        await wait_until(
            lambda: service.saved().get("directory") == {"42": "carol"}, 10.0
        )
        directory = await page.text("#directory")
        assert "carol" in directory and "reception" not in directory
        # Back to [ui.directory], once confirmed: dropped from ui.state_file.
        await submit(page, "#revert-directory", "location.pathname.endsWith('/revert')")
        assert "reception" in await page.text("#configured")
        await shot(page, tmp_path, "revert")
        await submit(page, "#confirm-revert", "!!document.querySelector('#notice')")
        await wait_until(lambda: "directory" not in service.saved(), 10.0)
        directory = await page.text("#directory")
        assert "reception" in directory and "carol" not in directory

        # The country of the tones: the panel plays them at once; kept.
        await page.fill("#country-choice", "JP")
        await submit(
            page,
            "#save-country",
            "document.querySelector('#country')?.innerText == 'JP'",
        )
        await wait_until(lambda: service.saw("tones of JP"), 10.0)
        await wait_until(lambda: service.saved().get("country") == "JP", 10.0)

        # Each role's devices play a test sound.
        await submit(page, "#test-ringtone", "!!document.querySelector('#notice')")
        assert await page.text("#notice") == "The test sound played."

        # A call the phone missed, read in the call log; then one that
        # connects (Accept on the panel), whose figures the status shows.
        carol = local_device(exchange.url, input_device="tone:440")
        try:
            await carol.setup(make_token("carol"))
            call = await carol.connect({"To": "client:desk-1"})
            await wait_until(lambda: service.saw("screen: ringing"), 10.0)
            await call.disconnect()
            await wait_until(lambda: service.saw("call log: missed client:carol"), 10)

            rings = service.count("screen: ringing")
            call = await carol.connect({"To": "client:desk-1"})
            await wait_until(lambda: service.count("screen: ringing") > rings, 10.0)
            service.say("tap accept")
            await wait_until(lambda: service.saw("screen: in_call"), 10.0)
            # The phone's first stats sample of carol's media, kept for the log.
            await wait_until(lambda: service.saw("media measured: MOS"), 15.0)
            await call.disconnect()
            await wait_until(
                lambda: service.saw("call log: incoming client:carol"), 10.0
            )
        finally:
            await carol.destroy()
        await page.goto(f"{base}/calls")
        calls = await page.text("#calls")
        assert "missed" in calls and "client:carol" in calls
        await shot(page, tmp_path, "calls")

        await page.goto(f"{base}/status")
        assert (await page.text("#call")).startswith("incoming client:carol at ")
        assert (await page.text("#codec")).lower() in {"opus", "pcmu"}
        assert 1.0 <= float(await page.text("#mos")) <= 5.0
        jitter = await page.text("#jitter")
        assert re.fullmatch(r"\d+\.\d ms", jitter), jitter
        assert 0.0 <= float(jitter.split()[0]) < 1000.0
        loss = await page.text("#packet-loss")
        assert re.fullmatch(r"\d+\.\d\d %", loss), loss
        assert 0.0 <= float(loss.split()[0]) <= 100.0
        await shot(page, tmp_path, "status", whole=True)

        # Do-not-disturb from the page: the phone's switch, saved.
        await page.goto(f"{base}/settings")
        assert await page.text("#dnd-state") == "off"
        await submit(page, "#toggle-dnd", "!!document.querySelector('#notice')")
        assert await page.text("#dnd-state") == "on"
        await wait_until(lambda: service.saw("do-not-disturb on"), 10.0)
        await wait_until(lambda: service.saved().get("dnd") is True, 10.0)
        await shot(page, tmp_path, "settings", whole=True)

        await page.goto(f"{base}/logs")
        assert "do-not-disturb on" in await page.text("#logs")
        await shot(page, tmp_path, "logs")

        # A forged form from a plain HTTP client: refused, even with the cookie.
        cookies = await page.send("Network.getCookies", urls=[base + "/"])
        (cookie,) = cookies["cookies"]
        assert cookie["name"] == "__Host-phone"
        assert cookie["secure"] and cookie["httpOnly"]
        assert cookie["sameSite"] == "Strict"
        async with aiohttp.ClientSession() as http:
            forged = {"ringtone": "8", "csrf": "forged"}
            async with http.post(
                f"{base}/settings/volume",
                data=forged,
                headers={"Cookie": f"__Host-phone={cookie['value']}"},
                ssl=False,
                allow_redirects=False,
            ) as answer:
                assert answer.status == 403
            async with http.post(
                f"{base}/settings/volume",
                data=forged,
                ssl=False,
                allow_redirects=False,
            ) as answer:
                assert answer.status == 303
                assert answer.headers["Location"] == "/login"
        await page.goto(f"{base}/settings")
        assert (
            await page.evaluate("document.querySelector('#level-ringtone').value")
            == "2"
        )
        assert service.saved().get("volume") == {"speaker": 6, "ringtone": 2}

        # Wrong passwords: refused, then rate-limited; the right one after.
        await submit(page, "#logout", "location.pathname === '/login'")
        for _ in range(2):
            await page.fill("#password", "not-it-at-all")
            await submit(page, "#submit", "!!document.querySelector('#error')")
            assert await page.text("#error") == "Wrong password."
        await page.fill("#password", "not-it-either")
        await submit(page, "#submit", "!!document.querySelector('#error')")
        assert "Too many wrong passwords" in await page.text("#error")
        await shot(page, tmp_path, "login")
        await page.fill("#password", PASSWORD)
        await submit(page, "#submit", "!!document.querySelector('#error')")
        assert "Too many wrong passwords" in await page.text("#error")

        async def right_password_later() -> None:
            while await page.evaluate("location.pathname") != "/status":
                await asyncio.sleep(0.5)
                await page.goto(f"{base}/login")
                await page.fill("#password", PASSWORD)
                await submit(page, "#submit", "document.readyState === 'complete'")

        await asyncio.wait_for(right_password_later(), scaled(20))

        # A new password: the current one is needed.
        await page.goto(f"{base}/password")
        await page.fill("#current", "not-it-at-all-2")
        await page.fill("#password", NEW_PASSWORD)
        await page.fill("#repeat", NEW_PASSWORD)
        await submit(page, "#submit", "!!document.querySelector('#error')")
        assert await page.text("#error") == "Wrong password."
        await page.fill("#current", PASSWORD)
        await page.fill("#password", NEW_PASSWORD)
        await page.fill("#repeat", NEW_PASSWORD)
        await submit(page, "#submit", "!!document.querySelector('#notice')")
        assert "Changed" in await page.text("#notice")
        await shot(page, tmp_path, "password")
        assert (tmp_path / "web" / "web-password").read_text() != stored
        await wait_until(lambda: service.saw("the password was changed"), 10.0)

        # Restart: the service stops with the status systemd restarts on.
        await page.goto(f"{base}/status")
        await submit(page, "#restart", "!!document.querySelector('#message')")
        assert await asyncio.wait_for(service.process.wait(), scaled(20)) == 75
