"""Sans-I/O core of the local exchange: the gateway side of Twilio's signaling.

Theory of operation
-------------------
The adapter allocates an opaque ``int`` per WebSocket ("session") and feeds the
core with :meth:`Exchange.session_opened`, :meth:`Exchange.receive`,
:meth:`Exchange.session_closed`, :meth:`Exchange.tick` and the echo results.
After every input it drains :meth:`Exchange.frames_to_send` (write them in
order), :meth:`Exchange.sessions_to_close` (close those sockets *after* writing
their frames), :meth:`Exchange.echo_requests` (start or stop echo media), and
sleeps until :meth:`Exchange.next_deadline`. The core does no I/O and never
reads a clock. Every ``now`` is a **monotonic** clock in seconds, and drives all
timers (heartbeats, idle and ring timeouts, token expiry). :meth:`Exchange.receive`
also takes ``wall``, **Unix time**, only to verify tokens: ``exp``/``nbf`` are
absolute (signaling-protocol.md §6). A verified token's ``exp`` becomes a
monotonic deadline at once, so a wall-clock step (NTP on a Pi without RTC) moves
no timer; on wall time, a step forward would make every session look idle and
drop every call, and a step back would stall heartbeats.

Gateway→client frames use version ``""`` like the real gateway (§2.1).

Session life: ``listen{token}`` → ``connected`` (§2.3). Before a good
``listen`` every other frame gets ``error 31102`` (token missing) and the socket
stays open so the client can still send ``listen``. A bad token gets
``error{code}`` then ``close{}`` and the socket is closed (§2.4 trace, §3).
A second ``listen`` updates the token; a bad update is treated like a bad first
token. An update to another identity or account, or without the incoming grant,
unregisters the session (``offline``) and withdraws it from the calls ringing
there (``cancel``; the caller gets 31480 if it was the last ringing session).
``register{media:{audio:true}}`` → ``ready``; ``audio:false`` → ``offline``.
Registrations are per (account, identity); one identity may be registered by
several sessions, which all ring (§9.2 #4).

Calls (outgoing ``invite`` from a caller session): the request is checked first
(token not expired, outgoing grant, a ``To`` param) and refused with
``hangup{callsid: <TJS id>, error}``; then the caller's leg gets a ``CA`` sid
(parent) and ``ringing`` at once; then the destination is resolved and refused
with ``hangup{callsid: <parent>, error}`` (31480 nobody registered, 31486 all
busy). Each ringing session gets ``invite`` with one shared ``CA`` sid (child).
Media is peer-to-peer: the SDP offer and answer are relayed unchanged.

A session is *busy* while it is the caller of a call that has not ended, or the
callee that answered one. Busy sessions are invited only if they registered
with ``callWaiting: true`` (our phones' extension; Twilio ignores unknown keys).

Local extensions and choices:

* ``dtmf{callsid, dtmf}`` is relayed to the other leg as ``dtmf`` with that
  leg's own callsid. The real gateway turns it into RFC 4733 towards the far
  end instead; both our legs speak this protocol, so relaying is simpler and
  exact.
* ``message`` is relayed and acknowledged with ``ack``; to the echo
  destination it is echoed back.
* ``reinvite`` gets ``error 31100`` (no ICE restart: aiortc cannot do one).
* A ringing callee's ``hangup`` is treated like ``reject`` (whole call declined),
  as the SDK's ``destroy()`` does (§9.2 #4).
* ``answer`` for a call that no longer rings for that session (cancelled,
  answered elsewhere, already ended) gets ``hangup{callsid}`` so the late
  answerer's call ends cleanly. Other frames for unknown calls get
  ``error 31400``, except ``hangup`` and ``reject``, which are ignored (they
  race with the other side ending the call).
* A socket closing mid-call ends the call: the other leg gets ``cancel``
  (ringing callee), or ``hangup`` with error 31005 (answered call, or caller
  whose last ringing session went away gets 31480).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterable
from typing import Any

from appliance.errors import RemoteProtocolError
from appliance.exchange.fields import (
    Refusal,
    check_content,
    check_identity,
    check_params,
    check_sdp,
    check_short,
    check_token,
)
from appliance.exchange.model import (
    Call,
    CallState,
    EchoHangup,
    EchoOffer,
    EchoRequest,
    RandomSource,
    Session,
)
from appliance.exchange.timers import TimerHeap
from appliance.signaling.limits import (
    EXCHANGE_MAX_FRAME_BYTES,
    RELAY_MAX_FRAME_BYTES,
    text_size,
)
from appliance.signaling.messages import (
    GATEWAY_VERSION,
    HEARTBEAT,
    Message,
    MessageType,
    decode,
    decode_params,
    encode,
    encode_params,
)
from appliance.tokens import InvalidTokenError, Keyring, TokenClaims, verify_token

__all__ = [
    "API_VERSION",
    "ECHO_DESTINATION",
    "LISTEN_DEADLINE_S",
    "MAX_OUTGOING_CALLS",
    "EchoHangup",
    "EchoOffer",
    "EchoRequest",
    "Exchange",
    "RandomSource",
]

logger = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
#: The ``To`` value that reaches the echo destination instead of a client.
ECHO_DESTINATION = "echo"
_CLIENT_PREFIX = "client:"
#: A socket must send ``listen`` this soon after opening, or it is closed with
#: 31102: heartbeat replies alone would otherwise keep it open for ever.
LISTEN_DEADLINE_S = 10.0
#: Calls one session may have going out at once (a phone has one, two while
#: it swaps); more is refused with 31206 so that one client cannot ring every
#: phone or start echo media sessions without end.
MAX_OUTGOING_CALLS = 4


# Timer kinds (the first part of a TimerHeap key).
_HEARTBEAT, _LISTEN, _TOKEN, _IDLE, _RING = (
    "heartbeat",
    "listen",
    "token",
    "idle",
    "ring",
)

_Handler = Callable[[Session, Message, float], None]


def _frame_type(text: str) -> object:
    """The ``type`` of a frame that failed to decode, if it has one."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return data.get("type") if isinstance(data, dict) else None


