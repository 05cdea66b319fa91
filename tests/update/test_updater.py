"""The updater on a phone root, against a real repository over local HTTP."""

from __future__ import annotations

from appliance.update.artifact import build_artifact
from appliance.update.machine import Phase
from appliance.update.policy import UpdatePolicy
from tests.update.helpers import make_wheel


async def test_an_update_downloads_installs_switches_and_commits(phone, server):
    updater = phone.updater()
    assert updater.machine.state.current == "1.0.0"
    updater.check_now()
    await updater.run_once()
    assert phone.restarts == 1
    assert updater.machine.state.phase is Phase.RESTARTING
    assert phone.releases.current == "1.1.0"
    assert phone.releases.previous == "1.0.0"
    assert phone.installed_version() == "1.1.0"
    assert updater.status()["progress"] == 1.0
    # the service comes back from the new release
    new = phone.updater()
    assert new.machine.state.phase is Phase.HEALTH_CHECK
    for fact in ("ready", "registered", "audio"):
        new.health(fact)
    await new.run_once()
    assert new.machine.state.phase is Phase.COMMITTED
    assert new.machine.state.current == "1.1.0"
    assert phone.releases.installed() == ["1.0.0", "1.1.0"]
    # TUF's anti-rollback state is on the phone's disk
    tuf = phone.state_dir / "tuf"
    assert {"timestamp.json", "snapshot.json", "targets.json"} <= {
        p.name for p in tuf.iterdir()
    }
    assert "/targets/releases/1.1.0/" in " ".join(server.requests)


async def test_a_silent_release_is_rolled_back_after_the_health_bound(phone):
    phone.policy = UpdatePolicy(health_timeout_s=30.0)
    updater = phone.updater()
    updater.check_now()
    await updater.run_once()
    new = phone.updater()
    new.health("ready")
    new.health("audio")
    phone.clock.now += 30.0
    new.machine.tick(phone.clock.now, 720)
    await new.run_once()
    assert phone.releases.current == "1.0.0"
    assert phone.restarts == 2
    old = phone.updater()  # the service, back on 1.0.0
    state = old.machine.state
    assert state.phase is Phase.ROLLED_BACK
    assert state.reason == "not registered within the health check"
    assert state.refused == ("1.1.0",)
    assert phone.installed_version() == "1.0.0"


async def test_a_healthy_release_is_committed_once_it_stayed_up(phone):
    phone.policy = UpdatePolicy(stay_up_s=60.0)
    updater = phone.updater()
    updater.check_now()
    await updater.run_once()
    new = phone.updater()
    for fact in ("ready", "registered", "audio"):
        new.health(fact)
    await new.run_once()
    assert new.status()["staying_up"] is True
    assert new.machine.state.phase is Phase.HEALTH_CHECK
    assert new.machine.next_deadline() == phone.clock.now + 60.0
    phone.clock.now += 60.0
    new.machine.tick(phone.clock.now, 720)
    await new.run_once()
    assert new.machine.state.phase is Phase.COMMITTED
    assert new.status()["staying_up"] is False
    assert (phone.releases.current, phone.releases.previous) == ("1.1.0", "1.0.0")


async def test_manual_rollback_after_commit(phone):
    updater = phone.updater()
    updater.check_now()
    await updater.run_once()
    new = phone.updater()
    for fact in ("ready", "registered", "audio"):
        new.health(fact)
    await new.run_once()
    new.rollback("by hand")
    await new.run_once()
    assert phone.releases.current == "1.0.0"
    assert phone.updater().machine.state.phase is Phase.ROLLED_BACK


async def test_the_size_limit_is_checked_before_downloading(phone, server):
    phone.max_bytes = 100
    updater = phone.updater()
    updater.check_now()
    await updater.run_once()
    state = updater.machine.state
    assert state.phase is Phase.IDLE
    assert "over the limit of 100" in state.reason
    assert not [p for p in server.requests if p.startswith("/targets/releases/")]
    assert phone.releases.current == "1.0.0"


