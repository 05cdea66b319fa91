"""asyncio adapter of the local exchange: WebSockets on ``/signal`` + echo media.

The decisions are all in :class:`~appliance.exchange.core.Exchange`; this module
only moves frames. One task per connection reads frames into the core; one
writer task per connection sends what the core produced, in order, and closes
the socket when the core asks (after the frames queued before that request,
e.g. ``error`` + ``close`` for a bad token, signaling-protocol.md §2.4). One
timer task sleeps until the core's next deadline and calls ``tick``.

The ``echo`` destination answers with a
:class:`~appliance.media.session.MediaSession` over a
:class:`~appliance.media.loopback.LoopbackAudio`, so the caller hears itself.
Importing aiortc (with PyAV and its codecs) takes seconds on a Pi; done when
the first echo call arrived, it made that call take over 2 s to answer. So
:meth:`ExchangeServer.start` starts importing it in a worker thread as soon
as the socket is bound: the exchange listens at once, and an echo call that
arrives before the import is done waits for it (:func:`load_echo_media`).

Time: the core's timers run on :func:`time.monotonic` (asyncio's own clock), so
a wall-clock step (NTP on a Pi without RTC) neither closes idle-looking sessions
nor stalls heartbeats; :func:`time.time` is passed along only to verify tokens,
whose ``exp``/``nbf`` are absolute.

Nothing here logs frames' payloads (``listen`` carries a token).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from appliance.errors import TwilioError
from appliance.exchange.config import ExchangeConfig
from appliance.exchange.core import EchoHangup, EchoOffer, Exchange, RandomSource

if TYPE_CHECKING:
    from appliance.media.loopback import LoopbackAudio
    from appliance.media.session import MediaConfig, MediaSession
from appliance.signaling.limits import EXCHANGE_MAX_FRAME_BYTES
from appliance.tasks import TaskSet

__all__ = ["SIGNAL_PATH", "EchoMedia", "ExchangeServer", "load_echo_media"]

logger = logging.getLogger(__name__)

SIGNAL_PATH = "/signal"


class _NoFrameDump(logging.Filter):
    """Drop websockets' DEBUG frame dumps and its per-connection INFO lines.

    The dumps (``"< %s"``/``"> %s"``) would print the start of every frame,
    and ``listen`` frames carry the token (style: never log tokens). Its
    "connection open" and "connection closed" lines would add two INFO lines
    to every join and leave, without saying which session or who: the core
    logs one line per join ("registered as ... from ..."), this module one
    per leave ("disconnected"), and "socket from" at DEBUG.
    """

    _PER_CONNECTION = frozenset({"connection open", "connection closed"})

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in self._PER_CONNECTION:
            return False
        return not (
            record.levelno <= logging.DEBUG and str(record.msg)[:1] in ("<", ">")
        )


#: The logger websockets uses for our server and its connections.
_ws_logger = logging.getLogger(f"{__name__}.websockets")
_ws_logger.addFilter(_NoFrameDump())
#: How late a timer may run so that deadlines close together share a wake-up.
_TIMER_SLACK_S = 0.02
#: Frames queued for one client before it is considered stuck and dropped.
_OUTBOX_LIMIT = 1000


@dataclass(frozen=True)
class EchoMedia:
    """The classes the echo destination is built from (they import aiortc)."""

    loopback: type[LoopbackAudio]
    session: type[MediaSession]
    config: type[MediaConfig]


def load_echo_media() -> EchoMedia:
    """Import the echo destination's media (aiortc, PyAV): slow and blocking."""
    from appliance.media.loopback import LoopbackAudio
    from appliance.media.session import MediaConfig, MediaSession

    return EchoMedia(LoopbackAudio, MediaSession, MediaConfig)


