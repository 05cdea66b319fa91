"""Device: the softphone engine, mirroring Twilio.Device in Python.

Usage::

    device = Device(signaling_url="ws://127.0.0.1:8765/signal",
                    local_addresses=["127.0.0.1"], input_device="tone:440")
    device.on("incoming", lambda conn: asyncio.ensure_future(conn.accept()))
    await device.setup(token)          # connects, registers, returns when ready
    conn = await device.connect({"To": "bob"})
    ...
    await device.destroy()

The Device owns one signaling session (:class:`SignalingClient` driving the pure
:class:`ClientProtocol`) and the calls keyed by CallSid. It is given its parts
(``appliance.phone.ports``): Device.audio, a signaling factory and a media
factory; the composition root (``appliance.app``) builds them, and the plain
``Device(**options)`` form takes the defaults. Each Connection talks back to its
Device through a :class:`~appliance.phone.connection.CallHost`, an object of
:mod:`appliance.phone.call_host`, so the Twilio-facing Device keeps only the
Twilio API. Signaling
events arrive on the loop and are translated into Device and Connection events;
the gateway's call frames (an ``invite`` becoming a call, the rest reaching
theirs) go through a :class:`~appliance.phone.dispatch.CallDispatcher`.
Nothing here blocks.

Events (``device.on(name, handler)``): ``ready(device)``, ``offline(device)``,
``incoming(connection)``, ``connect(connection)``, ``disconnect(connection)``,
``cancel(connection)``, ``error(error)`` (a :class:`TwilioError`, with
``error.connection`` when it concerns a call) and ``token_will_expire(device)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from appliance.audio.helper import AudioHelper
from appliance.errors import (
    AuthenticationError,
    InvalidArgumentError,
    InvalidStateError,
    TwilioError,
    error_for_code,
)
from appliance.events import Emitter, EventSource, Subscribers
from appliance.log import LogLimiter, enable_debug, wire
from appliance.phone.call import CallDirection
from appliance.phone.call_host import DeviceCallHost
from appliance.phone.calls import CallBook
from appliance.phone.connection import Connection
from appliance.phone.dispatch import CallDispatcher
from appliance.phone.gateway import new_protocol, session_options, token_grants
from appliance.phone.options import DeviceOptions, parse_options
from appliance.phone.ports import (
    CallAudio,
    CallOffered,
    CallPlaced,
    CallsChanged,
    EngineEvent,
    EngineListener,
    MediaFactory,
    SignalingFactory,
    default_media,
    default_signaling,
)
from appliance.signaling.client import SignalingClient
from appliance.signaling.messages import (
    Message,
    MessageType,
    encode_params,
)
from appliance.signaling.protocol import (
    CONNECT_TIMEOUT_S,
    Connected,
    ErrorReceived,
    Event,
    GatewayClosed,
    MessageReceived,
    Ready,
    TokenWillExpire,
    TransportLost,
    TransportState,
    Unregistered,
)
from appliance.tasks import TaskSet

__all__ = [
    "DEVICE_EVENTS",
    "CallOffered",
    "Device",
    "EngineEvent",
    "EngineListener",
    "default_media",
    "default_signaling",
]

logger = logging.getLogger(__name__)

DEVICE_EVENTS = frozenset(
    {
        "cancel",
        "connect",
        "disconnect",
        "error",
        "incoming",
        "offline",
        "ready",
        "token_will_expire",
    }
)

# How long setup() waits for the first outcome before returning with the
# device offline and still retrying in the background.
SETUP_WAIT_S = CONNECT_TIMEOUT_S + 1.0


class Device(EventSource):
    """A Twilio.Device: registers with a token, places and receives calls.

    Args:
        token: if given, :meth:`setup` runs on construction (when a loop runs).
        options: validated options (the composition root's parsed config),
            which ``**kwargs`` may override.
        audio: Device.audio; by default one on the installed audio backends.
        signaling_factory: builds the signaling session (default websockets).
        media_factory: builds each call's media (default aiortc).
        **kwargs: the seed's options in snake_case, plus ``signaling_url``,
            ``local_addresses``, ``input_device``, ``output_device`` and
            ``codec_preferences``. See :mod:`appliance.phone.options`.

    Raises:
        ConfigError: an unknown option or an invalid value.
        InvalidStateError: ``audio`` already serves another Device.
    """

    def __init__(
        self,
        token: str | None = None,
        *,
        options: DeviceOptions | None = None,
        audio: AudioHelper | None = None,
        signaling_factory: SignalingFactory = default_signaling,
        media_factory: MediaFactory = default_media,
        **kwargs: Any,
    ) -> None:
        self._options = parse_options(kwargs, options)
        self._new_signaling = signaling_factory
        self._events = Emitter(DEVICE_EVENTS)
        self._listeners: Subscribers[EngineEvent] = Subscribers("engine listener")
        self._publish = self._listeners.publish
        self._token: str | None = None
        self._identity: str | None = None
        self._wants_incoming = True
        self._client: SignalingClient | None = None
        self._client_options: tuple[object, ...] = ()
        self._reconnect_at: float | None = None
        self._calls = CallBook(lambda n: self._publish(CallsChanged(n)))
        self._ready = False
        self._connected = False
        self._reported: str | None = None  # last of "ready"/"offline" emitted
        self._setup_waiter: asyncio.Future[TwilioError | None] | None = None
        # Lines a gateway can cause at will (errors, offline/ready flapping).
        self._log_limit = LogLimiter()
        self._tasks = TaskSet(logger, "device")
        #: Device.audio: devices, sounds and their events (appliance.audio).
        self.audio = audio if audio is not None else AudioHelper()
        self._call_audio: CallAudio = self.audio
        self._host = DeviceCallHost(
            options=lambda: self._options,
            calls=self._calls,
            audio=self._call_audio,
            new_media=media_factory,
            send=self._send,
            tasks=self._tasks,
            events=self._events,
            publish=self._publish,
        )
        self.audio.bind(self._host)
        self._dispatch = CallDispatcher(
            self._host,
            lambda: self._options,
            self._calls,
            self._call_audio,
            self._tasks,
            self._publish,
        )
        self._undo_debug: Callable[[], None] | None = None
        self._apply_debug()
        if token is not None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                self._token = token  # setup() must be awaited by the caller
            else:
                self._tasks.spawn(self._setup_quietly(token), "device-setup")

    # ---- queries ---------------------------------------------------------------------

    @property
    def options(self) -> DeviceOptions:
        """The validated options in force."""
        return self._options

    @property
    def identity(self) -> str | None:
        """The identity the gateway confirmed for our token."""
        return self._identity

    @property
    def reconnect_at(self) -> float | None:
        """When the next connection attempt is due while offline, else None.

        In ``time.monotonic()`` seconds (the event loop's clock); None also when
        the gateway closed the session and only a new token can reopen it.
        """
        return self._reconnect_at

    @property
    def enable_ringing_state(self) -> bool:
        """Whether outgoing calls report the ringing state."""
        return self._options.enable_ringing_state

    def status(self) -> str:
        """``busy`` with an active call, ``ready`` when registered, else ``offline``."""
        if self._calls.busy():
            return "busy"
        return "ready" if self._is_ready() else "offline"

    def active_connection(self) -> Connection | None:
        """The active call, else the first pending incoming call, else None."""
        return self._calls.current()

    def connections(self) -> list[Connection]:
        """Every call that is not closed."""
        return self._calls.all()

    def subscribe(self, listener: EngineListener) -> Callable[[], None]:
        """Receive the engine's typed facts (:data:`EngineEvent`) on the loop.

        Not part of the Twilio API: for the firmware's own parts (the front
        panel). Returns the function that unsubscribes.
        """
        return self._listeners.subscribe(listener)

    # ---- lifecycle -------------------------------------------------------------------

    async def setup(self, token: str, **options: Any) -> None:
        """Connect with ``token`` and register for incoming calls.

        Returns once the device is ready, or after about 6 s if the gateway cannot
        be reached (the device then keeps retrying with backoff and emits
        ``ready`` later). Calling it again replaces the token and options.

        Raises:
            ConfigError: invalid options.
            InvalidArgumentError: the token is not a non-empty string.
            AuthenticationError: the gateway rejected the token (also emitted
                as ``error``).
        """
        if not isinstance(token, str) or not token.strip():
            raise InvalidArgumentError("token", "must be a non-empty string")
        if options:
            self._options = parse_options(options, self._options)
            self._apply_debug()
        same_token = token == self._token
        self._token = token
        self._identity, self._wants_incoming = token_grants(token)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[TwilioError | None] = loop.create_future()
        self._setup_waiter = waiter
        self.audio.start()
        replaced = False
        if (
            self._client is not None
            and self._client_options != self._signaling_options()
        ):
            # URL, backoff or call-waiting changed: a new session applies them.
            old, self._client = self._client, None
            replaced = True
            await old.close()
            # close() reports nothing, but the gateway has dropped the old
            # session and every call on it: end them as a transport loss does,
            # and be offline until the new session is ready.
            logger.info("signaling options changed; opening a new session")
            self._session_lost(
                error_for_code(31005, "the signaling session was replaced"), None
            )
        if self._client is None:
            self._client = self._new_client(token)
            self._client_options = self._signaling_options()
            self._client.start()
        else:
            self._client.set_token(token)
        self._apply_registration(self._client)
        if same_token and not replaced and self._is_ready():
            self._setup_waiter = None
            return  # nothing new to tell the gateway: already set up
        try:
            error = await asyncio.wait_for(asyncio.shield(waiter), SETUP_WAIT_S)
        except TimeoutError:
            logger.warning("gateway not reachable yet; retrying in the background")
            return
        finally:
            if self._setup_waiter is waiter:
                self._setup_waiter = None
        if error is not None:
            raise error

    async def update_token(self, token: str) -> None:
        """Use a new token on the live connection (after ``token_will_expire``).

        Raises:
            InvalidArgumentError: the token is not a non-empty string.
            InvalidStateError: :meth:`setup` was never called.
        """
        if not isinstance(token, str) or not token.strip():
            raise InvalidArgumentError("token", "must be a non-empty string")
        if self._client is None:
            raise InvalidStateError(message="call setup() before update_token()")
        self._token = token
        identity, self._wants_incoming = token_grants(token)
        self._identity = identity or self._identity
        self._client.set_token(token)
        self._apply_registration(self._client)

    async def connect(
        self, params: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> Connection:
        """Place a call; ``params`` reach the gateway as ``twilio.params``.

        With the local exchange, ``{"To": "bob"}`` or ``{"To": "client:bob"}``
        calls the phone registered as bob and ``{"To": "echo"}`` the echo test.

        Returns:
            The Connection, ``connecting`` (the invite has been sent).

        Raises:
            InvalidStateError: not set up, or another call is active.
            TwilioError: the media could not be prepared (also emitted).
        """
        if self._client is None:
            raise InvalidStateError(message="call setup() before connect()")
        if self.status() == "busy":
            raise InvalidStateError(message="a call is already active")
        all_params = {**(params or {}), **kwargs}
        conn = Connection(
            self._host,
            CallDirection.OUTGOING,
            call_sid=f"TJS{uuid.uuid4()}",
            custom_parameters={str(k): str(v) for k, v in all_params.items()},
        )
        self._calls.add(conn)
        self._calls.active = conn
        self._publish(CallPlaced(conn))
        twilio: dict[str, Any] = (
            {"params": encode_params(all_params)} if all_params else {}
        )
        await conn.start_outgoing({"twilio": twilio})
        return conn

    async def disconnect_all(self) -> None:
        """Hang up every call (pending incoming calls are rejected)."""
        for conn in self.connections():
            await conn.disconnect()

    async def destroy(self) -> None:
        """End all calls, close the signaling session, emit ``offline``.

        Then every handler is removed; :meth:`setup` may be called again.
        """
        self._resolve_setup(InvalidStateError(message="the device was destroyed"))
        # Invites that arrive while the calls below are hung up are declined
        # (CallDispatcher): a call created now would outlive the device.
        self._dispatch.destroying = True
        try:
            conns = self.connections()
            await self.disconnect_all()
            client, self._client = self._client, None
            if client is not None:
                await client.close()
            for conn in conns:
                await conn.wait_closed()
        finally:
            self._dispatch.destroying = False
        self._ready = self._connected = False
        if self._reported != "offline":
            self._reported = "offline"
            self._events.emit("offline", self)
        await self._tasks.close()
        await self.audio.close()
        await self._events.drain()
        self._events.remove_all_listeners()
        if self._undo_debug is not None:
            undo, self._undo_debug = self._undo_debug, None
            undo()

    # ---- signaling events ------------------------------------------------------------

    def _on_signaling_event(self, event: Event) -> None:
        if isinstance(event, MessageReceived):
            self._dispatch.deliver(event.message)
        elif isinstance(event, Connected):
            was_connected, self._connected = self._connected, True
            self._reconnect_at = None
            self._identity = event.identity or self._identity
            if not was_connected:  # a gateway repeating itself is not news
                logger.info(
                    "connected to the gateway as %s (region %s)",
                    wire(self._identity),
                    wire(event.region),
                )
            for conn in self.connections():
                conn.resume_signaling()  # calls held since the socket dropped
            if not self._wants_incoming:
                self._report_status()
                self._resolve_setup(None)
        elif isinstance(event, Ready):
            now = asyncio.get_running_loop().time()
            suppressed = None if self._ready else self._log_limit.allow("ready", now)
            if suppressed is not None:
                note = LogLimiter.note(suppressed)
                logger.info("registered as %s%s", wire(self._identity), note)
            self._ready = True
            self._report_status()
            self._resolve_setup(None)
        elif isinstance(event, Unregistered):
            self._ready = False
            self._report_status()
        elif isinstance(event, TransportLost):
            self._on_transport_lost(event.error, event.was_connected, event.retry_at)
        elif isinstance(event, GatewayClosed):
            self._on_transport_lost(
                error_for_code(31005, "the gateway closed the connection"), True, None
            )
        elif isinstance(event, ErrorReceived):
            self._on_error(event.error)
        elif isinstance(event, TokenWillExpire):
            self._events.emit("token_will_expire", self)

    def _on_error(self, error: TwilioError) -> None:
        conn = self._calls.get(error.call_sid)
        if conn is not None:
            if error.code == 31009 and self._session_closed():
                # Dropped, not queued: the gateway closed the session and nothing
                # is sent until a new token is set, so this call cannot go on.
                conn.transport_lost(error)
                return
            conn.deliver(
                Message(
                    MessageType.ERROR,
                    {"callsid": error.call_sid, "error": error.to_payload()},
                )
            )
            return
        suppressed = self._log_limit.allow("gateway", asyncio.get_running_loop().time())
        if suppressed is not None:
            note = LogLimiter.note(suppressed)
            logger.warning("gateway error %s%s", wire(str(error)), note)
        self._events.emit("error", error)
        if isinstance(error, AuthenticationError):
            self._resolve_setup(error)

    def _on_transport_lost(
        self, error: TwilioError, was_connected: bool, retry_at: float | None
    ) -> None:
        if retry_at is None:
            logger.warning(
                "signaling closed by the gateway; no reconnect until a new token is set"
            )
        else:
            logger.warning(
                "signaling lost (%s); retrying in %.1f s",
                error.message,
                max(0.0, retry_at - asyncio.get_running_loop().time()),
            )
        self._session_lost(error, retry_at)

    def _session_lost(self, error: TwilioError, retry_at: float | None) -> None:
        """The session is gone: so is its registration; its calls may be held."""
        self._ready = self._connected = False
        self._reconnect_at = retry_at
        for conn in self.connections():
            conn.transport_lost(error, resumable=retry_at is not None)
        self._report_status()

    def _send(self, message: Message) -> bool:
        if self._client is None:
            return False
        return self._client.send(message)

    # ---- helpers ---------------------------------------------------------------------

    def _session_closed(self) -> bool:
        client = self._client
        return client is None or client.protocol.state is TransportState.CLOSED

    def _is_ready(self) -> bool:
        return self._ready or (self._connected and not self._wants_incoming)

    def _report_status(self) -> None:
        now = "ready" if self._is_ready() else "offline"
        if now != self._reported:
            self._reported = now
            self._events.emit(now, self)

    def _apply_registration(self, client: SignalingClient) -> None:
        """Register for incoming calls if the token allows them, else unregister.

        Unregistering also stops the core's 30 s re-registration: left on, it
        would ask again for every token and the gateway would answer each time
        with 31201 (not allowed), an ``error`` event every 30 s.
        """
        if self._wants_incoming:
            client.register()
        else:
            client.unregister()

    def _resolve_setup(self, error: TwilioError | None) -> None:
        waiter = self._setup_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(error)

    def _signaling_options(self) -> tuple[object, ...]:
        return session_options(self._options)

    def _new_client(self, token: str) -> SignalingClient:
        protocol = new_protocol(self._options, token)
        client = self._new_signaling(protocol, self._on_signaling_event)
        opts = self._options
        client.set_dscp(opts.signaling_dscp if opts.dscp else 0)
        return client

    def _apply_debug(self) -> None:
        """The ``debug`` option: DEBUG for the engine's loggers while it is on.

        Counted and undone by :meth:`destroy` (appliance.log.enable_debug), so
        one Device's option does not change logging for the whole process.
        """
        if self._options.debug and self._undo_debug is None:
            self._undo_debug = enable_debug("appliance")
        elif not self._options.debug and self._undo_debug is not None:
            undo, self._undo_debug = self._undo_debug, None
            undo()

    async def _setup_quietly(self, token: str) -> None:
        with contextlib.suppress(TwilioError):  # already emitted as an error event
            await self.setup(token)
