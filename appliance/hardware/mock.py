"""A finger and eyes for a front panel on gpiozero's mock pins (a fake, as MockFactory).

gpiozero ships ``MockFactory`` for pins; a membrane keypad is a matrix, so a
held key must short a row output to a column input. :class:`MockPanelHardware`
makes the keypad rows its own pin class, which re-evaluates the columns
whenever a row changes, and offers presses and taps of keys and buttons and
the LED states. The composition root builds it for ``ui.pin_factory = "mock"``
(the simulator, tests); a real phone never does.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPWMPin

from appliance.hardware.pinmap import PinMap

__all__ = ["GAP_S", "HOLD_S", "TAP_S", "MockPanelHardware"]

#: How long a simulated finger holds a key: past the 20 ms debounce with margin.
TAP_S = 0.06
#: Pause after a release, so consecutive taps of one key are two presses.
GAP_S = 0.04
#: A hold on Hangup (the pin map's hold time is 1 s).
HOLD_S = 1.3


class _RowPin(MockPWMPin):  # type: ignore[misc]  # gpiozero has no type hints
    """A keypad row output that re-evaluates the column levels when it changes."""

    def __init__(self, factory: Any, info: Any, keypad: MockPanelHardware) -> None:
        super().__init__(factory, info)
        self._keypad = keypad

    def _change_state(self, value: Any) -> bool:
        changed = bool(super()._change_state(value))
        self._keypad.refresh_columns()
        return changed


class MockPanelHardware:
    """A finger and eyes for one front panel on gpiozero's MockFactory.

    Create it *before* :class:`FrontPanelIO` with the same factory: the keypad
    rows must be this class's pins, which short a row to a column while a key
    is held, as a membrane keypad does.

    Args:
        pinmap: the build.
        factory: a ``MockFactory(pin_class=MockPWMPin)``; a new one if omitted.
    """

    def __init__(self, pinmap: PinMap, factory: Any | None = None) -> None:
        self.pinmap = pinmap
        self.factory = factory or MockFactory(pin_class=MockPWMPin)
        self._lock = threading.Lock()
        self._held: set[str] = set()
        self._positions: dict[str, tuple[int, int]] = {
            key: (r, c)
            for r, row in enumerate(pinmap.keypad.layout)
            for c, key in enumerate(row)
        }
        self._rows = [
            self.factory.pin(pin, pin_class=_RowPin, keypad=self)
            for pin in pinmap.keypad.rows
        ]

    def pin(self, role: str) -> Any:
        """The mock pin of a button (``accept``) or output (``ringer``)."""
        outputs = self.pinmap.outputs
        fitted = {**self.pinmap.buttons.fitted(), "ringer": outputs.ringer}
        fitted["status"] = outputs.status
        if role not in fitted:
            raise KeyError(f"no pin for {role!r} in this build")
        return self.factory.pin(fitted[role])

    def led(self, role: str) -> bool:
        """Whether the ``ringer`` or ``status`` LED is lit."""
        return bool(self.pin(role).state)

    def refresh_columns(self) -> None:
        """Drive each column low while a held key connects it to a low row."""
        with self._lock:
            low: set[int] = set()
            for key in self._held:
                r, c = self._positions[key]
                if r < len(self._rows) and not self._rows[r].state:
                    low.add(c)
            for c, pin_number in enumerate(self.pinmap.keypad.columns):
                column = self.factory.pin(pin_number)
                if column.function != "input":
                    continue
                if c in low:
                    column.drive_low()
                else:
                    column.drive_high()

    def press_key(self, key: str) -> None:
        """Put a finger on a keypad key."""
        if key not in self._positions:
            raise KeyError(f"no key {key!r} on this keypad")
        with self._lock:
            self._held.add(key)
        self.refresh_columns()

    def release_key(self, key: str) -> None:
        """Lift the finger from a keypad key."""
        with self._lock:
            self._held.discard(key)
        self.refresh_columns()

    def press_button(self, name: str) -> None:
        """Close a button (or the hook switch) to ground."""
        self.pin(name).drive_low()

    def release_button(self, name: str) -> None:
        """Open a button (or the hook switch)."""
        self.pin(name).drive_high()

    async def tap_key(self, key: str, hold_s: float = TAP_S) -> None:
        """Press and release a keypad key."""
        self.press_key(key)
        await asyncio.sleep(hold_s)
        self.release_key(key)
        await asyncio.sleep(GAP_S)

    async def tap_button(self, name: str, hold_s: float = TAP_S) -> None:
        """Press and release a button."""
        self.press_button(name)
        await asyncio.sleep(hold_s)
        self.release_button(name)
        await asyncio.sleep(GAP_S)
