"""Two desk phones end to end (issue 4, item 6): keypad to keypad over a real call.

Phone A (alice) dials B's directory code on its keypad; B's ringer LED follows
the GB double-ring cadence and its status LED blinks fast (pin histories);
B's Accept button answers; A's keypad digits reach B as ``dtmf`` events; A's
Hangup ends the call on both. Screens are checked against the renderer at
every step. Real exchange (in-process), real aiortc media on 127.0.0.1,
gpiozero MockFactory pins, luma dummy displays.
"""

from __future__ import annotations

import asyncio

import pytest

from appliance.cadence import tones_for
from appliance.exchange.server import ExchangeServer
from appliance.ui.panel import Panel
from appliance.ui.view import PanelState, Screen
from tests.conftest import scaled, wait_until
from tests.ui.test_controller import durations, panel_phone, transitions

pytestmark = pytest.mark.slow  # real aiortc


async def test_keypad_call_between_two_panels(exchange: ExchangeServer) -> None:
    gb_ring = tones_for("GB").ring  # 0.4 on, 0.2 off, 0.4 on, 2.0 off
    async with (
        panel_phone(exchange, "alice", Panel(directory={"200": "bob"})) as a,
        panel_phone(exchange, "bob", Panel(country="GB")) as b,
    ):
        ringer, status = b.hw.pin("ringer"), b.hw.pin("status")
        ringer.clear_states()
        status.clear_states()

        # A types B's number: the dialing screen shows the directory match.
        await a.dial("200")
        await wait_until(lambda: a.panel.view().dial_string == "200")
        assert a.panel.view().dial_match == "bob"
        await a.screen_shows_view()
        await a.hw.tap_button("accept")
        await b.wait_state(PanelState.RINGING)
        assert a.panel.state is PanelState.CALLING
        view = b.panel.view()
        assert view.screen is Screen.RINGING and view.remote == "client:alice"
        await b.screen_shows_view()
        await wait_until(lambda: a.panel.view().remote_ringing)
        await a.screen_shows_view()

        # Let B ring through the double ring (1.0 s) and into the long pause.
        await asyncio.sleep(1.3)
        await b.hw.tap_button("accept")
        await a.wait_state(PanelState.IN_CALL, limit=10.0)
        await b.wait_state(PanelState.IN_CALL)
        # Leaving "ringing" switched the ringer off at once.
        assert not b.hw.led("ringer")

        tolerance = scaled(0.06)
        rings = durations(transitions(ringer))
        expected = [(True, 0.4), (False, 0.2), (True, 0.4)]
        assert [lit for lit, _ in rings[:3]] == [lit for lit, _ in expected], rings
        for (_lit, seconds), (_, want) in zip(rings, expected, strict=False):
            assert abs(seconds - want) < tolerance, rings
        assert gb_ring.on_off_ms[:3] == (400, 200, 400)
        blinks = durations(transitions(status))
        assert len(blinks) >= 4, blinks
        assert all(abs(s - 0.2) < tolerance for _lit, s in blinks[:-1]), blinks
        # In a call B's status LED is steady again.
        assert b.hw.led("status")

        # A's keypad digits reach B as DTMF.
        b_call = b.controller.call
        assert b_call is not None
        digits: list[str] = []
        b_call.on("dtmf", digits.append)
        await a.dial("12#")
        await wait_until(lambda: digits == ["1", "2", "#"])
        sent = [c for c, _ in a.commands if type(c).__name__ == "SendDigits"]
        assert [c.digits for c in sent] == ["1", "2", "#"]
        await a.screen_shows_view()
        await b.screen_shows_view()

        # A hangs up: both panels go back to idle.
        await a.hw.tap_button("hangup")
        await a.wait_state(PanelState.IDLE)
        await b.wait_state(PanelState.IDLE)
        assert a.controller.call is None and b.controller.call is None
        await a.screen_shows_view()
        await b.screen_shows_view()
