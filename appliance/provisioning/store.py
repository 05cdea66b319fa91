"""The provisioner's enrolled phones, in one SQLite file (stdlib ``sqlite3``).

Blocking by nature: the HTTP service calls these methods through
``asyncio.to_thread``; the admin commands call them directly, on the same
file, while the service runs (WAL mode lets readers and one writer share it;
``busy_timeout`` waits for the other writer instead of failing).

Each call opens its own connection: no connection crosses threads, and a
command-line rename is seen by the service's next request. A phone's device
credential is never stored, only its scrypt hash
(:func:`appliance.provisioning.grant.hash_secret`).
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ProvisioningError
from appliance.provisioning.grant import hash_secret, verify_secret

__all__ = ["Credential", "Phone", "PhoneStore", "parse_credential"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS phones (
    sid TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    secret_hash TEXT NOT NULL,
    enrolled_at REAL NOT NULL,
    revoked_at REAL,
    last_token_at REAL
);
"""


@dataclass(frozen=True)
class Phone:
    """One enrolled phone (never its credential)."""

    sid: str
    identity: str
    name: str
    enrolled_at: float
    revoked_at: float | None
    last_token_at: float | None

    @property
    def revoked(self) -> bool:
        """Whether an admin revoked it."""
        return self.revoked_at is not None


@dataclass(frozen=True)
class Credential:
    """A phone's device credential, as handed over once at enrollment."""

    sid: str
    secret: str

    def __str__(self) -> str:
        return f"{self.sid}.{self.secret}"

    def __repr__(self) -> str:
        return f"Credential(sid={self.sid!r}, secret='********')"


def parse_credential(text: str) -> Credential:
    """``PH….<secret>`` back into a :class:`Credential`.

    Raises:
        ProvisioningError: not of that shape.
    """
    sid, sep, secret = text.strip().partition(".")
    if not sep or not sid.startswith("PH") or len(sid) != 34 or not secret:
        raise ProvisioningError("not a device credential")
    return Credential(sid, secret)


class PhoneStore:
    """The phones table of ``path`` (created on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise ProvisioningError(f"cannot open {self.path}: {exc}") from exc
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
            yield db
        except sqlite3.Error as exc:
            raise ProvisioningError(f"database {self.path}: {exc}") from exc
        finally:
            db.close()

    def create(self) -> None:
        """Create the file and table, readable by its owner only."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect():
            pass
        self.path.chmod(0o600)

    def enroll(self, identity: str, name: str, now: float) -> Credential:
        """Add a phone; return its new credential (shown only this once)."""
        credential = Credential("PH" + secrets.token_hex(16), secrets.token_hex(32))
        with self._connect() as db:
            db.execute(
                "INSERT INTO phones (sid, identity, name, secret_hash, enrolled_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (credential.sid, identity, name, hash_secret(credential.secret), now),
            )
        return credential

    def authenticate(self, credential: Credential) -> Phone | None:
        """The phone ``credential`` belongs to, or ``None`` (revoked or not)."""
        with self._connect() as db:
            row = db.execute(
                "SELECT secret_hash FROM phones WHERE sid = ?", (credential.sid,)
            ).fetchone()
        if row is None or not verify_secret(credential.secret, row[0]):
            return None
        return self.get(credential.sid)

    def get(self, sid: str) -> Phone | None:
        """One phone by SID."""
        with self._connect() as db:
            row = db.execute(
                "SELECT sid, identity, name, enrolled_at, revoked_at, last_token_at"
                " FROM phones WHERE sid = ?",
                (sid,),
            ).fetchone()
        return Phone(*row) if row else None

    def list(self) -> list[Phone]:
        """Every phone, oldest enrollment first."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT sid, identity, name, enrolled_at, revoked_at, last_token_at"
                " FROM phones ORDER BY enrolled_at, sid"
            ).fetchall()
        return [Phone(*row) for row in rows]

    def rename(self, sid: str, name: str) -> None:
        """Change a phone's directory name.

        Raises:
            ProvisioningError: no such phone.
        """
        self._update("UPDATE phones SET name = ? WHERE sid = ?", (name, sid), sid)

    def revoke(self, sid: str, now: float) -> None:
        """Revoke a phone: it gets no more tokens.

        Raises:
            ProvisioningError: no such phone.
        """
        self._update(
            "UPDATE phones SET revoked_at = coalesce(revoked_at, ?) WHERE sid = ?",
            (now, sid),
            sid,
        )

    def token_issued(self, sid: str, now: float) -> None:
        """Note when a phone last got a token (shown to the admin)."""
        self._update(
            "UPDATE phones SET last_token_at = ? WHERE sid = ?", (now, sid), sid
        )

    def _update(self, sql: str, args: tuple[object, ...], sid: str) -> None:
        with self._connect() as db:
            changed = db.execute(sql, args).rowcount
        if not changed:
            raise ProvisioningError(f"no phone {sid}")
