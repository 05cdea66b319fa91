"""CallLogStore on a real SQLite file: kept, bounded, and a bad file set aside."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.calllog.core import Direction, Entry
from appliance.calllog.recorder import clock_synchronized, open_store
from appliance.calllog.store import CallLogStore
from appliance.errors import CallLogError


def _entry(i: int, direction: Direction = Direction.INCOMING) -> Entry:
    return Entry(
        started=1000.0 + i,
        direction=direction,
        remote=f"client:n{i}",
        duration_s=float(i),
        seen=direction is not Direction.MISSED,
        mos=4.1 if direction is Direction.INCOMING else None,
        codec="PCMU" if direction is Direction.INCOMING else None,
        jitter_ms=2.5 if direction is Direction.INCOMING else None,
        loss_percent=0.5 if direction is Direction.INCOMING else None,
    )


def test_entries_survive_a_reopen_newest_first(tmp_path: Path) -> None:
    path = tmp_path / "state" / "calls.db"
    store = CallLogStore(path)
    store.add(_entry(1))
    store.add(_entry(2, Direction.MISSED))
    store.add(_entry(3, Direction.OUTGOING))
    store.close()
    again = CallLogStore(path)
    assert again.recent() == [
        _entry(3, Direction.OUTGOING),
        _entry(2, Direction.MISSED),
        _entry(1),
    ]
    assert again.recent(1) == [_entry(3, Direction.OUTGOING)]
    again.close()


def test_the_log_keeps_only_the_newest_max_entries(tmp_path: Path) -> None:
    store = CallLogStore(tmp_path / "calls.db", max_entries=5)
    for i in range(12):
        store.add(_entry(i))
    assert [e.remote for e in store.recent()] == [
        f"client:n{i}" for i in range(11, 6, -1)
    ]
    store.close()


def test_marking_missed_calls_seen_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    store = CallLogStore(path)
    store.add(_entry(1, Direction.MISSED))
    store.add(_entry(2, Direction.MISSED))
    assert sum(not e.seen for e in store.recent()) == 2
    store.mark_missed_seen()
    store.close()
    assert all(e.seen for e in CallLogStore(path).recent())


def test_a_corrupt_file_is_set_aside_and_a_new_log_starts(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    garbage = b"this is not a database" * 100
    path.write_bytes(garbage)
    store = CallLogStore(path)
    assert store.recent() == []
    store.add(_entry(1))
    assert store.recent() == [_entry(1)]
    store.close()
    assert (tmp_path / "calls.db.bad").read_bytes() == garbage


def test_a_version_1_log_keeps_its_calls_and_gains_the_quality_columns(
    tmp_path: Path,
) -> None:
    path = tmp_path / "calls.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE calls (id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL"
        " NOT NULL, direction TEXT NOT NULL, remote TEXT NOT NULL, duration_s REAL"
        " NOT NULL, clock_known INTEGER NOT NULL, seen INTEGER NOT NULL, mos REAL)"
    )
    db.execute(
        "INSERT INTO calls (started, direction, remote, duration_s, clock_known,"
        " seen, mos) VALUES (5.0, 'incoming', 'client:old', 7.0, 1, 1, 3.9)"
    )
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    store = CallLogStore(path)
    store.add(_entry(1))
    assert store.recent() == [
        _entry(1),
        Entry(5.0, Direction.INCOMING, "client:old", 7.0, mos=3.9),
    ]
    store.close()
    assert not (tmp_path / "calls.db.bad").exists()
    again = sqlite3.connect(path)
    assert again.execute("PRAGMA user_version").fetchone()[0] == 2
    again.close()


def test_a_log_from_an_unknown_version_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    CallLogStore(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.commit()
    db.close()
    store = CallLogStore(path)
    assert store.recent() == []
    store.close()
    assert (tmp_path / "calls.db.bad").exists()


def test_a_file_where_the_directory_should_be_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("not a directory")
    with pytest.raises(CallLogError, match=r"calls\.db"):
        CallLogStore(tmp_path / "state" / "calls.db")
    assert open_store(tmp_path / "state" / "calls.db") is None


def test_a_directory_in_the_way_is_a_clear_error_not_a_crash(tmp_path: Path) -> None:
    # Works as root too: nothing can open or replace a non-empty directory.
    path = tmp_path / "calls.db"
    path.mkdir()
    (path / "keep").write_text("x")
    with pytest.raises(CallLogError, match=r"calls\.db"):
        CallLogStore(path)
    assert open_store(path) is None
    assert (path / "keep").exists()  # not moved aside: it may be someone's


def test_clock_synchronised_is_the_flag_file(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    assert not clock_synchronized(flag)
    flag.touch()
    assert clock_synchronized(flag)
    assert clock_synchronized(None)


WRITER = """
import sys, time
from pathlib import Path
from appliance.calllog.core import Direction, Entry
from appliance.calllog.store import CallLogStore
store = CallLogStore(Path(sys.argv[1]))
print("open", flush=True)
deadline = time.monotonic() + float(sys.argv[2])
i = 0
while time.monotonic() < deadline:
    store.add(Entry(float(i), Direction.MISSED, "client:x", 0.0))
    i += 1
print(i, flush=True)
"""


def test_the_log_opens_while_another_process_writes(tmp_path: Path) -> None:
    # The service writes calls while a command or a test opens the same file.
    # Opening must wait for a writer's lock, never fail "database is locked"
    # (a reader turned writer in a deferred transaction does, in WAL mode).
    path = tmp_path / "calls.db"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), "3"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "open"
        opened = 0
        while writer.poll() is None:
            store = CallLogStore(path)
            store.close()
            opened += 1
        written = int(writer.stdout.readline())
    finally:
        writer.kill()
        writer.wait()
    assert writer.returncode == 0
    assert opened > 0 and written > 0
    assert len(CallLogStore(path).recent()) == min(written, 200)
