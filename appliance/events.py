"""A small event emitter (``on``/``off``/``emit``) for Device, Connection, audio.

Why not pyee: Twilio.Device emits ``error`` events that are ordinary facts, and
pyee raises when an ``error`` is emitted with no listener. Here a handler may be
a plain function or a coroutine function (scheduled as a task that the emitter
keeps until it ends); a handler that raises is logged and never breaks the engine.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Emitter", "EventSource", "Handler", "Subscribers"]

logger = logging.getLogger(__name__)

Handler = Callable[..., Any]

_T = TypeVar("_T")


class Emitter:
    """Named events with any number of handlers each."""

    def __init__(self, names: frozenset[str]) -> None:
        self._names = names
        self._handlers: dict[str, list[Handler]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def on(self, event: str, handler: Handler) -> Handler:
        """Call ``handler`` on every ``event``; returns it (usable as decorator).

        Raises:
            ValueError: unknown event name.
        """
        if event not in self._names:
            raise ValueError(
                f"unknown event {event!r}; events: {', '.join(sorted(self._names))}"
            )
        self._handlers.setdefault(event, []).append(handler)
        return handler

    def once(self, event: str, handler: Handler) -> Handler:
        """Call ``handler`` on the next ``event`` only."""

        def wrapper(*args: Any) -> Any:
            self.off(event, wrapper)
            return handler(*args)

        self.on(event, wrapper)
        return wrapper

    def off(self, event: str, handler: Handler) -> None:
        """Remove one handler (no error if it was not there)."""
        handlers = self._handlers.get(event, [])
        if handler in handlers:
            handlers.remove(handler)

    def remove_all_listeners(self) -> None:
        """Remove every handler of every event."""
        self._handlers.clear()

    def listener_count(self, event: str) -> int:
        """Number of handlers of ``event``."""
        return len(self._handlers.get(event, []))

    def emit(self, event: str, *args: Any) -> None:
        """Call the handlers of ``event`` in order of registration."""
        for handler in list(self._handlers.get(event, [])):
            try:
                result = handler(*args)
            except Exception:  # supervision boundary for user handlers
                logger.exception("! handler for %r failed", event)
                continue
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("! async handler failed", exc_info=task.exception())

    async def drain(self) -> None:
        """Wait for the coroutine handlers still running, except the caller.

        A handler may itself call ``destroy()``, which drains: waiting for the
        calling task would wait forever.
        """
        current = asyncio.current_task()
        while pending := [t for t in self._tasks if t is not current]:
            await asyncio.gather(*pending, return_exceptions=True)


class EventSource:
    """The ``on``/``once``/``off`` methods of an object that emits named events.

    Device, Connection and Device.audio mirror the SDK's EventEmitter API;
    each keeps its :class:`Emitter` in ``_events`` and inherits these three.
    """

    _events: Emitter

    def on(self, event: str, handler: Handler) -> Handler:
        """Call ``handler`` on every ``event``; returns it (usable as decorator).

        Raises:
            ValueError: not one of this object's event names.
        """
        return self._events.on(event, handler)

    def once(self, event: str, handler: Handler) -> Handler:
        """Call ``handler`` on the next ``event`` only."""
        return self._events.once(event, handler)

    def off(self, event: str, handler: Handler) -> None:
        """Remove a handler (no error if it was not there)."""
        self._events.off(event, handler)


class Subscribers(Generic[_T]):
    """Listeners of one kind of typed fact, called in order on ``publish``.

    Args:
        what: names the listeners in the log when one raises.
    """

    def __init__(self, what: str) -> None:
        self._what = what
        self._listeners: list[Callable[[_T], None]] = []

    def subscribe(self, listener: Callable[[_T], None]) -> Callable[[], None]:
        """Add ``listener``; returns the function that removes it."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def publish(self, fact: _T) -> None:
        """Call every listener with ``fact``; one that raises is logged."""
        for listener in list(self._listeners):
            try:
                listener(fact)
            except Exception:  # supervision boundary: a listener, not the source
                logger.exception("! %s failed on %r", self._what, fact)