def _where(exc: BaseException) -> str:
    """``Type at file:line in function`` of an exception, without its message."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return type(exc).__name__
    last = frames[-1]
    name = last.filename.rsplit("/", 1)[-1]
    return f"{type(exc).__name__} at {name}:{last.lineno} in {last.name}"


@dataclass
class _Connection:
    ws: ServerConnection
    outbox: asyncio.Queue[str | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=_OUTBOX_LIMIT + 1)
    )
    writer: asyncio.Task[None] | None = None
    closing: bool = False


class ExchangeServer:
    """The local exchange listening on ``ws://host:port/signal``.

    Args:
        config: listen address, keyring, timers, media addresses.
        rng: CallSid randomness for the core (tests pass ``random.Random(n)``).
        clock: monotonic time source (seconds) for the timers.
        wall_clock: Unix time source (seconds) for token ``exp``/``nbf``.

    Example::

        async with ExchangeServer(config) as server:
            print(server.url)
            await server.wait_closed()
    """

    def __init__(
        self,
        config: ExchangeConfig,
        *,
        rng: RandomSource | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._clock = clock
        self._wall_clock = wall_clock
        self.core = Exchange(
            config.keyring,
            gateway_name=config.gateway_name,
            ring_timeout=config.ring_timeout,
            heartbeat_interval=config.heartbeat_interval,
            idle_timeout=config.idle_timeout,
            rng=rng,
            quotas=config.quotas,
            resume_grace=config.resume_grace,
        )
        self._ids = itertools.count(1)
        self._connections: dict[int, _Connection] = {}
        self._server: Server | None = None
        self._timer: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        #: The deadline the timer task sleeps until (None: no deadline, or
        #: awake), so that _pump wakes it only for an earlier one.
        self._sleeping_until: float | None = None
        self._stopping = False
        self._echo_tasks: dict[str, asyncio.Task[None]] = {}
        self._echo_sessions: dict[str, MediaSession] = {}
        self._background = TaskSet(logger, "exchange")
        self._port = 0
        self._echo_media: asyncio.Future[EchoMedia] | None = None

    # ---------------------------------------------------------------- control

    async def start(self) -> None:
        """Bind the socket and start serving."""
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._check_path,
            logger=_ws_logger,
            max_size=EXCHANGE_MAX_FRAME_BYTES,
        )
        self._port = self._server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        self._timer = loop.create_task(self._run_timer())
        self._echo_media = loop.run_in_executor(None, load_echo_media)
        started = self._clock()
        self._echo_media.add_done_callback(
            lambda done: (
                None
                if done.cancelled() or done.exception() is not None
                else logger.info(
                    "echo media ready (aiortc loaded in %.0f ms)",
                    1000 * (self._clock() - started),
                )
            )
        )
        logger.info("exchange listening on %s", self.url)

    async def close(self) -> None:
        """Close every connection, stop the timer and the echo media."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._timer is not None:
            self._stopping = True
            self._wakeup.set()
            await asyncio.gather(self._timer, return_exceptions=True)
        for call_sid in list(self._echo_tasks):
            self._stop_echo(call_sid)
        for call_sid in list(self._echo_sessions):
            self._stop_echo(call_sid)
        await self._background.wait()
        if self._echo_media is not None:
            # An import cannot be interrupted: let a slow one finish.
            await asyncio.gather(self._echo_media, return_exceptions=True)
        logger.info("exchange closed")

    async def wait_closed(self) -> None:
        """Wait until the server is closed."""
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> ExchangeServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def echo_media_loaded(self) -> bool:
        """Wait for the echo media import of :meth:`start`; True if it loaded."""
        if self._echo_media is None:
            return False
        try:
            await asyncio.shield(self._echo_media)
        except ImportError:
            return False
        return True

    @property
    def port(self) -> int:
        """The bound TCP port (useful with port 0)."""
        return self._port

    @property
    def url(self) -> str:
        """``ws://host:port/signal``."""
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"ws://{host}:{self._port}{SIGNAL_PATH}"

    # ------------------------------------------------------------ connections

    def _check_path(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        if urlsplit(request.path).path != SIGNAL_PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        sid = next(self._ids)
        conn = _Connection(ws)
        writer = asyncio.get_running_loop().create_task(self._write(sid, conn))
        conn.writer = writer
        self._connections[sid] = conn
        # INFO comes once the session says who it is (core: "connected as").
        logger.debug("session %d: socket from %s", sid, ws.remote_address)
        address = ws.remote_address
        source = str(address[0]) if isinstance(address, tuple) and address else ""
        self.core.session_opened(sid, self._clock(), source=source)
        self._pump()
        try:
            async for data in ws:
                text = (
                    data if isinstance(data, str) else data.decode("utf-8", "replace")
                )
                try:
                    self.core.receive(sid, text, self._clock(), wall=self._wall_clock())
                except Exception as exc:  # noqa: BLE001 - supervision boundary
                    # Only this session is closed. One line, no traceback text
                    # (so no exc_info): the exception's message could quote the
                    # frame, and a listen frame carries a token.
                    logger.error(
                        "session %d: exchange failed on a frame (%s): closing",
                        sid,
                        _where(exc),
                    )
                    self._pump()
                    self._close(conn)
                    break
                self._pump()
        except ConnectionClosed:
            pass
        finally:
            self._connections.pop(sid, None)
            try:
                self.core.session_closed(sid, self._clock())
            except Exception as exc:  # noqa: BLE001 - as above
                logger.error(
                    "session %d: exchange failed closing it (%s)", sid, _where(exc)
                )
            self._pump()
            if not conn.closing:
                writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            logger.info("session %d: disconnected", sid)

    async def _write(self, sid: int, conn: _Connection) -> None:
        while True:
            text = await conn.outbox.get()
            try:
                if text is None:
                    await conn.ws.close()
                    return
                await conn.ws.send(text)
            except ConnectionClosed:
                return

    def _pump(self) -> None:
        """Move the core's outputs to the sockets and the echo media."""
        for sid, text in self.core.frames_to_send():
            conn = self._connections.get(sid)
            if conn is None or conn.closing:
                continue
            if conn.outbox.qsize() >= _OUTBOX_LIMIT:
                logger.warning("session %d: client too slow, closing", sid)
                self._close(conn)
                continue
            conn.outbox.put_nowait(text)
        for sid in self.core.sessions_to_close():
            conn = self._connections.get(sid)
            if conn is not None:
                self._close(conn)
        for request in self.core.echo_requests():
            if isinstance(request, EchoOffer):
                self._start_echo(request)
            elif isinstance(request, EchoHangup):
                self._stop_echo(request.call_sid)
        # Wake the timer only when the core's next deadline moved earlier:
        # most frames (heartbeat replies) move none, and a wake-up per frame
        # costs more than the frame.
        deadline = self.core.next_deadline()
        sleeping_until = self._sleeping_until
        if deadline is not None and (
            sleeping_until is None or deadline < sleeping_until
        ):
            self._wakeup.set()

    def _close(self, conn: _Connection) -> None:
        if not conn.closing:
            conn.closing = True
            conn.outbox.put_nowait(None)  # room reserved: maxsize is limit + 1

    async def _run_timer(self) -> None:
        # Stopped by a flag, not by cancel(): in Python 3.11 wait_for() can
        # swallow a cancellation that races with the wake-up event.
        while not self._stopping:
            self._wakeup.clear()
            deadline = self.core.next_deadline()
            # Deadlines a few ms apart (thousands of phones' heartbeats) are
            # served by one wake-up: every timer may run _TIMER_SLACK_S late.
            self._sleeping_until = None if deadline is None else deadline
            timeout = (
                None
                if deadline is None
                else max(0.0, deadline - self._clock()) + _TIMER_SLACK_S
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            self._sleeping_until = None
            if self._stopping:
                return
            now = self._clock()
            deadline = self.core.next_deadline()
            if deadline is not None and deadline <= now:
                try:
                    self.core.tick(now)
                except Exception:  # supervision boundary: keep the timers alive
                    logger.exception("! exchange timer failed")
                self._pump()

    # ------------------------------------------------------------------- echo

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return self._background.spawn(coro)

    def _start_echo(self, offer: EchoOffer) -> None:
        self._echo_tasks[offer.call_sid] = self._spawn(self._answer_echo(offer))

    async def _answer_echo(self, offer: EchoOffer) -> None:
        call_sid = offer.call_sid
        try:
            if self._echo_media is None:
                raise ImportError("the exchange is not started")
            media = await asyncio.shield(self._echo_media)
            loop = media.loopback()
            session = media.session(
                media.config(local_addresses=self.config.effective_media_addresses),
                loop.source,
                loop.sink,
                on_failed=lambda: self._echo_media_failed(call_sid),
            )
            self._echo_sessions[call_sid] = session
            answer = await session.accept_offer(offer.sdp)
        except (TwilioError, ImportError, ValueError) as exc:
            logger.warning("call %s: echo media could not answer: %s", call_sid, exc)
            self.core.echo_failed(call_sid)
            self._pump()
            self._stop_echo(call_sid)
            return
        finally:
            self._echo_tasks.pop(call_sid, None)
        logger.info("call %s: echo media answered", call_sid)
        self.core.echo_answered(call_sid, answer)
        self._pump()

    def _echo_media_failed(self, call_sid: str) -> None:
        logger.warning("call %s: echo media connection failed", call_sid)
        self.core.echo_failed(call_sid)
        self._pump()
        self._stop_echo(call_sid)

    def _stop_echo(self, call_sid: str) -> None:
        task = self._echo_tasks.pop(call_sid, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        session = self._echo_sessions.pop(call_sid, None)
        if session is not None:
            self._spawn(session.close())
