"""Client side of Twilio's signaling protocol as a sans-I/O state machine.

Theory of operation
-------------------
The core owns the session lifecycle of one Twilio.Device: which URL to open, the
``listen``/``connected``/``register``/``ready`` handshake, heartbeats, timeouts,
reconnect backoff and the 30 s registration refresh. It never touches a socket
or a clock: the adapter reports what happened (``connection_opened``,
``receive_message``, ``connection_closed``, ``tick``) with the current monotonic
time, then drains three outputs:

* ``actions()``: transport work, :class:`OpenConnection` or :class:`CloseConnection`;
* ``messages_to_send()``: text frames for the open socket;
* ``events_received()``: facts for the engine (:class:`Connected`, :class:`Ready`,
  :class:`MessageReceived`, ...).

``next_deadline()`` says when ``tick`` must be called at the latest.

Transport states::

    IDLE --start--> CONNECTING --opened--> OPEN --connected--> CONNECTED
      ^                 |                   |                     |
      |            fail/timeout        closed/idle 15 s      closed/idle 15 s
      |                 v                   v                     v
      +--(never)---- WAITING <--------------+---------------------+
                        |  backoff elapsed: CONNECTING again
    any --close() or gateway "close"--> CLOSED (no reconnect until restart())

Timers (signaling-protocol.md §4.1, §2.2, §2.3): 5 s to open a socket; 15 s
without any inbound frame closes it; ``register`` repeats every 30 s while
registration is wanted; ``token_will_expire`` fires 10 s before the token's
``ttl`` from ``connected`` runs out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from appliance.errors import (
    RemoteProtocolError,
    TwilioError,
    UnknownMessageTypeError,
    error_for_code,
    error_from_payload,
)
from appliance.log import LogLimiter, wire
from appliance.signaling.backoff import BackoffPolicy
from appliance.signaling.limits import EXCHANGE_MAX_FRAME_BYTES, text_size
from appliance.signaling.messages import (
    HEARTBEAT,
    Message,
    MessageType,
    decode,
    encode,
    finite_number,
)

__all__ = [
    "CONNECT_TIMEOUT_S",
    "HEARTBEAT_TIMEOUT_S",
    "REGISTRATION_INTERVAL_S",
    "TOKEN_REFRESH_S",
    "Action",
    "ClientProtocol",
    "CloseConnection",
    "Connected",
    "ErrorReceived",
    "Event",
    "GatewayClosed",
    "MessageReceived",
    "OpenConnection",
    "Ready",
    "TokenWillExpire",
    "TransportLost",
    "TransportState",
    "Unregistered",
]

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
HEARTBEAT_TIMEOUT_S = 15.0
REGISTRATION_INTERVAL_S = 30.0
TOKEN_REFRESH_S = 10.0

_UNREGISTER = Message(MessageType.REGISTER, {"media": {"audio": False}})

# Messages that are not queued while the socket is down: listen is re-sent on
# open anyway; register and reinvite would be stale (SDK 2.18, §2.1).
_NOT_QUEUED = {MessageType.LISTEN, MessageType.REGISTER, MessageType.REINVITE}


class TransportState(StrEnum):
    """Where the WebSocket session is."""

    IDLE = "idle"
    CONNECTING = "connecting"
    OPEN = "open"
    CONNECTED = "connected"
    WAITING = "waiting"
    CLOSED = "closed"


# ---- outputs ----------------------------------------------------------------


@dataclass(frozen=True)
class OpenConnection:
    """Open a WebSocket to ``url``; report the outcome with ``connection_*``."""

    url: str


@dataclass(frozen=True)
class CloseConnection:
    """Close the open WebSocket (if any)."""

    reason: str


Action = OpenConnection | CloseConnection


@dataclass(frozen=True)
class Connected:
    """The gateway accepted the token."""

    identity: str | None
    ttl_s: float | None
    region: str | None
    edge: str | None


@dataclass(frozen=True)
class Ready:
    """The gateway accepted the registration: incoming calls can arrive."""


@dataclass(frozen=True)
class Unregistered:
    """Registration ended: gateway ``offline`` or an explicit unregister."""


@dataclass(frozen=True)
class TransportLost:
    """The socket closed or could not be opened; a reconnect is scheduled.

    Attributes:
        error: what went wrong (31005, 31009, 53000 ...).
        retry_at: monotonic time of the next attempt, or None if none.
        was_connected: whether the gateway had accepted the token on this socket.
    """

    error: TwilioError
    retry_at: float | None
    was_connected: bool


@dataclass(frozen=True)
class GatewayClosed:
    """The gateway sent ``close``: no reconnect until the token is updated."""


@dataclass(frozen=True)
class ErrorReceived:
    """The gateway sent ``error``, or sent a frame we could not understand."""

    error: TwilioError


@dataclass(frozen=True)
class TokenWillExpire:
    """The token expires in :data:`TOKEN_REFRESH_S` seconds."""


@dataclass(frozen=True)
class MessageReceived:
    """A call-level message (invite, ringing, answer, cancel, hangup, ...)."""

    message: Message


Event = (
    Connected
    | Ready
    | Unregistered
    | TransportLost
    | GatewayClosed
    | ErrorReceived
    | TokenWillExpire
    | MessageReceived
)


@dataclass
class _Timers:
    connect: float | None = None
    idle: float | None = None
    reconnect: float | None = None
    register: float | None = None
    token: float | None = None

    def earliest(self) -> float | None:
        values: list[float] = [v for v in vars(self).values() if v is not None]
        return min(values) if values else None


@dataclass
class _Outputs:
    actions: list[Action] = field(default_factory=list)
    frames: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


class ClientProtocol:
    """The signaling session of one Device.

    Args:
        urls: signaling URLs, tried in order (edge fallback).
        token: the access token sent in ``listen``.
        backoff: reconnect policy.
        random: a source of uniform numbers in [0, 1) for backoff jitter.
        browserinfo: the ``listen.browserinfo`` object describing this client.
        register_payload: extra keys for ``register`` (e.g. ``callWaiting``).
        reconnect_timeout_s: ``listen.reconnectTimeout``, how long the gateway
            holds our answered calls when the socket drops (§4.4); for as long
            after a drop, reconnect delays are capped at 1 s (the SDK's
            preferred-edge backoff, §4.3).
    """

    def __init__(
        self,
        *,
        urls: list[str],
        token: str,
        backoff: BackoffPolicy,
        random: Callable[[], float],
        browserinfo: dict[str, Any] | None = None,
        register_payload: dict[str, Any] | None = None,
        reconnect_timeout_s: int = 0,
    ) -> None:
        if not urls:
            raise ValueError("at least one signaling URL is needed")
        self._urls = list(urls)
        self._url_index = 0
        self._token = token
        self._backoff = backoff
        self._random = random
        self._browserinfo = browserinfo or {}
        self._register_payload = dict(register_payload or {})
        self._reconnect_timeout_s = reconnect_timeout_s
        self._hurry_until = 0.0  # reconnect quickly until then (held calls)
        self._state = TransportState.IDLE
        self._timers = _Timers()
        self._out = _Outputs()
        self._attempt = 0
        self._ever_opened = False
        self._want_registered = False
        self._registered = False
        self._queue: list[Message] = []
        #: Rate limit of the warnings about malformed gateway frames.
        self._complaints = LogLimiter()
        self._warned_token: str | None = None

    # ---- queries ------------------------------------------------------------

    @property
    def state(self) -> TransportState:
        """The transport state."""
        return self._state

    @property
    def registered(self) -> bool:
        """Whether the gateway has acknowledged our registration."""
        return self._registered

    @property
    def url(self) -> str:
        """The URL in use (or next to be tried)."""
        return self._urls[self._url_index]

    def next_deadline(self) -> float | None:
        """Latest monotonic time at which :meth:`tick` must be called."""
        return self._timers.earliest()

    # ---- drains -------------------------------------------------------------

    def actions(self) -> list[Action]:
        """Return and clear the transport actions to perform, in order."""
        out, self._out.actions = self._out.actions, []
        return out

    def messages_to_send(self) -> list[str]:
        """Return and clear the frames to write on the open socket, in order."""
        out, self._out.frames = self._out.frames, []
        return out

    def events_received(self) -> list[Event]:
        """Return and clear the events for the engine, in order."""
        out, self._out.events = self._out.events, []
        return out

    # ---- inputs from the application -----------------------------------------

    def start(self, now: float) -> None:
        """Begin connecting. After this, perform :meth:`actions`.

        Also used to restart after :meth:`close` or a gateway ``close``.
        """
        if self._state in (TransportState.IDLE, TransportState.CLOSED):
            self._attempt = 0
            self._open(now)

    def set_token(self, token: str, now: float) -> None:
        """Replace the token; re-sends ``listen`` on a live socket (updateToken).

        A session the gateway closed (bad token) is restarted with the new token.
        """
        if token == self._token and self._state in (
            TransportState.OPEN,
            TransportState.CONNECTED,
        ):
            return  # re-sending listen with the same token achieves nothing
        self._token = token
        if self._state in (TransportState.OPEN, TransportState.CONNECTED):
            self._send_listen()
        elif self._state is TransportState.CLOSED:
            self.start(now)

    def register(self, now: float) -> None:
        """Ask for incoming calls; repeated every 30 s while connected."""
        self._want_registered = True
        if self._state is TransportState.CONNECTED:
            self._send_register(now)

    def unregister(self, now: float) -> None:
        """Stop incoming calls (``register`` with ``audio: false``)."""
        self._want_registered = False
        self._timers.register = None
        if self._state is TransportState.CONNECTED:
            self._frame(_UNREGISTER)

    def send(self, message: Message, now: float) -> bool:
        """Send a call-level message, or queue it while the socket is down.

        Returns:
            True if it was sent at once; False if it was queued or dropped, in
            which case an :class:`ErrorReceived` with 31009 was emitted, as the
            SDK does (signaling-protocol.md §2.1). A queued message may still
            go out, so its error names no call; a dropped one names its call,
            which cannot go on. A frame larger than the gateway accepts, or
            not UTF-8 (a lone surrogate from a gateway's ``"\\ud800"``), is
            never sent: dropped with 31212 for a call message, 31100 otherwise.
        """
        text = encode(message)
        size, limit = text_size(text), EXCHANGE_MAX_FRAME_BYTES
        if size > limit or size != len(text.encode("utf-8", "replace")):
            code = 31212 if message.type is MessageType.MESSAGE else 31100
            reason = f"{message.type} exceeds {limit} bytes or is not UTF-8"
            self._out.events.append(
                ErrorReceived(error_for_code(code, reason, call_sid=message.callsid))
            )
            return False
        if self._state in (TransportState.OPEN, TransportState.CONNECTED):
            self._frame(message)
            return True
        if message.type not in _NOT_QUEUED and self._state is not TransportState.CLOSED:
            self._queue.append(message)
            self._out.events.append(ErrorReceived(error_for_code(31009)))
        else:
            self._out.events.append(
                ErrorReceived(error_for_code(31009, call_sid=message.callsid))
            )
        return False

    def close(self, now: float) -> None:
        """Close for good (Device.destroy): no reconnect until :meth:`start`."""
        if (
            self._state in (TransportState.OPEN, TransportState.CONNECTED)
            and self._want_registered
        ):
            self._frame(_UNREGISTER)
        if self._state in (
            TransportState.CONNECTING,
            TransportState.OPEN,
            TransportState.CONNECTED,
        ):
            self._out.actions.append(CloseConnection("closed by the application"))
        self._state = TransportState.CLOSED
        self._want_registered = False
        self._registered = False
        self._queue.clear()
        self._timers = _Timers()

    # ---- inputs from the transport --------------------------------------------

    def connection_opened(self, now: float) -> None:
        """The socket is open. After this, send :meth:`messages_to_send`."""
        if self._state is not TransportState.CONNECTING:
            return
        self._state = TransportState.OPEN
        self._ever_opened = True
        self._timers.connect = None
        self._timers.idle = now + HEARTBEAT_TIMEOUT_S
        self._send_listen()
        # Queued call messages follow the listen, as the SDK flushes them in
        # _handleTransportOpen.
        queued, self._queue = self._queue, []
        for message in queued:
            self._frame(message)

    def connection_failed(self, now: float, reason: str) -> None:
        """The socket could not be opened (refused, DNS, TLS, timeout)."""
        if self._state is not TransportState.CONNECTING:
            return
        self._timers.connect = None
        logger.debug("x connect to %s failed: %s", self.url, reason)
        # Never opened: move to the next edge, as the SDK does (§4.1).
        self._url_index = (self._url_index + 1) % len(self._urls)
        self._lost(
            now,
            error_for_code(31005, f"could not connect: {reason}"),
            was_connected=False,
        )

    def connection_closed(self, now: float, reason: str) -> None:
        """The open socket closed (by the peer or the network)."""
        if self._state not in (TransportState.OPEN, TransportState.CONNECTED):
            return
        was_connected = self._state is TransportState.CONNECTED
        self._lost(
            now,
            error_for_code(31005, f"connection closed: {reason}"),
            was_connected=was_connected,
        )

    def receive_message(self, text: str, now: float) -> None:
        """Handle one inbound frame. After this, drain all three outputs."""
        if self._state not in (TransportState.OPEN, TransportState.CONNECTED):
            return
        self._timers.idle = now + HEARTBEAT_TIMEOUT_S
        if text == HEARTBEAT:
            # The client never originates heartbeats; it echoes (§2.1).
            self._out.frames.append(HEARTBEAT)
            return
        try:
            message = decode(text)
        except UnknownMessageTypeError as exc:
            # New gateway message types must not break old phones (the SDK
            # emits them as events nobody listens to).
            logger.debug("< dropped: %s", wire(exc.message))
            return
        except RemoteProtocolError as exc:
            suppressed = self._complaints.allow("gateway", now)
            if suppressed is not None:
                logger.warning(
                    "! malformed frame from the gateway: %s%s",
                    wire(exc.message),
                    LogLimiter.note(suppressed),
                )
            self._out.events.append(ErrorReceived(exc))
            return
        self._dispatch(message, now)

    def tick(self, now: float) -> None:
        """Fire every timer that is due. After this, drain all three outputs."""
        t = self._timers
        if t.connect is not None and now >= t.connect:
            t.connect = None
            self._out.actions.append(CloseConnection("connect timeout"))
            self.connection_failed(now, "timed out after 5 s")
        if t.idle is not None and now >= t.idle:
            t.idle = None
            self._out.actions.append(CloseConnection("no frame for 15 s"))
            self.connection_closed(now, "heartbeat timeout")
        if t.reconnect is not None and now >= t.reconnect:
            t.reconnect = None
            self._open(now)
        if t.register is not None and now >= t.register:
            self._send_register(now)
        if t.token is not None and now >= t.token:
            t.token = None
            self._warned_token = self._token
            self._out.events.append(TokenWillExpire())

    # ---- internals -------------------------------------------------------------

    def _frame(self, message: Message) -> None:
        self._out.frames.append(encode(message))

    def _open(self, now: float) -> None:
        self._state = TransportState.CONNECTING
        self._timers.connect = now + CONNECT_TIMEOUT_S
        self._out.actions.append(OpenConnection(self.url))

    def _lost(self, now: float, error: TwilioError, *, was_connected: bool) -> None:
        # What is queued is stale (a new call's invite would ring a phone for
        # a call its caller was told had failed), but for hang-ups and the
        # reconnect invites before them: the far party hears those at once.
        self._queue = [
            m
            for m in self._queue
            if m.type is MessageType.HANGUP or "reconnect" in m.payload
        ]
        self._registered = False
        self._timers.idle = None
        self._timers.register = None
        self._timers.token = None
        delay_s = self._backoff.delay_ms(self._attempt, self._random()) / 1000.0
        if was_connected:
            self._hurry_until = now + self._reconnect_timeout_s
        if now < self._hurry_until:
            delay_s = min(delay_s, 1.0)
        self._attempt += 1
        self._state = TransportState.WAITING
        self._timers.reconnect = now + delay_s
        self._out.events.append(TransportLost(error, now + delay_s, was_connected))

    def _send_listen(self) -> None:
        self._frame(
            Message(
                MessageType.LISTEN,
                {
                    "token": self._token,
                    "browserinfo": self._browserinfo,
                    "reconnectTimeout": self._reconnect_timeout_s,
                },
            )
        )

    def _send_register(self, now: float) -> None:
        payload: dict[str, Any] = {"media": {"audio": True}}
        payload.update(self._register_payload)
        self._frame(Message(MessageType.REGISTER, payload))
        self._timers.register = now + REGISTRATION_INTERVAL_S

    def _dispatch(self, message: Message, now: float) -> None:
        kind = message.type
        payload = message.payload
        if kind is MessageType.CONNECTED:
            self._state = TransportState.CONNECTED
            self._attempt = 0
            token = payload.get("token")
            identity = ttl = None
            if isinstance(token, dict):
                identity = token.get("identity")
                ttl = token.get("ttl")
            ttl_s = finite_number(ttl)
            # Warn once per token: re-arming for a token that was already
            # announced would fire at once on every reconnect (a listen storm
            # if the application re-sends the same token).
            self._timers.token = (
                now + max(ttl_s - TOKEN_REFRESH_S, 0.0)
                if ttl_s is not None and self._token != self._warned_token
                else None
            )
            self._out.events.append(
                Connected(
                    identity if isinstance(identity, str) else None,
                    ttl_s,
                    payload.get("region")
                    if isinstance(payload.get("region"), str)
                    else None,
                    payload.get("edge")
                    if isinstance(payload.get("edge"), str)
                    else None,
                )
            )
            if self._want_registered:
                self._send_register(now)
        elif kind is MessageType.READY:
            self._registered = True
            self._out.events.append(Ready())
        elif kind is MessageType.OFFLINE:
            self._registered = False
            self._out.events.append(Unregistered())
        elif kind is MessageType.ERROR:
            error = _gateway_error(message)
            self._out.events.append(ErrorReceived(error))
            if error.code == 31205:
                # An expired token cannot register; the SDK stops its timer.
                self._timers.register = None
        elif kind is MessageType.CLOSE:
            self._state = TransportState.CLOSED
            self._registered = False
            self._timers = _Timers()
            self._out.actions.append(CloseConnection("gateway sent close"))
            self._out.events.append(GatewayClosed())
        else:
            self._out.events.append(MessageReceived(message))


def _gateway_error(message: Message) -> TwilioError:
    return error_from_payload(
        message.payload.get("error"), default_code=31000, call_sid=message.callsid
    )
