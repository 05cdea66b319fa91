"""Calls through the local exchange: invite, ring, answer, end.

Why a module of its own: :mod:`appliance.exchange.core` owns sessions (tokens,
registration, timers) and hands the frames that make, answer and end calls to
the :class:`CallRouter` here, which owns the calls. Both answer through one
:class:`~appliance.exchange.outbox.Outbox` and share one
:class:`~appliance.exchange.timers.TimerHeap` (the ring timeouts).

Calls (outgoing ``invite`` from a caller session): the request is checked first
(token not expired, outgoing grant, a ``To`` param, field sizes) and refused
with ``hangup{callsid: <TJS id>, error}``; then the caller's leg gets a ``CA``
sid (parent) and ``ringing`` at once; then the destination is resolved and
refused with ``hangup{callsid: <parent>, error}`` (31480 nobody registered,
31486 all busy). Each ringing session gets ``invite`` with one shared ``CA``
sid (child). Media is peer-to-peer: the SDP offer and answer are relayed
unchanged.

A session is *busy* while it is the caller of a call that has not ended, or the
callee that answered one. Busy sessions are invited only if they registered
with ``callWaiting: true`` (our phones' extension; Twilio ignores unknown keys).

Once a call is answered, the frames its legs send each other (``dtmf``,
``message``, ``reinvite``) change nothing about it: :mod:`appliance.exchange.relay`
passes them on, naming the call with :meth:`CallRouter.find`.

Local extensions and choices:

* A ringing callee's ``hangup`` is treated like ``reject`` (whole call declined),
  as the SDK's ``destroy()`` does (§9.2 #4).
* ``reject{callsid, reason: "busy"}`` (our phones' do-not-disturb; the SDK's
  ``reject`` has no reason and the real gateway ignores unknown keys) declines
  for that phone only: the caller gets 31486 (Busy Here) once no other phone
  rings. The real service has no such signal from a client; there, busy is
  the application's answer (TwiML ``<Reject reason="busy">``).
* ``answer`` for a call that no longer rings for that session (cancelled,
  answered elsewhere, already ended) gets ``hangup{callsid}`` so the late
  answerer's call ends cleanly. ``hangup`` and ``reject`` for unknown calls
  are ignored (they race with the other side ending the call).
* A socket closing mid-call ends the call: the other leg gets ``cancel``
  (ringing callee), or ``hangup`` with error 31005 (answered call, or caller
  whose last ringing session went away gets 31480); unless the party asked
  for its answered calls to be held (``listen.reconnectTimeout``): then
  :mod:`appliance.exchange.resume` holds the call and a reconnect ``invite``
  resumes it.
* A ``hangup`` with ``error`` 31003 (our phones' extension: the party's
  media failed, ICE or consent) reaches the far party as ``hangup`` with
  31003: its media is as dead, and it should hear why. Other codes a client
  puts in its ``hangup`` are not relayed.

Pure: no I/O; ``now`` is the caller's monotonic clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from appliance.exchange.fields import check_identity, check_params, check_sdp
from appliance.exchange.model import (
    Call,
    CallState,
    EchoHangup,
    EchoOffer,
    RandomSource,
    Session,
)
from appliance.exchange.outbox import Outbox
from appliance.exchange.quotas import QUOTA_CODE, QuotaLog, Quotas
from appliance.exchange.resume import GRACE_EXPIRED_CODE, Resumes
from appliance.exchange.timers import TimerHeap
from appliance.log import wire
from appliance.signaling.messages import (
    REJECT_BUSY,
    Message,
    MessageType,
    decode_params,
    encode_params,
)

__all__ = [
    "API_VERSION",
    "ECHO_DESTINATION",
    "MAX_OUTGOING_CALLS",
    "RING_TIMER",
    "CallRouter",
]

logger = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
#: The ``To`` value that reaches the echo destination instead of a client.
ECHO_DESTINATION = "echo"
_CLIENT_PREFIX = "client:"
#: Calls one session may have going out at once by default (a phone has one,
#: two while it swaps); more is refused with 31206 so that one client cannot
#: ring every phone (``Quotas.max_calls_per_session``).
MAX_OUTGOING_CALLS = Quotas().max_calls_per_session
#: The timer kind of ring timeouts, keyed by the call's parent sid.
RING_TIMER = "ring"
#: A hang-up because media failed (ConnectionTimeout), in the SDK's words.
MEDIA_LOST_CODE = 31003
MEDIA_LOST_MESSAGE = "Connection with Twilio was interrupted."


class CallRouter:
    """The calls of one exchange (sans-I/O).

    Args:
        out: where frames and echo requests go.
        timers: the exchange's timers; ring timeouts are ``(RING_TIMER, sid)``.
        registered: the sessions registered for ``(account_sid, identity)``.
        rng: CallSid randomness.
        ring_timeout: seconds an unanswered call rings before 31480.
    """

    def __init__(
        self,
        out: Outbox,
        timers: TimerHeap[tuple[str, int | str]],
        registered: Callable[[str, str], list[Session]],
        rng: RandomSource,
        ring_timeout: float,
        quotas: Quotas,
        quota_log: QuotaLog,
        sessions: Mapping[int, Session],
    ) -> None:
        self._out = out
        self._session = sessions.get
        self._timers = timers
        self._registered = registered
        self._rng = rng
        self._ring_timeout = ring_timeout
        self._quotas = quotas
        self._quota_log = quota_log
        self._echo_calls = 0
        self._calls: dict[str, Call] = {}  # by parent sid
        self.resumes = Resumes(timers, rng)

    def __len__(self) -> int:
        return len(self._calls)

    def ring_timeout(self, call_sid: str) -> None:
        """The ring timer of ``call_sid`` fired."""
        call = self._calls.get(call_sid)
        if call is not None and call.state is CallState.RINGING:
            logger.info(
                "call %s: no answer after %.0f s", call.parent_sid, self._ring_timeout
            )
            self._fail_ringing(call, 31480, "Temporarily unavailable")

    def session_gone(self, session: Session, now: float) -> None:
        """The socket of ``session`` is gone: hold, end or leave its calls."""
        sid = session.sid
        for call in list(self._calls.values()):
            if call.state is CallState.ACTIVE and self.resumes.hold(
                call.parent_sid, call.caller == sid, session, now
            ):
                continue  # held for its party to come back (resume.py)
            if call.caller == sid:
                self._end(call)
                if call.state is CallState.RINGING:
                    self._cancel_forks(call, call.forks)
                elif call.callee is not None:
                    self._out.hangup(
                        call.callee, call.child_sid or "", 31005, "Connection lost"
                    )
                if call.is_echo:
                    self._out.echo(EchoHangup(call.parent_sid))
            elif call.callee == sid:
                self._end(call)
                self._out.hangup(call.caller, call.parent_sid, 31005, "Connection lost")
            elif sid in call.forks:
                self._leave_fork(call, sid, notify=False)
            call.cancelled.discard(sid)

    def withdraw(self, sid: int) -> None:
        """``sid`` may no longer answer: cancel the calls ringing there."""
        for call in list(self._calls.values()):
            if sid in call.forks:
                self._leave_fork(call, sid, notify=True)

    def echo_answered(self, call_sid: str, sdp: str) -> None:
        """The adapter's echo media answered the offer of ``call_sid``."""
        call = self._calls.get(call_sid)
        if call is None or not call.is_echo or call.state is not CallState.RINGING:
            return
        call.state = CallState.ACTIVE
        call.answer_sdp = sdp
        logger.info("call %s: echo answered", call_sid)
        self._answer_caller(call)

    def echo_failed(self, call_sid: str) -> None:
        """The adapter could not answer the echo call ``call_sid``."""
        call = self._calls.get(call_sid)
        if call is None or not call.is_echo:
            return
        self._end(call)
        self._out.hangup(call.caller, call_sid, 31000, "Echo media failed")

    def grace_expired(self, caller: bool, call_sid: str) -> None:
        """A held leg did not come back in time: the call ends (31003)."""
        call = self._calls.get(call_sid)
        if call is None:
            return
        logger.info("call %s: the held party did not come back", call_sid)
        self._end(call)
        message = "Connection timed out: the other party did not reconnect"
        if not caller:
            self._out.hangup(call.caller, call_sid, GRACE_EXPIRED_CODE, message)
        elif call.callee is not None:
            child = call.child_sid or ""
            self._out.hangup(call.callee, child, GRACE_EXPIRED_CODE, message)
        if call.is_echo:
            self._out.echo(EchoHangup(call_sid))

    def _answer_caller(self, call: Call) -> None:
        """Send the caller ``answer``, with a reconnect token if it wants one."""
        payload = {"callsid": call.parent_sid, "sdp": call.answer_sdp}
        caller = self._session(call.caller)
        if caller is not None:
            token = self.resumes.issue(call.parent_sid, call.parent_sid, True, caller)
            if token is not None:
                payload["reconnect"] = token
        self._out.send(call.caller, MessageType.ANSWER, payload)

    def _new_call_sid(self) -> str:
        return f"CA{self._rng.getrandbits(128):032x}"

    def _is_busy(self, sid: int) -> bool:
        return any(c.caller == sid or c.callee == sid for c in self._calls.values())

    def find(self, session: Session, callsid: str) -> tuple[Call, bool] | None:
        """Find the call ``callsid`` names for this session; bool = is caller.

        The caller knows its call by the parent sid (or its own temporary
        ``TJS`` id until ``ringing``), a callee by the child sid, and only
        while that call rings there, was cancelled there or was answered there.
        """
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
        if call.parent_sid in self._calls:
            self._echo_calls -= call.is_echo
        self._calls.pop(call.parent_sid, None)
        self._timers.cancel((RING_TIMER, call.parent_sid))
        self.resumes.forget(call.parent_sid)
        logger.info("call %s ended", call.parent_sid)

    def _cancel_forks(self, call: Call, forks: Iterable[int]) -> None:
        for sid in sorted(forks):
            call.cancelled.add(sid)
            self._out.send(sid, MessageType.CANCEL, {"callsid": call.child_sid})

    def _fail_ringing(self, call: Call, code: int, message: str) -> None:
        """End a ringing call: caller gets hangup with error, forks get cancel."""
        self._end(call)
        self._out.hangup(call.caller, call.parent_sid, code, message)
        self._cancel_forks(call, call.forks)
        call.forks.clear()
        if call.is_echo:
            self._out.echo(EchoHangup(call.parent_sid))

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

    def on_invite(self, session: Session, message: Message, now: float) -> None:
        """An outgoing ``invite`` from ``session``: check, then ring or refuse."""
        temp, sdp = message.payload["callsid"], message.payload["sdp"]
        twilio = message.payload.get("twilio") or {}
        params_text = (twilio.get("params") or "") if isinstance(twilio, dict) else None
        if not isinstance(temp, str) or not isinstance(sdp, str):
            self._out.error(
                session.sid, 31400, "invite: callsid and sdp must be strings"
            )
            return
        if not isinstance(params_text, str):
            self._out.hangup(
                session.sid, temp, 31400, "invite: twilio.params is not text"
            )
            return
        refused = check_sdp("invite", sdp) or check_params(params_text)
        if refused is not None:
            self._out.complain(session.sid, now, refused)
            self._out.hangup(session.sid, temp, refused.code, refused.message)
            return
        claims = session.claims
        assert claims is not None
        if message.payload.get("reconnect"):
            self._on_reconnect(session, temp, message.payload["reconnect"], now)
            return
        if session.expired(now):
            self._out.hangup(session.sid, temp, 31205, "JWT token expired")
            return
        if claims.outgoing_application_sid is None:
            self._out.hangup(
                session.sid, temp, 31201, "token does not allow outgoing calls"
            )
            return
        params = decode_params(params_text)
        to = params.pop("To", "")
        if not to:
            self._out.hangup(session.sid, temp, 31100, "invite has no To parameter")
            return
        target = None if to == ECHO_DESTINATION else to.removeprefix(_CLIENT_PREFIX)
        relayed_params = encode_params(params) if params else ""
        refused = (check_identity(target) if target is not None else None) or (
            check_params(relayed_params)
        )
        if refused is not None:
            self._out.complain(session.sid, now, refused)
            self._out.hangup(session.sid, temp, refused.code, refused.message)
            return
        if self.find(session, temp) is not None:
            self._out.error(
                session.sid, 31400, "invite: callsid already in use", callsid=temp
            )
            return
        going_out = sum(c.caller == session.sid for c in self._calls.values())
        key = None
        if going_out >= self._quotas.max_calls_per_session:
            key, party = "max_calls_per_session", f"session {session.sid}"
        elif target is None and self._echo_calls >= self._quotas.max_echo_calls:
            key, party = "max_echo_calls", "the echo destination"
        if key is not None:
            self._quota_log.reached(key, wire(party), getattr(self._quotas, key))
            refusal = self._quotas.message(key)
            self._out.hangup(session.sid, temp, QUOTA_CODE, refusal)
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
        self._echo_calls += call.is_echo
        self._timers.set((RING_TIMER, call.parent_sid), now + self._ring_timeout)
        logger.info(
            "call %s: %s -> %s", call.parent_sid, wire(claims.identity), wire(to)
        )
        self._out.send(session.sid, MessageType.RINGING, {"callsid": call.parent_sid})
        if call.target is None:
            self._out.echo(EchoOffer(call.parent_sid, sdp))
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
            invite = {"callsid": call.child_sid, "sdp": sdp, "parameters": parameters}
            token = self.resumes.issue(call.parent_sid, call.child_sid, False, fork)
            if token is not None:
                invite["reconnect"] = token
            self._out.send(fork.sid, MessageType.INVITE, dict(invite))

    def _on_reconnect(
        self, session: Session, callsid: str, token: object, now: float
    ) -> None:
        """``invite{callsid, reconnect, sdp}``: take a held leg over (§4.4)."""
        claims = session.claims
        assert claims is not None
        grant = self.resumes.claim(token, callsid, claims)
        if isinstance(grant, tuple) or grant.parent_sid not in self._calls:
            code, why = grant if isinstance(grant, tuple) else (31107, "Call is over")
            self._out.hangup(session.sid, callsid, code, why)
            return
        if session.expired(now):
            self._out.hangup(session.sid, callsid, 31205, "JWT token expired")
            return
        call = self._calls[grant.parent_sid]
        if grant.caller:
            call.caller, sdp = session.sid, call.answer_sdp
        else:
            call.callee, sdp = session.sid, call.offer_sdp
        logger.info("call %s: resumed on session %d", call.parent_sid, session.sid)
        payload = {"callsid": callsid, "sdp": sdp}
        fresh = self.resumes.resumed(grant, session)
        if fresh is not None:
            payload["reconnect"] = fresh
        self._out.send(session.sid, MessageType.ANSWER, payload)

    def on_answer(self, session: Session, message: Message, now: float) -> None:
        """A callee answers: relay its SDP to the caller, cancel the other forks."""
        callsid, sdp = message.payload["callsid"], message.payload["sdp"]
        if not isinstance(callsid, str) or not isinstance(sdp, str):
            self._out.error(
                session.sid, 31400, "answer: callsid and sdp must be strings"
            )
            return
        found = self.find(session, callsid)
        if found is None or found[1] or session.sid not in found[0].forks:
            # Cancelled, answered elsewhere or ended: end the late answer cleanly.
            self._out.hangup(session.sid, callsid)
            return
        call = found[0]
        refused = check_sdp("answer", sdp)
        if refused is not None:
            # The answer cannot be relayed: end this leg; the caller hears
            # 31480 unless another session still rings.
            self._out.complain(session.sid, now, refused)
            self._out.hangup(session.sid, callsid, refused.code, refused.message)
            self._leave_fork(call, session.sid, notify=False)
            return
        call.state = CallState.ACTIVE
        call.callee = session.sid
        call.answer_sdp = sdp
        call.forks.discard(session.sid)
        self.resumes.keep_callee(call.parent_sid, session.sid)
        logger.info("call %s: answered by session %d", call.parent_sid, session.sid)
        self._answer_caller(call)
        self._cancel_forks(call, call.forks)
        call.forks.clear()

    def on_reject(self, session: Session, message: Message, now: float) -> None:
        """A ringing callee declines: the whole call ends with 31603.

        ``reason: "busy"`` (our phones' do-not-disturb) declines for this
        phone only, as SIP's 486 does: it stops ringing here, and the caller
        gets 31486 if no other phone of that identity still rings.
        """
        callsid = message.callsid or ""
        found = self.find(session, callsid)
        if found is None or found[1] or session.sid not in found[0].forks:
            logger.debug("session %d: reject for a call not ringing there", session.sid)
            return
        call = found[0]
        call.forks.discard(session.sid)
        if message.payload.get("reason") != REJECT_BUSY:
            self._fail_ringing(call, 31603, "Call declined")
        elif not call.forks:
            self._fail_ringing(call, 31486, "Busy here")

    def on_hangup(self, session: Session, message: Message, now: float) -> None:
        """Either leg hangs up (a ringing callee's hangup declines)."""
        callsid = message.callsid or ""
        found = self.find(session, callsid)
        if found is None:
            logger.debug("session %d: hangup for unknown call", session.sid)
            return
        call, is_caller = found
        # A party whose media failed says so (error 31003, as the SDK reports
        # it locally): the far party's media is as dead, so it hears the same
        # code rather than a plain hang-up. No other client code is relayed.
        error = message.payload.get("error")
        lost = (
            (MEDIA_LOST_CODE, MEDIA_LOST_MESSAGE)
            if isinstance(error, dict) and error.get("code") == MEDIA_LOST_CODE
            else ()
        )
        if is_caller:
            self._end(call)
            if call.state is CallState.RINGING:
                self._cancel_forks(call, call.forks)
            elif call.callee is not None:
                self._out.hangup(call.callee, call.child_sid or "", *lost)
            if call.is_echo:
                self._out.echo(EchoHangup(call.parent_sid))
        elif session.sid == call.callee:
            self._end(call)
            self._out.hangup(call.caller, call.parent_sid, *lost)
        elif session.sid in call.forks:
            call.forks.discard(session.sid)
            self._fail_ringing(call, 31603, "Call declined")
