"""Give the C allocator's free pages back to the system once a call is over.

Each call builds and drops a great deal of native memory: aiortc's peer
connection, its DTLS certificate and OpenSSL contexts, the Opus codec states,
PyAV frames, and the ALSA I/O threads' buffers. Python frees all of it when the
call's objects are gone (a tracemalloc comparison over 150 calls found no
Python-level growth, docs/soak.md), yet the phone's RSS climbed in steps of a
few hundred kilobytes call after call. glibc's malloc keeps freed memory in
its heaps and returns it to the kernel only from the very top of a heap
(``M_TRIM_THRESHOLD``); a block still in use above a freed region pins the
whole region, and every thread that allocates gets an arena of its own. So
the pages a call freed stay resident, scattered, and the next call allocates
in a different pattern.

``malloc_trim(0)`` walks every arena and hands whole free pages back with
``madvise(MADV_DONTNEED)``, wherever they lie in the heap. :func:`trim_native_heap`
calls it through ctypes; on a C library without it (musl, macOS) it does
nothing. :class:`HeapRelease` runs it once a call's objects are gone: the
composition root tells it when a call ended and what to await (the call's own
tasks, including the media teardown), then collects the call's reference
cycles (the start-up heap is frozen, appliance/system/heap.py, so the pass is
short) and trims, unless another call is in progress by then: a trim holds
each arena's lock while it walks it, which an ALSA thread in a call should
not wait for. docs/soak.md has the figures with and without it.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from functools import cache

from appliance.tasks import TaskSet

__all__ = ["HeapRelease", "trim_native_heap"]

logger = logging.getLogger(__name__)

_MallocTrim = Callable[[int], int]


@cache
def _malloc_trim() -> _MallocTrim | None:
    """glibc's ``malloc_trim`` from the process's own symbols, else None."""
    try:
        libc = ctypes.CDLL(None)
        function = libc.malloc_trim
    except (OSError, TypeError, AttributeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    trim: _MallocTrim = function
    return trim


def trim_native_heap() -> bool:
    """Return the C heap's free pages to the system now.

    Returns:
        True if glibc released memory, False if there was none to release
        or the C library has no ``malloc_trim`` (then nothing was done).
    """
    trim = _malloc_trim()
    return trim is not None and trim(0) == 1


class HeapRelease:
    """Collects and trims after each call, once the call's objects are gone.

    Args:
        busy: whether a call is in progress now (then the release waits for
            the end of that call instead).
        trim: what releases the C heap (:func:`trim_native_heap`).
    """

    def __init__(
        self,
        busy: Callable[[], bool],
        trim: Callable[[], bool] = trim_native_heap,
    ) -> None:
        self._busy = busy
        self._trim = trim
        self._tasks = TaskSet(logger, "heap release")
        #: How many releases ran (each a collection and a trim).
        self.releases = 0

    def after(self, gone: Callable[[], Awaitable[None]]) -> None:
        """Release once what ``gone()`` awaits (a call's teardown) is done."""
        self._tasks.spawn(self._release_after(gone), "heap-release")

    async def _release_after(self, gone: Callable[[], Awaitable[None]]) -> None:
        await gone()
        if self._busy():
            return
        started = time.perf_counter()
        collected = gc.collect()
        released = self._trim()
        self.releases += 1
        logger.debug(
            "after the call: %d objects collected, C heap %s in %.1f ms",
            collected,
            "trimmed" if released else "had nothing to trim",
            1000 * (time.perf_counter() - started),
        )

    async def close(self) -> None:
        """Stop any release still waiting (shutdown)."""
        await self._tasks.close()
