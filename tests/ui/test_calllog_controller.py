"""The call log, missed calls and do-not-disturb on a real panel: Devices on
an in-process exchange, mock pins, the dummy OLED and a real SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

from appliance.calllog.core import Direction
from appliance.calllog.recorder import CallLogRecorder
from appliance.calllog.store import CallLogStore
from appliance.exchange.server import ExchangeServer
from appliance.phone.connection import Connection
from appliance.phone.device import Device
from appliance.ui.commands import Dial
from appliance.ui.desk import open_call_log
from appliance.ui.panel import Panel
from appliance.ui.settings import PanelSettings, UiConfig
from appliance.ui.view import PanelState, StatusLed
from tests.conftest import local_device, make_token, wait_until
from tests.ui.test_controller import PanelPhone, panel_phone, transitions

#: 2026-12-03 09:45 UTC, the wall clock of these tests.
WALL = 1796291100.0


@contextlib.asynccontextmanager
async def caller(exchange: ExchangeServer, name: str) -> AsyncIterator[Device]:
    device = local_device(exchange.url, input_device="null")
    try:
        await device.setup(make_token(name))
        yield device
    finally:
        await device.destroy()


async def _with_log(
    phone: PanelPhone, ui: UiConfig, *, synced: bool = True
) -> CallLogRecorder:
    return await open_call_log(
        ui,
        phone.device,
        phone.controller,
        phone.stack,
        wall=lambda: WALL,
        synced=lambda: synced,
    )


async def test_a_missed_call_is_logged_blinks_and_accept_calls_it_back(
    exchange: ExchangeServer, tmp_path: Path
) -> None:
    db = tmp_path / "calls.db"
    ui = UiConfig(call_log_file=str(db))
    async with panel_phone(exchange, "bob", Panel()) as bob:
        log = await _with_log(bob, ui)
        local = datetime.fromtimestamp(WALL).astimezone()
        view = bob.panel.view()
        assert (view.clock_time, view.clock_date) == (
            local.strftime("%H:%M"),
            local.strftime("%a %d %b %Y"),
        )
        assert view.missed_calls == 0 and view.network_bars is None
        async with caller(exchange, "carol") as carol:
            call = await carol.connect({"To": "client:bob"})
            await bob.wait_state(PanelState.RINGING)
            await call.disconnect()  # carol gives up
            await bob.wait_state(PanelState.IDLE)
            await wait_until(lambda: bob.panel.view().missed_calls == 1)
            assert bob.panel.status_led() is StatusLed.SLOW
            status = bob.hw.pin("status")
            status.clear_states()
            await wait_until(lambda: len(transitions(status)) >= 2, 5.0)
            await bob.screen_shows_view()
            # The entry is on disk (read through a second connection).
            await wait_until(lambda: len(CallLogStore(db).recent()) == 1)
            [entry] = CallLogStore(db).recent()
            assert (entry.direction, entry.remote, entry.seen) == (
                Direction.MISSED,
                "client:carol",
                False,
            )
            assert entry.started == WALL

            # Mute opens the log; that marks the call seen and the LED steady.
            await bob.hw.tap_button("mute")
            await bob.wait_state(PanelState.CALL_LOG)
            assert bob.panel.view().log_items[0].remote == "client:carol"
            await bob.screen_shows_view()
            assert bob.panel.status_led() is StatusLed.STEADY
            await wait_until(lambda: CallLogStore(db).recent()[0].seen)
            assert log.unseen_missed() == 0

            # Accept calls carol back.
            rung: list[Connection] = []
            carol.on("incoming", rung.append)
            await bob.hw.tap_button("accept")
            await bob.wait_state(PanelState.CALLING)
            assert any(c == Dial("client:carol") for c, _ in bob.commands)
            await wait_until(lambda: len(rung) == 1)
            await bob.hw.tap_button("hangup")
            await bob.wait_state(PanelState.IDLE)
            await wait_until(lambda: len(log.entries()) == 2)
            assert log.entries()[0].direction is Direction.OUTGOING
    # Kept across a restart of the phone.
    assert [e.direction for e in CallLogStore(db).recent()] == [
        Direction.OUTGOING,
        Direction.MISSED,
    ]


async def test_dnd_from_the_keypad_declines_logs_missed_and_is_kept(
    exchange: ExchangeServer, tmp_path: Path
) -> None:
    state = tmp_path / "panel.json"
    ui = UiConfig(state_file=str(state), call_log_file=str(tmp_path / "calls.db"))
    settings = PanelSettings(state)
    async with panel_phone(exchange, "bob", Panel(), settings=settings) as bob:
        log = await _with_log(bob, ui)
        bob.hw.press_key("#")  # held: do-not-disturb on
        await wait_until(lambda: bob.panel.dnd)
        bob.hw.release_key("#")
        assert bob.panel.state is PanelState.IDLE
        await bob.screen_shows_view()
        async with caller(exchange, "carol") as carol:
            errors: list[int] = []
            carol.on("error", lambda e: errors.append(e.code))
            await carol.connect({"To": "client:bob"})
            await wait_until(lambda: errors, 5.0)
            assert errors == [31486]  # busy here: the do-not-disturb decline
            assert bob.panel.state is PanelState.IDLE  # never rang
            assert not bob.hw.led("ringer")
            await wait_until(lambda: bob.panel.view().missed_calls == 1)
            assert log.entries()[0].direction is Direction.MISSED
        await wait_until(settings.load_dnd, 5.0)
    # The switch survives a restart of the panel.
    async with panel_phone(exchange, "bob", Panel(), settings=settings) as again:
        await _with_log(again, ui, synced=False)
        assert again.panel.dnd
        view = again.panel.view()
        assert view.missed_calls == 1
        # Before the clock is synchronised: unknown, and so are today's calls.
        assert (view.clock_time, view.clock_date) == ("--:--", "clock not set")
        await again.screen_shows_view()


async def test_an_edited_directory_is_saved_and_restored_after_a_restart(
    exchange: ExchangeServer, tmp_path: Path
) -> None:
    state = tmp_path / "panel.json"
    ui = UiConfig(state_file=str(state))
    settings = PanelSettings(state)
    configured = {"7": "reception"}
    async with panel_phone(
        exchange, "bob", Panel(directory=configured), settings=settings
    ) as bob:
        await _with_log(bob, ui)
        assert settings.load_directory() is None
        bob.controller.apply(lambda panel, now: panel.edit_directory("42", "erin", now))
        await wait_until(
            lambda: settings.load_directory() == {"7": "reception", "42": "erin"}, 5.0
        )
        assert settings.load_volume() == bob.panel.volume_levels()
    # After a restart the saved directory replaces the configured one.
    async with panel_phone(
        exchange, "bob", Panel(directory=configured), settings=settings
    ) as again:
        await _with_log(again, ui)
        assert again.panel.directory == {"7": "reception", "42": "erin"}
        await again.hw.tap_key("4")
        await again.hw.tap_key("2")
        await wait_until(lambda: again.panel.view().dial_match == "erin", 5.0)


def test_the_state_file_keeps_no_directory_until_one_is_edited(tmp_path: Path) -> None:
    settings = PanelSettings(tmp_path / "panel.json")
    settings.save_volume({"ringtone": 3}, dnd=True)
    assert settings.load_directory() is None
    settings.save_volume({"ringtone": 3}, dnd=True, directory={})
    assert settings.load_directory() == {}  # every entry removed: still edited
    settings.save_volume({"ringtone": 3}, directory={"1": "a", "2": 5})  # type: ignore[dict-item]
    assert settings.load_directory() == {"1": "a"}
    assert (settings.load_volume(), settings.load_dnd()) == ({"ringtone": 3}, False)


async def test_the_idle_clock_is_redrawn_as_the_minute_changes(
    exchange: ExchangeServer,
) -> None:
    """The clock task's real sleep, with a wall clock that starts 1 s before a
    minute: the OLED's next frame after the minute shows the new time."""
    loop = asyncio.get_running_loop()
    boundary = WALL + 60.0  # 09:46:00 UTC
    started: list[float] = []

    def wall() -> float:
        if not started:  # the clock starts at the first reading
            started.append(loop.time())
        return boundary - 1.0 + (loop.time() - started[0])

    def text(seconds: float) -> str:
        return datetime.fromtimestamp(seconds).astimezone().strftime("%H:%M")

    async with panel_phone(exchange, "bob", Panel()) as bob:
        shown: list[tuple[str, float]] = []
        bob.controller.frame_listeners.append(
            lambda _image, view: shown.append((view.clock_time, wall()))
        )
        await open_call_log(
            UiConfig(),
            bob.device,
            bob.controller,
            bob.stack,
            wall=wall,
            synced=lambda: True,
        )
        assert bob.panel.view().clock_time == text(boundary - 1.0)
        await wait_until(lambda: any(t == text(boundary) for t, _ in shown), 10.0)
        # Not drawn before the minute began, and the screen shows the view.
        assert all(at >= boundary for t, at in shown if t == text(boundary))
        await bob.screen_shows_view()
