"""kill -9 of the updater at each step it can be caught in, and power back on.

The updater runs as its own process (``appliance update install``) against
the repository over local HTTP; the test kills it with SIGKILL while it
downloads (the server stalls half-way), while it installs (the ``.partial``
directory exists), and while it restarts the service (after the switch).
Then the service starts again (its updater resumes from the persisted
state) and must be on a working release, and the update must complete.
Cuts at the steps too short to catch in a process (the rename of
``current``, the state writes) are covered by the simulated power cuts in
test_machine.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from appliance.update.machine import Phase
from tests.conftest import scaled


@pytest.fixture
def start_install(phone, publisher, tmp_path):
    trust = tmp_path / "trusted-root.json"
    trust.write_bytes(publisher.root)
    procs: list[subprocess.Popen[bytes]] = []

    def start(restart: str = "true", step: str = "install") -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "update", "--root", str(phone.root),
             "--url", phone.url, "--trust-root", str(trust), "--platform", "any",
             "--socket", str(tmp_path / "no-service.sock"),
             "--restart-command", restart, step],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def wait_for(predicate, limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + scaled(limit_s)
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.002)


def kill9(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=scaled(10)) == -signal.SIGKILL


def working(phone) -> None:
    """`current` names a complete release whose code is there."""
    version = phone.releases.current
    assert version in phone.releases.installed()
    assert phone.installed_version() == version


async def complete_update(phone) -> None:
    """The service starts again; the update goes on to committed."""
    service = phone.updater()
    working(phone)
    if service.machine.state.phase is not Phase.HEALTH_CHECK:
        service.install_now()
        await service.run_once()
        service = phone.updater()  # restarted on the new release
    for fact in ("ready", "registered", "audio"):
        service.health(fact)
    await service.run_once()
    assert service.machine.state.phase is Phase.COMMITTED
    assert phone.releases.current == "1.1.0"
    working(phone)


@pytest.fixture
def stalled_download(publisher, server) -> Iterator[threading.Event]:
    (artifact,) = (publisher.repo / "targets/releases/1.1.0").glob("*.tar.gz")
    data = artifact.read_bytes()
    release = threading.Event()
    half_sent = threading.Event()

    def stall() -> Iterator[bytes]:
        yield data[: len(data) // 2]
        half_sent.set()
        release.wait(scaled(30))

    server.overrides[f"/targets/releases/1.1.0/{artifact.name}"] = stall
    yield half_sent
    release.set()
    server.overrides.clear()


async def test_kill_during_download(phone, server, start_install, stalled_download):
    proc = start_install()
    wait_for(stalled_download.is_set)
    kill9(proc)
    server.overrides.clear()
    working(phone)
    assert phone.releases.current == "1.0.0"
    await complete_update(phone)


async def test_kill_during_install(phone, start_install):
    proc = start_install()
    partial = phone.releases.dir / ".1.1.0.partial"
    wait_for(partial.exists)
    kill9(proc)
    assert phone.releases.current == "1.0.0"
    service = phone.updater()
    assert service.machine.state.phase is Phase.VERIFIED
    await complete_update(phone)
    assert not partial.exists()


async def test_kill_during_restart_after_the_switch(phone, start_install):
    proc = start_install(restart="sleep 60")
    wait_for(lambda: phone.releases.current == "1.1.0")
    kill9(proc)
    # Power back: the service starts from `current`, the new release.
    service = phone.updater()
    assert service.machine.state.phase is Phase.HEALTH_CHECK
    await complete_update(phone)


async def test_killed_service_on_trial_crash_loops_back(phone, start_install):
    proc = start_install()
    assert proc.wait(timeout=scaled(60)) == 0, proc.stderr
    # The new release dies at each start (kill -9 of the service on trial):
    # each start counts; past the limit the updater switches back.
    for _ in range(phone.policy.max_starts):
        service = phone.updater()
        assert service.machine.state.phase is Phase.HEALTH_CHECK
    service = phone.updater()
    await service.run_once()
    assert phone.releases.current == "1.0.0"
    state = phone.updater().machine.state
    assert state.phase is Phase.ROLLED_BACK
    assert state.reason == "1.1.0 restarted 3 times"
    working(phone)
    # The failed release is nobody's `previous` (the first update: none).
    assert (state.previous, phone.releases.previous) == ("", "")


async def test_kill_during_the_restart_of_a_rollback_by_hand(phone, start_install):
    await complete_update(phone)
    proc = start_install(restart="sleep 60", step="rollback")
    wait_for(lambda: phone.releases.current == "1.0.0")
    kill9(proc)
    # Power back: the service starts from `current`, the release gone back to.
    state = phone.updater().machine.state
    assert state.phase is Phase.ROLLED_BACK
    working(phone)
    assert (state.current, state.previous) == ("1.0.0", "1.1.0")
    assert phone.releases.previous == "1.1.0"  # passed its trial: at hand
