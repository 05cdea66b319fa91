"""TimerHeap: named deadlines with lazy deletion."""

from __future__ import annotations

import random

from appliance.exchange.timers import TimerHeap


def test_earliest_first_and_pop_due():
    timers: TimerHeap[str] = TimerHeap()
    timers.set("b", 2.0)
    timers.set("a", 1.0)
    timers.set("c", 3.0)
    assert timers.next_deadline() == 1.0
    assert timers.pop_due(2.5) == ["a", "b"]
    assert timers.next_deadline() == 3.0
    assert len(timers) == 1


def test_moving_and_cancelling_skip_stale_entries():
    timers: TimerHeap[str] = TimerHeap()
    timers.set("a", 1.0)
    timers.set("a", 5.0)  # moved later
    timers.set("b", 2.0)
    timers.cancel("b")
    assert timers.next_deadline() == 5.0
    assert timers.pop_due(4.0) == []
    assert timers.pop_due(5.0) == ["a"]
    assert timers.next_deadline() is None


def test_matches_a_scan_under_random_operations():
    rng = random.Random(5)
    timers: TimerHeap[int] = TimerHeap()
    model: dict[int, float] = {}
    now = 0.0
    for _ in range(20_000):
        key = rng.randrange(200)
        action = rng.random()
        if action < 0.6:
            when = now + rng.uniform(0, 10)
            timers.set(key, when)
            model[key] = when
        elif action < 0.8:
            timers.cancel(key)
            model.pop(key, None)
        else:
            now += rng.uniform(0, 2)
            due = timers.pop_due(now)
            expected = sorted((w, k) for k, w in model.items() if w <= now)
            assert sorted(due) == sorted(k for _, k in expected)
            for k in due:
                del model[k]
        assert timers.next_deadline() == min(model.values(), default=None)
    # Stale entries are compacted, not kept for ever.
    assert timers.entries <= 4 * len(model) + 64 + 1
