"""Matrix keypad scanning logic and a generic debouncer (pure).

Theory of operation
-------------------
A 4x3 membrane keypad has no diodes. The adapter (``gpio.py``) drives one row
low at a time, reads which columns are pulled low through a closed key, and
reports each reading with :meth:`KeypadScanner.scan_result`. The scanner keeps
the latest raw reading of every row and derives three things from it:

* **Debounce.** A key's reported state changes only after its raw state has
  been stable for a while: ``press_debounce_s`` (default 5 ms) before a press
  is reported, ``debounce_s`` (default 20 ms) before a release. Contacts bounce
  for a few milliseconds on make and break; a change that reverts within the
  window is never reported. The short press window keeps key-to-tone latency
  low (the target is under 20 ms); the long release window is what prevents a
  bouncing release from reading as a second press.
* **Ghosting.** Without diodes, three closed keys on three corners of a
  rectangle (rows r1, r2 and columns c1, c2) connect the fourth corner too, so
  it reads as pressed although nobody touched it. The scanner cannot tell the
  phantom from a real press, so when three or more corners of any rectangle
  read as closed, *all* keys of that rectangle are ambiguous: none of them
  changes its reported state (no new presses, no releases) until the
  ambiguity clears. A single press, or two presses that share a row or a
  column, never form a rectangle and are always reported.
* **Hold.** A key that stays pressed for ``hold_s`` emits one
  :class:`KeyHeld` (only for keys listed in ``hold_keys``; ``None`` means
  every key).

:class:`Debouncer` is the same debounce-and-hold logic for inputs that are not
in a matrix (push buttons, the hook switch); ``gpio.py`` feeds it raw edges.

Outputs are drained with :meth:`events_received`. :meth:`next_deadline` tells
the adapter when to call :meth:`tick` even if no new reading arrives.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from appliance.hardware.ports import KeyEvent, KeyHeld, KeyPressed, KeyReleased

__all__ = [
    "DEFAULT_LAYOUT",
    "Debouncer",
    "KeyEvent",
    "KeyHeld",
    "KeyPressed",
    "KeyReleased",
    "KeypadScanner",
]

#: The usual 4x3 telephone layout (ITU-T E.161), rows top to bottom.
DEFAULT_LAYOUT: tuple[str, ...] = ("123", "456", "789", "*0#")


@dataclass
class _Input:
    """Per-input debounce state."""

    raw: bool = False
    raw_since: float = 0.0
    reported: bool = False
    pressed_at: float = 0.0
    held: bool = False


class Debouncer:
    """Debounce and hold detection for a set of named two-state inputs.

    Feed raw readings with :meth:`update` (as often as you like; repeated
    identical readings are harmless) and call :meth:`tick` at
    :meth:`next_deadline`. Then drain :meth:`events_received`.

    Args:
        names: the inputs, e.g. ``("ready", "hangup")``.
        debounce_s: how long a release must be stable before it is reported.
        hold_s: how long a press must last to emit :class:`KeyHeld`.
        hold_keys: the inputs that report holds; ``None`` means all.
        press_debounce_s: how long a press must be stable before it is
            reported; ``None`` means ``debounce_s``.
    """

    def __init__(
        self,
        names: Iterable[str],
        *,
        debounce_s: float = 0.02,
        hold_s: float = 1.0,
        hold_keys: Collection[str] | None = None,
        press_debounce_s: float | None = None,
    ) -> None:
        if debounce_s < 0 or (press_debounce_s is not None and press_debounce_s < 0):
            raise ValueError("debounce times must not be negative")
        if hold_s <= 0:
            raise ValueError("hold_s must be positive")
        self._inputs = {name: _Input() for name in names}
        self._debounce_s = debounce_s
        self._press_debounce_s = (
            debounce_s if press_debounce_s is None else press_debounce_s
        )
        self._hold_s = hold_s
        self._hold_keys = None if hold_keys is None else frozenset(hold_keys)
        self._events: list[KeyEvent] = []
        self._frozen: frozenset[str] = frozenset()

    @property
    def names(self) -> tuple[str, ...]:
        """The inputs in construction order."""
        return tuple(self._inputs)

    def is_pressed(self, name: str) -> bool:
        """Return the reported (debounced) state of ``name``."""
        return self._inputs[name].reported

    def pressed(self) -> frozenset[str]:
        """Return every input currently reported as pressed."""
        return frozenset(n for n, s in self._inputs.items() if s.reported)

    def update(self, name: str, raw_pressed: bool, now: float) -> None:
        """Record a raw reading of ``name`` at ``now`` and evaluate it.

        Raises:
            KeyError: ``name`` is not one of the inputs.
        """
        state = self._inputs[name]
        if raw_pressed != state.raw:
            state.raw = raw_pressed
            state.raw_since = now
        self._evaluate(name, state, now)

    def freeze(self, names: Collection[str]) -> None:
        """Keep the reported state of ``names`` unchanged until unfrozen.

        Used for ghosting: ambiguous keys neither press nor release. Pass an
        empty collection to unfreeze everything.
        """
        self._frozen = frozenset(names)

    def tick(self, now: float) -> None:
        """Evaluate pending debounce and hold timers at ``now``."""
        for name, state in self._inputs.items():
            self._evaluate(name, state, now)

    def next_deadline(self) -> float | None:
        """Return when :meth:`tick` has something to do, or ``None``."""
        deadlines: list[float] = []
        for name, state in self._inputs.items():
            if name in self._frozen:
                continue
            if state.raw != state.reported:
                deadlines.append(state.raw_since + self._stable_s(state.raw))
            elif state.reported and not state.held and self._holds(name):
                deadlines.append(state.pressed_at + self._hold_s)
        return min(deadlines, default=None)

    def events_received(self) -> list[KeyEvent]:
        """Return and clear the events produced so far."""
        events, self._events = self._events, []
        return events

    def _stable_s(self, pressed: bool) -> float:
        return self._press_debounce_s if pressed else self._debounce_s

    def _holds(self, name: str) -> bool:
        return self._hold_keys is None or name in self._hold_keys

    def _evaluate(self, name: str, state: _Input, now: float) -> None:
        if name in self._frozen:
            return
        if state.raw != state.reported and now - state.raw_since >= self._stable_s(
            state.raw
        ):
            state.reported = state.raw
            if state.reported:
                state.pressed_at = now
                state.held = False
                self._events.append(KeyPressed(name, now))
            else:
                self._events.append(KeyReleased(name, now, state.held))
                state.held = False
        if (
            state.reported
            and not state.held
            and self._holds(name)
            and now - state.pressed_at >= self._hold_s
        ):
            state.held = True
            self._events.append(KeyHeld(name, now))


class KeypadScanner:
    """Turn row-by-row matrix readings into key events.

    Example::

        scanner = KeypadScanner()
        scanner.scan_result(0, {1}, now=0.000)    # row 0 driven, column 1 low
        scanner.scan_result(0, {1}, now=0.025)
        scanner.events_received()                 # [KeyPressed("2", 0.025)]

    Args:
        layout: one string per row, one character per column.
        debounce_s: stable time before a release is reported (20 ms default).
        hold_s: press duration that emits :class:`KeyHeld`.
        hold_keys: the keys that report holds; ``None`` means all.
        press_debounce_s: stable time before a press is reported; ``None``
            means ``debounce_s``.
    """

    def __init__(
        self,
        layout: Sequence[str] = DEFAULT_LAYOUT,
        *,
        debounce_s: float = 0.02,
        hold_s: float = 1.0,
        hold_keys: Collection[str] | None = None,
        press_debounce_s: float | None = None,
    ) -> None:
        if not layout or not layout[0]:
            raise ValueError("keypad layout must have at least one row and column")
        if any(len(row) != len(layout[0]) for row in layout):
            raise ValueError("every keypad row must have the same number of keys")
        keys = "".join(layout)
        if len(set(keys)) != len(keys):
            raise ValueError("keypad layout repeats a key")
        self._layout = tuple(layout)
        self._columns = len(layout[0])
        self._rows_low: list[frozenset[int]] = [frozenset()] * len(layout)
        self._debouncer = Debouncer(
            keys,
            debounce_s=debounce_s,
            hold_s=hold_s,
            hold_keys=hold_keys,
            press_debounce_s=press_debounce_s,
        )

    @property
    def rows(self) -> int:
        """Number of rows (outputs)."""
        return len(self._layout)

    @property
    def columns(self) -> int:
        """Number of columns (inputs)."""
        return self._columns

    def key_at(self, row: int, column: int) -> str:
        """Return the key at ``row``, ``column``."""
        return self._layout[row][column]

    def pressed(self) -> frozenset[str]:
        """Return the keys currently reported as pressed."""
        return self._debouncer.pressed()

    def scan_result(self, row: int, columns_low: Collection[int], now: float) -> None:
        """Record that, with ``row`` driven low, ``columns_low`` read low.

        Call this once per row per sweep, then drain :meth:`events_received`.

        Raises:
            ValueError: the row or a column is out of range.
        """
        if not 0 <= row < len(self._layout):
            raise ValueError(f"row {row} out of range")
        low = frozenset(columns_low)
        if any(not 0 <= c < self._columns for c in low):
            raise ValueError(f"column out of range in {sorted(low)}")
        self._rows_low[row] = low
        self._debouncer.freeze(self._ambiguous())
        for column in range(self._columns):
            self._debouncer.update(self._layout[row][column], column in low, now)

    def tick(self, now: float) -> None:
        """Evaluate debounce and hold timers without a new reading."""
        self._debouncer.tick(now)

    def next_deadline(self) -> float | None:
        """Return when :meth:`tick` has something to do, or ``None``."""
        return self._debouncer.next_deadline()

    def events_received(self) -> list[KeyEvent]:
        """Return and clear the key events produced so far."""
        return self._debouncer.events_received()

    def _ambiguous(self) -> set[str]:
        """Return the keys of every rectangle with three or more closed corners."""
        ambiguous: set[str] = set()
        rows = self._rows_low
        for r1 in range(len(rows)):
            for r2 in range(r1 + 1, len(rows)):
                if len(rows[r1]) + len(rows[r2]) < 3:
                    continue
                union = sorted(rows[r1] | rows[r2])
                for i, c1 in enumerate(union):
                    for c2 in union[i + 1 :]:
                        corners = [(r1, c1), (r1, c2), (r2, c1), (r2, c2)]
                        closed = [(r, c) for r, c in corners if c in rows[r]]
                        if len(closed) >= 3:
                            ambiguous.update(self._layout[r][c] for r, c in corners)
        return ambiguous
