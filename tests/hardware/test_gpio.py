"""FrontPanelIO against gpiozero's MockFactory (passed explicitly, never global)."""

import asyncio
import threading
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
from gpiozero import Button, Device
from gpiozero.pins.mock import MockFactory, MockPWMPin

from appliance.cadence import Cadence
from appliance.hardware.gpio import (
    ButtonHeld,
    ButtonPressed,
    ButtonReleased,
    FrontPanelIO,
    HookLifted,
    HookReplaced,
    KeyPressed,
    KeyReleased,
)
from appliance.hardware.pinmap import InputTiming, load_pinmap
from tests.conftest import scaled, wait_until

HW = Path(__file__).resolve().parents[2] / "hw"
PINMAP = replace(
    load_pinmap(HW / "pinmap-reference.toml"),
    timing=InputTiming(
        debounce_ms=20,
        bounce_time_ms=5,
        hold_ms=150,
        hold_keys=("#", "hangup"),
        scan_interval_ms=2,
    ),
)
B = PINMAP.buttons


class MatrixRowPin(MockPWMPin):
    """A row pin that re-evaluates the columns whenever it changes level."""

    def __init__(self, factory, info, matrix):
        super().__init__(factory, info)
        self.matrix = matrix

    def _change_state(self, value):
        changed = super()._change_state(value)
        self.matrix.refresh()
        return changed


class KeyMatrix:
    """Models the membrane: a pressed key links its row output to its column."""

    def __init__(self, factory, keypad):
        self.keypad = keypad
        self.factory = factory
        self.pressed: set[str] = set()
        self.lock = threading.Lock()
        self.rows = [
            factory.pin(pin, pin_class=MatrixRowPin, matrix=self) for pin in keypad.rows
        ]

    def position(self, key):
        for r, row in enumerate(self.keypad.layout):
            if key in row:
                return r, row.index(key)
        raise KeyError(key)

    def press(self, key):
        self.pressed.add(key)
        self.refresh()

    def release(self, key):
        self.pressed.discard(key)
        self.refresh()

    def refresh(self):
        with self.lock:
            for c, pin in enumerate(self.keypad.columns):
                low = any(
                    self.position(k)[1] == c
                    and not self.rows[self.position(k)[0]].state
                    for k in self.pressed
                )
                column = self.factory.pin(pin)
                column.drive_low() if low else column.drive_high()


@pytest.fixture
def factory():
    factory = MockFactory(pin_class=MockPWMPin)
    yield factory
    factory.reset()


@pytest.fixture
def matrix(factory):
    return KeyMatrix(factory, PINMAP.keypad)


@pytest.fixture
async def io(factory, matrix):
    panel = FrontPanelIO(PINMAP, pin_factory=factory)
    async with panel:
        yield panel


async def next_event(io, wait_s=1.0):
    events = io.events()
    return await asyncio.wait_for(anext(events), scaled(wait_s))


async def no_event(io, wait=0.1):
    with pytest.raises(TimeoutError):
        await next_event(io, wait)


async def test_button_press_and_release(io, factory):
    factory.pin(B.ready).drive_low()
    event = await next_event(io)
    assert isinstance(event, ButtonPressed) and event.button == "ready"
    assert io.pressed_buttons() == {"ready"}
    factory.pin(B.ready).drive_high()
    event = await next_event(io)
    assert event == ButtonReleased("ready", event.at, held=False)


async def test_press_is_confirmed_after_5_ms_and_release_after_20_ms(io, factory):
    loop = asyncio.get_running_loop()
    start = loop.time()
    factory.pin(B.accept).drive_low()
    event = await next_event(io)
    assert event.button == "accept"
    assert event.at - start >= 0.005
    released = loop.time()
    factory.pin(B.accept).drive_high()
    event = await next_event(io)
    assert event == ButtonReleased("accept", event.at, held=False)
    assert event.at - released >= 0.02


async def test_glitch_shorter_than_debounce_is_not_a_press(io, factory):
    pin = factory.pin(B.accept)
    for _ in range(3):
        pin.drive_low()
        pin.drive_high()
    await no_event(io, 0.1)
    assert io.pressed_buttons() == set()


