"""The call log on disk: a small SQLite database in the phone's state directory.

SQLite rather than a JSON file rewritten with
:func:`appliance.files.write_atomic`: an entry is appended after every call,
and rewriting the whole log each time would wear the SD card for no gain.
SQLite gives the same guarantee as the atomic rename (a power cut leaves the
log as it was before or after the call, never half of it) through its
write-ahead log with ``synchronous=NORMAL``: a committed entry can be lost to a
power cut only together with the calls after it, never corrupted.

The log is bounded: after each insert the oldest rows beyond ``max_entries``
are deleted. A file that is not a usable database (corrupt, or something else
at that path) is moved aside to ``NAME.bad`` and a new log starts, so a
damaged SD card costs the history, not the phone; when even that fails,
:class:`CallLogError` says why and the caller runs without a log.

Methods do blocking file I/O; the recorder calls them off the event loop.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from appliance.calllog.core import Direction, Entry
from appliance.errors import CallLogError

__all__ = ["DEFAULT_MAX_ENTRIES", "CallLogStore"]

logger = logging.getLogger(__name__)

#: Entries kept when the configuration does not say.
DEFAULT_MAX_ENTRIES = 200

_SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL,
    direction TEXT NOT NULL,
    remote TEXT NOT NULL,
    duration_s REAL NOT NULL,
    clock_known INTEGER NOT NULL,
    seen INTEGER NOT NULL,
    mos REAL,
    codec TEXT,
    jitter_ms REAL,
    loss_percent REAL
)
"""
#: Version 1 lacked the last three columns; adding them keeps its calls (NULL:
#: not measured) and costs no rewrite of the table.
_FROM_V1 = (
    "ALTER TABLE calls ADD COLUMN codec TEXT",
    "ALTER TABLE calls ADD COLUMN jitter_ms REAL",
    "ALTER TABLE calls ADD COLUMN loss_percent REAL",
)
_COLUMNS = (
    "started, direction, remote, duration_s, clock_known, seen, mos,"
    " codec, jitter_ms, loss_percent"
)


class CallLogStore:
    """The log at ``path`` holding at most ``max_entries`` calls.

    Raises:
        CallLogError: the file can neither be opened nor replaced by a new log
            (unwritable directory, full disk).
    """

    def __init__(self, path: Path, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.path = path
        self.max_entries = max_entries
        try:
            self._db = self._open()
        except sqlite3.OperationalError as exc:  # cannot open: the file may be fine
            raise CallLogError(f"{path}: cannot open the call log: {exc}") from exc
        except sqlite3.DatabaseError as exc:  # opened, and not a usable log
            self._set_aside(str(exc))
            try:
                self._db = self._open()
            except sqlite3.Error as again:
                raise CallLogError(
                    f"{path}: cannot start a new call log: {again}"
                ) from again
        except (sqlite3.Error, OSError) as exc:
            raise CallLogError(f"{path}: cannot open the call log: {exc}") from exc

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise sqlite3.OperationalError(str(exc)) from exc
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, 1, _SCHEMA_VERSION):
                raise sqlite3.DatabaseError(f"unknown call log version {version}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            if version != _SCHEMA_VERSION:
                with db:  # the new columns and the version, or neither
                    # IMMEDIATE: take the write lock first, waiting for another
                    # process's write; a deferred transaction that read first
                    # fails at once ("database is locked") when that process
                    # commits in between (SQLite's WAL snapshot rule).
                    db.execute("BEGIN IMMEDIATE")
                    # Again under the lock: another process may have migrated.
                    version = db.execute("PRAGMA user_version").fetchone()[0]
                    db.execute(_SCHEMA)
                    if version == 1:
                        for statement in _FROM_V1:
                            db.execute(statement)
                    db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            db.execute("SELECT count(*) FROM calls").fetchone()
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _set_aside(self, why: str) -> None:
        bad = self.path.with_name(self.path.name + ".bad")
        logger.warning(
            "%s: not a usable call log (%s); moved to %s", self.path, why, bad
        )
        try:
            self.path.replace(bad)
        except OSError as exc:
            raise CallLogError(
                f"{self.path}: cannot move the bad call log aside: {exc}"
            ) from exc
        for suffix in ("-wal", "-shm"):
            self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)

    def add(self, entry: Entry) -> None:
        """Append ``entry`` and drop the oldest beyond ``max_entries``.

        Raises:
            CallLogError: the write failed (full disk, I/O error).
        """
        try:
            with self._db:  # one transaction: the insert and the trim
                self._db.execute("BEGIN")
                self._db.execute(
                    f"INSERT INTO calls ({_COLUMNS})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        entry.started,
                        entry.direction.value,
                        entry.remote,
                        entry.duration_s,
                        int(entry.clock_known),
                        int(entry.seen),
                        entry.mos,
                        entry.codec,
                        entry.jitter_ms,
                        entry.loss_percent,
                    ),
                )
                self._db.execute(
                    "DELETE FROM calls WHERE id <= "
                    "(SELECT id FROM calls ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (self.max_entries,),
                )
        except sqlite3.Error as exc:
            raise CallLogError(f"{self.path}: call not logged: {exc}") from exc

    def recent(self, limit: int | None = None) -> list[Entry]:
        """The newest entries first (all of them without ``limit``)."""
        try:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM calls ORDER BY id DESC LIMIT ?",
                (-1 if limit is None else limit,),
            ).fetchall()
        except sqlite3.Error as exc:
            raise CallLogError(f"{self.path}: cannot read the call log: {exc}") from exc
        entries = []
        for row in rows:
            started, direction, remote, duration, known, seen = row[:6]
            mos, codec, jitter, loss = row[6:]
            try:
                kind = Direction(direction)
            except ValueError:
                continue  # written by a newer version
            entries.append(
                Entry(
                    float(started),
                    kind,
                    str(remote),
                    float(duration),
                    bool(known),
                    bool(seen),
                    _number(mos),
                    None if codec is None else str(codec),
                    _number(jitter),
                    _number(loss),
                )
            )
        return entries

    def mark_missed_seen(self) -> None:
        """Every missed call has now been looked at."""
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.execute("UPDATE calls SET seen = 1 WHERE seen = 0")
        except sqlite3.Error as exc:
            raise CallLogError(
                f"{self.path}: cannot update the call log: {exc}"
            ) from exc

    def close(self) -> None:
        """Close the database (the WAL is checkpointed)."""
        self._db.close()


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None
