"""``appliance update ...`` while the real service runs, through its control socket.

The service (``python -m appliance run`` under the unit's rules, see
:mod:`tests.update.supervisor`) holds the updater's lock, so a command that
acted on the disk itself would be refused ("another updater is running"),
and ``check`` and ``install`` are given no ``--url``: each passes only by
asking the service. With the service stopped, the same command acts on the
disk itself. The commands are real processes; the repository is a real TUF
repository served on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable

import pytest

from appliance.update.releases import Releases
from tests.conftest import scaled
from tests.update.supervisor import (
    Supervisor,
    phone_root,
    publish,
    registered,
    rings,
    running,
    state,
    write_config,
)

pytestmark = pytest.mark.slow  # real service processes, restarted

HEALTH_S = scaled(12.0)


@pytest.fixture
async def unit() -> AsyncIterator[list[Supervisor]]:
    units: list[Supervisor] = []
    yield units
    for supervisor in units:
        await supervisor.stop()
        print(supervisor.log_text())  # shown when the test failed


async def _until(predicate: Callable[[], bool], limit_s: float) -> None:
    async with asyncio.timeout(scaled(limit_s)):
        while not predicate():  # noqa: ASYNC110  (files the service writes)
            await asyncio.sleep(0.05)


async def test_update_commands_go_through_the_running_service(
    tmp_path, repo, exchange, unit
):
    publisher, server = repo
    publish(publisher, "1.1.0")
    root = phone_root(tmp_path, publisher)
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    socket = runtime / "control.sock"
    config = write_config(root, exchange.url, server.url, HEALTH_S, policy="manual")
    supervisor = Supervisor(root, config, env={"RUNTIME_DIRECTORY": str(runtime)})
    unit.append(supervisor)
    supervisor.start()
    await supervisor.wait_for(registered, scaled(30))
    await _until(socket.exists, 10)

    async def update(*argv: str) -> tuple[int, str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "appliance", "update", "--root", str(root),
            "--socket", str(socket), *argv,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=env, cwd=tmp_path,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), scaled(120))
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    code, out, err = await update("status")
    assert code == 0, err
    assert "links: current -> 1.0.0, previous -> -" in out

    # The service refuses what the state does not allow, with its reason.
    code, out, err = await update("rollback")
    assert code == 1
    assert "no previous release" in err

    # The lock is the service's: only the service can have answered these.
    code, out, err = await update("check")
    assert code == 0, err
    assert "reason: 1.1.0 available" in out  # manual: shown, not installed
    assert Releases(root).current == "1.0.0"

    before = supervisor.generation
    code, out, err = await update("install")
    assert code == 0, err
    assert "... downloading 1.1.0" in out
    assert "phase: restarting" in out
    assert "links: current -> 1.1.0, previous -> 1.0.0" in out
    await supervisor.wait_for(running("1.1.0", before), scaled(60))
    await supervisor.wait_for(
        lambda e: registered(e) and e.generation > before, scaled(30)
    )
    await _until(lambda: state(root).get("current") == "1.1.0", HEALTH_S)  # committed

    before = supervisor.generation
    code, out, err = await update("rollback")
    assert code == 0, err
    assert "phase: rolling-back" in out
    assert "links: current -> 1.0.0" in out
    await supervisor.wait_for(running("1.0.0", before), scaled(60))
    await supervisor.wait_for(
        lambda e: registered(e) and e.generation > before, scaled(30)
    )
    await _until(lambda: state(root).get("phase") == "rolled-back", HEALTH_S)
    assert await rings(exchange.url)
    # 1.1.0 passed its health check: kept as `previous`, the state agreeing.
    code, out, err = await update("status")
    assert code == 0, err
    assert "previous: 1.1.0" in out
    assert "links: current -> 1.0.0, previous -> 1.1.0" in out

    # Service stopped: the command reads the disk itself.
    await supervisor.stop()
    assert not socket.exists()
    code, out, err = await update("status")
    assert code == 0, err
    assert "current: 1.0.0" in out
    assert "refused: 1.1.0" in out
    assert "links: current -> 1.0.0" in out
