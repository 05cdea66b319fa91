"""Deadlines of the exchange core in a heap: O(log n) to set, O(1) to peek.

Why: the core used to find its next deadline by scanning every session and
call, after every frame. With n phones registered that is O(n) per frame and
O(n^2) per heartbeat round, which held a core at 55 % with 2000 idle phones.
Here each timer is a key (``("heartbeat", sid)``, ``("ring", call_sid)``...)
with one deadline. Setting a key pushes an entry; cancelling or moving one
only updates the map, and the entry left in the heap is skipped when it
surfaces (lazy deletion), so no operation searches the heap.

Stale entries are bounded: each :meth:`TimerHeap.set` adds one, and the
core sets at most a few timers per session per heartbeat interval.

Pure: no I/O, no clock; times are the caller's monotonic seconds.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["TimerHeap"]

K = TypeVar("K", bound=Hashable)


class TimerHeap(Generic[K]):
    """Named deadlines, earliest first.

    Example::

        timers: TimerHeap[tuple[str, int]] = TimerHeap()
        timers.set(("heartbeat", 1), 5.0)
        timers.next_deadline()  # 5.0
        timers.pop_due(6.0)  # [("heartbeat", 1)]
    """

    def __init__(self) -> None:
        self._due: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._due)

    @property
    def entries(self) -> int:
        """Entries in the heap, stale ones included (bounded by compaction)."""
        return len(self._heap)

    def set(self, key: K, when: float) -> None:
        """Arm ``key`` for ``when``, replacing its previous deadline if any."""
        if self._due.get(key) == when:
            return
        self._due[key] = when
        heapq.heappush(self._heap, (when, next(self._order), key))
        if len(self._heap) > 4 * len(self._due) + 64:
            self._compact()

    def cancel(self, key: K) -> None:
        """Disarm ``key`` (nothing happens if it is not armed)."""
        self._due.pop(key, None)

    def get(self, key: K) -> float | None:
        """The deadline of ``key``, if armed."""
        return self._due.get(key)

    def next_deadline(self) -> float | None:
        """The earliest armed deadline, if any."""
        heap = self._heap
        while heap:
            when, _, key = heap[0]
            if self._due.get(key) == when:
                return when
            heapq.heappop(heap)  # cancelled or moved since it was pushed
        return None

    def pop_due(self, now: float) -> list[K]:
        """Disarm and return the keys due at ``now``, earliest first."""
        due: list[K] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, key = heapq.heappop(heap)
            if self._due.get(key) == when:
                del self._due[key]
                due.append(key)
        return due

    def _compact(self) -> None:
        """Drop stale entries when they outnumber the live ones."""
        self._heap = [e for e in self._heap if self._due.get(e[2]) == e[0]]
        heapq.heapify(self._heap)
