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

Calls are :mod:`appliance.exchange.calls`' business: the core hands it every
call-level frame of a session that sent a good ``listen``, and the frames
between the legs of an answered call to :mod:`appliance.exchange.relay`; calls
held across a dropped socket (``listen.reconnectTimeout``) are
:mod:`appliance.exchange.resume`'s.

Limits: each relayed field has a cap (:mod:`appliance.exchange.fields`,
stated in :mod:`appliance.signaling.limits`), answered with its Twilio code.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from typing import TypeVar

from appliance.errors import RemoteProtocolError
from appliance.exchange.calls import (
    API_VERSION,
    ECHO_DESTINATION,
    MAX_OUTGOING_CALLS,
    RING_TIMER,
    CallRouter,
)
from appliance.exchange.fields import (
    Refusal,
    check_identity,
    check_short,
    check_token,
)
from appliance.exchange.model import (
    EchoHangup,
    EchoOffer,
    EchoRequest,
    RandomSource,
    Session,
)
from appliance.exchange.outbox import Outbox
from appliance.exchange.quotas import QUOTA_CODE, QuotaLog, Quotas
from appliance.exchange.relay import CallRelay
from appliance.exchange.resume import (
    DEFAULT_RECONNECT_TIMEOUT_S,
    RESUME_TIMERS,
    Resumes,
    reconnect_timeout,
)
from appliance.exchange.timers import TimerHeap
from appliance.log import wire
from appliance.signaling.limits import (
    EXCHANGE_MAX_FRAME_BYTES,
    text_size,
)
from appliance.signaling.messages import (
    HEARTBEAT,
    Message,
    MessageType,
    decode,
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

#: A socket must send ``listen`` this soon after opening, or it is closed with
#: 31102: heartbeat replies alone would otherwise keep it open for ever.
LISTEN_DEADLINE_S = 10.0


# Timer kinds (the first part of a TimerHeap key).
_HEARTBEAT, _LISTEN, _TOKEN, _IDLE = "heartbeat", "listen", "token", "idle"

_Handler = Callable[[Session, Message, float], None]


def _frame_type(text: str) -> object:
    """The ``type`` of a frame that failed to decode, if it has one."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return data.get("type") if isinstance(data, dict) else None


K = TypeVar("K")


def _discard(index: dict[K, set[int]], key: K, sid: int) -> None:
    """Remove ``sid`` from ``index[key]``, and the key once its set is empty."""
    members = index.get(key)
    if members is not None:
        members.discard(sid)
        if not members:
            del index[key]


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
        quotas: capacity limits (:mod:`appliance.exchange.quotas`).
        resume_grace: seconds an answered call is held for a party whose
            socket drops, when its ``listen`` has no ``reconnectTimeout``.
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
        quotas: Quotas | None = None,
        resume_grace: int = DEFAULT_RECONNECT_TIMEOUT_S,
    ) -> None:
        if not 0 < heartbeat_interval < 15:
            raise ValueError("heartbeat_interval must be in (0, 15) seconds")
        if ring_timeout <= 0:
            raise ValueError("ring_timeout must be positive")
        self._keyring = keyring
        self._gateway_name = gateway_name
        self._heartbeat_interval = heartbeat_interval
        self._idle_timeout = idle_timeout
        self._resume_grace = resume_grace
        self._sessions: dict[int, Session] = {}
        #: Every deadline: (what, session id or call sid); see tick().
        self._timers: TimerHeap[tuple[str, int | str]] = TimerHeap()
        self._out = Outbox(self._sessions)
        self._quotas = quotas if quotas is not None else Quotas()
        #: Refusals by limit key, each logged once per party.
        self.quota_log = QuotaLog()
        #: Sockets that have not sent a good listen yet, by source address.
        self._pending: dict[str, int] = {}
        #: Sessions with a good token, by account and by (account, identity).
        self._by_account: dict[str, set[int]] = {}
        self._by_identity: dict[tuple[str, str], set[int]] = {}
        self._router = CallRouter(
            self._out,
            self._timers,
            self._registered,
            rng if rng is not None else random.SystemRandom(),
            ring_timeout,
            self._quotas,
            self.quota_log,
            self._sessions,
        )
        relay = CallRelay(self._out, self._router.find)
        self._handlers: dict[MessageType, _Handler] = {
            MessageType.REGISTER: self._on_register,
            MessageType.INVITE: self._router.on_invite,
            MessageType.ANSWER: self._router.on_answer,
            MessageType.REJECT: self._router.on_reject,
            MessageType.HANGUP: self._router.on_hangup,
            MessageType.DTMF: relay.on_dtmf,
            MessageType.MESSAGE: relay.on_message,
            MessageType.REINVITE: relay.on_reinvite,
        }

    # ------------------------------------------------------------------ inputs

    def session_opened(self, sid: int, now: float, *, source: str = "") -> None:
        """A WebSocket was accepted; ``sid`` must be new.

        ``source`` is the peer's address, for the limit on sockets that have
        not authenticated yet; a socket over it is answered 31206 and closed.
        """
        if sid in self._sessions:
            raise ValueError(f"session {sid} is already open")
        self._out.now = now
        self._sessions[sid] = Session(
            sid=sid,
            last_seen=now,
            next_heartbeat=now + self._heartbeat_interval,
            source=source,
        )
        # Counted at once; _drop uncounts it, whether refused here or later.
        self._pending[source] = self._pending.get(source, 0) + 1
        if self._pending[source] > self._quotas.max_pending_per_address:
            self._over_quota(sid, now, "max_pending_per_address", source or "?")
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
        self._out.now = now
        if text == HEARTBEAT:
            return
        if (
            len(text) > EXCHANGE_MAX_FRAME_BYTES // 4
            and text_size(text) > EXCHANGE_MAX_FRAME_BYTES
        ):
            # The adapter's WebSocket limit stops these first; the core states
            # the same limit so that it holds whatever the transport.
            limit = EXCHANGE_MAX_FRAME_BYTES
            self._refuse(sid, now, Refusal(31100, f"frame exceeds {limit} bytes"))
            return
        try:
            message = decode(text)
        except RemoteProtocolError as exc:
            code = 31102 if _frame_type(text) == MessageType.LISTEN else 31400
            callsid = exc.call_sid
            if check_short("frame", "callsid", callsid) is not None:
                callsid = None  # not echoed back: it would be relayed unbounded
            self._refuse(sid, now, Refusal(code, exc.message), callsid=callsid)
            return
        refused = check_short(message.type, "callsid", message.payload.get("callsid"))
        if refused is not None:
            self._refuse(sid, now, refused)
            return
        # Never log payloads here: listen carries the token.
        if logger.isEnabledFor(logging.DEBUG):
            callsid = wire(message.callsid or "")
            logger.debug("< session %d: %s %s", sid, message.type, callsid)
        if message.type is MessageType.LISTEN:
            self._on_listen(session, message, now, now if wall is None else wall)
            return
        if session.claims is None:
            missing = Refusal(31102, "Missing access token: send listen first")
            self._refuse(sid, now, missing)
            return
        handler = self._handlers.get(message.type)
        if handler is None:
            unexpected = Refusal(31400, f"unexpected {message.type} from a client")
            self._refuse(sid, now, unexpected)
            return
        handler(session, message, now)

    def _refuse(
        self, sid: int, now: float, refusal: Refusal, *, callsid: str | None = None
    ) -> None:
        """Answer a frame that is not acted on; log it (rate-limited)."""
        self._out.complain(sid, now, refusal)
        self._out.refuse(sid, refusal, callsid=callsid)

    def session_closed(self, sid: int, now: float) -> None:
        """The socket closed (either side); ends its calls and registration."""
        self._out.now = now
        if sid in self._sessions:
            logger.debug("x session %d closed", sid)
            self._drop(sid, now)

    def tick(self, now: float) -> None:
        """Run the timers due at ``now``: heartbeats, token expiry, ring timeouts."""
        self._out.now = now
        for kind, key in self._timers.pop_due(now):
            if kind == RING_TIMER:
                self._router.ring_timeout(str(key))
                continue
            if kind in RESUME_TIMERS:
                self._router.grace_expired(Resumes.expired_leg(kind), str(key))
                continue
            session = self._sessions.get(int(key))
            if session is not None:
                self._session_timer(session, kind, now)

    def _session_timer(self, session: Session, kind: str, now: float) -> None:
        if kind == _LISTEN and session.claims is None:
            logger.info("session %d sent no listen: closing", session.sid)
            self._out.error(session.sid, 31102, "Missing access token")
            self._out.close(session.sid)
            self._drop(session.sid, now)
        elif kind == _HEARTBEAT:
            self._out.raw(session.sid, HEARTBEAT)
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
            self._out.close(session.sid)
            self._drop(session.sid, now)

    # ----------------------------------------------------------------- outputs

    def frames_to_send(self) -> list[tuple[int, str]]:
        """Return and clear ``(session, text)`` frames, in sending order."""
        return self._out.frames_to_send()

    def sessions_to_close(self) -> list[int]:
        """Return and clear sessions to close once their frames are written."""
        return self._out.sessions_to_close()

    def echo_requests(self) -> list[EchoRequest]:
        """Return and clear echo media requests."""
        return self._out.echo_requests()

    def echo_answered(self, call_sid: str, sdp: str) -> None:
        """The adapter's echo media answered the offer of ``call_sid``."""
        self._router.echo_answered(call_sid, sdp)

    def echo_failed(self, call_sid: str) -> None:
        """The adapter could not answer the echo call ``call_sid``."""
        self._router.echo_failed(call_sid)

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
        return len(self._router)

    # --------------------------------------------------------------- helpers

    def _registered(self, account_sid: str, identity: str) -> list[Session]:
        sids = sorted(self._by_identity.get((account_sid, identity), ()))
        return [s for s in map(self._sessions.__getitem__, sids) if s.registered]

    def _over_quota(self, sid: int, now: float, key: str, party: str) -> None:
        """Refuse a session over limit ``key``: error 31206, close, forget it."""
        self.quota_log.reached(key, wire(party), getattr(self._quotas, key))
        self._out.error(sid, QUOTA_CODE, self._quotas.message(key))
        self._out.send(sid, MessageType.CLOSE, {})
        self._out.close(sid)
        self._drop(sid, now)

    def _move(self, session: Session, claims: TokenClaims | None) -> None:
        """Count ``session`` under the account and identity of ``claims``."""
        old = session.claims
        if old is None:
            left = self._pending.get(session.source, 0) - 1
            if left > 0:
                self._pending[session.source] = left
            else:
                self._pending.pop(session.source, None)
        else:
            _discard(self._by_account, old.account_sid, session.sid)
            _discard(self._by_identity, (old.account_sid, old.identity), session.sid)
        if claims is not None:
            self._by_account.setdefault(claims.account_sid, set()).add(session.sid)
            identity = (claims.account_sid, claims.identity)
            self._by_identity.setdefault(identity, set()).add(session.sid)

    def _quota_for(self, sid: int, claims: TokenClaims) -> tuple[str, str] | None:
        """The limit ``sid`` would exceed as ``claims``: (key, party), if any."""
        account = self._by_account.get(claims.account_sid, set())
        if len(account - {sid}) >= self._quotas.max_sessions_per_account:
            return "max_sessions_per_account", claims.account_sid
        identity = self._by_identity.get((claims.account_sid, claims.identity), set())
        if len(identity - {sid}) >= self._quotas.max_sessions_per_identity:
            return "max_sessions_per_identity", claims.identity
        return None

    def _expire(self, session: Session) -> None:
        """The session's token expired: report it and unregister (§3)."""
        session.expiry_reported = True
        logger.info("session %d: token expired", session.sid)
        self._out.error(session.sid, 31205, "JWT token expired")
        if session.registered:
            session.registered = False
            self._out.send(session.sid, MessageType.OFFLINE, {})

    def _drop(self, sid: int, now: float) -> None:
        """Forget a session whose socket is gone, ending its calls (§2.3)."""
        session = self._sessions.pop(sid, None)
        if session is not None:
            self._router.session_gone(session, now)
            self._move(session, None)
        self._out.forget(sid)
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
                wire(exc.detail),
            )
        if refused is not None:
            if claims is not None:
                logger.info(
                    "session %d: identity %s refused: %s",
                    session.sid,
                    wire(claims.identity),
                    refused.message,
                )
            self._out.refuse(session.sid, refused)
            self._out.send(session.sid, MessageType.CLOSE, {})
            self._out.close(session.sid)
            self._drop(session.sid, now)
            return
        assert claims is not None  # verify_token returned
        old = session.claims
        if old is None or (old.account_sid, old.identity) != (
            claims.account_sid,
            claims.identity,
        ):
            over = self._quota_for(session.sid, claims)
            if over is not None:
                self._over_quota(session.sid, now, over[0], over[1])
                return
            self._move(session, claims)
        session.claims = claims
        session.reconnect_timeout = reconnect_timeout(
            message.payload.get("reconnectTimeout"), self._resume_grace
        )
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
            self._router.withdraw(session.sid)
            if session.registered:
                session.registered = False
                self._out.send(session.sid, MessageType.OFFLINE, {})
        # One INFO line per join: a phone that may take calls registers next
        # and is logged then; one that may not never registers (its listen is
        # its join). Token refreshes log at DEBUG.
        logger.log(
            logging.DEBUG if claims.incoming_allowed else logging.INFO,
            "session %d: connected as %s from %s",
            session.sid,
            wire(claims.identity),
            session.source or "?",
        )
        self._out.send(
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
            self._out.error(session.sid, 31400, "register: media is not an object")
            return
        if media.get("audio") is not True:
            session.registered = False
            logger.info("session %d: unregistered", session.sid)
            self._out.send(session.sid, MessageType.OFFLINE, {})
            return
        claims = session.claims
        assert claims is not None  # receive() only dispatches after listen
        if session.expired(now):
            self._out.error(session.sid, 31205, "JWT token expired")
            return
        if not claims.incoming_allowed:
            self._out.error(session.sid, 31201, "token does not allow incoming calls")
            return
        if not session.registered:
            logger.info(
                "session %d: registered as %s from %s",
                session.sid,
                wire(claims.identity),
                session.source or "?",
            )
        session.registered = True
        session.call_waiting = message.payload.get("callWaiting") is True
        self._out.send(session.sid, MessageType.READY, {})
