"""The front panel's seam: what its inputs report, what may be asked of its outputs.

The panel controller (``appliance.ui.controller``) sees the hardware only
through this module: the events the buttons, hook switch and keypad report
(frozen facts, past tense, with the time they were confirmed), and the
:class:`PanelIO` and :class:`FrameSink` Protocols. The real implementations
are :class:`~appliance.hardware.gpio.FrontPanelIO` (gpiozero) and
:class:`~appliance.hardware.display.Display` (luma); the composition root
picks them, and a test may hand in anything with these methods. Pure: no
I/O, no threads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

from PIL import Image

from appliance.cadence import Cadence

__all__ = [
    "ButtonHeld",
    "ButtonPressed",
    "ButtonReleased",
    "FrameSink",
    "HookLifted",
    "HookReplaced",
    "KeyEvent",
    "KeyHeld",
    "KeyPressed",
    "KeyReleased",
    "PanelEvent",
    "PanelIO",
    "StatusMode",
]

#: What the status LED shows: off, steady, or blinking slowly or fast.
StatusMode = Literal["off", "steady", "slow", "fast"]


@dataclass(frozen=True)
class KeyPressed:
    """A key (or named input) went down; ``at`` is when the press was confirmed."""

    key: str
    at: float


@dataclass(frozen=True)
class KeyReleased:
    """A key went up; ``held`` tells whether a :class:`KeyHeld` was emitted."""

    key: str
    at: float
    held: bool = False


@dataclass(frozen=True)
class KeyHeld:
    """A key has been down for the hold time (emitted once per press)."""

    key: str
    at: float


KeyEvent = KeyPressed | KeyReleased | KeyHeld


@dataclass(frozen=True)
class ButtonPressed:
    """A front-panel button went down (debounced)."""

    button: str
    at: float


@dataclass(frozen=True)
class ButtonReleased:
    """A button went up; ``held`` tells whether :class:`ButtonHeld` was sent."""

    button: str
    at: float
    held: bool = False


@dataclass(frozen=True)
class ButtonHeld:
    """A button has been held for the hold time."""

    button: str
    at: float


@dataclass(frozen=True)
class HookLifted:
    """The handset was lifted (off hook)."""

    at: float


@dataclass(frozen=True)
class HookReplaced:
    """The handset was put back (on hook)."""

    at: float


PanelEvent = (
    KeyPressed
    | KeyReleased
    | KeyHeld
    | ButtonPressed
    | ButtonReleased
    | ButtonHeld
    | HookLifted
    | HookReplaced
)


class PanelIO(Protocol):
    """The buttons, keypad and LEDs as the panel controller uses them."""

    def events(self) -> AsyncIterator[PanelEvent]:
        """The debounced input events, in order, on the event loop."""
        ...

    def set_ringer(self, pattern: Cadence | None) -> None:
        """Ring with ``pattern`` (None: off); the same pattern again is a no-op."""
        ...

    def set_ringer_audible(self, audible: bool) -> None:
        """Whether the buzzer sounds with the ringer LED (ringer volume 0)."""
        ...

    def set_status_led(self, mode: StatusMode | str) -> None:
        """Show ``mode`` on the status LED."""
        ...


class FrameSink(Protocol):
    """The OLED as the panel controller uses it."""

    def show(self, image: Image.Image) -> None:
        """Show ``image`` soon (frames may be coalesced); never blocks."""
        ...
