"""The start-up heap leaves the collector's passes; later garbage does not."""

from __future__ import annotations

import gc
import weakref

from appliance.system.heap import freeze_startup_heap


class Node:
    """A reference cycle: only the cyclic collector can free it."""

    def __init__(self) -> None:
        self.me = self


def test_what_exists_at_freeze_is_exempt_and_later_garbage_is_collected() -> None:
    before = Node()
    watch_before = weakref.ref(before)
    assert freeze_startup_heap() >= 1
    after = Node()
    watch_after = weakref.ref(after)
    del before, after  # both are now unreachable cycles

    gc.collect()
    assert watch_after() is None  # made after the freeze: collected
    assert watch_before() is not None  # frozen: no pass visits it
    gc.unfreeze()
    gc.collect()
    assert watch_before() is None  # unfrozen, it is ordinary garbage again
