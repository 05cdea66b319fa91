"""The C heap's free pages go back to the system, and the phone does it after a call.

Real parts: glibc's own malloc and free through ctypes on a fragmented
thread arena (the pattern aiortc and the ALSA threads leave behind), and a
real call between two in-process phones through the exchange.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
from pathlib import Path

import pytest

from appliance.exchange.server import ExchangeServer
from appliance.service_tasks import release_heap_after_calls
from appliance.system.native_heap import _malloc_trim, trim_native_heap
from tests.conftest import local_device, make_token, wait_until

glibc = pytest.mark.skipif(_malloc_trim() is None, reason="no glibc malloc_trim")

BLOCK = 4096  # well under the mmap threshold: served from an arena
BLOCKS = 8192  # 32 MiB


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def fragment_a_thread_arena() -> tuple[int, int, int]:
    """In a thread of its own (its own arena): fill 32 MiB, free all but the
    last block, which pins the freed region below the top of the heap so
    free() cannot give it back. Returns the pinned block and the RSS once
    the blocks are filled and once they are freed.

    The thread may get an arena an earlier thread left, with free space
    already resident, so growth from before the allocation says little; what
    free() and the trim each give back is measured from the filled heap.
    """
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    result: list[int] = []

    def work() -> None:
        # No assert here: a failure in this thread would not fail the test.
        blocks = [libc.malloc(BLOCK) for _ in range(BLOCKS)]
        if not all(blocks):
            for block in filter(None, blocks):
                libc.free(block)
            return
        for block in blocks:
            ctypes.memset(block, 1, BLOCK)  # resident, not just reserved
        filled = rss_kib()
        for block in blocks[:-1]:
            libc.free(block)
        result.extend((blocks[-1], filled, rss_kib()))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert result, "malloc failed in the worker thread"
    return result[0], result[1], result[2]


@glibc
def test_trim_returns_the_pages_a_pinned_heap_keeps() -> None:
    libc = ctypes.CDLL(None)
    libc.free.argtypes = [ctypes.c_void_p]
    pinned, filled, freed = fragment_a_thread_arena()
    try:
        # free() alone gives next to nothing back: the pattern is real.
        assert filled - freed < 4 * 1024, f"free() returned {filled - freed} KiB"
        assert trim_native_heap()
        returned = freed - rss_kib()
        assert returned > 24 * 1024, f"trim returned only {returned} KiB"
    finally:
        libc.free(pinned)


def test_without_malloc_trim_nothing_is_done(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("appliance.system.native_heap._malloc_trim", lambda: None)
    assert trim_native_heap() is False


@pytest.mark.slow  # real aiortc
async def test_the_heap_is_released_once_after_each_call_not_during_it(
    exchange: ExchangeServer,
) -> None:
    alice = local_device(exchange.url, input_device="tone:440")
    bob = local_device(exchange.url, input_device="tone:660")
    releases = [release_heap_after_calls(alice), release_heap_after_calls(bob)]
    accepting: list[asyncio.Task[None]] = []
    try:
        await alice.setup(make_token("alice"))
        await bob.setup(make_token("bob"))
        bob.on(
            "incoming",
            lambda conn: accepting.append(asyncio.ensure_future(conn.accept())),
        )
        conn = await alice.connect({"To": "bob"})
        await wait_until(lambda: conn.status() == "open")
        await wait_until(lambda: bob.status() == "busy")
        assert [r.releases for r in releases] == [0, 0]  # not while the call is up
        await conn.disconnect()
        await wait_until(lambda: [r.releases for r in releases] == [1, 1])
    finally:
        await asyncio.gather(*accepting, return_exceptions=True)
        await alice.destroy()
        await bob.destroy()
        for release in releases:
            await release.close()
    assert [r.releases for r in releases] == [1, 1]  # once per call