class Exchange:
    """The gateway state machine (sans-I/O).

    Args:
        keyring: the secrets tokens are verified with.
        gateway_name: reported as ``connected.gateway``.
        ring_timeout: seconds an unanswered call rings before 31480.
        heartbeat_interval: seconds between ``"\\n"`` keepalives per session;
            must be below the SDK's 15 s silence timeout (§4.1).
        idle_timeout: close a session that sent nothing (not even a heartbeat
            reply) for this many seconds; ``None`` disables it.
        rng: source of CallSid randomness (``random.Random`` works); defaults
            to :class:`random.SystemRandom`.
    """

    def __init__(
        self,
        keyring: Keyring,
        *,
        gateway_name: str = "local-exchange",
        ring_timeout: float = 30.0,
        heartbeat_interval: float = 5.0,
        idle_timeout: float | None = None,
        rng: RandomSource | None = None,
    ) -> None:
        if not 0 < heartbeat_interval < 15:
            raise ValueError("heartbeat_interval must be in (0, 15) seconds")
        if ring_timeout <= 0:
            raise ValueError("ring_timeout must be positive")
        self._keyring = keyring
        self._gateway_name = gateway_name
        self._ring_timeout = ring_timeout
        self._heartbeat_interval = heartbeat_interval
        self._idle_timeout = idle_timeout
        self._rng: RandomSource = rng if rng is not None else random.SystemRandom()
        self._sessions: dict[int, Session] = {}
        #: Every deadline: (what, session id or call sid); see tick().
        self._timers: TimerHeap[tuple[str, int | str]] = TimerHeap()
        self._calls: dict[str, Call] = {}  # by parent sid
        self._frames: list[tuple[int, str]] = []
        self._to_close: list[int] = []
        self._echo: list[EchoRequest] = []
        self._handlers: dict[MessageType, _Handler] = {
            MessageType.REGISTER: self._on_register,
            MessageType.INVITE: self._on_invite,
            MessageType.ANSWER: self._on_answer,
            MessageType.REJECT: self._on_reject,
            MessageType.HANGUP: self._on_hangup,
            MessageType.DTMF: self._on_dtmf,
            MessageType.MESSAGE: self._on_message,
            MessageType.REINVITE: self._on_reinvite,
        }

    # ------------------------------------------------------------------ inputs

    def session_opened(self, sid: int, now: float) -> None:
        """A WebSocket was accepted; ``sid`` must be new."""
        if sid in self._sessions:
            raise ValueError(f"session {sid} is already open")
        self._sessions[sid] = Session(
            sid=sid, last_seen=now, next_heartbeat=now + self._heartbeat_interval
        )
        self._timers.set((_HEARTBEAT, sid), now + self._heartbeat_interval)
        self._timers.set((_LISTEN, sid), now + LISTEN_DEADLINE_S)
        if self._idle_timeout is not None:
            self._timers.set((_IDLE, sid), now + self._idle_timeout)
        logger.debug("= session %d opened", sid)

    def receive(
        self, sid: int, text: str, now: float, *, wall: float | None = None
    ) -> None:
        """Process one text frame from a session (``"\\n"`` = heartbeat reply).

        Args:
            sid: the session.
            text: the frame.
            now: monotonic seconds.
            wall: Unix seconds, to verify a ``listen`` token; ``None`` = ``now``
                (for callers that run the whole core on Unix time).

        After calling this, drain the outputs (see the module docstring).
        Frames for unknown or closed sessions are ignored.
        """
        session = self._sessions.get(sid)
        if session is None:
            return
        session.last_seen = now
        if text == HEARTBEAT:
            return
        if (
            len(text) > EXCHANGE_MAX_FRAME_BYTES // 4
            and text_size(text) > EXCHANGE_MAX_FRAME_BYTES
        ):
            # The adapter's WebSocket limit stops these first; the core states
            # the same limit so that it holds whatever the transport.
            self._error(sid, 31100, f"frame exceeds {EXCHANGE_MAX_FRAME_BYTES} bytes")
            return
        try:
            message = decode(text)
        except RemoteProtocolError as exc:
            code = 31102 if _frame_type(text) == MessageType.LISTEN else 31400
            logger.debug("! session %d: bad frame: %s", sid, exc.message)
            callsid = exc.call_sid
            if check_short("frame", "callsid", callsid) is not None:
                callsid = None  # not echoed back: it would be relayed unbounded
            self._error(sid, code, exc.message, callsid=callsid)
            return
        refused = check_short(message.type, "callsid", message.payload.get("callsid"))
        if refused is not None:
            self._refuse(sid, refused)
            return
        # Never log payloads here: listen carries the token.
        logger.debug("< session %d: %s %s", sid, message.type, message.callsid or "")
        if message.type is MessageType.LISTEN:
            self._on_listen(session, message, now, now if wall is None else wall)
            return
        if session.claims is None:
            self._error(sid, 31102, "Missing access token: send listen first")
            return
        handler = self._handlers.get(message.type)
        if handler is None:
            self._error(sid, 31400, f"unexpected {message.type} from a client")
            return
        handler(session, message, now)

    def session_closed(self, sid: int, now: float) -> None:
        """The socket closed (either side); ends its calls and registration."""
        if sid in self._sessions:
            logger.debug("x session %d closed", sid)
            self._drop(sid, now)

    def tick(self, now: float) -> None:
        """Run the timers due at ``now``: heartbeats, token expiry, ring timeouts."""
        for kind, key in self._timers.pop_due(now):
            if kind == _RING:
                call = self._calls.get(str(key))
                if call is not None and call.state is CallState.RINGING:
                    logger.info(
                        "call %s: no answer after %.0f s",
                        call.parent_sid,
                        self._ring_timeout,
                    )
                    self._fail_ringing(call, 31480, "Temporarily unavailable")
                continue
            session = self._sessions.get(int(key))
            if session is not None:
                self._session_timer(session, kind, now)

    def _session_timer(self, session: Session, kind: str, now: float) -> None:
        if kind == _LISTEN and session.claims is None:
            logger.info("session %d sent no listen: closing", session.sid)
            self._error(session.sid, 31102, "Missing access token")
            self._to_close.append(session.sid)
            self._drop(session.sid, now)
        elif kind == _HEARTBEAT:
            self._frames.append((session.sid, HEARTBEAT))
            session.next_heartbeat += self._heartbeat_interval
            if session.next_heartbeat <= now:  # we were late; don't burst
                session.next_heartbeat = now + self._heartbeat_interval
            self._timers.set((_HEARTBEAT, session.sid), session.next_heartbeat)
        elif kind == _TOKEN and session.claims is not None:
            if not session.expiry_reported and session.token_deadline <= now:
                self._expire(session)
        elif kind == _IDLE and self._idle_timeout is not None:
            # Frames only move last_seen (O(1)); the timer catches up here.
            idle_at = session.last_seen + self._idle_timeout
            if idle_at > now:
                self._timers.set((_IDLE, session.sid), idle_at)
                return
            logger.info(
                "session %d idle for %.0f s: closing",
                session.sid,
                now - session.last_seen,
            )
            self._to_close.append(session.sid)
            self._drop(session.sid, now)

    def echo_answered(self, call_sid: str, sdp: str) -> None:
        """The adapter's echo media answered the offer of ``call_sid``."""
        call = self._calls.get(call_sid)
        if call is None or not call.is_echo or call.state is not CallState.RINGING:
            return
        call.state = CallState.ACTIVE
        logger.info("call %s: echo answered", call_sid)
        self._send(call.caller, MessageType.ANSWER, {"callsid": call_sid, "sdp": sdp})

    def echo_failed(self, call_sid: str) -> None:
        """The adapter could not answer the echo call ``call_sid``."""
        call = self._calls.get(call_sid)
        if call is None or not call.is_echo:
            return
        self._end(call)
        self._hangup(call.caller, call_sid, 31000, "Echo media failed")

    # ----------------------------------------------------------------- outputs

    def frames_to_send(self) -> list[tuple[int, str]]:
        """Return and clear ``(session, text)`` frames, in sending order."""
        frames, self._frames = self._frames, []
        return frames

    def sessions_to_close(self) -> list[int]:
        """Return and clear sessions to close once their frames are written."""
        sessions, self._to_close = self._to_close, []
        return sessions

    def echo_requests(self) -> list[EchoRequest]:
        """Return and clear echo media requests."""
        requests, self._echo = self._echo, []
        return requests

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must next be called (monotonic seconds), if ever."""
        return self._timers.next_deadline()

    # ------------------------------------------------------------ inspection

    def registered_sessions(self, account_sid: str, identity: str) -> list[int]:
        """Sessions currently registered for an identity (for logs and tests)."""
        return [s.sid for s in self._registered(account_sid, identity)]

    @property
    def call_count(self) -> int:
        """Calls ringing or active."""
        return len(self._calls)

    # --------------------------------------------------------------- helpers

    def _send(self, sid: int, kind: MessageType, payload: dict[str, Any]) -> None:
        if sid not in self._sessions:
            return
        logger.debug("> session %d: %s %s", sid, kind, payload.get("callsid", ""))
        text = encode(Message(kind, payload, GATEWAY_VERSION))
        if (
            len(text) > RELAY_MAX_FRAME_BYTES // 4
            and text_size(text) > RELAY_MAX_FRAME_BYTES
        ):
            # The field caps make this unreachable (limits.check_consistency);
            # a phone would drop its signaling over a frame this large.
            logger.error("! session %d: %s frame too large to send: dropped", sid, kind)
            return
        self._frames.append((sid, text))

    def _refuse(
        self, sid: int, refusal: Refusal, *, callsid: str | None = None
    ) -> None:
        """Answer a refused field with ``error`` (the frame is not acted on)."""
        self._error(sid, refusal.code, refusal.message, callsid=callsid)

    def _error(
        self,
        sid: int,
        code: int,
        message: str,
        *,
        callsid: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        payload: dict[str, Any] = {"error": {"code": code, "message": message}}
        if callsid is not None:
            payload["callsid"] = callsid
        if extra:
            payload.update(extra)
        self._send(sid, MessageType.ERROR, payload)

    def _hangup(
        self, sid: int, callsid: str, code: int | None = None, message: str = ""
    ) -> None:
        payload: dict[str, Any] = {"callsid": callsid}
        if code is not None:
            payload["error"] = {"code": code, "message": message}
        self._send(sid, MessageType.HANGUP, payload)

    def _new_call_sid(self) -> str:
        return f"CA{self._rng.getrandbits(128):032x}"

    def _registered(self, account_sid: str, identity: str) -> list[Session]:
        return [
            s
            for s in self._sessions.values()
            if s.registered
            and s.claims is not None
            and s.claims.account_sid == account_sid
            and s.claims.identity == identity
        ]

    def _is_busy(self, sid: int) -> bool:
        return any(c.caller == sid or c.callee == sid for c in self._calls.values())

    def _lookup(self, session: Session, callsid: str) -> tuple[Call, bool] | None:
        """Find the call ``callsid`` names for this session; bool = is caller."""
        for call in self._calls.values():
            if call.caller == session.sid and callsid in (
                call.parent_sid,
                call.temp_sid,
            ):
                return call, True
            if call.child_sid == callsid and (
                session.sid in call.forks
                or session.sid in call.cancelled
                or session.sid == call.callee
            ):
                return call, False
        return None

    def _end(self, call: Call) -> None:
        self._calls.pop(call.parent_sid, None)
        self._timers.cancel((_RING, call.parent_sid))
        logger.info("call %s ended", call.parent_sid)

    def _cancel_forks(self, call: Call, forks: Iterable[int]) -> None:
        for sid in sorted(forks):
            call.cancelled.add(sid)
            self._send(sid, MessageType.CANCEL, {"callsid": call.child_sid})

    def _fail_ringing(self, call: Call, code: int, message: str) -> None:
        """End a ringing call: caller gets hangup with error, forks get cancel."""
        self._end(call)
        self._hangup(call.caller, call.parent_sid, code, message)
        self._cancel_forks(call, call.forks)
        call.forks.clear()
        if call.is_echo:
            self._echo.append(EchoHangup(call.parent_sid))

    def _leave_fork(self, call: Call, sid: int, *, notify: bool) -> None:
        """Stop ringing ``sid``; the call fails with 31480 if nobody else rings.

        ``notify``: send ``cancel`` (the session stays, so a late ``answer``
        gets ``hangup``); not when its socket is gone.
        """
        call.forks.discard(sid)
        if notify:
            self._cancel_forks(call, [sid])
        if not call.forks:
            self._fail_ringing(call, 31480, "Temporarily unavailable")

    def _expire(self, session: Session) -> None:
        """The session's token expired: report it and unregister (§3)."""
        session.expiry_reported = True
        logger.info("session %d: token expired", session.sid)
        self._error(session.sid, 31205, "JWT token expired")
        if session.registered:
            session.registered = False
            self._send(session.sid, MessageType.OFFLINE, {})

    def _expired(self, session: Session, now: float) -> bool:
        return session.claims is None or session.token_deadline <= now

    def _drop(self, sid: int, now: float) -> None:
        """Forget a session whose socket is gone, ending its calls (§2.3)."""
        for call in list(self._calls.values()):
            if call.caller == sid:
                self._end(call)
                if call.state is CallState.RINGING:
                    self._cancel_forks(call, call.forks)
                elif call.callee is not None:
                    self._hangup(
                        call.callee, call.child_sid or "", 31005, "Connection lost"
                    )
                if call.is_echo:
                    self._echo.append(EchoHangup(call.parent_sid))
            elif call.callee == sid:
                self._end(call)
                self._hangup(call.caller, call.parent_sid, 31005, "Connection lost")
            elif sid in call.forks:
                self._leave_fork(call, sid, notify=False)
            call.cancelled.discard(sid)
        self._sessions.pop(sid, None)
        for kind in (_HEARTBEAT, _LISTEN, _TOKEN, _IDLE):
            self._timers.cancel((kind, sid))

    # ------------------------------------------------------------- handlers

    def _on_listen(
        self, session: Session, message: Message, now: float, wall: float
    ) -> None:
        token = message.payload["token"]
        claims: TokenClaims | None = None
        try:
            if not isinstance(token, str):
                raise InvalidTokenError(31204, "token is not a string")
            refused = check_token(token)
            if refused is None:
                claims = verify_token(token, self._keyring, wall)
                refused = check_identity(claims.identity)
        except InvalidTokenError as exc:
            refused = Refusal(exc.code, exc.message)
            logger.info(
                "session %d: token rejected: %d %s (%s)",
                session.sid,
                exc.code,
                exc.message,
                exc.detail,
            )
        if refused is not None:
            if claims is not None:
                logger.info(
                    "session %d: identity refused: %s", session.sid, refused.message
                )
            self._refuse(session.sid, refused)
            self._send(session.sid, MessageType.CLOSE, {})
            self._to_close.append(session.sid)
            self._drop(session.sid, now)
            return
        assert claims is not None  # verify_token returned
        old = session.claims
        session.claims = claims
        # From here on the token's life is timed on the monotonic clock.
        session.token_deadline = now + (claims.expires_at - wall)
        session.expiry_reported = False
        self._timers.cancel((_LISTEN, session.sid))
        self._timers.set((_TOKEN, session.sid), session.token_deadline)
        if (
            old is None
            or (old.account_sid, old.identity) != (claims.account_sid, claims.identity)
            or not claims.incoming_allowed
        ):
            # The registration and the invites it brought belonged to the old
            # grant (§2.2 updateToken): the new one may not answer them.
            # Checked even when unregistered: an expired or unregistered
            # session may still be ringing.
            for call in list(self._calls.values()):
                if session.sid in call.forks:
                    self._leave_fork(call, session.sid, notify=True)
            if session.registered:
                session.registered = False
                self._send(session.sid, MessageType.OFFLINE, {})
        logger.info("session %d: connected as %s", session.sid, claims.identity)
        self._send(
            session.sid,
            MessageType.CONNECTED,
            {
                "region": "LOCAL",
                "gateway": self._gateway_name,
                "edge": "local",
                "home": "local",
                "token": {
                    "identity": claims.identity,
                    "ttl": max(0, int(claims.expires_at - wall)),
                },
            },
        )

    def _on_register(self, session: Session, message: Message, now: float) -> None:
        media = message.payload["media"]
        if not isinstance(media, dict):
            self._error(session.sid, 31400, "register: media is not an object")
            return
        if media.get("audio") is not True:
            session.registered = False
            logger.info("session %d: unregistered", session.sid)
            self._send(session.sid, MessageType.OFFLINE, {})
            return
        claims = session.claims
        assert claims is not None  # receive() only dispatches after listen
        if self._expired(session, now):
            self._error(session.sid, 31205, "JWT token expired")
            return
        if not claims.incoming_allowed:
            self._error(session.sid, 31201, "token does not allow incoming calls")
            return
        if not session.registered:
            logger.info("session %d: registered as %s", session.sid, claims.identity)
        session.registered = True
        session.call_waiting = message.payload.get("callWaiting") is True
        self._send(session.sid, MessageType.READY, {})

    def _on_invite(self, session: Session, message: Message, now: float) -> None:
        temp, sdp = message.payload["callsid"], message.payload["sdp"]
        twilio = message.payload.get("twilio") or {}
        params_text = (twilio.get("params") or "") if isinstance(twilio, dict) else None
        if not isinstance(temp, str) or not isinstance(sdp, str):
            self._error(session.sid, 31400, "invite: callsid and sdp must be strings")
            return
        if not isinstance(params_text, str):
            self._hangup(session.sid, temp, 31400, "invite: twilio.params is not text")
            return
        refused = check_sdp("invite", sdp) or check_params(params_text)
        if refused is not None:
            self._hangup(session.sid, temp, refused.code, refused.message)
            return
        claims = session.claims
        assert claims is not None
        if message.payload.get("reconnect"):
            # We hand out no reconnect tokens (§4.4), so none can be valid.
            self._hangup(session.sid, temp, 31107, "Reconnect is not supported")
            return
        if self._expired(session, now):
            self._hangup(session.sid, temp, 31205, "JWT token expired")
            return
        if claims.outgoing_application_sid is None:
            self._hangup(
                session.sid, temp, 31201, "token does not allow outgoing calls"
            )
            return
        params = decode_params(params_text)
        to = params.pop("To", "")
        if not to:
            self._hangup(session.sid, temp, 31100, "invite has no To parameter")
            return
        target = None if to == ECHO_DESTINATION else to.removeprefix(_CLIENT_PREFIX)
        relayed_params = encode_params(params) if params else ""
        refused = (check_identity(target) if target is not None else None) or (
            check_params(relayed_params)
        )
        if refused is not None:
            self._hangup(session.sid, temp, refused.code, refused.message)
            return
        if self._lookup(session, temp) is not None:
            self._error(
                session.sid, 31400, "invite: callsid already in use", callsid=temp
            )
            return
        going_out = sum(c.caller == session.sid for c in self._calls.values())
        if going_out >= MAX_OUTGOING_CALLS:
            self._hangup(session.sid, temp, 31206, "Rate exceeded: too many calls")
            return
        call = Call(
            parent_sid=self._new_call_sid(),
            temp_sid=temp,
            caller=session.sid,
            caller_identity=claims.identity,
            offer_sdp=sdp,
            target=target,
        )
        self._calls[call.parent_sid] = call
        self._timers.set((_RING, call.parent_sid), now + self._ring_timeout)
        logger.info("call %s: %s -> %s", call.parent_sid, claims.identity, to)
        self._send(session.sid, MessageType.RINGING, {"callsid": call.parent_sid})
        if call.target is None:
            self._echo.append(EchoOffer(call.parent_sid, sdp))
            return
        targets = [
            s
            for s in self._registered(claims.account_sid, call.target)
            if s.sid != session.sid
        ]
        if not targets:
            self._fail_ringing(call, 31480, "Temporarily unavailable")
            return
        eligible = [s for s in targets if s.call_waiting or not self._is_busy(s.sid)]
        if not eligible:
            self._fail_ringing(call, 31486, "Busy here")
            return
        call.child_sid = self._new_call_sid()
        parameters = {
            "CallSid": call.child_sid,
            "AccountSid": claims.account_sid,
            "From": f"{_CLIENT_PREFIX}{claims.identity}",
            "To": f"{_CLIENT_PREFIX}{call.target}",
            "ApiVersion": API_VERSION,
        }
        if relayed_params:
            parameters["Params"] = relayed_params
        for fork in eligible:
            call.forks.add(fork.sid)
            self._send(
                fork.sid,
                MessageType.INVITE,
                {"callsid": call.child_sid, "sdp": sdp, "parameters": dict(parameters)},
            )

    def _on_answer(self, session: Session, message: Message, now: float) -> None:
        callsid, sdp = message.payload["callsid"], message.payload["sdp"]
        if not isinstance(callsid, str) or not isinstance(sdp, str):
            self._error(session.sid, 31400, "answer: callsid and sdp must be strings")
            return
        found = self._lookup(session, callsid)
        if found is None or found[1] or session.sid not in found[0].forks:
            # Cancelled, answered elsewhere or ended: end the late answer cleanly.
            self._hangup(session.sid, callsid)
            return
        call = found[0]
        refused = check_sdp("answer", sdp)
        if refused is not None:
            # The answer cannot be relayed: end this leg; the caller hears
            # 31480 unless another session still rings.
            self._hangup(session.sid, callsid, refused.code, refused.message)
            self._leave_fork(call, session.sid, notify=False)
            return
        call.state = CallState.ACTIVE
        call.callee = session.sid
        call.forks.discard(session.sid)
        logger.info("call %s: answered by session %d", call.parent_sid, session.sid)
        self._send(
            call.caller, MessageType.ANSWER, {"callsid": call.parent_sid, "sdp": sdp}
        )
        self._cancel_forks(call, call.forks)
        call.forks.clear()

    def _on_reject(self, session: Session, message: Message, now: float) -> None:
        callsid = message.callsid or ""
        found = self._lookup(session, callsid)
        if found is None or found[1] or session.sid not in found[0].forks:
            logger.debug("session %d: reject for a call not ringing there", session.sid)
            return
        call = found[0]
        call.forks.discard(session.sid)
        self._fail_ringing(call, 31603, "Call declined")

    def _on_hangup(self, session: Session, message: Message, now: float) -> None:
        callsid = message.callsid or ""
        found = self._lookup(session, callsid)
        if found is None:
            logger.debug("session %d: hangup for unknown call", session.sid)
            return
        call, is_caller = found
        if is_caller:
            self._end(call)
            if call.state is CallState.RINGING:
                self._cancel_forks(call, call.forks)
            elif call.callee is not None:
                self._hangup(call.callee, call.child_sid or "")
            if call.is_echo:
                self._echo.append(EchoHangup(call.parent_sid))
        elif session.sid == call.callee:
            self._end(call)
            self._hangup(call.caller, call.parent_sid)
        elif session.sid in call.forks:
            call.forks.discard(session.sid)
            self._fail_ringing(call, 31603, "Call declined")

    def _peer(self, call: Call, is_caller: bool) -> tuple[int, str] | None:
        """The other leg of an answered call: (session, its callsid)."""
        if is_caller:
            if call.callee is None or call.child_sid is None:
                return None
            return call.callee, call.child_sid
        return call.caller, call.parent_sid

    def _active(
        self, session: Session, callsid: str, kind: str
    ) -> tuple[Call, bool] | None:
        found = self._lookup(session, callsid)
        if found is None:
            self._error(session.sid, 31400, f"{kind}: no such call", callsid=callsid)
            return None
        if found[0].state is not CallState.ACTIVE or (
            not found[1] and found[0].callee != session.sid
        ):
            self._error(
                session.sid, 31400, f"{kind}: call is not answered", callsid=callsid
            )
            return None
        return found

    def _on_dtmf(self, session: Session, message: Message, now: float) -> None:
        callsid, digits = message.callsid or "", message.payload["dtmf"]
        if not isinstance(digits, str):
            self._error(
                session.sid, 31400, "dtmf: dtmf must be a string", callsid=callsid
            )
            return
        refused = check_short("dtmf", "dtmf", digits)
        if refused is not None:
            self._refuse(session.sid, refused, callsid=callsid)
            return
        found = self._active(session, callsid, "dtmf")
        if found is None:
            return
        call, is_caller = found
        if call.is_echo:
            logger.info(
                "call %s: dtmf %r to the echo destination ignored",
                call.parent_sid,
                digits,
            )
            return
        peer = self._peer(call, is_caller)
        if peer is not None:
            self._send(peer[0], MessageType.DTMF, {"callsid": peer[1], "dtmf": digits})

    def _on_message(self, session: Session, message: Message, now: float) -> None:
        callsid = message.callsid or ""
        event_sid = message.payload.get("voiceeventsid")
        refused = next(
            (
                r
                for r in (
                    check_short("message", key, message.payload.get(key))
                    for key in ("voiceeventsid", "contenttype", "messagetype")
                )
                if r is not None
            ),
            None,
        )
        if refused is not None:
            self._refuse(session.sid, refused, callsid=callsid)
            return
        refused = check_content(message.payload.get("content"))
        if refused is not None:
            # The SDK routes an error with voiceeventsid to its Call.
            extra = {"voiceeventsid": event_sid} if event_sid is not None else None
            self._error(
                session.sid,
                refused.code,
                refused.message,
                callsid=callsid,
                extra=extra,
            )
            return
        found = self._active(session, callsid, "message")
        if found is None:
            return
        call, is_caller = found
        forwarded: dict[str, Any] = {
            key: message.payload[key]
            for key in ("content", "contenttype", "messagetype", "voiceeventsid")
            if key in message.payload
        }
        peer = (
            (session.sid, call.parent_sid)
            if call.is_echo
            else self._peer(call, is_caller)
        )
        if peer is not None:
            self._send(peer[0], MessageType.MESSAGE, {"callsid": peer[1], **forwarded})
        ack: dict[str, Any] = {"acktype": "message", "callsid": callsid}
        if event_sid is not None:
            ack["voiceeventsid"] = event_sid
        self._send(session.sid, MessageType.ACK, ack)

    def _on_reinvite(self, session: Session, message: Message, now: float) -> None:
        # aiortc cannot ICE-restart (anchors.md, aiortc#211), so neither do we.
        self._error(
            session.sid, 31100, "reinvite is not supported", callsid=message.callsid
        )
