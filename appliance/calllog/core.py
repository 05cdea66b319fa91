"""What a call-log entry is, decided from a call's events (pure).

A desk phone's log has three kinds of entry: calls we placed (outgoing),
calls we answered (incoming) and calls that rang here and were never answered
by us (missed: the caller gave up, we rejected or ignored it, do-not-disturb
declined it, or another phone answered first). The decision only needs the
order of the events, so it lives here, away from the engine and the database:
:class:`CallTracker` takes ``offered``/``placed``, ``answered`` and ``ended``
(rejected, cancelled and disconnected all end a call) with the time as input
and returns the finished :class:`Entry`.

Two clocks are inputs: ``wall`` (seconds since the epoch, for the time shown
in the log; it may be wrong before the clock is synchronised, which is
recorded) and ``now`` (monotonic, for durations, which a clock step must not
stretch).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["CallTracker", "Direction", "Entry"]


class Direction(StrEnum):
    """The kind of a log entry."""

    INCOMING = "incoming"
    OUTGOING = "outgoing"
    MISSED = "missed"


@dataclass(frozen=True)
class Entry:
    """One finished call.

    Attributes:
        started: wall time the call was offered or placed (epoch seconds).
        direction: incoming, outgoing or missed.
        remote: the other party as the gateway named it (``client:NAME`` or a
            number); what Accept dials back.
        duration_s: seconds connected (0 for a call never connected).
        clock_known: whether the wall clock was synchronised at ``started``.
        seen: a missed call someone has looked at on the panel (always True
            for the other kinds).
        mos: the call's last quality score (1.0-4.5), if it was measured.
        codec: the audio codec sent, once the call connected.
        jitter_ms: the call's last receive jitter, if it was measured.
        loss_percent: packets lost over the call, as a percentage of those
            expected, if it was measured.
    """

    started: float
    direction: Direction
    remote: str
    duration_s: float = 0.0
    clock_known: bool = True
    seen: bool = True
    mos: float | None = None
    codec: str | None = None
    jitter_ms: float | None = None
    loss_percent: float | None = None


@dataclass
class _Open:
    incoming: bool
    remote: str
    started: float
    clock_known: bool
    answered_at: float | None = None
    codec: str | None = None


class CallTracker:
    """Follows calls by id and says what each became once it ends.

    Example::

        tracker = CallTracker()
        tracker.offered("CA1", "client:alice", wall=1.7e9)
        tracker.ended("CA1", now=25.0)   # -> Entry(direction=MISSED, ...)
    """

    def __init__(self) -> None:
        self._calls: dict[str, _Open] = {}

    def offered(
        self, call_id: str, remote: str, *, wall: float, clock_known: bool = True
    ) -> None:
        """An incoming call from ``remote`` started ringing (or was declined)."""
        self._calls.setdefault(call_id, _Open(True, remote, wall, clock_known))

    def placed(
        self, call_id: str, remote: str, *, wall: float, clock_known: bool = True
    ) -> None:
        """We placed a call to ``remote``."""
        self._calls.setdefault(call_id, _Open(False, remote, wall, clock_known))

    def answered(self, call_id: str, *, now: float, codec: str | None = None) -> None:
        """The call connected (we answered it, or they answered ours) with
        ``codec``."""
        call = self._calls.get(call_id)
        if call is not None and call.answered_at is None:
            call.answered_at = now
            call.codec = codec

    def ended(
        self,
        call_id: str,
        *,
        now: float,
        mos: float | None = None,
        jitter_ms: float | None = None,
        loss_percent: float | None = None,
    ) -> Entry | None:
        """The call ended in any way; returns its entry (None: unknown id).

        The quality figures (the newest of the call's samples) are kept only
        for a call that connected.
        """
        call = self._calls.pop(call_id, None)
        if call is None:
            return None
        if not call.incoming:
            direction = Direction.OUTGOING
        elif call.answered_at is None:
            direction = Direction.MISSED
        else:
            direction = Direction.INCOMING
        connected = call.answered_at is not None
        duration = 0.0 if call.answered_at is None else max(0.0, now - call.answered_at)
        return Entry(
            started=call.started,
            direction=direction,
            remote=call.remote,
            duration_s=duration,
            clock_known=call.clock_known,
            seen=direction is not Direction.MISSED,
            mos=mos if connected else None,
            codec=call.codec,
            jitter_ms=jitter_ms if connected else None,
            loss_percent=loss_percent if connected else None,
        )

    def open_calls(self) -> int:
        """How many calls are being followed."""
        return len(self._calls)
