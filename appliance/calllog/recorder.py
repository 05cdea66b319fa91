"""The call log's asyncio adapter: Device facts in, log entries out.

:class:`CallLogRecorder` subscribes to the engine's typed facts
(:class:`~appliance.phone.ports.CallOffered`, ``CallPlaced``, ``CallEnded``)
and each call's ``accept``, lets :class:`~appliance.calllog.core.CallTracker`
decide what the call was, keeps the newest entries in memory for the panel and
writes each one to the :class:`~appliance.calllog.store.CallLogStore` off the
event loop, one write at a time.

A log that cannot be opened or written is reported in the journal and the
phone goes on with the entries in memory: the call log must never be the
reason a call fails.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from appliance.calllog.core import CallTracker, Entry
from appliance.calllog.store import DEFAULT_MAX_ENTRIES, CallLogStore
from appliance.errors import CallLogError
from appliance.phone.device import Device
from appliance.phone.ports import (
    CallEnded,
    CallOffered,
    CallPlaced,
    CallsChanged,
    EngineEvent,
)
from appliance.tasks import TaskSet

__all__ = ["CLOCK_SYNC_FILE", "CallLogRecorder", "clock_synchronized", "open_store"]

logger = logging.getLogger(__name__)

#: systemd-timesyncd creates this file once the clock has been synchronised.
CLOCK_SYNC_FILE = Path("/run/systemd/timesync/synchronized")


def clock_synchronized(path: Path | None = CLOCK_SYNC_FILE) -> bool:
    """Whether the wall clock is to be believed (``path`` None: always)."""
    return path is None or path.exists()


def open_store(
    path: Path, max_entries: int = DEFAULT_MAX_ENTRIES
) -> CallLogStore | None:
    """The store at ``path``, or None (said in the journal) when it cannot be had."""
    try:
        return CallLogStore(path, max_entries)
    except CallLogError as exc:
        logger.error("call log disabled: %s", exc)
        return None


class CallLogRecorder:
    """Keeps the log of ``device``'s calls.

    Args:
        device: the engine.
        store: where entries are kept, or None (memory only).
        max_entries: entries kept in memory (the store's bound by default).
        wall: the wall clock (epoch seconds).
        clock_known: whether ``wall`` is synchronised now.

    Use ``async with`` on the running loop.
    """

    def __init__(
        self,
        device: Device,
        store: CallLogStore | None,
        *,
        max_entries: int | None = None,
        wall: Callable[[], float] = time.time,
        clock_known: Callable[[], bool] = clock_synchronized,
    ) -> None:
        self._device = device
        self._store = store
        self._max = max_entries or (store.max_entries if store else DEFAULT_MAX_ENTRIES)
        self._wall = wall
        self._clock_known = clock_known
        self._tracker = CallTracker()
        self._entries: list[Entry] = []
        self._lock = asyncio.Lock()
        self._tasks = TaskSet(logger, "call log")
        self._unsubscribe: Callable[[], None] | None = None
        self.listeners: list[Callable[[], None]] = []
        """Called (on the loop) whenever the entries or their seen marks change."""

    # --- queries ---------------------------------------------------------------

    def entries(self) -> list[Entry]:
        """The newest entries first."""
        return list(self._entries)

    def unseen_missed(self) -> int:
        """Missed calls nobody has looked at yet."""
        return sum(1 for e in self._entries if not e.seen)

    def last_mos(self) -> float | None:
        """The quality score of the most recent call that measured one."""
        return next((e.mos for e in self._entries if e.mos is not None), None)

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Load the stored entries and start listening to the Device."""
        if self._store is not None:
            try:
                self._entries = await asyncio.to_thread(self._store.recent, self._max)
            except CallLogError as exc:
                logger.error("%s", exc)
        self._unsubscribe = self._device.subscribe(self._on_event)

    async def aclose(self) -> None:
        """Stop listening, finish the writes, close the store."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await self._tasks.wait()
        async with self._lock:
            if self._store is not None:
                await asyncio.to_thread(self._store.close)
                self._store = None

    async def __aenter__(self) -> CallLogRecorder:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    # --- inputs ----------------------------------------------------------------

    def mark_missed_seen(self) -> None:
        """The person looked at the log: the missed calls are seen."""
        if not any(not e.seen for e in self._entries):
            return
        self._entries = [replace(e, seen=True) for e in self._entries]
        self._changed()
        self._write(lambda store: store.mark_missed_seen())

    def _on_event(self, event: EngineEvent) -> None:
        if isinstance(event, CallsChanged):
            return  # the count of calls; the log follows each call instead
        conn = event.connection
        key = f"{id(conn):x}"
        if isinstance(event, CallOffered | CallPlaced):
            incoming = isinstance(event, CallOffered)
            remote = (
                conn.parameters.get("From", "")
                if incoming
                else conn.custom_parameters.get("To", "")
            )
            record = self._tracker.offered if incoming else self._tracker.placed
            record(key, remote, wall=self._wall(), clock_known=self._clock_known())
            conn.on(
                "accept",
                lambda *_: self._tracker.answered(
                    key, now=self._now(), codec=conn.codec
                ),
            )
        elif isinstance(event, CallEnded):
            jitter_s = conn.last_jitter_s
            entry = self._tracker.ended(
                key,
                now=self._now(),
                mos=conn.last_mos,
                jitter_ms=None if jitter_s is None else 1000.0 * jitter_s,
                loss_percent=conn.loss_percent,
            )
            if entry is not None:
                self._add(entry)

    def _add(self, entry: Entry) -> None:
        logger.info(
            "call log: %s %s, %.0f s",
            entry.direction.value,
            entry.remote,
            entry.duration_s,
        )
        self._entries.insert(0, entry)
        del self._entries[self._max :]
        self._changed()
        self._write(lambda store: store.add(entry))

    # --- helpers ---------------------------------------------------------------

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()

    def _write(self, action: Callable[[CallLogStore], None]) -> None:
        if self._store is not None:
            self._tasks.spawn(self._run_write(action), "call-log-write")

    async def _run_write(self, action: Callable[[CallLogStore], None]) -> None:
        async with self._lock:
            store = self._store
            if store is None:
                return
            try:
                await asyncio.to_thread(action, store)
            except CallLogError as exc:
                logger.error("%s", exc)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()
