"""Remote updates of the real phone service, restarted the way systemd would.

The phone is ``python -m appliance run`` (mock pins, dummy OLED) on a local
exchange, its root a temp dir with release 1.0.0 current, run by
:class:`~tests.update.supervisor.Supervisor` under the unit's rules (boot
check, ``PYTHONPATH`` on ``current``, the unit's restart policy). Releases
hold this repository's own code, published with ``appliance release`` to a
TUF repository served on 127.0.0.1. A broken release is the same code with
one patch: it crashes or exits cleanly at start, never registers, cannot open
its audio devices, refuses the configuration, or passes those checks and
dies seconds later (before it stayed up).
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from appliance.exchange.config import ExchangeConfig
from appliance.exchange.server import ExchangeServer
from appliance.update.releases import Releases
from appliance.update.service import StateFile
from tests.conftest import local_device, make_token, new_keyring, scaled
from tests.update.supervisor import (
    BROKEN,
    PHONE,
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

#: A release on trial must be healthy within this (scaled for the machine).
HEALTH_S = scaled(12.0)
#: ... then stay up this long (a broken release never gets there, so it costs
#: nothing; the releases that commit use the config's 1 s).
STAY_UP_S = scaled(30.0)


@pytest.fixture
async def long_ring_exchange() -> AsyncIterator[ExchangeServer]:
    """An exchange whose calls ring for a minute (the update must wait)."""
    config = ExchangeConfig(
        keyring=new_keyring(), host="127.0.0.1", port=0, ring_timeout=scaled(60)
    )
    async with ExchangeServer(config) as server:
        yield server


@pytest.fixture
async def unit(tmp_path: Path) -> AsyncIterator[list[Supervisor]]:
    units: list[Supervisor] = []
    yield units
    for supervisor in units:
        await supervisor.stop()
        print(supervisor.log_text())  # shown when the test failed


async def test_update_waits_for_the_call_then_restarts_and_commits(
    tmp_path, repo, long_ring_exchange, unit
):
    publisher, server = repo
    exchange = long_ring_exchange
    publish(publisher, "1.1.0")
    (artifact,) = (publisher.repo / "targets/releases/1.1.0").glob("*.tar.gz")
    data = artifact.read_bytes()
    go_on = threading.Event()
    half_sent = threading.Event()

    def stall() -> Iterator[bytes]:  # the download is under way during the call
        yield data[: len(data) // 2]
        half_sent.set()
        go_on.wait(scaled(60))
        yield data[len(data) // 2 :]

    server.overrides[f"/targets/releases/1.1.0/{artifact.name}"] = stall
    root = phone_root(tmp_path, publisher)
    supervisor = Supervisor(
        root, write_config(root, exchange.url, server.url, HEALTH_S)
    )
    unit.append(supervisor)
    supervisor.start()
    await supervisor.wait_for(registered, scaled(30))
    first_pid = supervisor.process.pid  # type: ignore[union-attr]
    await asyncio.wait_for(asyncio.to_thread(half_sent.wait), scaled(30))

    # A call rings the phone while the release downloads and is verified.
    caller = local_device(exchange.url, enable_ringing_state=True)
    try:
        await caller.setup(make_token("caller"))
        rang = asyncio.Event()
        call = await caller.connect({"To": PHONE})
        call.on("ringing", lambda _early: rang.set())
        await asyncio.wait_for(rang.wait(), scaled(10))
        go_on.set()
        await _until(lambda: state(root).get("phase") == "verified", 30)
        await asyncio.sleep(scaled(1.5))  # longer than idle_after_s: still waits
        assert state(root)["phase"] == "verified"
        assert call.status() == "ringing"  # undisturbed
        assert Releases(root).current == "1.0.0"
        assert supervisor.process.pid == first_pid  # type: ignore[union-attr]
        await call.disconnect()
    finally:
        await caller.destroy()

    # Idle now: install, switch, restart into 1.1.0, health check, commit.
    await supervisor.wait_for(
        lambda e: e.what == "exit" and e.detail == "75", scaled(60)
    )
    await supervisor.wait_for(running("1.1.0"), scaled(30))
    await supervisor.wait_for(registered, scaled(30))
    await _until(lambda: state(root).get("phase") in ("committed", "idle"), HEALTH_S)
    saved = state(root)
    assert (saved["current"], saved["previous"]) == ("1.1.0", "1.0.0")
    assert Releases(root).current == "1.1.0"
    assert await rings(exchange.url)


@pytest.mark.parametrize("broken", sorted(BROKEN))
async def test_a_broken_release_is_rolled_back_and_the_phone_registers_again(
    tmp_path, repo, exchange, unit, broken
):
    publisher, server = repo
    publish(publisher, "1.1.0", broken)
    root = phone_root(tmp_path, publisher)
    supervisor = Supervisor(
        root,
        write_config(root, exchange.url, server.url, HEALTH_S, stay_up_s=STAY_UP_S),
    )
    unit.append(supervisor)
    supervisor.start()
    exited = await supervisor.wait_for(
        lambda e: e.what == "exit" and e.detail == "75", scaled(60)
    )
    if broken == "never-registers":
        # kill -9 of the release on trial: the start counts, the trial goes on
        await supervisor.wait_for(running("1.1.0"), scaled(30))
        supervisor.kill9()
    # Up to 4 starts (each up to HEALTH_S; dies-after-checks: a few s more).
    await _until(lambda: state(root).get("phase") == "rolled-back", 8 * HEALTH_S)
    await supervisor.wait_for(running("1.0.0", exited.generation), scaled(30))
    await supervisor.wait_for(
        lambda e: registered(e) and e.generation == supervisor.generation, scaled(30)
    )
    saved = state(root)
    assert saved["current"] == "1.0.0"
    assert saved["refused"] == ["1.1.0"]
    reason = str(saved["reason"])
    expected = {
        "crashes": re.escape("1.1.0 restarted 3 times"),
        # a stay-up failure, told apart from a start failure
        "dies-after-checks": r"1\.1\.0 stopped within \d+ s of passing its health "
        rf"checks, before it had stayed up {STAY_UP_S:g} s \(restarted 3 times\)",
        "exits-cleanly": re.escape("1.1.0 restarted 3 times"),
        "never-registers": "not registered within the health check",
        "no-audio": "cannot open audio: no sound card",
        "refuses-config": re.escape("1.1.0 restarted 3 times"),
    }[broken]
    assert re.fullmatch(expected, reason), supervisor.log_text()
    if broken == "dies-after-checks":  # it passed the other checks each time
        trials = {
            e.generation
            for e in supervisor.events
            if "healthy; committed if it stays up" in e.detail
        }
        assert len(trials) == 3, supervisor.log_text()
    if broken not in ("never-registers", "no-audio"):  # switched back at a start
        # The journal: the boot check that switched back says why.
        boots = [e.detail for e in supervisor.events if e.what == "boot"]
        back = f"switching back to 1.0.0: {reason}"
        assert any(back in line for line in boots), supervisor.log_text()
    assert Releases(root).current == "1.0.0"
    assert (
        StateFile(root / "var/lib/appliance/update/state.json").load().current
        == "1.0.0"
    )
    assert await rings(exchange.url)


async def _until(predicate: Callable[[], bool], limit_s: float) -> None:
    async with asyncio.timeout(scaled(limit_s)):
        while not predicate():  # noqa: ASYNC110  (a file the service writes)
            await asyncio.sleep(0.05)


async def test_kill_9_of_the_service_while_it_downloads_then_installs(
    tmp_path, repo, exchange, unit
):
    publisher, server = repo
    publish(publisher, "1.1.0")
    (artifact,) = (publisher.repo / "targets/releases/1.1.0").glob("*.tar.gz")
    path = f"/targets/releases/1.1.0/{artifact.name}"
    data = artifact.read_bytes()
    go_on = threading.Event()
    half_sent = threading.Event()

    def stall() -> Iterator[bytes]:  # once: half, then nothing until killed
        server.overrides.pop(path)
        yield data[: len(data) // 2]
        half_sent.set()
        go_on.wait(scaled(60))

    server.overrides[path] = stall
    root = phone_root(tmp_path, publisher)
    supervisor = Supervisor(
        root, write_config(root, exchange.url, server.url, HEALTH_S)
    )
    unit.append(supervisor)
    supervisor.start()
    await asyncio.wait_for(asyncio.to_thread(half_sent.wait), scaled(60))
    spool = root / "var/lib/appliance/update/downloads/.spool"
    await _until(lambda: any(p.stat().st_size for p in spool.glob("resume-*")), 10)
    supervisor.kill9()  # while it downloads
    go_on.set()
    await supervisor.wait_for(lambda e: e.what == "exit" and e.detail == "-9", 10)
    partial = root / "opt/appliance/releases/.1.1.0.partial"
    await _until(partial.exists, 60)
    supervisor.kill9()  # while it installs (the new service resumed the download)
    killed = await supervisor.wait_for(
        lambda e: e.what == "exit" and e.detail == "-9" and e.generation > 1, 10
    )
    assert Releases(root).current == "1.0.0"
    await supervisor.wait_for(running("1.1.0", killed.generation), scaled(60))
    await _until(lambda: state(root).get("current") == "1.1.0", HEALTH_S)
    assert Releases(root).current == "1.1.0" and not partial.exists()
    ((asked, wanted),) = server.ranges  # the second start fetched only the rest
    assert asked == path and wanted != "bytes=0-"
    assert server.sent < len(data)