async def test_hangup_hold(io, factory):
    factory.pin(B.hangup).drive_low()
    assert isinstance(await next_event(io), ButtonPressed)
    held = await next_event(io)
    assert held == ButtonHeld("hangup", held.at)
    factory.pin(B.hangup).drive_high()
    released = await next_event(io)
    assert released == ButtonReleased("hangup", released.at, held=True)


async def test_hold_is_not_reported_for_other_buttons(io, factory):
    factory.pin(B.mute).drive_low()
    assert isinstance(await next_event(io), ButtonPressed)
    await no_event(io, 0.3)


async def test_hook_switch(io, factory):
    factory.pin(B.hook).drive_low()
    assert isinstance(await next_event(io), HookLifted)
    factory.pin(B.hook).drive_high()
    assert isinstance(await next_event(io), HookReplaced)


async def test_handset_lifted_at_start_is_reported(factory, matrix):
    io = FrontPanelIO(PINMAP, pin_factory=factory)
    factory.pin(B.hook).drive_low()  # before start(): no edge callback is wired
    async with io:
        assert isinstance(await next_event(io), HookLifted)


async def test_keypad_key_press_and_release(io, matrix):
    matrix.press("5")
    event = await next_event(io)
    assert isinstance(event, KeyPressed) and event.key == "5"
    matrix.release("5")
    event = await next_event(io)
    assert isinstance(event, KeyReleased) and event.key == "5"


async def test_keypad_every_key(io, matrix):
    for key in "123456789*0#":
        matrix.press(key)
        assert (await next_event(io)).key == key
        matrix.release(key)
        assert isinstance(await next_event(io), KeyReleased)


async def test_keypad_hash_hold(io, matrix):
    matrix.press("#")
    assert isinstance(await next_event(io), KeyPressed)
    held = await next_event(io)
    assert held.key == "#" and type(held).__name__ == "KeyHeld"
    matrix.release("#")


async def test_keypad_ghost_is_not_reported(io, matrix):
    for key in ("1", "2", "4"):
        matrix.press(key)
    # 1 and 2 may be confirmed before 4 closes the rectangle; 5 never is.
    # Nothing to wait for: give a ghost 5 the window in which a real key would
    # be confirmed many times over (debounce 20 ms), then drain.
    await asyncio.sleep(scaled(0.15))
    keys = set()
    with pytest.raises(TimeoutError):
        while True:
            keys.add((await next_event(io, 0.05)).key)
    assert "5" not in keys
    assert keys <= {"1", "2", "4"}


def durations(pin):
    """[(state, seconds)] from a mock pin's history, merging repeats."""
    runs = []
    for (_, state), (delta, _) in zip(pin.states, pin.states[1:], strict=False):
        runs.append((bool(state), delta))
    return runs


async def test_ringer_led_follows_the_cadence(io, factory):
    pattern = Cadence((60, 40, 60, 140))
    pin = factory.pin(PINMAP.outputs.ringer)
    pin.clear_states()
    io.set_ringer(pattern)
    io.set_ringer(pattern)  # same pattern again: no restart
    await asyncio.sleep(0.62)  # let it ring two cycles (a lower bound is enough)
    io.set_ringer(None)
    assert not pin.state
    runs = durations(pin)
    # runs[0] is the initial off state; the cadence starts with the switch-on.
    expected = [(True, 0.06), (False, 0.04), (True, 0.06), (False, 0.14)] * 2
    states = [s for s, _ in runs[1 : 1 + len(expected)]]
    assert states == [s for s, _ in expected]
    for (_, got), (_, want) in zip(runs[1:], expected, strict=False):
        assert got == pytest.approx(want, abs=scaled(0.02))


async def test_tonal_buzzer_sounds_the_ring_pitch_with_the_cadence(factory, matrix):
    outputs = replace(PINMAP.outputs, buzzer_tone_hz=440.0)
    async with FrontPanelIO(
        replace(PINMAP, outputs=outputs), pin_factory=factory
    ) as io:
        pin = factory.pin(PINMAP.outputs.buzzer)
        io.set_ringer(Cadence((200, 200)))
        # Sounding during the "on" part, silent during the "off" part.
        await wait_until(lambda: pin.frequency is not None, 1.0)
        assert pin.frequency == pytest.approx(440.0)
        assert pin.state > 0
        await wait_until(lambda: pin.frequency is None, 1.0)
        # Stopped in an "on" part: silent at once and through the next one.
        await wait_until(lambda: pin.frequency is not None, 1.0)
        io.set_ringer(None)
        assert pin.frequency is None
        # Without the stop the next "on" part would begin within 0.4 s.
        await asyncio.sleep(scaled(0.45))
        assert pin.frequency is None


