"""The official Twilio Voice JS SDK, unmodified, in headless chromium, calling
one of our phones through our exchange.

The SDK only speaks ``wss://<chunderw>/signal``, so a TLS relay with a test
certificate sits in front of the exchange (chromium started with
``--ignore-certificate-errors``). The page hands the SDK a subclass of
RTCPeerConnection (the SDK's ``RTCPeerConnection`` option) that keeps only
127.0.0.1 candidates in the SDP it sends, so no test packet leaves loopback,
and that lets the test read the browser's own statistics.

The SDK is installed once with npm into the virtualenv (a pinned version).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from appliance.exchange.config import ExchangeConfig
from appliance.exchange.server import ExchangeServer
from appliance.phone.connection import Connection
from tests.conftest import make_token, new_keyring, scaled
from tests.phone.test_calls_inprocess import PhoneFactory, phones  # noqa: F401
from tests.provisioning.cdp import Page, chromium
from tests.provisioning.test_tls import make_ca_and_server

pytestmark = pytest.mark.slow

SDK_VERSION = "2.18.5"
SDK_DIR = Path(__file__).resolve().parents[2] / ".venv" / "voice-sdk" / SDK_VERSION
SDK_FILE = SDK_DIR / "node_modules/@twilio/voice-sdk/dist/twilio.min.js"

WEBRTC_FLAGS = (
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--ignore-certificate-errors",
    "--autoplay-policy=no-user-gesture-required",
)

PAGE = """<!doctype html><meta charset="utf-8"><title>sdk</title>
<script src="/twilio.min.js"></script>
<script>
window.pcs = [];
window.seen = [];
function onlyLoopback(sdp) {
  return sdp.split("\\r\\n").filter(
    l => !l.startsWith("a=candidate:") || l.split(" ")[4] === "127.0.0.1"
  ).join("\\r\\n");
}
class LoopbackPeerConnection extends RTCPeerConnection {
  constructor(...args) { super(...args); window.pcs.push(this); }
  get localDescription() {
    const d = super.localDescription;
    return d && { type: d.type, sdp: onlyLoopback(d.sdp) };
  }
}
async function codecs() {
  const report = await window.pcs[window.pcs.length - 1].getStats();
  const byId = {}; const out = {};
  report.forEach(s => { byId[s.id] = s; });
  report.forEach(s => {
    if ((s.type === "outbound-rtp" || s.type === "inbound-rtp") && s.kind === "audio"
        && s.codecId && byId[s.codecId]) {
      out[s.type] = byId[s.codecId].mimeType.split("/")[1];
      out[s.type + "-packets"] = s.packetsSent ?? s.packetsReceived;
    }
  });
  return out;
}
async function received() {
  const report = await window.pcs[window.pcs.length - 1].getStats();
  const out = {};
  report.forEach(s => {
    if (s.type === "inbound-rtp" && s.kind === "audio") {
      out.energy = s.totalAudioEnergy; out.duration = s.totalSamplesDuration;
      out.samples = s.totalSamplesReceived; out.concealed = s.concealedSamples;
    }
  });
  return out;
}
function newDevice(token, chunderw, extra) {
  window.device = new Twilio.Device(token, {
    chunderw, logLevel: "warn", publishEvents: false,
    RTCPeerConnection: LoopbackPeerConnection, ...(extra || {}),
  });
  return window.device;
}
function watch(c) {
  window.sdkCall = c;
  c.on("accept", () => window.seen.push("accept"));
  c.on("disconnect", () => window.seen.push("disconnect"));
  c.on("error", e => window.seen.push("error " + e.code + " " + e.message));
}
async function call(token, chunderw, to) {
  watch(await newDevice(token, chunderw).connect({ params: { To: to } }));
  return true;
}
async function answerAll(token, chunderw, extra) {
  const device = newDevice(token, chunderw, extra);
  device.on("incoming", c => { watch(c); c.accept(); });
  device.on("registered", () => window.seen.push("registered"));
  await device.register();
  return true;
}
</script>
"""


@pytest.fixture
async def exchange() -> AsyncIterator[ExchangeServer]:
    """The exchange, ringing long enough for a browser to set up its answer."""
    config = ExchangeConfig(
        keyring=new_keyring(), host="127.0.0.1", port=0, ring_timeout=scaled(20)
    )
    async with ExchangeServer(config) as server:
        yield server


def install_sdk() -> Path:
    """The SDK's browser bundle, installed with npm on first use."""
    if not SDK_FILE.exists():
        npm = shutil.which("npm")
        assert npm, "npm missing: the test needs Node.js npm (image/packages-build.txt)"
        SDK_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                npm,
                "install",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(SDK_DIR),
                f"@twilio/voice-sdk@{SDK_VERSION}",
            ],
            check=True,
            timeout=300,
            stdout=subprocess.DEVNULL,
        )
    return SDK_FILE


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def tls_relay(target_port: int, directory: Path) -> AsyncIterator[int]:
    """A TLS front for the exchange on 127.0.0.1; yields its port."""
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    make_ca_and_server(directory)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    pipes: set[asyncio.Task[Any]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        for task in (_pipe(reader, up_writer), _pipe(up_reader, writer)):
            pipes.add(asyncio.ensure_future(task))

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in pipes:
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        await server.wait_closed()


@contextlib.asynccontextmanager
async def sdk_page_server(sdk: Path) -> AsyncIterator[str]:
    app = web.Application()

    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def script(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(sdk)

    app.router.add_get("/", page)
    app.router.add_get("/twilio.min.js", script)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def browser_codecs(page: Page, packets: int) -> dict[str, Any]:
    """The browser's audio codecs once ``packets`` went each way (getStats)."""
    async with asyncio.timeout(scaled(20)):
        while True:
            result = await page.send(
                "Runtime.evaluate",
                expression="codecs()",
                awaitPromise=True,
                returnByValue=True,
            )
            found: dict[str, Any] = result["result"].get("value") or {}
            if (
                found.get("inbound-rtp-packets", 0) >= packets
                and found.get("outbound-rtp-packets", 0) >= packets
            ):
                return found
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def browser_call(
    exchange: ExchangeServer,
    tmp_path: Path,
    to: str | None,
    options: dict[str, Any] | None = None,
) -> AsyncIterator[Page]:
    """Chromium with the SDK as "alice" calling ``to`` (None: answering calls),
    with extra Device ``options`` when answering."""
    sdk = install_sdk()
    port = int(exchange.url.rsplit(":", 1)[1].split("/")[0])
    async with (
        tls_relay(port, tmp_path) as tls_port,
        sdk_page_server(sdk) as url,
        chromium(*WEBRTC_FLAGS) as page,
    ):
        await page.goto(url)
        await page.wait_for("typeof Twilio !== 'undefined'")
        args = f"{json.dumps(make_token('alice'))}, '127.0.0.1:{tls_port}'"
        extra = json.dumps(options or {})
        start = (
            f"call({args}, {json.dumps(to)})" if to else f"answerAll({args}, {extra})"
        )
        await page.send("Runtime.evaluate", expression=start, awaitPromise=True)
        yield page


async def test_sdk_digits_arrive_as_rfc4733_and_one_codec_runs_both_ways(
    exchange: ExchangeServer,
    phones: PhoneFactory,  # noqa: F811
    tmp_path: Path,
):
    bob = await phones("bob", tone=1100)
    async with browser_call(exchange, tmp_path, "bob") as page:
        incoming: Connection = await bob.next_incoming(within=20)
        far = bob.watch(incoming)
        await incoming.accept()
        await page.wait_for("window.seen.includes('accept')", 20)
        # Audio both ways, then the browser's own view of the codecs.
        browser = await browser_codecs(page, packets=25)
        # The SDK's default preferences [pcmu, opus] offer PCMU first; our
        # phone prefers Opus but follows the offer: both directions run PCMU,
        # as each side reports.
        assert browser["outbound-rtp"] == browser["inbound-rtp"] == "PCMU"
        assert incoming.codec == incoming.receive_codec == "PCMU"

        # The SDK sends with RTCDTMFSender since our answer has telephone-event.
        await page.evaluate("window.sdkCall.sendDigits('1#50'), true")
        await far.wait("dtmf", count=4, within=10)
        assert [a[0] for a in far.all("dtmf")] == list("1#50")
        media = incoming._media
        assert media is not None and media.events.packets_received >= 3 * 10 + 1
        assert page is not None and "error" not in " ".join(
            await page.evaluate("window.seen")
        )
        await incoming.disconnect()
        await page.wait_for("window.seen.includes('disconnect')", 10)


async def test_our_offer_to_the_sdk_runs_one_codec_both_ways(
    exchange: ExchangeServer,
    phones: PhoneFactory,  # noqa: F811
    tmp_path: Path,
):
    # Chromium answers and sends its first choice, PCMU (the SDK's order).
    # Whatever our phone's order, it must send that one too (aiortc used to
    # send its own first choice).
    for order in (["opus", "pcmu"], ["pcmu", "opus"]):
        expected = "PCMU"
        bob = await phones("bob", tone=1100, codec_preferences=order)
        async with browser_call(exchange, tmp_path / order[0], None) as page:
            await page.wait_for("window.seen.includes('registered')", 20)
            conn, events = await bob.call({"To": "alice"})
            await events.wait("accept", within=20)
            browser = await browser_codecs(page, packets=25)
            assert browser["outbound-rtp"] == browser["inbound-rtp"] == expected
            assert conn.codec == conn.receive_codec == expected
            await bob.device.destroy()
            assert conn.status() == "closed"


async def test_the_sdk_decodes_our_mono_opus_and_we_decode_its(
    exchange: ExchangeServer,
    phones: PhoneFactory,  # noqa: F811
    tmp_path: Path,
):
    # With Opus first in the SDK's preferences both directions run Opus: our
    # own encoder (mono, FEC, appliance.media.sending) to chromium's decoder.
    bob = await phones("bob", tone=1100)
    options = {"codecPreferences": ["opus", "pcmu"]}
    async with browser_call(exchange, tmp_path, None, options) as page:
        await page.wait_for("window.seen.includes('registered')", 20)
        conn, events = await bob.call({"To": "alice"})
        await events.wait("accept", within=20)
        browser = await browser_codecs(page, packets=100)
        assert browser["outbound-rtp"] == browser["inbound-rtp"] == "opus"
        assert conn.codec == conn.receive_codec == "opus"
        media = conn._media
        assert media is not None and media.send_bitrate == 32000
        result = await page.send(
            "Runtime.evaluate",
            expression="received()",
            awaitPromise=True,
            returnByValue=True,
        )
        heard = result["result"]["value"]
        # The 1100 Hz tone at -15 dBFS has a mean power of about 0.03; the
        # browser's concealment (silence, fading) would bring it far lower.
        assert heard["duration"] > 0
        assert heard["energy"] / heard["duration"] > 0.01
        await bob.device.destroy()
        assert conn.status() == "closed"
