"""asyncio adapter that drives :class:`~appliance.signaling.protocol.ClientProtocol`.

The adapter owns the WebSocket (``websockets``), one reader task and one writer
task per socket, and one timer task that sleeps until the core's next deadline.
Every input goes to the core with ``time.monotonic()``; after every input the
adapter drains the core in a fixed order: frames first (so that a final
``register {audio: false}`` leaves before the socket closes), then transport
actions, then events for the engine. Event handlers run on the loop and must not
block.

``wss://`` URLs verify the server certificate against the system store (the
``ssl`` default of ``websockets``); ``ws://`` is for the local exchange.

DSCP: desk phones mark signaling (AF31, DSCP 26, or CS3) apart from media (EF)
so that a switch's QoS keeps calls setting up under load (RFC 4594 §4.2
"Signaling", RFC 8837 §5). With a code point set (:meth:`SignalingClient.set_dscp`)
the adapter opens the TCP socket itself, marks it with ``IP_TOS`` or
``IPV6_TCLASS`` before ``connect()`` so that the SYN is marked too, and hands it
to ``websockets``; such a connection goes direct, not through a proxy named in
the environment. Marks below CS6 need no capability (ip(7)).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket as sockets
import time
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidURI, WebSocketException
from websockets.uri import parse_uri

from appliance.log import wire
from appliance.signaling.limits import PHONE_MAX_FRAME_BYTES
from appliance.signaling.messages import HEARTBEAT, Message, redact
from appliance.signaling.protocol import (
    ClientProtocol,
    CloseConnection,
    Event,
    OpenConnection,
)

__all__ = ["SignalingClient", "mark_socket", "open_marked_socket"]

logger = logging.getLogger(__name__)

# Signaling frames are small and rare; a full queue means the socket is stuck,
# and the heartbeat timeout will replace it.
_WRITE_QUEUE_SIZE = 256
_CLOSE = object()
#: Characters of a frame shown at DEBUG (escaped, appliance/log.py ``wire``).
_FRAME_LOG_LIMIT = 2000


class _Socket:
    """One WebSocket with its writer queue."""

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.ws: ClientConnection | None = None
        self.queue: asyncio.Queue[str | object] = asyncio.Queue(_WRITE_QUEUE_SIZE)
        self.tasks: set[asyncio.Task[None]] = set()


class SignalingClient:
    """Run one signaling session on the current event loop.

    Args:
        protocol: the sans-I/O core.
        on_event: called on the loop for every core event, in order.
        clock: monotonic clock (seconds).

    Example::

        client = SignalingClient(protocol, on_event=device._on_signaling_event)
        client.start()
        client.send(Message(MessageType.HANGUP, {"callsid": sid}))
        await client.close()
    """

    def __init__(
        self,
        protocol: ClientProtocol,
        *,
        on_event: Callable[[Event], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.protocol = protocol
        self._on_event = on_event
        self._clock = clock
        self._wake = asyncio.Event()
        self._stopped = False
        self._timer: asyncio.Task[None] | None = None
        self._socket: _Socket | None = None
        self._generation = 0
        self._closing_tasks: set[asyncio.Task[None]] = set()
        self._dscp = 0

    # ---- commands -------------------------------------------------------------

    def set_dscp(self, dscp: int) -> None:
        """Mark connections opened from now on with ``dscp`` (0 = unmarked)."""
        self._dscp = dscp

    def start(self) -> None:
        """Start (or restart) connecting; returns at once."""
        if self._timer is None or self._timer.done():
            self._timer = asyncio.get_running_loop().create_task(
                self._run_timer(), name="signaling-timer"
            )
        self.protocol.start(self._clock())
        self._pump()

    def send(self, message: Message) -> bool:
        """Send a call-level message; see :meth:`ClientProtocol.send`."""
        sent = self.protocol.send(message, self._clock())
        self._pump()
        return sent

    def register(self) -> None:
        """Ask for incoming calls."""
        self.protocol.register(self._clock())
        self._pump()

    def unregister(self) -> None:
        """Stop incoming calls."""
        self.protocol.unregister(self._clock())
        self._pump()

    def set_token(self, token: str) -> None:
        """Use a new token (re-sends ``listen`` or restarts a closed session)."""
        if self._timer is None or self._timer.done():
            self._timer = asyncio.get_running_loop().create_task(
                self._run_timer(), name="signaling-timer"
            )
        self.protocol.set_token(token, self._clock())
        self._pump()

    async def close(self) -> None:
        """Close for good; waits until the socket and every task are gone."""
        self.protocol.close(self._clock())
        self._pump()
        if self._timer is not None:
            self._stopped = True
            self._wake.set()
            await self._timer
            self._timer = None
            self._stopped = False
        socket = self._socket
        if socket is not None:
            await self._finish(socket)
        if self._closing_tasks:
            await asyncio.gather(*self._closing_tasks, return_exceptions=True)

    # ---- the pump --------------------------------------------------------------

    def _pump(self) -> None:
        proto = self.protocol
        frames = proto.messages_to_send()
        socket = self._socket
        stuck = False
        if frames:
            if socket is None or socket.ws is None:
                logger.debug("x %d frame(s) dropped: no open socket", len(frames))
            else:
                for frame in frames:
                    if frame != HEARTBEAT and logger.isEnabledFor(logging.DEBUG):
                        logger.debug("> %s", wire(redact(frame), _FRAME_LOG_LIMIT))
                    try:
                        socket.queue.put_nowait(frame)
                    except asyncio.QueueFull:
                        stuck = True
                        break
        for action in proto.actions():
            if isinstance(action, OpenConnection):
                self._open(action.url)
            elif isinstance(action, CloseConnection):
                self._close_socket(action.reason)
        for event in proto.events_received():
            try:
                self._on_event(event)
            except Exception:  # supervision boundary: a handler bug must not
                # kill the signaling session.
                logger.exception("! signaling event handler failed for %r", event)
        if stuck and socket is self._socket:
            # The gateway stopped reading. Its frames may still arrive, so the
            # idle timeout would never fire: replace the socket now, as a
            # lost connection (once per socket, hence once in the log).
            logger.warning("signaling write queue full: the gateway is not reading")
            self._close_socket("write queue full")
            self.protocol.connection_closed(self._clock(), "write queue full")
            self._pump()
            return
        self._wake.set()

    # ---- timer -----------------------------------------------------------------

    async def _run_timer(self) -> None:
        # Stopped by a flag, not by cancellation: in Python 3.11 wait_for() can
        # swallow a cancel that races with the wake event being set.
        while not self._stopped:
            deadline = self.protocol.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self._clock())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            if self._stopped:
                return
            self.protocol.tick(self._clock())
            self._pump()

    # ---- sockets ---------------------------------------------------------------

    def _open(self, url: str) -> None:
        if self._socket is not None:
            self._close_socket("replaced")
        self._generation += 1
        socket = _Socket(self._generation)
        self._socket = socket
        task = asyncio.get_running_loop().create_task(
            self._connect(socket, url), name="signaling-connect"
        )
        socket.tasks.add(task)
        task.add_done_callback(socket.tasks.discard)

    async def _connect(self, socket: _Socket, url: str) -> None:
        logger.debug("= connecting to %s (DSCP %d)", url, self._dscp)
        sock: sockets.socket | None = None
        try:
            if self._dscp:
                sock = await open_marked_socket(url, self._dscp << 2)
            # The core enforces the 5 s connect timeout (it cancels this task);
            # the gateway sends heartbeats, so no WebSocket pings (a browser
            # sends none either).
            ws = await connect(
                url,
                open_timeout=None,
                ping_interval=None,
                max_size=PHONE_MAX_FRAME_BYTES,
                sock=sock,
            )
        except (OSError, WebSocketException, InvalidURI, TimeoutError) as exc:
            if sock is not None:
                sock.close()
            if socket is self._socket:
                self._socket = None
                self.protocol.connection_failed(
                    self._clock(), str(exc) or type(exc).__name__
                )
                self._pump()
            return
        if socket is not self._socket:
            await ws.close()
            return
        socket.ws = ws
        loop = asyncio.get_running_loop()
        for coro, name in (
            (self._read(socket), "signaling-read"),
            (self._write(socket), "signaling-write"),
        ):
            task = loop.create_task(coro, name=name)
            socket.tasks.add(task)
            task.add_done_callback(socket.tasks.discard)
        self.protocol.connection_opened(self._clock())
        self._pump()

    async def _read(self, socket: _Socket) -> None:
        assert socket.ws is not None
        reason = "closed"
        try:
            async for data in socket.ws:
                if isinstance(data, bytes):
                    continue  # the protocol is text-only
                if socket is not self._socket:
                    return
                if data != HEARTBEAT and logger.isEnabledFor(logging.DEBUG):
                    logger.debug("< %s", wire(redact(data), _FRAME_LOG_LIMIT))
                self.protocol.receive_message(data, self._clock())
                self._pump()
        except ConnectionClosed as exc:
            reason = f"code {exc.rcvd.code}" if exc.rcvd else "no close frame"
        if socket is self._socket:
            self._socket = None
            # A full queue has a writer stuck in send(), which the closed
            # socket ends anyway.
            with contextlib.suppress(asyncio.QueueFull):
                socket.queue.put_nowait(_CLOSE)
            self.protocol.connection_closed(self._clock(), reason)
            self._pump()

    async def _write(self, socket: _Socket) -> None:
        assert socket.ws is not None
        while True:
            item = await socket.queue.get()
            if item is _CLOSE or not isinstance(item, str):
                break
            try:
                await socket.ws.send(item)
            except ConnectionClosed:
                break
        await socket.ws.close()

    def _close_socket(self, reason: str) -> None:
        socket = self._socket
        if socket is None:
            return
        self._socket = None
        logger.debug("x closing signaling socket: %s", reason)
        task = asyncio.get_running_loop().create_task(self._finish(socket))
        self._closing_tasks.add(task)
        task.add_done_callback(self._closing_tasks.discard)

    async def _finish(self, socket: _Socket) -> None:
        """Flush the writer, close the socket and end its tasks."""
        if socket.ws is None:
            for task in list(socket.tasks):
                task.cancel()
        else:
            with contextlib.suppress(asyncio.QueueFull):
                socket.queue.put_nowait(_CLOSE)
        pending: set[asyncio.Task[None]] = set()
        if socket.tasks:
            _done, pending = await asyncio.wait(list(socket.tasks), timeout=2.0)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        if socket.ws is not None:
            if pending:
                # A writer that could not flush in 2 s: the peer reads nothing
                # and would not read a close frame either, so do not wait
                # 10 s for one (websockets' close_timeout).
                socket.ws.transport.abort()
            await socket.ws.close()


def mark_socket(sock: sockets.socket, tos: int) -> None:
    """Set the DS field (DSCP << 2) of packets sent on ``sock``; warn if refused."""
    try:
        if sock.family == sockets.AF_INET6:
            sock.setsockopt(sockets.IPPROTO_IPV6, sockets.IPV6_TCLASS, tos)
        else:
            sock.setsockopt(sockets.IPPROTO_IP, sockets.IP_TOS, tos)
    except OSError as exc:
        logger.warning("cannot mark the signaling socket with TOS %#x: %s", tos, exc)


async def open_marked_socket(url: str, tos: int) -> sockets.socket:
    """A TCP socket connected to the host of ``url``, marked before its SYN.

    Addresses are tried in the resolver's order, as
    :meth:`asyncio.loop.create_connection` does. Cancellation closes the socket.

    Raises:
        InvalidURI: ``url`` is not a ws:// or wss:// URL.
        OSError: resolution failed or no address accepted the connection.
    """
    uri = parse_uri(url)
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(uri.host, uri.port, type=sockets.SOCK_STREAM)
    error: OSError = OSError(f"no address for {uri.host}")
    for family, kind, proto, _name, address in infos:
        sock = sockets.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            mark_socket(sock, tos)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise error
