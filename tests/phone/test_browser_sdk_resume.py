"""The official Twilio Voice JS SDK rides out a signaling cut through our exchange.

The SDK in headless chromium (as in ``test_browser_sdk.py``) calls one of our
phones with ``maxCallSignalingTimeoutMs`` set, so its ``listen`` asks for
``reconnectTimeout`` and our exchange hands it a reconnect token. Its
signaling then goes through a cuttable TCP proxy (``test_signaling_resume.py``)
behind the TLS relay: cutting it drops only the browser's WebSocket. The SDK
must go ``reconnecting`` (53001), send its reconnect invite once the proxy is
back, and be ``reconnected`` by our exchange's answer, while our phone sees
nothing of it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from appliance.exchange.server import ExchangeServer
from appliance.phone.connection import Connection
from tests.conftest import make_token
from tests.phone.test_browser_sdk import (  # noqa: F401 - the fixture
    WEBRTC_FLAGS,
    browser_codecs,
    exchange,
    install_sdk,
    sdk_page_server,
    tls_relay,
)
from tests.phone.test_calls_inprocess import PhoneFactory, phones  # noqa: F401
from tests.phone.test_signaling_resume import SignalingProxy
from tests.provisioning.cdp import Page, chromium

pytestmark = pytest.mark.slow

CALL = """(async () => {
  window.device = new Twilio.Device(%s, {
    chunderw: %s, logLevel: "warn", publishEvents: false,
    RTCPeerConnection: LoopbackPeerConnection, maxCallSignalingTimeoutMs: 30000,
  });
  const c = await window.device.connect({ params: { To: "bob" } });
  watch(c);
  c.on("reconnecting", e => window.seen.push("reconnecting " + e.code));
  c.on("reconnected", () => window.seen.push("reconnected"));
  return true;
})()"""


@contextlib.asynccontextmanager
async def sdk_through(proxy: SignalingProxy, tmp_path: Path) -> AsyncIterator[Page]:
    sdk = install_sdk()
    async with (
        tls_relay(proxy.port, tmp_path) as tls_port,
        sdk_page_server(sdk) as url,
        chromium(*WEBRTC_FLAGS) as page,
    ):
        await page.goto(url)
        await page.wait_for("typeof Twilio !== 'undefined'")
        chunderw = json.dumps(f"127.0.0.1:{tls_port}")
        script = CALL % (json.dumps(make_token("alice")), chunderw)
        await page.send("Runtime.evaluate", expression=script, awaitPromise=True)
        yield page


async def test_sdk_call_is_resumed_by_the_exchange_after_a_signaling_cut(
    exchange: ExchangeServer,  # noqa: F811
    phones: PhoneFactory,  # noqa: F811
    tmp_path: Path,
):
    bob = await phones("bob", tone=1100)
    proxy = SignalingProxy(exchange.port)
    await proxy.start()
    try:
        async with sdk_through(proxy, tmp_path) as page:
            incoming: Connection = await bob.next_incoming(within=20)
            far = bob.watch(incoming)
            await incoming.accept()
            await page.wait_for("window.seen.includes('accept')", 20)
            before = (await browser_codecs(page, packets=25))["inbound-rtp-packets"]

            await proxy.cut()
            await page.wait_for("window.seen.includes('reconnecting 53001')", 20)
            # Signaling is down, media is not: the browser keeps receiving.
            await browser_codecs(page, packets=before + 25)
            await proxy.start()
            await page.wait_for("window.seen.includes('reconnected')", 30)
            assert await page.evaluate("window.sdkCall.status()") == "open"
            assert incoming.status() == "open"
            assert [n for n in far.names() if n != "accept"] == []

            # The resumed signaling carries the hangup both ways.
            await incoming.disconnect()
            await page.wait_for("window.seen.includes('disconnect')", 10)
            seen = " ".join(await page.evaluate("window.seen"))
            assert "error" not in seen, seen
    finally:
        await proxy.close()
