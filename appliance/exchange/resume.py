"""Calls that outlive a party's signaling socket (signaling-protocol.md §4.4).

Why a module of its own: the call rules (:mod:`appliance.exchange.calls`)
decide what a call is; this module keeps the reconnect tokens and the grace
timers that let an answered call survive a WebSocket drop, as Twilio's gateway
does for SDK 2.x clients. Keeping the tokens here keeps them out of the call
records (and out of every log line that prints one).

The rules:

* A party asks for it in ``listen.reconnectTimeout`` (seconds; the SDK sends
  ``min(ceil(maxCallSignalingTimeoutMs / 1000), 30)``, 0 by default). A
  ``listen`` without the key gets the exchange's own grace
  (:data:`DEFAULT_RECONNECT_TIMEOUT_S`, configurable): calls then survive a
  blip by default, as issue 12 asks; a client that says 0 gets none. Only
  a party with a grace gets a token: the caller in ``answer.reconnect``, each ringing
  callee in ``invite.reconnect`` (the SDK keeps both, §2.3).
* When that party's socket closes while the call is answered, the call is
  *held* for its reconnectTimeout: the other party is told nothing and the
  media, peer to peer, keeps flowing.
* A new session with the same account and identity sends
  ``invite{callsid, reconnect, sdp}``; the leg moves to it and it is answered
  ``answer{callsid, sdp, reconnect}`` with the SDP that leg received at first
  and a fresh token: a token is good once.
* A token that is unknown, used, or names another call is refused with
  ``hangup{callsid, error 31107}`` (reconnect parameter invalid); one issued
  to another account or identity with 31209 (reconnect attempt not
  authorized). Neither touches the held call.
* When the grace runs out, the call ends and the other party gets ``hangup``
  with error 31003, Twilio's ConnectionTimeout (signaling-protocol.md §3: the
  code Twilio uses when a call's connection is lost for good).

Pure: no I/O; ``now`` is the exchange's monotonic clock.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from appliance.exchange.model import RandomSource, Session
from appliance.exchange.timers import TimerHeap
from appliance.tokens import TokenClaims

__all__ = [
    "DEFAULT_RECONNECT_TIMEOUT_S",
    "GRACE_EXPIRED_CODE",
    "MAX_RECONNECT_TIMEOUT_S",
    "RESUME_TIMERS",
    "Grant",
    "Resumes",
    "reconnect_timeout",
]

logger = logging.getLogger(__name__)

#: The longest hold a client may ask for (the SDK's MAX_RECONNECT_TIMEOUT_ALLOWED).
MAX_RECONNECT_TIMEOUT_S = 30
#: The grace of a party whose ``listen`` does not say.
DEFAULT_RECONNECT_TIMEOUT_S = 30
#: Sent to the other party when a held leg did not come back (ConnectionTimeout).
GRACE_EXPIRED_CODE = 31003
#: Timer kinds of held legs, keyed by the call's parent sid.
_CALLER_TIMER, _CALLEE_TIMER = "resume-caller", "resume-callee"
RESUME_TIMERS = frozenset({_CALLER_TIMER, _CALLEE_TIMER})


def reconnect_timeout(value: object, default: int = DEFAULT_RECONNECT_TIMEOUT_S) -> int:
    """``listen.reconnectTimeout`` as whole seconds in [0, 30]; junk is 0.

    ``None`` (the key is absent) is ``default``.
    """
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    if not math.isfinite(value) or value <= 0:
        return 0
    return min(MAX_RECONNECT_TIMEOUT_S, math.ceil(value))


@dataclass
class Grant:
    """One reconnect token: which leg of which call, for whom."""

    parent_sid: str
    #: The callsid this leg knows the call by (parent for the caller).
    call_sid: str
    caller: bool
    #: The session holding the leg (or that held it, while the leg is held).
    sid: int
    account_sid: str
    identity: str


def _timer(caller: bool) -> str:
    return _CALLER_TIMER if caller else _CALLEE_TIMER


class Resumes:
    """Reconnect tokens and held legs of one exchange (sans-I/O).

    Args:
        timers: the exchange's timers; held legs are ``(RESUME_TIMERS, sid)``.
        rng: token randomness.
    """

    def __init__(
        self, timers: TimerHeap[tuple[str, int | str]], rng: RandomSource
    ) -> None:
        self._timers = timers
        self._rng = rng
        self._grants: dict[str, Grant] = {}
        self._by_call: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._grants)

    def issue(
        self, parent_sid: str, call_sid: str, caller: bool, session: Session
    ) -> str | None:
        """A token for ``session``'s leg, if it asked to be held; else None."""
        claims = session.claims
        if session.reconnect_timeout <= 0 or claims is None:
            return None
        token = f"RT{self._rng.getrandbits(128):032x}"
        self._grants[token] = Grant(
            parent_sid, call_sid, caller, session.sid, claims.account_sid,
            claims.identity,
        )  # fmt: skip
        self._by_call.setdefault(parent_sid, set()).add(token)
        return token

    def keep_callee(self, parent_sid: str, sid: int) -> None:
        """``sid`` answered: the tokens of the other ringing sessions lapse."""
        for token in list(self._by_call.get(parent_sid, ())):
            grant = self._grants[token]
            if not grant.caller and grant.sid != sid:
                self._revoke(token)

    def hold(
        self, parent_sid: str, caller: bool, session: Session | None, now: float
    ) -> bool:
        """The leg's socket is gone: hold it if it has a token; True if held."""
        if session is None or session.reconnect_timeout <= 0:
            return False
        if not any(
            self._grants[t].caller == caller and self._grants[t].sid == session.sid
            for t in self._by_call.get(parent_sid, ())
        ):
            return False
        deadline = now + session.reconnect_timeout
        self._timers.set((_timer(caller), parent_sid), deadline)
        logger.info(
            "call %s: held %d s for session %d to come back",
            parent_sid,
            session.reconnect_timeout,
            session.sid,
        )
        return True

    def held(self, parent_sid: str, caller: bool) -> bool:
        """Whether that leg waits for its party to come back."""
        return self._timers.get((_timer(caller), parent_sid)) is not None

    def claim(
        self, token: object, call_sid: str, claims: TokenClaims
    ) -> Grant | tuple[int, str]:
        """The grant ``token`` gives ``claims`` for ``call_sid``, or why not."""
        grant = self._grants.get(token) if isinstance(token, str) else None
        if grant is None or grant.call_sid != call_sid:
            return 31107, "Invalid reconnect token"
        if (grant.account_sid, grant.identity) != (claims.account_sid, claims.identity):
            return 31209, "Reconnect attempt not authorized"
        return grant

    def resumed(self, grant: Grant, session: Session) -> str | None:
        """``session`` took the leg of ``grant``; returns the leg's next token."""
        self._timers.cancel((_timer(grant.caller), grant.parent_sid))
        for token in list(self._by_call.get(grant.parent_sid, ())):
            if self._grants[token].caller == grant.caller:
                self._revoke(token)
        return self.issue(grant.parent_sid, grant.call_sid, grant.caller, session)

    def forget(self, parent_sid: str) -> None:
        """The call ended: its tokens and grace timers go."""
        for token in list(self._by_call.get(parent_sid, ())):
            self._revoke(token)
        for caller in (True, False):
            self._timers.cancel((_timer(caller), parent_sid))

    @staticmethod
    def expired_leg(kind: str) -> bool:
        """Whether the timer ``kind`` is the caller's (else the callee's)."""
        return kind == _CALLER_TIMER

    def _revoke(self, token: str) -> None:
        grant = self._grants.pop(token)
        tokens = self._by_call.get(grant.parent_sid)
        if tokens is not None:
            tokens.discard(token)
            if not tokens:
                del self._by_call[grant.parent_sid]