async def test_a_silenced_ringer_flashes_without_sound(factory, matrix):
    async with FrontPanelIO(PINMAP, pin_factory=factory) as io:
        buzzer = factory.pin(PINMAP.outputs.buzzer)
        led = factory.pin(PINMAP.outputs.ringer)
        io.set_ringer(Cadence((300, 100)))
        await wait_until(lambda: buzzer.state and led.state, 2.0)
        io.set_ringer_audible(False)  # Vol- down to "ringer off", mid-ring
        assert not buzzer.state  # silent at once, not at the next cadence step
        # The LED goes on flashing through the next "on" part, in silence.
        await wait_until(lambda: not led.state, 2.0)
        await wait_until(lambda: led.state, 2.0)
        assert not buzzer.state
        io.set_ringer_audible(True)
        await wait_until(lambda: buzzer.state and led.state, 2.0)
        io.set_ringer(None)


def test_buzzer_tone_outside_the_tonal_range_is_rejected():
    from appliance.errors import ConfigError
    from appliance.hardware.pinmap import parse_pinmap

    data = tomllib.loads((HW / "pinmap-reference.toml").read_text())
    data["outputs"]["buzzer_tone_hz"] = 2000
    with pytest.raises(ConfigError, match="buzzer_tone_hz"):
        parse_pinmap(data)


async def test_status_led_modes(io, factory):
    pin = factory.pin(PINMAP.outputs.status)
    io.set_status_led("steady")
    await wait_until(lambda: pin.state)
    pin.clear_states()
    io.set_status_led("fast")
    await asyncio.sleep(0.5)  # let it blink a full on/off cycle and more
    io.set_status_led("off")
    assert not pin.state
    runs = durations(pin)
    # Fast blink: 200 ms on / 200 ms off (starting on from the steady state).
    assert [s for s, _ in runs[:2]] == [True, False]
    assert runs[0][1] == pytest.approx(0.2, abs=scaled(0.03))
    assert runs[1][1] == pytest.approx(0.2, abs=scaled(0.03))
    with pytest.raises(ValueError, match="mode"):
        io.set_status_led("disco")


async def test_full_queue_drops_the_oldest(factory, matrix):
    async with FrontPanelIO(PINMAP, pin_factory=factory, queue_size=2) as io:
        for name in ("ready", "accept"):
            # Held and released longer than the debounce times (5 / 20 ms).
            factory.pin(getattr(B, name)).drive_low()
            await asyncio.sleep(scaled(0.05))
            factory.pin(getattr(B, name)).drive_high()
            await asyncio.sleep(scaled(0.05))
        await wait_until(lambda: io.dropped == 2)
        first = await next_event(io)
        second = await next_event(io)
        assert (first, second) == (
            ButtonPressed("accept", first.at),
            ButtonReleased("accept", second.at),
        )


async def test_close_ends_events_and_releases_pins(factory, matrix):
    io = FrontPanelIO(PINMAP, pin_factory=factory)
    async with io:
        io.set_ringer(Cadence((50, 50)))
        await wait_until(lambda: factory.pin(PINMAP.outputs.ringer).state)
    assert [e async for e in io.events()] == []
    # The pins are free again and the LED was switched off.
    Button(B.ready, pin_factory=factory).close()
    assert not factory.pin(PINMAP.outputs.ringer).state


def test_global_pin_factory_is_untouched(factory):
    before = Device.pin_factory
    FrontPanelIO(PINMAP, pin_factory=factory).close()
    assert Device.pin_factory is before


def test_bad_queue_size(factory):
    with pytest.raises(ValueError, match="queue_size"):
        FrontPanelIO(PINMAP, pin_factory=factory, queue_size=0)
