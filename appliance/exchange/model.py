"""The exchange core's records: sessions, calls, echo requests.

Why a module of its own: :mod:`appliance.exchange.core` holds the rules of
the gateway; these are the plain records those rules act on, and the request
types the adapter reads. Keeping them apart keeps the core under the house
module size and lets the timer and limit modules name them.

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from appliance.tokens import TokenClaims

__all__ = [
    "Call",
    "CallState",
    "EchoHangup",
    "EchoOffer",
    "EchoRequest",
    "RandomSource",
    "Session",
]


class RandomSource(Protocol):
    """What the core needs from ``random.Random`` (for CallSids)."""

    def getrandbits(self, k: int, /) -> int:
        """Return an int with ``k`` random bits."""
        ...


@dataclass(frozen=True)
class EchoOffer:
    """Answer this SDP offer with echo media, then call ``echo_answered``."""

    call_sid: str
    sdp: str


@dataclass(frozen=True)
class EchoHangup:
    """The echo call ended: stop its media (it may still be being answered)."""

    call_sid: str


EchoRequest = EchoOffer | EchoHangup


class CallState(StrEnum):
    """A call rings until a session answers it; then it is active."""

    RINGING = "ringing"
    ACTIVE = "active"


@dataclass
class Session:
    """One WebSocket as the core sees it."""

    sid: int
    #: Monotonic time of the last frame received (heartbeat replies included).
    last_seen: float
    #: When the next heartbeat is due.
    next_heartbeat: float
    #: The source address the adapter reported (for per-address limits).
    source: str = ""
    claims: TokenClaims | None = None
    #: ``claims.expires_at`` on the monotonic clock (set with ``claims``).
    token_deadline: float = 0.0
    registered: bool = False
    call_waiting: bool = False
    expiry_reported: bool = False
    #: Seconds its answered calls are held if the socket drops (``listen``).
    reconnect_timeout: int = 0

    def expired(self, now: float) -> bool:
        """Whether the session has no token, or its token has expired."""
        return self.claims is None or self.token_deadline <= now


@dataclass
class Call:
    """One call: the caller's leg and the sessions it rings or was answered by."""

    parent_sid: str
    temp_sid: str
    caller: int
    caller_identity: str
    offer_sdp: str
    target: str | None  # identity; None = echo destination
    answer_sdp: str | None = None
    child_sid: str | None = None
    state: CallState = CallState.RINGING
    forks: set[int] = field(default_factory=set)  # sessions still ringing
    cancelled: set[int] = field(default_factory=set)  # got cancel (late answers)
    callee: int | None = None

    @property
    def is_echo(self) -> bool:
        """Whether the call goes to the echo destination."""
        return self.target is None
