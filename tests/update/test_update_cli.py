"""``appliance update ...`` on a phone root, against a repository over local HTTP."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from appliance.cli import main
from appliance.update.service import StateFile
from tests.conftest import scaled


@pytest.fixture
def update(phone, publisher, tmp_path):
    trust = tmp_path / "trusted-root.json"
    trust.write_bytes(publisher.root)
    marker = tmp_path / "restarted"

    def run(*argv: str) -> int:
        return main(
            ["update", "--root", str(phone.root), "--url", phone.url,
             "--socket", str(tmp_path / "no-service.sock"),
             "--trust-root", str(trust), "--platform", "linux_aarch64",
             "--restart-command", f"touch {marker}", *argv]
        )  # fmt: skip

    run.restarted = marker  # type: ignore[attr-defined]
    return run


def test_status_of_a_fresh_phone(update, capsys):
    assert update("status") == 0
    out = capsys.readouterr().out
    assert "phase: idle" in out
    assert "links: current -> 1.0.0, previous -> -" in out


def test_check_shows_what_is_available_and_changes_nothing(update, phone, capsys):
    assert update("check") == 0
    out = capsys.readouterr().out
    assert "reason: 1.1.0 available" in out
    assert phone.releases.current == "1.0.0"
    assert not update.restarted.exists()


def test_install_switches_and_restarts_then_rollback_goes_back(update, phone, capsys):
    assert update("install") == 0
    assert "phase: restarting" in capsys.readouterr().out
    assert phone.releases.current == "1.1.0"
    assert update.restarted.exists()
    # The service came back, but failed its trial: roll back by hand.
    state = StateFile(phone.state_dir / "state.json")
    phone.updater()  # the service resumes: health check under way
    assert state.load().phase == "health-check"
    update.restarted.unlink()
    assert update("rollback") == 0
    assert phone.releases.current == "1.0.0"
    assert update.restarted.exists()
    out = capsys.readouterr().out
    assert "phase: rolling-back" in out
    assert "reason: rolled back by hand" in out
    # The service comes back on 1.0.0: the failed 1.1.0 is nobody's `previous`.
    phone.updater()
    assert update("status") == 0
    out = capsys.readouterr().out
    assert "phase: rolled-back" in out and "previous:" not in out
    assert "links: current -> 1.0.0, previous -> -" in out
    assert update("rollback") == 1
    assert "no previous release" in capsys.readouterr().err


async def test_a_rollback_of_a_committed_release_keeps_it_as_previous(
    update, phone, capsys
):
    assert await asyncio.to_thread(update, "install") == 0
    service = phone.updater()  # restarted on 1.1.0: its trial passes
    for fact in ("ready", "registered", "audio"):
        service.health(fact)
    await service.run_once()
    assert await asyncio.to_thread(update, "rollback") == 0
    phone.updater()  # the service comes back on 1.0.0
    capsys.readouterr()
    assert update("status") == 0
    out = capsys.readouterr().out
    assert "current: 1.0.0\nprevious: 1.1.0\n" in out
    assert "links: current -> 1.0.0, previous -> 1.1.0" in out


def test_commands_refuse_while_an_update_is_under_way(update, phone, capsys):
    assert update("install") == 0
    capsys.readouterr()
    assert update("check") == 1
    assert "cannot check while restarting" in capsys.readouterr().err


def test_one_updater_at_a_time(update, phone, capsys):
    with StateFile(phone.state_dir / "state.json").lock():
        assert update("check") == 1
    assert "another updater is running" in capsys.readouterr().err


def test_a_refused_repository_exits_non_zero(update, publisher, capsys):
    path = publisher.repo / "metadata/timestamp.json"
    path.write_bytes(path.read_bytes().replace(b'"version"', b'"versiom"', 1))
    assert update("check") == 1
    assert "reason: refused:" in capsys.readouterr().out


def test_check_needs_a_url(phone, capsys):
    assert main(["update", "--root", str(phone.root), "check"]) == 1
    assert "--url is needed" in capsys.readouterr().err


async def test_a_service_without_an_updater_leaves_the_command_to_act(
    phone, tmp_path, capsys
):
    from appliance.system.control import serve_control

    sock = tmp_path / "control.sock"
    served = asyncio.create_task(serve_control(sock, {}))  # e.g. provisioning's
    try:
        async with asyncio.timeout(scaled(10)):
            while not sock.exists():  # noqa: ASYNC110  (the server binds it)
                await asyncio.sleep(0.01)
        argv = ["update", "--root", str(phone.root), "--socket", str(sock), "status"]
        assert await asyncio.to_thread(main, argv) == 0
    finally:
        served.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await served
    assert "links: current -> 1.0.0, previous -> -" in capsys.readouterr().out
