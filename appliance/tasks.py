"""Tasks owned by one object: kept until done, failures logged, ended together.

The house rule is that no task is fire-and-forget (style guide 4.4): whoever
starts a task keeps it, and cancels or awaits it when it shuts down. Calls,
devices, media sessions, the exchange and the front panel all do this through
one :class:`TaskSet`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["TaskSet", "wait_event"]

T = TypeVar("T")


async def wait_event(event: asyncio.Event, limit_s: float | None) -> bool:
    """Wait until ``event`` is set or ``limit_s`` seconds pass; True if set.

    Use this, not ``asyncio.wait_for(event.wait(), t)``, in tasks that are
    cancelled at shutdown: on Python 3.11 wait_for() drops a cancel that
    arrives as the event is set (fixed in 3.12), and the task then never ends.
    ``asyncio.timeout`` does not have that race.
    """
    try:
        async with asyncio.timeout(limit_s):
            await event.wait()
    except TimeoutError:
        return False
    return True


class TaskSet:
    """The background tasks of one owner.

    Args:
        log: where a task's unexpected exception is reported.
        what: names the owner in that report (e.g. ``"call"``).

    Example::

        self._tasks = TaskSet(logger, "call")
        self._tasks.spawn(self._emit_volume(), "call-volume")
        ...
        await self._tasks.close()        # cancel and wait, on shutdown
    """

    def __init__(
        self, log: logging.Logger | logging.LoggerAdapter[Any], what: str = "task"
    ) -> None:
        self._log = log
        self._what = what
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(list(self._tasks))

    def spawn(
        self, coro: Coroutine[Any, Any, T], name: str | None = None
    ) -> asyncio.Task[T]:
        """Start ``coro`` as a task owned by this set."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def cancel(
        self, *, keep: Callable[[asyncio.Task[Any]], bool] | None = None
    ) -> None:
        """Cancel every task but the calling one and those ``keep`` selects."""
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current and not (keep is not None and keep(task)):
                task.cancel()

    async def wait(self) -> None:
        """Wait until every task but the calling one has ended."""
        current = asyncio.current_task()
        while pending := [t for t in self._tasks if t is not current and not t.done()]:
            await asyncio.gather(*pending, return_exceptions=True)

    async def close(self) -> None:
        """Cancel every task but the calling one, and wait for them to end."""
        self.cancel()
        await self.wait()

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error(
                "! %s task %s failed",
                self._what,
                task.get_name(),
                exc_info=task.exception(),
            )
