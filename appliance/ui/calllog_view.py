"""The panel's desk-phone extras, pure: the call log browser, the idle
screen's clock and network bars, and do-not-disturb.

:class:`~appliance.ui.panel.Panel` holds one :class:`DeskState` and hands its
gestures here; keeping these rules beside the panel rather than in it keeps
the call state machine readable. Like the panel, nothing here reads a clock or
a file: the adapter passes the time as text (:func:`format_clock`, from a
``datetime`` it read) and the log as :class:`LogItem` values
(:func:`log_item`, from :class:`~appliance.calllog.core.Entry`).

Keys (documented for users in ``docs/panel.md``):

* **Mute** on the idle screen opens the call log at the newest call and marks
  the missed calls seen; on the log, Mute or **8** moves to the next older
  call, **2** to the newer one (both wrap around).
* **Accept** (or lifting the handset) on the log calls the selected entry back.
* **Hangup** or replacing the handset leaves the log.
* Holding **#** on the idle screen turns do-not-disturb on or off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from appliance.calllog.core import Direction, Entry

__all__ = [
    "DND_MODES",
    "MINUTE_MARGIN_S",
    "DeskState",
    "LogItem",
    "bars_for",
    "format_clock",
    "log_item",
    "until_next_minute",
]

#: ``ui.dnd_mode``: decline as busy (the caller hears it at once) or ignore
#: (the caller rings on until they give up). Either way the call is missed.
DND_MODES = ("busy", "ignore")


@dataclass(frozen=True)
class LogItem:
    """One log entry as the OLED shows it.

    Attributes:
        remote: what Accept dials back (``client:NAME`` or a number).
        kind: ``in``, ``out`` or ``missed``.
        when: the time it started, as shown (``--`` when the clock was not
            synchronised then).
        duration_s: how long it was connected.
        unseen: a missed call nobody had looked at when the log was opened.
    """

    remote: str
    kind: str
    when: str
    duration_s: float = 0.0
    unseen: bool = False


def log_item(entry: Entry, started: datetime, today: datetime | None) -> LogItem:
    """Show ``entry`` (which started at local time ``started``).

    Calls of ``today`` show the time only, older ones the date; ``today``
    None means the clock is not synchronised now, and an entry whose clock
    was not synchronised shows ``--``.
    """
    kind = {Direction.INCOMING: "in", Direction.OUTGOING: "out"}.get(
        entry.direction, "missed"
    )
    if not entry.clock_known:
        when = "--"
    elif today is not None and started.date() == today.date():
        when = started.strftime("%H:%M")
    else:
        when = started.strftime("%d %b")
    return LogItem(entry.remote, kind, when, entry.duration_s, not entry.seen)


def format_clock(now: datetime | None) -> tuple[str, str]:
    """The idle screen's time and date; ``("--:--", "clock not set")`` when
    the clock is not synchronised (``now`` None)."""
    if now is None:
        return "--:--", "clock not set"
    return now.strftime("%H:%M"), now.strftime("%a %d %b %Y")


#: How far past the minute the clock is redrawn: enough that a wake-up a
#: little early on a loaded machine still reads the new minute.
MINUTE_MARGIN_S = 0.05


def until_next_minute(wall: float) -> float:
    """Seconds from ``wall`` (epoch seconds) until just after the next minute
    starts, when the idle clock is to be redrawn. Minutes start on multiples of
    60 epoch seconds in every time zone with whole-minute offsets (all of them
    today)."""
    return 60.0 - wall % 60.0 + MINUTE_MARGIN_S


def bars_for(mos: float | None, rtt_s: float | None = None) -> int | None:
    """Network bars (0-3) from the last call's MOS, else a round-trip time.

    MOS thresholds follow the usual reading of the E-model score: 4.0 and up
    is good, 3.5 (where Twilio raises its ``low-mos`` warning) fair, 2.5 poor.
    The round-trip fallback uses 150 ms (the ITU's one-way comfort figure
    doubled is 300 ms), 400 ms (Twilio's ``high-rtt`` threshold) and 1 s.
    None: nothing known.
    """
    if mos is not None:
        return 3 if mos >= 4.0 else 2 if mos >= 3.5 else 1 if mos >= 2.5 else 0
    if rtt_s is not None:
        return 3 if rtt_s < 0.15 else 2 if rtt_s < 0.4 else 1 if rtt_s < 1.0 else 0
    return None


@dataclass
class DeskState:
    """What the panel knows of the log, the clock, the network and DND."""

    items: tuple[LogItem, ...] = ()
    unseen_missed: int = 0
    selected: int = 0
    clock: tuple[str, str] = field(default_factory=lambda: format_clock(None))
    bars: int | None = None
    dnd: bool = False
    dnd_silent: bool = False

    def open_log(self) -> bool:
        """Start browsing at the newest entry; False when the log is empty.

        The missed calls count as seen from here on.
        """
        self.selected = 0
        self.unseen_missed = 0
        return bool(self.items)

    def scroll(self, step: int) -> None:
        """Move the selection ``step`` entries older (negative: newer), wrapping."""
        if self.items:
            self.selected = (self.selected + step) % len(self.items)

    def selected_remote(self) -> str:
        """What Accept calls back ("" when there is nothing to call)."""
        if 0 <= self.selected < len(self.items):
            return self.items[self.selected].remote
        return ""

    def set_items(self, items: tuple[LogItem, ...], unseen_missed: int) -> None:
        """A new log: keep the selection on the same position, within bounds."""
        self.items = items
        self.unseen_missed = unseen_missed
        self.selected = min(self.selected, max(len(items) - 1, 0))
