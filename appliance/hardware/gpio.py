"""gpiozero adapter for the front panel: buttons, keypad, ringer and status LEDs.

Wiring: see ``hw/wiring.md``; the pins come from a :class:`PinMap`. Buttons and
keypad columns close to ground and use the SoC pull-ups; keypad rows are
outputs driven low one at a time.

Threads and the event loop
--------------------------
gpiozero calls ``when_activated``/``when_deactivated`` on its own thread (lgpio's
callback thread on a Pi; the caller's thread with ``MockFactory``). Those
callbacks only hand the raw edge to the loop with
``loop.call_soon_threadsafe``; they never touch anything else. On the loop a
:class:`~appliance.hardware.keypad.Debouncer` turns raw edges into debounced
presses (gpiozero's ``bounce_time`` alone misses edges: gpiozero#550, #378),
re-reading the pins at its deadlines so a swallowed edge cannot leave a button
stuck.

The keypad is scanned by a small thread (one sweep every
``timing.scan_interval_ms``) that owns the rows, the columns and the
:class:`~appliance.hardware.keypad.KeypadScanner`; pin reads never run on the
event loop. Its events reach the loop with ``call_soon_threadsafe`` too.

Every debounced event lands in one bounded :class:`asyncio.Queue`
(``queue_size``, default 64). **Drop policy:** when the queue is full the
*oldest* event is dropped and :attr:`FrontPanelIO.dropped` counts it, so a
stalled consumer sees the most recent presses when it catches up. At human key
rates the queue only fills when the consumer is stuck.

The LEDs (and the optional active buzzer) follow
:class:`~appliance.cadence.Cadence` patterns from a task on the loop that
sleeps until :func:`~appliance.cadence.next_change`; a write is a single pin
write, cheap enough for the loop.

Example::

    from gpiozero.pins.lgpio import LGPIOFactory
    io = FrontPanelIO(load_pinmap("hw/pinmap-reference.toml"),
                      pin_factory=LGPIOFactory())
    async with io:
        async for event in io.events():
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import threading
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

from gpiozero import (
    LED,
    PWMLED,
    Buzzer,
    DigitalInputDevice,
    DigitalOutputDevice,
    TonalBuzzer,
)
from gpiozero.tones import Tone

from appliance.cadence import STATUS_FAST, STATUS_SLOW, STATUS_STEADY, Cadence
from appliance.cadence import is_on as cadence_is_on
from appliance.cadence import next_change as cadence_next_change
from appliance.hardware.keypad import Debouncer, KeypadScanner
from appliance.hardware.pinmap import PinMap
from appliance.hardware.ports import (
    ButtonHeld,
    ButtonPressed,
    ButtonReleased,
    HookLifted,
    HookReplaced,
    KeyEvent,
    KeyHeld,
    KeyPressed,
    KeyReleased,
    PanelEvent,
    StatusMode,
)

__all__ = [
    "ButtonHeld",
    "ButtonPressed",
    "ButtonReleased",
    "FrontPanelIO",
    "HookLifted",
    "HookReplaced",
    "KeyHeld",
    "KeyPressed",
    "KeyReleased",
    "PanelEvent",
    "StatusMode",
]

logger = logging.getLogger(__name__)


_STATUS_PATTERNS: dict[str, Cadence | None] = {
    "off": None,
    "steady": STATUS_STEADY,
    "slow": STATUS_SLOW,
    "fast": STATUS_FAST,
}

# While a button is reported down, re-read it this often so a release edge that
# gpiozero's bounce filter swallowed is still noticed.
_RESYNC_S = 0.1


def _is_buzzer(device: Any) -> bool:
    return isinstance(device, Buzzer | TonalBuzzer)


class _Lamp:
    """One or more outputs that show the same cadence.

    With ``audible`` off the buzzers stay silent and only the lamps follow
    (the ringer turned off with Vol-).
    """

    def __init__(
        self, devices: list[Any], level: float = 1.0, tone_hz: float | None = None
    ) -> None:
        self._devices = devices
        self._level = level
        self._tone_hz = tone_hz
        self._audible = True

    def set(self, on: bool) -> None:
        for device in self._devices:
            self._drive(device, on and (self._audible or not _is_buzzer(device)))

    def set_audible(self, audible: bool) -> None:
        self._audible = audible
        if not audible:  # silence a buzzer that is sounding right now
            for device in filter(_is_buzzer, self._devices):
                self._drive(device, False)

    def _drive(self, device: Any, on: bool) -> None:
        if isinstance(device, PWMLED):
            device.value = self._level if on else 0.0
        elif isinstance(device, TonalBuzzer):
            if on and self._tone_hz is not None:
                device.play(Tone(frequency=self._tone_hz))
            else:
                device.stop()
        elif on:
            device.on()
        else:
            device.off()


class FrontPanelIO:
    """Buttons, keypad and LEDs of one front panel, bridged into asyncio.

    Args:
        pinmap: the build (``hw/pinmap-*.toml`` via
            :func:`~appliance.hardware.pinmap.load_pinmap`).
        pin_factory: the gpiozero pin factory, passed to every device
            (``LGPIOFactory()`` on a Pi, ``MockFactory()`` in tests). The global
            ``Device.pin_factory`` is never touched.
        queue_size: bound of the event queue (see the drop policy above).

    Call :meth:`start` (or use ``async with``) on the running loop, consume
    :meth:`events`, and :meth:`close` when done.
    """

    def __init__(
        self, pinmap: PinMap, *, pin_factory: Any, queue_size: int = 64
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self._pinmap = pinmap
        timing = pinmap.timing
        self._scan_interval_s = timing.scan_interval_ms / 1000.0
        bounce = None if timing.bounce_time_ms is None else timing.bounce_time_ms / 1000
        hold_s = timing.hold_ms / 1000.0
        debounce_s = timing.debounce_ms / 1000.0
        press_debounce_s = timing.press_debounce_ms / 1000.0
        self._queue: asyncio.Queue[PanelEvent | None] = asyncio.Queue(queue_size)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.dropped = 0
        """Events dropped because the queue was full."""

        self._devices: list[Any] = []
        self._buttons: dict[str, Any] = {}
        try:
            for name, pin in pinmap.buttons.fitted().items():
                # DigitalInputDevice rather than Button: holds are ours, and
                # Button's hold thread costs up to 0.1 s per button on close.
                button = DigitalInputDevice(
                    pin, pull_up=True, bounce_time=bounce, pin_factory=pin_factory
                )
                self._devices.append(button)
                self._buttons[name] = button
            self._rows = [
                DigitalOutputDevice(
                    pin, active_high=False, initial_value=False, pin_factory=pin_factory
                )
                for pin in pinmap.keypad.rows
            ]
            self._devices += self._rows
            self._columns = [
                DigitalInputDevice(pin, pull_up=True, pin_factory=pin_factory)
                for pin in pinmap.keypad.columns
            ]
            self._devices += self._columns
            outputs = pinmap.outputs
            ringer_cls = PWMLED if outputs.ringer_pwm else LED
            ringer = ringer_cls(outputs.ringer, pin_factory=pin_factory)
            self._devices.append(ringer)
            ringer_devices = [ringer]
            if outputs.buzzer is not None:
                buzzer = (
                    Buzzer(outputs.buzzer, pin_factory=pin_factory)
                    if outputs.buzzer_tone_hz is None
                    else TonalBuzzer(outputs.buzzer, pin_factory=pin_factory)
                )
                self._devices.append(buzzer)
                ringer_devices.append(buzzer)
            status = LED(outputs.status, pin_factory=pin_factory)
            self._devices.append(status)
        except Exception:
            self._close_devices()
            raise
        self._ringer = _Lamp(
            ringer_devices, outputs.ringer_brightness, outputs.buzzer_tone_hz
        )
        self._status = _Lamp([status])

        hold_names = set(timing.hold_keys)
        self._debouncer = Debouncer(
            self._buttons,
            debounce_s=debounce_s,
            press_debounce_s=press_debounce_s,
            hold_s=hold_s,
            hold_keys=hold_names & (set(self._buttons) - {"hook"}),
        )
        self._scanner = KeypadScanner(
            pinmap.keypad.layout,
            debounce_s=debounce_s,
            press_debounce_s=press_debounce_s,
            hold_s=hold_s,
            hold_keys=hold_names & set("".join(pinmap.keypad.layout)),
        )
        self._timer: asyncio.TimerHandle | None = None
        self._scan_thread: threading.Thread | None = None
        self._stop_scan = threading.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._patterns: dict[str, Cadence | None] = {"ringer": None, "status": None}

    # --- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        """Wire callbacks and start scanning; call from the running event loop."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        for name, button in self._buttons.items():
            button.when_activated = functools.partial(
                self._edge_from_thread, name, True
            )
            button.when_deactivated = functools.partial(
                self._edge_from_thread, name, False
            )
        # Inputs already closed at start-up (a lifted handset) are reported too.
        now = self._loop.time()
        for name, button in self._buttons.items():
            self._debouncer.update(name, bool(button.is_active), now)
        self._schedule()
        if self._rows and self._columns:
            self._scan_thread = threading.Thread(
                target=self._scan_forever, name="keypad-scan", daemon=True
            )
            self._scan_thread.start()

    def close(self) -> None:
        """Stop scanning and blinking, switch the LEDs off and release the pins.

        Idempotent. Pending :meth:`events` iterators end.
        """
        if self._closed:
            return
        self._closed = True
        self._stop_scan.set()
        if self._scan_thread is not None:
            # The scanner sleeps at most one scan interval between checks.
            self._scan_thread.join(timeout=1.0)
        if self._timer is not None:
            self._timer.cancel()
        for task in self._tasks.values():
            task.cancel()
        if self._loop is not None:
            for button in self._buttons.values():
                button.when_activated = None
                button.when_deactivated = None
        self._ringer.set(False)
        self._status.set(False)
        self._close_devices()
        self._offer(None)

    async def aclose(self) -> None:
        """Close, then wait for the LED tasks to finish."""
        self.close()
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> FrontPanelIO:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- inputs -------------------------------------------------------------

    async def events(self) -> AsyncIterator[PanelEvent]:
        """Yield debounced panel events until :meth:`close`."""
        while True:
            event = await self._queue.get()
            if event is None:
                return
            yield event

    def pressed_buttons(self) -> frozenset[str]:
        """Return the buttons currently reported as pressed (debounced)."""
        return self._debouncer.pressed()

    def _edge_from_thread(self, name: str, pressed: bool) -> None:
        # gpiozero's thread: hand over and return (never touch anything else).
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._on_edge, name, pressed)

    def _on_edge(self, name: str, pressed: bool) -> None:
        if self._closed or self._loop is None:
            return
        self._debouncer.update(name, pressed, self._loop.time())
        self._drain_buttons()
        self._schedule()

    def _on_timer(self) -> None:
        self._timer = None
        if self._closed or self._loop is None:
            return
        now = self._loop.time()
        # Re-read the pins: the debouncer decides on the level, not on edges.
        for name in self._debouncer.names:
            self._debouncer.update(name, bool(self._buttons[name].is_active), now)
        self._debouncer.tick(now)
        self._drain_buttons()
        self._schedule()

    def _schedule(self) -> None:
        if self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self._debouncer.next_deadline()
        if self._debouncer.pressed():
            resync = self._loop.time() + _RESYNC_S
            deadline = resync if deadline is None else min(deadline, resync)
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _drain_buttons(self) -> None:
        closed_means_lifted = not self._pinmap.buttons.hook_closed_on_hook
        for event in self._debouncer.events_received():
            if event.key == "hook":
                if isinstance(event, KeyHeld):
                    continue
                lifted = isinstance(event, KeyPressed) == closed_means_lifted
                self._offer(HookLifted(event.at) if lifted else HookReplaced(event.at))
            elif isinstance(event, KeyPressed):
                self._offer(ButtonPressed(event.key, event.at))
            elif isinstance(event, KeyReleased):
                self._offer(ButtonReleased(event.key, event.at, event.held))
            else:
                self._offer(ButtonHeld(event.key, event.at))

    def _offer(self, event: PanelEvent | None) -> None:
        """Put ``event`` on the queue, dropping the oldest if it is full."""
        if self._queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
            self.dropped += 1
            logger.warning("front panel queue full; dropped the oldest event")
        self._queue.put_nowait(event)

    def _scan_forever(self) -> None:
        """Scan the matrix until closed (runs on the keypad-scan thread)."""
        loop = self._loop
        if loop is None:
            return
        next_sweep = time.monotonic()
        while not self._stop_scan.is_set():
            try:
                events = self._sweep(time.monotonic())
            except Exception:
                # A closed device during shutdown or a GPIO fault: log and stop.
                if not self._stop_scan.is_set():
                    logger.exception("keypad scan failed; keypad disabled")
                return
            try:
                for event in events:
                    loop.call_soon_threadsafe(self._offer, event)
            except RuntimeError:
                return  # the loop is closed: nobody is listening any more
            next_sweep += self._scan_interval_s
            delay = next_sweep - time.monotonic()
            if delay < 0:
                # Fell behind (a busy CPU): skip the missed sweeps.
                next_sweep = time.monotonic()
                delay = 0.0
            self._stop_scan.wait(delay)

    def _sweep(self, now: float) -> list[KeyEvent]:
        for index, row in enumerate(self._rows):
            row.on()
            low = {i for i, column in enumerate(self._columns) if column.is_active}
            row.off()
            self._scanner.scan_result(index, low, now)
        self._scanner.tick(now)
        return self._scanner.events_received()

    # --- outputs ------------------------------------------------------------

    def set_ringer(self, pattern: Cadence | None) -> None:
        """Ring the LED (and buzzer) with ``pattern``, or stop with ``None``.

        Setting the pattern that is already running changes nothing, so the
        caller may set it after every state change without restarting it.
        """
        self._set_pattern("ringer", self._ringer, pattern)

    def set_ringer_audible(self, audible: bool) -> None:
        """Let the buzzer sound with the ringer (default), or keep it silent.

        The ringer LED flashes either way. Takes effect at once, mid-ring too.
        """
        if not self._closed:
            self._ringer.set_audible(audible)

    def set_status_led(self, mode: StatusMode | str) -> None:
        """Set the status LED: ``"off"``, ``"steady"``, ``"slow"`` or ``"fast"``.

        Raises:
            ValueError: unknown mode.
        """
        try:
            pattern = _STATUS_PATTERNS[str(mode)]
        except KeyError:
            raise ValueError(f"unknown status LED mode {mode!r}") from None
        self._set_pattern("status", self._status, pattern)

    def _set_pattern(self, name: str, lamp: _Lamp, pattern: Cadence | None) -> None:
        if self._closed:
            return
        if pattern == self._patterns[name] and (pattern is None or name in self._tasks):
            return
        self._patterns[name] = pattern
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
        if pattern is None:
            lamp.set(False)
            return
        task = asyncio.get_running_loop().create_task(
            self._run_cadence(lamp, pattern), name=f"front-panel-{name}"
        )
        self._tasks[name] = task
        task.add_done_callback(functools.partial(self._task_done, name))

    def _task_done(self, name: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(name) is task:
            del self._tasks[name]
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s LED task failed", name, exc_info=task.exception())

    @staticmethod
    async def _run_cadence(lamp: _Lamp, pattern: Cadence) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            elapsed = loop.time() - start
            lamp.set(cadence_is_on(pattern, elapsed))
            change = cadence_next_change(pattern, elapsed)
            if math.isinf(change):
                # A constant pattern: stay in this state until cancelled.
                await asyncio.Event().wait()
            await asyncio.sleep(change - elapsed)

    def _close_devices(self) -> None:
        for device in reversed(self._devices):
            device.close()
        self._devices.clear()
