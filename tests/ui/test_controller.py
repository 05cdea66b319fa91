"""PanelController with real parts: Device on an in-process exchange, FrontPanelIO
on gpiozero's MockFactory (driven through :class:`MockPanelHardware`), Display on
luma's dummy device. Nothing of ours is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from PIL import ImageChops

from appliance.cadence import Cadence
from appliance.exchange.server import ExchangeServer
from appliance.hardware.display import Display, create_device
from appliance.hardware.gpio import FrontPanelIO
from appliance.hardware.mock import MockPanelHardware
from appliance.hardware.pinmap import DisplaySpec, InputTiming, PinMap, load_pinmap
from appliance.phone.connection import Connection
from appliance.phone.device import Device
from appliance.ui.controller import PanelController
from appliance.ui.panel import Panel
from appliance.ui.screens import render
from appliance.ui.settings import PanelSettings, parse_ui_config
from appliance.ui.view import PanelState, Screen
from appliance.ui.volume import VOLUME_DEFAULT_LEVEL, volume_gain
from tests.conftest import local_device, make_token, scaled, wait_until

HW = Path(__file__).resolve().parents[2] / "hw"
#: The reference build with a short hold time, so a held Hangup takes 0.15 s.
PINMAP: PinMap = replace(
    load_pinmap(HW / "pinmap-reference.toml"),
    timing=InputTiming(
        debounce_ms=20,
        bounce_time_ms=5,
        hold_ms=150,
        hold_keys=("#", "hangup"),
        scan_interval_ms=2,
    ),
)


@dataclass
class PanelPhone:
    """One desk phone: engine, mock pins, dummy OLED and the controller."""

    name: str
    device: Device
    hw: MockPanelHardware
    io: FrontPanelIO
    display: Display
    controller: PanelController
    stack: contextlib.AsyncExitStack
    commands: list[tuple[Any, float]] = field(default_factory=list)

    @property
    def panel(self) -> Panel:
        return self.controller.panel

    async def wait_state(self, state: PanelState | str, limit: float = 5.0) -> None:
        try:
            async with asyncio.timeout(scaled(limit)):
                await self.controller.wait_for_state(state)
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: not {state} within {limit} s; "
                f"panel is {self.panel.state} ({self.panel.view()})"
            ) from None

    async def screen_shows_view(self) -> None:
        """The OLED holds exactly the rendering of the panel's current view."""
        await self.display.flush()
        shown = self.display.device.image  # type: ignore[attr-defined]
        expected = render(self.panel.view())
        assert ImageChops.difference(shown.convert("1"), expected).getbbox() is None

    async def dial(self, keys: str) -> None:
        for key in keys:
            await self.hw.tap_key(key)


@contextlib.asynccontextmanager
async def panel_phone(
    exchange: ExchangeServer,
    identity: str,
    panel: Panel,
    *,
    press_ready: bool = True,
    settings: PanelSettings | None = None,
    **device_options: Any,
) -> AsyncIterator[PanelPhone]:
    """A PanelPhone registered as ``identity`` (Ready pressed on the panel)."""
    async with contextlib.AsyncExitStack() as stack:
        options = {
            "signaling_url": exchange.url,
            "local_addresses": ["127.0.0.1"],
            "input_device": "tone:440",
            "output_device": "null",
            "enable_ringing_state": True,
            **device_options,
        }
        device = Device(**options)
        stack.push_async_callback(device.destroy)
        hw = MockPanelHardware(PINMAP)
        stack.callback(hw.factory.reset)
        io = await stack.enter_async_context(
            FrontPanelIO(PINMAP, pin_factory=hw.factory)
        )
        display = await stack.enter_async_context(
            Display(create_device(DisplaySpec(driver="dummy")), max_fps=50)
        )
        token = make_token(identity)
        controller = PanelController(
            device,
            panel,
            io=io,
            display=display,
            token=lambda: token,
            settings=settings,
        )
        phone = PanelPhone(identity, device, hw, io, display, controller, stack)
        controller.command_listeners.append(
            lambda cmd, t: phone.commands.append((cmd, t))
        )
        await stack.enter_async_context(controller)
        if press_ready:
            await hw.tap_button("ready")
            await phone.wait_state(PanelState.IDLE)
        yield phone


