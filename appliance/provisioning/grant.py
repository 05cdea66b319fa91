"""The provisioner's side of the device authorization grant (RFC 8628), pure.

Theory of operation. A phone with no identity asks for a device code
(RFC 8628 §3.1/§3.2); it gets a long random ``device_code`` that only it
knows, a short ``user_code`` for a person, and the URI where the person
approves. The phone then polls the token endpoint (§3.4) no more often than
``interval`` seconds; until someone acts it hears ``authorization_pending``,
if it polls too fast ``slow_down`` and from then on an interval 5 s longer
(§3.5), after ``expires_in`` ``expired_token``, after a denial
``access_denied``. An approval carries the identity (and an optional
directory name) the admin picked; the first poll after it collects the
approval, and the code is spent (a second poll gets ``invalid_grant``,
RFC 6749 §5.2).

User codes (§5.1, §6.1): 8 characters from a 20-consonant alphabet
(``BCDFGHJKLMNPQRSTVWXZ``: no vowels, so no words; no digits, so no 0/O or
1/I confusion; case-insensitive), shown as ``XXXX-XXXX``: 20**8 ~ 2**34.6
codes. §5.1 asks for rate limiting of the entry: each client (the admin's
session or address) may fail :data:`MAX_FAILURES_PER_CLIENT` times per
:data:`FAILURE_WINDOW_S`, and all clients together
:data:`MAX_FAILURES_TOTAL` times, before entries are refused with
``slow_down`` until the window passes. With at most a few dozen codes
pending and a 10-minute lifetime, an attacker who can make
``MAX_FAILURES_TOTAL`` guesses per window finds a pending code with a
probability below ``pending * 100 / 20**8`` per window (3e-9 for 10 codes).

Time is an input (``now``, monotonic seconds); randomness is an input
(``random_bytes``, :func:`secrets.token_bytes` by default), so tests can
replay a sequence. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from appliance.errors import ProvisioningError

__all__ = [
    "DEVICE_CODE_TTL_S",
    "FAILURE_WINDOW_S",
    "MAX_FAILURES_PER_CLIENT",
    "MAX_FAILURES_TOTAL",
    "POLL_INTERVAL_S",
    "SLOW_DOWN_STEP_S",
    "USER_CODE_ALPHABET",
    "Approved",
    "Authorization",
    "DeviceGrants",
    "GrantError",
    "PendingGrant",
    "format_user_code",
    "hash_secret",
    "normalize_user_code",
    "verify_secret",
]

#: RFC 8628 §6.1: consonants only, upper case.
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8
#: Lifetime of a device code (§3.2 ``expires_in``).
DEVICE_CODE_TTL_S = 600.0
#: Minimum polling interval (§3.2 ``interval``; the RFC's default is 5 s).
POLL_INTERVAL_S = 5.0
#: §3.5: "the interval MUST be increased by 5 seconds" on slow_down.
SLOW_DOWN_STEP_S = 5.0
FAILURE_WINDOW_S = 60.0
MAX_FAILURES_PER_CLIENT = 5
MAX_FAILURES_TOTAL = 50
#: At most this many codes pending at once: an unauthenticated endpoint must
#: not grow memory without bound, and fewer codes mean fewer to guess.
MAX_PENDING = 100


class GrantError(ProvisioningError):
    """A request of the grant failed.

    Attributes:
        error: the OAuth error string (RFC 8628 §3.5, RFC 6749 §5.2), such as
            ``authorization_pending``; what the HTTP layer puts in ``error``.
        code: a Twilio-style numeric code (20404 not found, 20429 too many
            requests, 20001 bad input).
        detail: a sentence for people.
    """

    def __init__(self, error: str, code: int, detail: str) -> None:
        super().__init__(f"{error}: {detail}")
        self.error = error
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Authorization:
    """What :meth:`DeviceGrants.issue` hands the phone (§3.2)."""

    device_code: str
    user_code: str
    expires_in: float
    interval: float


@dataclass(frozen=True)
class Approved:
    """The result of a poll after approval: who the phone is now."""

    identity: str
    name: str


@dataclass(frozen=True)
class PendingGrant:
    """A code waiting for a person, as the approval page shows it."""

    user_code: str
    expires_at: float
    client_info: str


class _State(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"


@dataclass
class _Grant:
    user_code: str
    expires_at: float
    interval: float
    client_info: str
    state: _State = _State.PENDING
    last_poll: float | None = None
    identity: str = ""
    name: str = ""


@dataclass
class _Failures:
    times: list[float] = field(default_factory=list)

    def recent(self, now: float) -> int:
        self.times = [t for t in self.times if t > now - FAILURE_WINDOW_S]
        return len(self.times)


def normalize_user_code(text: str) -> str:
    """Upper-case ``text`` and drop separators and spaces (§6.1: people type
    codes in any case, with or without the dash)."""
    return "".join(c for c in text.upper() if c not in "- \t")


def format_user_code(code: str) -> str:
    """``BCDFGHJK`` -> ``BCDF-GHJK``."""
    return f"{code[:4]}-{code[4:]}"


def _digest(device_code: str) -> str:
    # Device codes are kept as hashes, so a dump of the table grants nothing.
    return hashlib.sha256(device_code.encode()).hexdigest()


class DeviceGrants:
    """Pending device authorizations and the user-code entry limits.

    Args:
        ttl_s: device code lifetime.
        interval_s: minimum polling interval.
        random_bytes: the randomness source (``n -> n bytes``).
    """

    def __init__(
        self,
        *,
        ttl_s: float = DEVICE_CODE_TTL_S,
        interval_s: float = POLL_INTERVAL_S,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self._ttl = ttl_s
        self._interval = interval_s
        self._random = random_bytes
        self._by_device: dict[str, _Grant] = {}
        self._by_user: dict[str, str] = {}  # user code -> device code digest
        self._failures: dict[str, _Failures] = {}
        self._all_failures = _Failures()

    # --- the phone's side ----------------------------------------------------

    def issue(self, now: float, client_info: str = "") -> Authorization:
        """Start a grant (§3.2); ``client_info`` is shown to the approver.

        Raises:
            GrantError: ``slow_down`` (20429) when too many codes are pending.
        """
        self.tick(now)
        if len(self._by_device) >= MAX_PENDING:
            raise GrantError("slow_down", 20429, "too many pending device codes")
        device_code = self._random(32).hex()
        while True:
            user_code = self._user_code()
            if user_code not in self._by_user:
                break
        digest = _digest(device_code)
        self._by_device[digest] = _Grant(
            user_code, now + self._ttl, self._interval, client_info[:80]
        )
        self._by_user[user_code] = digest
        return Authorization(
            device_code, format_user_code(user_code), self._ttl, self._interval
        )

    def _user_code(self) -> str:
        # Rejection sampling: bytes >= 240 would bias toward the first letters
        # (256 = 12 * 20 + 16).
        out: list[str] = []
        while len(out) < USER_CODE_LENGTH:
            for byte in self._random(USER_CODE_LENGTH):
                if byte < 240 and len(out) < USER_CODE_LENGTH:
                    out.append(USER_CODE_ALPHABET[byte % len(USER_CODE_ALPHABET)])
        return "".join(out)

    def poll(self, device_code: str, now: float) -> Approved:
        """A token request with ``device_code`` (§3.4, answered per §3.5).

        Returns:
            who the phone is, once approved; the grant is then spent.

        Raises:
            GrantError: ``authorization_pending``, ``slow_down`` (the interval
                grows by 5 s), ``expired_token``, ``access_denied`` or
                ``invalid_grant`` (unknown or already used code).
        """
        digest = _digest(device_code)
        grant = self._by_device.get(digest)
        if grant is None:
            raise GrantError("invalid_grant", 20404, "unknown or used device code")
        if now >= grant.expires_at:
            self._drop(digest)
            raise GrantError("expired_token", 20404, "the device code has expired")
        if grant.state is _State.DENIED:
            self._drop(digest)
            raise GrantError("access_denied", 20403, "the request was denied")
        if grant.state is _State.APPROVED:
            self._drop(digest)
            return Approved(grant.identity, grant.name)
        too_soon = grant.last_poll is not None and now - grant.last_poll < (
            grant.interval - 0.5  # tolerance for the phone's timer and the network
        )
        grant.last_poll = now
        if too_soon:
            grant.interval += SLOW_DOWN_STEP_S
            raise GrantError(
                "slow_down", 20429, f"poll at most every {grant.interval:g} s"
            )
        raise GrantError("authorization_pending", 20404, "waiting for approval")

    # --- the approver's side -------------------------------------------------

    def lookup(self, user_code: str, client: str, now: float) -> PendingGrant:
        """Find the pending grant of a typed ``user_code`` (rate-limited, §5.1).

        Args:
            user_code: as typed (any case, with or without the dash).
            client: who is typing (session or address) for the per-client limit.

        Raises:
            GrantError: ``slow_down`` (20429) after too many failures,
                ``invalid_request`` (20001) for a malformed code,
                ``invalid_grant`` (20404) for an unknown or expired code.
        """
        self.tick(now)
        mine = self._failures.setdefault(client, _Failures())
        if (
            mine.recent(now) >= MAX_FAILURES_PER_CLIENT
            or self._all_failures.recent(now) >= MAX_FAILURES_TOTAL
        ):
            raise GrantError(
                "slow_down", 20429, "too many wrong codes; wait a minute and retry"
            )
        code = normalize_user_code(user_code)
        digest = self._by_user.get(code)
        grant = self._by_device.get(digest) if digest else None
        if (
            grant is None
            or grant.state is not _State.PENDING
            or now >= grant.expires_at
        ):
            mine.times.append(now)
            self._all_failures.times.append(now)
            if len(code) != USER_CODE_LENGTH or any(
                c not in USER_CODE_ALPHABET for c in code
            ):
                raise GrantError(
                    "invalid_request", 20001, "a code is 8 letters, like BCDF-GHJK"
                )
            raise GrantError("invalid_grant", 20404, "no such code, or it has expired")
        return PendingGrant(format_user_code(code), grant.expires_at, grant.client_info)

    def approve(
        self, user_code: str, identity: str, name: str, client: str, now: float
    ) -> None:
        """Approve the grant of ``user_code`` for ``identity`` (looked up first).

        Raises:
            GrantError: as :meth:`lookup`.
        """
        grant = self._pending(user_code, client, now)
        grant.state = _State.APPROVED
        grant.identity = identity
        grant.name = name

    def deny(self, user_code: str, client: str, now: float) -> None:
        """Deny the grant of ``user_code``; the phone's next poll hears so.

        Raises:
            GrantError: as :meth:`lookup`.
        """
        self._pending(user_code, client, now).state = _State.DENIED

    def _pending(self, user_code: str, client: str, now: float) -> _Grant:
        self.lookup(user_code, client, now)
        digest = self._by_user[normalize_user_code(user_code)]
        return self._by_device[digest]

    def pending(self, now: float) -> list[PendingGrant]:
        """Codes waiting for a person, oldest first."""
        self.tick(now)
        return [
            PendingGrant(format_user_code(g.user_code), g.expires_at, g.client_info)
            for g in self._by_device.values()
            if g.state is _State.PENDING and now < g.expires_at
        ]

    # --- time ------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Forget expired grants."""
        for digest, grant in list(self._by_device.items()):
            if now >= grant.expires_at + FAILURE_WINDOW_S:
                # Kept a minute past expiry so a late poll hears expired_token.
                self._drop(digest)
        for client, failures in list(self._failures.items()):
            if not failures.recent(now):
                del self._failures[client]

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has something to forget."""
        return min(
            (g.expires_at + FAILURE_WINDOW_S for g in self._by_device.values()),
            default=None,
        )

    def _drop(self, digest: str) -> None:
        grant = self._by_device.pop(digest, None)
        if grant is not None:
            self._by_user.pop(grant.user_code, None)


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    """``scrypt$<salt hex>$<hash hex>`` of a device credential or password.

    scrypt (RFC 7914) with n=2**14, r=8, p=1: ~16 MiB and tens of ms, so a
    stolen database does not give up credentials cheaply.
    """
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_secret(secret: str, stored: str) -> bool:
    """Whether ``secret`` matches a :func:`hash_secret` result (constant time)."""
    try:
        kind, salt_hex, digest_hex = stored.split("$")
        salt = bytes.fromhex(salt_hex)
        expected = bytes.fromhex(digest_hex)
    except ValueError:
        return False
    if kind != "scrypt":
        return False
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return hmac.compare_digest(digest, expected)
