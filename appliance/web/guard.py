"""Who may use the web page: passwords, sessions, CSRF tokens, login limits.

This is the decision-making core of the page and does no I/O: the adapter
(:mod:`appliance.web.server`) passes the time in (``now``, monotonic
seconds), runs the slow key derivation off the event loop, and keeps the
password hash in a file. Rules of this file:

* There is no default password. Until one is set, the only thing a visitor
  can do is set it (the first visit); afterwards, setting it again needs the
  old one.
* The password is kept as a scrypt hash (RFC 7914, :func:`hashlib.scrypt`)
  with a random salt, in a self-describing string, so the cost can be raised
  later without breaking saved hashes.
* Every visitor has a session, anonymous until a login upgrades it. A login
  issues a *new* session id (the old one is dropped: no fixation). Sessions
  end after :data:`IDLE_S` without a request, or :data:`LIFETIME_S` in all.
* Every form carries its session's CSRF token, compared in constant time.
  The cookie is also ``SameSite=Strict``, so a forged cross-site POST carries
  neither.
* Wrong passwords are rate-limited per client address: after
  :data:`FREE_FAILURES` failures each further attempt must wait twice as long
  as the one before (up to :data:`MAX_WAIT_S`), and every address together is
  held to :data:`GLOBAL_PER_MINUTE` failures a minute, so that many
  addresses gain nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass, field

__all__ = [
    "FREE_FAILURES",
    "IDLE_S",
    "LIFETIME_S",
    "MIN_PASSWORD_LENGTH",
    "LoginLimiter",
    "Session",
    "Sessions",
    "hash_password",
    "password_problem",
    "verify_password",
]

#: scrypt cost: 16 MiB of memory, about 0.1 s on a Raspberry Pi 4.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
MIN_PASSWORD_LENGTH = 8
IDLE_S = 30 * 60.0
LIFETIME_S = 12 * 3600.0
MAX_SESSIONS = 64
FREE_FAILURES = 3
FIRST_WAIT_S = 2.0
MAX_WAIT_S = 300.0
GLOBAL_PER_MINUTE = 30
MAX_CLIENTS = 1024


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def password_problem(password: str, repeated: str) -> str | None:
    """Why ``password`` cannot be set (None: it can)."""
    if password != repeated:
        return "The two passwords differ."
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"Use at least {MIN_PASSWORD_LENGTH} characters."
    return None


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$SALT$HASH`` for ``password`` (CPU-bound: not on the loop)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (False for a malformed hash)."""
    try:
        kind, n, r, p, salt, digest = stored.strip().split("$")
        if kind != "scrypt":
            return False
        expected = _unb64(digest)
        got = hashlib.scrypt(
            password.encode(),
            salt=_unb64(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=64 * 1024 * 1024,
        )
    except ValueError:
        return False
    return hmac.compare_digest(got, expected)


@dataclass
class Session:
    """One visitor's session.

    Attributes:
        sid: the cookie's value.
        csrf: the token every form of this session must carry.
        logged_in: whether the password was given.
        created: when it started; ``seen``: its last request.
    """

    sid: str
    csrf: str
    created: float
    seen: float
    logged_in: bool = False

    def form_ok(self, token: str) -> bool:
        """Whether a submitted form's token is this session's."""
        return hmac.compare_digest(self.csrf.encode(), token.encode())


class Sessions:
    """The live sessions (at most :data:`MAX_SESSIONS`, oldest dropped)."""

    def __init__(self) -> None:
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def visit(self, sid: str | None, now: float) -> Session:
        """The session of cookie ``sid``, or a new anonymous one.

        A session past its idle time or lifetime is ended first.
        """
        session = self._by_id.get(sid) if sid else None
        if session is not None and (
            now - session.seen > IDLE_S or now - session.created > LIFETIME_S
        ):
            self.end(session.sid)
            session = None
        if session is None:
            return self._new(now, logged_in=False)
        session.seen = now
        self._by_id.move_to_end(session.sid)
        return session

    def log_in(self, session: Session, now: float) -> Session:
        """Replace ``session`` by a logged-in one with a new id and token."""
        self.end(session.sid)
        return self._new(now, logged_in=True)

    def end(self, sid: str) -> None:
        """Forget ``sid`` (logout, expiry)."""
        self._by_id.pop(sid, None)

    def end_all(self) -> None:
        """Forget every session (the password changed)."""
        self._by_id.clear()

    def _new(self, now: float, *, logged_in: bool) -> Session:
        session = Session(
            sid=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            created=now,
            seen=now,
            logged_in=logged_in,
        )
        self._by_id[session.sid] = session
        while len(self._by_id) > MAX_SESSIONS:
            # Anonymous ones first: a flood of visitors cannot log the owner out.
            victim = next(
                (s for s in self._by_id.values() if not s.logged_in),
                next(iter(self._by_id.values())),
            )
            self.end(victim.sid)
        return session


@dataclass
class _Client:
    failures: int = 0
    blocked_until: float = 0.0


@dataclass
class LoginLimiter:
    """Decides when a client may try a password again."""

    _clients: OrderedDict[str, _Client] = field(default_factory=OrderedDict)
    _recent: deque[float] = field(default_factory=deque)

    def wait_s(self, client: str, now: float) -> float:
        """Seconds ``client`` must wait before trying (0: it may try now)."""
        while self._recent and now - self._recent[0] >= 60.0:
            self._recent.popleft()
        waits = [0.0]
        state = self._clients.get(client)
        if state is not None:
            waits.append(state.blocked_until - now)
        if len(self._recent) >= GLOBAL_PER_MINUTE:
            waits.append(60.0 - (now - self._recent[0]))
        return max(waits)

    def failed(self, client: str, now: float) -> float:
        """Record a wrong password; return how long ``client`` must now wait."""
        self._recent.append(now)
        state = self._clients.pop(client, None) or _Client()
        self._clients[client] = state
        while len(self._clients) > MAX_CLIENTS:
            self._clients.popitem(last=False)
        state.failures += 1
        extra = state.failures - FREE_FAILURES
        if extra >= 0:
            state.blocked_until = now + min(FIRST_WAIT_S * 2.0**extra, MAX_WAIT_S)
        return self.wait_s(client, now)

    def succeeded(self, client: str) -> None:
        """The right password: ``client`` starts afresh."""
        self._clients.pop(client, None)