def transitions(pin: Any) -> list[tuple[float, bool]]:
    """A mock pin's history as (absolute monotonic time, lit) at each change."""
    out: list[tuple[float, bool]] = []
    # PinState.timestamp is the time since the previous change (gpiozero mock),
    # so the history starts at the last change minus the sum of the deltas.
    start = pin._last_change - sum(s.timestamp for s in pin.states[1:])
    for state in pin.states[1:]:
        start += state.timestamp
        lit = bool(state.state)
        if not out or out[-1][1] != lit:
            out.append((start, lit))
    return out


def durations(history: list[tuple[float, bool]]) -> list[tuple[bool, float]]:
    """(lit, seconds) of each complete segment of a history."""
    return [(a[1], b[0] - a[0]) for a, b in itertools.pairwise(history)]


# ------------------------------------------------------------------- tests


async def test_ready_registers_and_screen_follows(exchange: ExchangeServer) -> None:
    async with panel_phone(exchange, "alice", Panel(), press_ready=False) as phone:
        assert phone.panel.state is PanelState.OFFLINE
        await phone.screen_shows_view()
        # Offline: the status LED blinks slowly (1 s on, then off).
        await wait_until(lambda: phone.hw.led("status"))
        await wait_until(lambda: not phone.hw.led("status"))
        await phone.hw.tap_button("ready")
        await phone.wait_state(PanelState.IDLE)
        assert [type(c).__name__ for c, _ in phone.commands] == ["Setup"]
        view = phone.panel.view()
        assert view.identity == "alice" and view.registered
        await phone.screen_shows_view()
        assert phone.hw.led("status")  # steady when ready
        # Still lit past a slow blink's 1 s "on" part.
        await asyncio.sleep(scaled(1.1))
        assert phone.hw.led("status")
        assert not phone.hw.led("ringer")


async def test_offline_screen_counts_down_to_the_next_reconnect(
    exchange: ExchangeServer,
) -> None:
    async with panel_phone(exchange, "alice", Panel(), backoff_max_ms=3000) as phone:
        await exchange.close()  # the gateway goes away
        await phone.wait_state(PanelState.OFFLINE)
        view = phone.panel.view()
        assert view.next_retry_at is not None
        assert view.next_retry_at == phone.device.reconnect_at
        # Each failed attempt moves the next one; the screen follows it.
        first = view.next_retry_at
        await wait_until(lambda: phone.panel.view().next_retry_at not in (None, first))
        await phone.screen_shows_view()


async def test_dialing_delete_clear_and_unavailable_error(
    exchange: ExchangeServer,
) -> None:
    panel = Panel(error_display_s=0.5)
    async with panel_phone(exchange, "alice", panel) as phone:
        await phone.dial("123")
        await wait_until(lambda: phone.panel.view().dial_string == "123")
        assert phone.panel.state is PanelState.DIALING
        await phone.screen_shows_view()
        await phone.hw.tap_button("hangup")  # deletes one digit
        await wait_until(lambda: phone.panel.view().dial_string == "12")
        await phone.hw.tap_button("hangup", hold_s=0.3)  # a hold clears
        await phone.wait_state(PanelState.IDLE)
        assert phone.panel.view().dial_string == ""
        # Nobody is registered as 999: the exchange answers 31480.
        await phone.dial("999#")
        await phone.wait_state(PanelState.ERROR)
        assert phone.panel.view().error_code == 31480
        await phone.screen_shows_view()
        await phone.wait_state(PanelState.IDLE, limit=2.0)
        dials = [c for c, _ in phone.commands if type(c).__name__ == "Dial"]
        assert [c.to for c in dials] == ["999"]


@pytest.mark.slow  # a real aiortc call
async def test_incoming_rings_with_cadence_and_hangup_rejects(
    exchange: ExchangeServer,
) -> None:
    ring = Cadence((200, 100))
    async with panel_phone(exchange, "bob", Panel(ring_cadence=ring)) as phone:
        caller = local_device(
            exchange.url,
            input_device="null",
        )
        errors: list[int] = []
        caller.on("error", lambda e: errors.append(e.code))
        try:
            await caller.setup(make_token("carol"))
            ringer = phone.hw.pin("ringer")
            status = phone.hw.pin("status")
            ringer.clear_states()
            status.clear_states()
            await caller.connect({"To": "client:bob", "Topic": "invoices"})
            await phone.wait_state(PanelState.RINGING)
            view = phone.panel.view()
            assert view.remote == "client:carol"
            assert ("Topic", "invoices") in view.params
            await phone.screen_shows_view()
            await asyncio.sleep(0.75)  # ring two cycles, then press Hangup
            await phone.hw.tap_button("hangup")
            await phone.wait_state(PanelState.IDLE)
            await wait_until(lambda: 31603 in errors)
            # Idle switched the ringer off at once (no cadence step to wait for).
            assert not phone.hw.led("ringer")
            tolerance = scaled(0.06)
            rings = durations(transitions(ringer))
            # on 0.2 / off 0.1, at least twice, before Hangup ended it.
            assert [lit for lit, _ in rings[:4]] == [True, False, True, False]
            for lit, seconds in rings[:3]:
                assert abs(seconds - (0.2 if lit else 0.1)) < tolerance, rings
            # Fast blink 0.2/0.2 s (the last segment may be cut by Hangup).
            blinks = durations(transitions(status))
            assert len(blinks) >= 3, blinks
            assert all(abs(s - 0.2) < tolerance for _lit, s in blinks[:-1]), blinks
        finally:
            await caller.destroy()


