"""Admin sessions of the approval page: login limits, session ids, CSRF tokens (pure).

A browser gets a session before it logs in (the login form needs a CSRF
token too: "login CSRF"); logging in replaces it with a new id (no session
fixation). Each session has its own CSRF token, sent in every form and
compared in constant time (OWASP CSRF cheat sheet, synchronizer token).

Wrong passwords are limited per client address and overall
(:data:`MAX_LOGIN_FAILURES` per :data:`LOGIN_WINDOW_S`, and ten times that
for everyone together), so the password cannot be guessed at network speed;
the scrypt check itself costs tens of milliseconds more.

Time and randomness are inputs; nothing here does I/O.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from appliance.provisioning.grant import GrantError

__all__ = [
    "LOGIN_WINDOW_S",
    "MAX_LOGIN_FAILURES",
    "SESSION_TTL_S",
    "Session",
    "Sessions",
]

SESSION_TTL_S = 8 * 3600.0
LOGIN_WINDOW_S = 300.0
MAX_LOGIN_FAILURES = 5
MAX_SESSIONS = 1000


@dataclass
class Session:
    """One browser's session."""

    sid: str
    csrf: str
    expires_at: float
    logged_in: bool = False

    def csrf_ok(self, token: str) -> bool:
        """Whether a form's CSRF token is this session's."""
        return hmac.compare_digest(self.csrf.encode(), token.encode())


class Sessions:
    """Sessions by id, and the failed logins by client.

    Args:
        random_token: ``n -> url-safe text of n random bytes``.
    """

    def __init__(
        self, random_token: Callable[[int], str] = secrets.token_urlsafe
    ) -> None:
        self._random = random_token
        self._sessions: dict[str, Session] = {}
        self._failures: dict[str, list[float]] = {}

    def get(self, sid: str | None, now: float) -> Session | None:
        """The live session ``sid``, if any."""
        session = self._sessions.get(sid or "")
        if session is None or now >= session.expires_at:
            self._sessions.pop(sid or "", None)
            return None
        return session

    def new(self, now: float, *, logged_in: bool = False) -> Session:
        """A new session."""
        if len(self._sessions) >= MAX_SESSIONS:
            self._expire(now)
            if len(self._sessions) >= MAX_SESSIONS:
                # Drop the oldest anonymous ones first: logins stay.
                for sid, s in sorted(
                    self._sessions.items(), key=lambda i: i[1].expires_at
                ):
                    if not s.logged_in:
                        del self._sessions[sid]
                        break
        session = Session(self._random(32), self._random(32), now + SESSION_TTL_S)
        session.logged_in = logged_in
        self._sessions[session.sid] = session
        return session

    def check_login_allowed(self, client: str, now: float) -> None:
        """Refuse a login attempt from ``client`` after too many failures.

        Raises:
            GrantError: ``slow_down`` (20429).
        """
        recent = self._recent(client, now)
        total = sum(len(self._recent(c, now)) for c in list(self._failures))
        if len(recent) >= MAX_LOGIN_FAILURES or total >= 10 * MAX_LOGIN_FAILURES:
            raise GrantError(
                "slow_down", 20429, "too many wrong passwords; wait and retry"
            )

    def login_failed(self, client: str, now: float) -> None:
        """Count a wrong password from ``client``."""
        self._failures.setdefault(client, []).append(now)

    def logged_in(self, old: Session | None, now: float) -> Session:
        """Replace ``old`` with a new logged-in session (new id, new CSRF)."""
        if old is not None:
            self._sessions.pop(old.sid, None)
        return self.new(now, logged_in=True)

    def logout(self, session: Session) -> None:
        """End a session."""
        self._sessions.pop(session.sid, None)

    def _recent(self, client: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(client, []) if t > now - LOGIN_WINDOW_S]
        if times:
            self._failures[client] = times
        else:
            self._failures.pop(client, None)
        return times

    def _expire(self, now: float) -> None:
        for sid, session in list(self._sessions.items()):
            if now >= session.expires_at:
                del self._sessions[sid]
