"""CallTracker: what each sequence of call events becomes in the log."""

from appliance.calllog.core import CallTracker, Direction


def test_an_answered_incoming_call_is_incoming_with_its_connected_time() -> None:
    tracker = CallTracker()
    tracker.offered("a", "client:bob", wall=1000.0)
    tracker.answered("a", now=12.0, codec="opus")
    entry = tracker.ended("a", now=42.5, mos=4.2, jitter_ms=3.5, loss_percent=0.25)
    assert entry is not None
    assert (entry.codec, entry.jitter_ms, entry.loss_percent) == ("opus", 3.5, 0.25)
    assert (entry.direction, entry.remote, entry.started) == (
        Direction.INCOMING,
        "client:bob",
        1000.0,
    )
    assert entry.duration_s == 30.5
    assert entry.seen and entry.mos == 4.2
    assert tracker.open_calls() == 0


def test_an_incoming_call_never_answered_is_missed_and_unseen() -> None:
    # Cancelled by the caller, rejected or ignored here: all end unanswered.
    tracker = CallTracker()
    tracker.offered("a", "+15551234", wall=5.0, clock_known=False)
    entry = tracker.ended("a", now=9.0, mos=3.0, jitter_ms=1.0, loss_percent=0.0)
    assert entry is not None
    assert entry.direction is Direction.MISSED
    assert (entry.codec, entry.jitter_ms, entry.loss_percent) == (None, None, None)
    assert (entry.duration_s, entry.seen, entry.mos, entry.clock_known) == (
        0.0,
        False,
        None,
        False,
    )


def test_outgoing_calls_are_outgoing_answered_or_not() -> None:
    tracker = CallTracker()
    tracker.placed("a", "client:carol", wall=1.0)
    tracker.placed("b", "client:dave", wall=2.0)
    tracker.answered("b", now=3.0)
    unanswered = tracker.ended("a", now=4.0)
    answered = tracker.ended("b", now=13.0)
    assert unanswered is not None and answered is not None
    assert unanswered.direction is answered.direction is Direction.OUTGOING
    assert (unanswered.duration_s, answered.duration_s) == (0.0, 10.0)


def test_an_end_is_counted_once_and_unknown_calls_are_ignored() -> None:
    tracker = CallTracker()
    tracker.offered("a", "x", wall=0.0)
    tracker.answered("a", now=1.0)
    tracker.answered("a", now=5.0)  # a repeated accept does not restart the timer
    first = tracker.ended("a", now=6.0)
    assert first is not None and first.duration_s == 5.0
    assert tracker.ended("a", now=7.0) is None
    assert tracker.ended("never", now=7.0) is None
    tracker.answered("never", now=1.0)
    assert tracker.open_calls() == 0