@pytest.mark.slow  # a real aiortc call
async def test_ignore_after_rings(exchange: ExchangeServer) -> None:
    panel = Panel(ring_cadence=Cadence((100, 100)), ignore_after_rings=2)
    async with panel_phone(exchange, "bob", panel) as phone:
        caller = local_device(
            exchange.url,
            input_device="null",
        )
        try:
            await caller.setup(make_token("carol"))
            await caller.connect({"To": "client:bob"})
            await phone.wait_state(PanelState.RINGING)
            started = asyncio.get_running_loop().time()
            await phone.wait_state(PanelState.IDLE, limit=2.0)
            elapsed = asyncio.get_running_loop().time() - started
            assert 0.35 < elapsed < 0.4 + scaled(0.2)
            assert any(type(c).__name__ == "Ignore" for c, _ in phone.commands)
            # Idle switched the ringer off at once (no cadence step to wait for).
            assert not phone.hw.led("ringer")
        finally:
            await caller.destroy()


@pytest.mark.slow  # a real aiortc call
async def test_call_mute_and_far_end_hangup(exchange: ExchangeServer) -> None:
    async with panel_phone(exchange, "alice", Panel(directory={"7": "echo"})) as phone:
        callee = local_device(
            exchange.url,
            input_device="tone:660",
        )
        calls: list[Connection] = []

        async def answer(conn: Connection) -> None:
            calls.append(conn)
            await conn.accept()

        callee.on("incoming", answer)
        try:
            await callee.setup(make_token("echo"))
            await phone.dial("7")
            await phone.hw.tap_button("accept")
            await phone.wait_state(PanelState.IN_CALL, limit=10.0)
            assert phone.panel.view().remote == "client:echo"
            conn = phone.controller.call
            assert conn is not None
            await phone.hw.tap_button("mute")
            await wait_until(conn.is_muted)
            assert phone.panel.view().muted
            await phone.screen_shows_view()
            await phone.hw.tap_button("mute")
            await wait_until(lambda: not conn.is_muted())
            # The far end hangs up: the panel goes back to idle by itself.
            await calls[0].disconnect()
            await phone.wait_state(PanelState.IDLE)
            assert phone.controller.call is None
        finally:
            await callee.destroy()


@pytest.mark.slow  # a real aiortc call
async def test_call_timer_redraws_every_second(exchange: ExchangeServer) -> None:
    async with panel_phone(exchange, "alice", Panel(directory={"7": "tim"})) as phone:
        callee = local_device(
            exchange.url,
            input_device="null",
        )
        callee.on("incoming", lambda conn: asyncio.ensure_future(conn.accept()))
        try:
            await callee.setup(make_token("tim"))
            await phone.dial("7#")
            await phone.wait_state(PanelState.IN_CALL, limit=10.0)
            frames = phone.display.frames_written
            # 00:00 -> 00:01 -> 00:02 at least, with no input at all.
            await wait_until(lambda: phone.display.frames_written >= frames + 2, 2.2)
            assert phone.panel.view().screen is Screen.IN_CALL
            await phone.screen_shows_view()
        finally:
            await callee.destroy()