async def test_free_space_is_checked_before_downloading(phone, server):
    phone.reserve_bytes = 1 << 60
    updater = phone.updater()
    updater.check_now()
    await updater.run_once()
    assert "not enough disk space" in updater.machine.state.reason
    assert not [p for p in server.requests if p.startswith("/targets/releases/")]


async def test_an_unreachable_repository_is_a_failed_check(phone, server):
    phone.url = "http://127.0.0.1:9"  # discard port: nothing listens
    updater = phone.updater()
    updater.check_now()
    await updater.run_once()
    assert updater.machine.state.phase is Phase.IDLE
    assert "download failed" in updater.machine.state.reason


async def test_nothing_new_when_current(phone, publisher):
    updater = phone.updater()
    updater.check_now()
    await updater.run_once()
    new = phone.updater()
    for fact in ("ready", "registered", "audio"):
        new.health(fact)
    await new.run_once()
    new.check_now()
    await new.run_once()
    assert new.machine.state.phase is Phase.IDLE
    assert phone.restarts == 1


def _artifact(publisher) -> tuple[str, bytes]:
    (artifact,) = (publisher.repo / "targets/releases/1.1.0").glob("*.tar.gz")
    return f"/targets/releases/1.1.0/{artifact.name}", artifact.read_bytes()


async def test_a_cut_download_resumes_where_it_stopped(phone, server, publisher):
    path, data = _artifact(publisher)
    half = len(data) // 2

    def cut():  # the connection drops half-way, once
        server.overrides.pop(path)
        yield data[:half]

    server.overrides[path] = cut
    updater = phone.updater()
    updater.check_now()
    await updater.run_once()
    state = updater.machine.state
    assert state.phase is Phase.IDLE and "kept to resume" in state.reason
    assert phone.releases.current == "1.0.0"
    updater.check_now()
    await updater.run_once()
    assert phone.releases.current == "1.1.0"
    assert server.ranges == [(path, f"bytes={half}-")]
    assert server.sent == len(data) - half  # only the rest came again
    assert not list((phone.state_dir / "downloads/.spool").glob("resume-*"))


async def test_a_tampered_partial_download_is_refused_then_fetched_whole(
    phone, server, publisher
):
    path, data = _artifact(publisher)
    half = len(data) // 2

    def cut():
        server.overrides.pop(path)
        yield data[:half]

    server.overrides[path] = cut
    updater = phone.updater()
    updater.check_now()
    await updater.run_once()
    (partial,) = (phone.state_dir / "downloads/.spool").glob("resume-*")
    partial.write_bytes(b"\0" * half)  # what arrived is not what was signed
    updater.check_now()
    await updater.run_once()
    state = updater.machine.state
    assert state.phase is Phase.IDLE and state.reason.startswith("refused:")
    assert not partial.exists()  # never resumed again
    assert phone.releases.current == "1.0.0"
    updater.check_now()
    await updater.run_once()
    assert phone.releases.current == "1.1.0"


def test_pip_installs_a_release_without_a_cache(phone, tmp_path, monkeypatch):
    from appliance.update.releases import pip_command

    command = pip_command(tmp_path / "release", complete=True)
    assert "--no-cache-dir" in command
    assert "--no-index" in command
    # A real install, with pip's cache pointed at a directory of its own.
    cache = tmp_path / "pip-cache"
    monkeypatch.setenv("PIP_CACHE_DIR", str(cache))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    wheel = make_wheel(tmp_path / "factory-1.2.0", "1.2.0")
    artifact = build_artifact(
        [wheel], tmp_path / "factory-1.2.0", complete=False, platform="any"
    )
    phone.releases.install(artifact.path, "1.2.0")
    assert "1.2.0" in phone.releases.installed()
    assert not cache.exists()