async def test_volume_buttons_set_the_gain_and_the_phone_keeps_it(
    exchange: ExchangeServer, tmp_path: Path
) -> None:
    saved = tmp_path / "state" / "panel.json"
    settings = PanelSettings(saved)
    async with panel_phone(exchange, "alice", Panel(), settings=settings) as alice:
        audio = alice.device.audio
        assert audio.ringtone_devices.volume == 1.0
        await alice.hw.tap_button("vol_down")
        await alice.hw.tap_button("vol_down")
        quieter = volume_gain(VOLUME_DEFAULT_LEVEL - 2)
        await wait_until(lambda: audio.ringtone_devices.volume == quieter)
        assert audio.speaker_devices.volume == 1.0  # idle: the ringer only
        view = alice.panel.view()
        assert (view.volume_role, view.volume_level) == ("ringtone", 4)
        await alice.screen_shows_view()
        # Saved once the presses have stopped for a second.
        await wait_until(saved.exists, 5.0)
        assert settings.load_volume() == {"speaker": 6, "ringtone": 4}
        await wait_until(lambda: not alice.panel.view().volume_role, 5.0)
        await alice.screen_shows_view()
    # A press just before shutdown is kept too.
    panel = Panel(volume=settings.load_volume())
    async with panel_phone(exchange, "alice", panel, settings=settings) as again:
        audio = again.device.audio
        assert audio.ringtone_devices.volume == pytest.approx(quieter)
        await again.hw.tap_button("vol_up")
        await wait_until(lambda: again.panel.volume_levels()["ringtone"] == 5)
    assert settings.load_volume() == {"speaker": 6, "ringtone": 5}


async def test_closing_right_after_volume_presses_ends_at_once_and_keeps_them(
    exchange: ExchangeServer, tmp_path: Path
) -> None:
    # Shutdown in the same loop turn as a press: the panel's timer and saver
    # tasks must end (on Python 3.11 a cancel racing a wake-up could be lost
    # and the service would hang until SIGKILL), and the press is saved.
    settings = PanelSettings(tmp_path / "panel.json")
    async with panel_phone(
        exchange, "alice", Panel(), settings=settings, press_ready=False
    ) as phone:
        phone.controller.button("vol_down")
        await asyncio.sleep(0.3)  # two presses, apart
        phone.controller.button("vol_down")
        async with asyncio.timeout(scaled(5)):
            await phone.controller.aclose()
    assert settings.load_volume()["ringtone"] == VOLUME_DEFAULT_LEVEL - 2


async def test_a_bad_settings_file_is_set_aside_and_defaults_apply(
    exchange: ExchangeServer, tmp_path: Path
) -> None:
    path = tmp_path / "panel.json"
    path.write_text('{"volume": {"ringtone": "loud"}')  # cut short by a power cut
    settings = PanelSettings(path)
    assert settings.load_volume() == {}
    assert (tmp_path / "panel.json.bad").read_text().startswith('{"volume"')
    assert not path.exists()
    path.write_text('{"volume": {"ringtone": 2, "headset": 3}}')
    assert settings.load_volume() == {"ringtone": 2}  # unknown roles skipped
    # Unreadable (here: a directory in its place) is not damaged: left alone.
    odd = PanelSettings(tmp_path / "odd.json")
    (tmp_path / "odd.json").mkdir()
    assert odd.load_volume() == {}
    assert (tmp_path / "odd.json").is_dir()
    assert not (tmp_path / "odd.json.bad").exists()
    # An unwritable place is logged, not fatal: the volume still changes.
    blocked = PanelSettings(tmp_path / "not-a-dir" / "panel.json")
    (tmp_path / "not-a-dir").write_text("a file where the directory should be")
    async with panel_phone(exchange, "bob", Panel(), settings=blocked) as bob:
        await bob.hw.tap_button("vol_up")
        up = volume_gain(VOLUME_DEFAULT_LEVEL + 1)
        await wait_until(lambda: bob.device.audio.ringtone_devices.volume == up)
    assert bob.panel.volume_levels()["ringtone"] == VOLUME_DEFAULT_LEVEL + 1


def test_ui_config_parsing() -> None:
    config = parse_ui_config(
        {
            "enabled": True,
            "pinmap": "hw/pinmap-reference.toml",
            "pin_factory": "mock",
            "directory": {"200": "bob"},
            "ignore_after_rings": 0,
            "country": "gb",
        }
    )
    assert config.ignore_after_rings is None
    assert config.country == "GB"
    assert config.make_panel().ringer_pattern() is None
    with pytest.raises(ValueError, match=r"ui\.pinmap"):
        parse_ui_config({"enabled": True})
    with pytest.raises(ValueError, match=r"ui\.pin_factory"):
        parse_ui_config({"pin_factory": "gpio"})
    with pytest.raises(ValueError, match=r"ui\.colour"):
        parse_ui_config({"colour": "red"})
    with pytest.raises(ValueError, match=r"ui\.directory"):
        parse_ui_config({"directory": {"12": "not a name"}})
