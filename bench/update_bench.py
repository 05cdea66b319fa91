"""Update timings on loopback: publish this package's wheel, then time a
phone's check, download and verify, install, switch, and a rollback; then
the real phone service (``appliance run``, restarted under the unit's rules
by ``tests/update/supervisor.py``) updating from 1.0.0 to 1.1.0, and rolling
back a release that cannot open its audio devices.

``python bench/update_bench.py [--trials N]`` prints JSON; ``make bench``
adds the service figures to docs/benchmarks.md. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.cli import main as cli  # noqa: E402
from appliance.update.machine import Phase  # noqa: E402
from appliance.update.policy import UpdatePolicy  # noqa: E402
from appliance.update.releases import Releases  # noqa: E402
from appliance.update.service import StateFile, Updater  # noqa: E402
from appliance.update.source import ReleaseSource  # noqa: E402
from tests.update.helpers import make_wheel  # noqa: E402
from tests.update.server import RepositoryServer  # noqa: E402
from tests.update.supervisor import (  # noqa: E402
    Event,
    Supervisor,
    phone_root,
    publish,
    registered,
    write_config,
)


async def measure(base: Path) -> dict[str, float]:
    repo, keys = base / "repo", base / "keys"
    assert cli(["release", "init", "--repo", str(repo), "--keys", str(keys),
                "--root-keys", str(base / "rk")]) == 0  # fmt: skip
    factory = make_wheel(base / "w", "0.0.1")
    assert cli(["release", "add", "--repo", str(repo), "--keys", str(keys),
                "--wheel", str(factory)]) == 0  # fmt: skip
    t0 = time.perf_counter()
    assert cli(["release", "add", "--repo", str(repo), "--keys", str(keys),
                "--source", str(ROOT)]) == 0  # fmt: skip
    publish_s = time.perf_counter() - t0
    (artifact,) = (repo / "targets/releases").glob("0.0.1/*.tar.gz")
    releases = Releases(base / "phone")
    releases.install(artifact, "0.0.1")
    releases.switch("0.0.1")
    restarts: list[float] = []
    with RepositoryServer(repo) as server:

        async def restart() -> None:
            restarts.append(time.perf_counter())

        def updater() -> Updater:
            u = Updater(
                # The stay-up bound is a plain wait; measured without it.
                policy=UpdatePolicy(stay_up_s=0),
                source=ReleaseSource(
                    url=server.url,
                    trust_root=(repo / "metadata/1.root.json").read_bytes(),
                    state_dir=base / "phone/var/lib/appliance/update/tuf",
                    download_dir=base / "phone/var/lib/appliance/update/downloads",
                    platform="any",
                ),
                releases=releases,
                state_file=StateFile(
                    base / "phone/var/lib/appliance/update/state.json"
                ),
                running=releases.current,
                restart=restart,
            )
            u.start()
            u.machine.actions()
            return u

        u = updater()
        t0 = time.perf_counter()
        u.check_now()
        await u.run_once()
        size = next((repo / "targets/releases").glob("0.1*/*.tar.gz")).stat().st_size
        # the service comes back on the new release and reports its health
        u = updater()
        for fact in ("ready", "registered", "audio"):
            u.health(fact)
        await u.run_once()
        committed = time.perf_counter()
        assert u.machine.state.phase is Phase.COMMITTED
        t1 = time.perf_counter()
        u.rollback("bench")
        await u.run_once()
        rollback_s = restarts[1] - t1
    switch = base / "switch"
    (switch / "releases/a").mkdir(parents=True)
    (switch / "releases/b").mkdir(parents=True)
    timer = Releases(switch.parent / "switch-root")
    shutil.move(str(switch), str(timer.base))
    n = 200
    t2 = time.perf_counter()
    for i in range(n):
        timer.switch_back("a" if i % 2 else "b")
    return {
        "artifact_bytes": size,
        "publish_s": round(publish_s, 2),
        "check_to_switched_s": round(restarts[0] - t0, 2),
        "check_to_committed_s": round(committed - t0, 2),
        "rollback_decision_to_switched_s": round(rollback_s, 4),
        "atomic_switch_ms": round((time.perf_counter() - t2) / n * 1000, 3),
    }


def _log(text: str) -> Any:
    return lambda e: e.what == "log" and text in e.detail


async def _service_trial(
    base: Path, exchange_url: str, broken: str
) -> dict[str, float]:
    """One phone on 1.0.0 taking 1.1.0 (``broken``: a release that fails)."""
    from tests.update.helpers import Publisher

    publisher = Publisher(base / "publisher")
    publish(publisher, "1.1.0", broken)
    with RepositoryServer(publisher.repo) as server:
        root = phone_root(base, publisher)
        unit = Supervisor(
            # stay_up_s = 0: commit once healthy; a phone waits stay_up_s more
            root,
            write_config(root, exchange_url, server.url, stay_up_s=0),
            restart_s=0.0,
        )
        unit.start()
        try:
            download = await unit.wait_for(_log("update: download 1.1.0"), 120)
            leaving = await unit.wait_for(_log("restarting into another release"), 120)
            if not broken:
                back = await unit.wait_for(
                    lambda e: registered(e) and e.generation == 2, 120
                )
                done = await unit.wait_for(_log("1.1.0 committed"), 120)
                starts = [e for e in unit.events if e.what == "start"]
                return {
                    "download_to_committed_s": done.t - download.t,
                    "restart_gap_s": back.t - leaving.t,
                    "exit_to_started_s": starts[1].t - _exit(unit, 1).t,
                }
            failed = await unit.wait_for(_log("cannot open the audio devices"), 120)
            back = await unit.wait_for(
                lambda e: registered(e) and e.generation == 3, 120
            )
            return {"rollback_s": back.t - failed.t}
        finally:
            await unit.stop()


def _exit(unit: Supervisor, generation: int) -> Event:
    return next(
        e for e in unit.events if e.what == "exit" and e.generation == generation
    )


async def measure_service(base: Path, trials: int) -> dict[str, Any]:
    """The real service: update to committed, restart gap, rollback."""
    from appliance.exchange.config import ExchangeConfig
    from appliance.exchange.server import ExchangeServer
    from tests.conftest import new_keyring

    runs: dict[str, list[float]] = {}
    config = ExchangeConfig(keyring=new_keyring(), host="127.0.0.1", port=0)
    async with ExchangeServer(config) as exchange:
        for i in range(trials):
            for broken in ("", "no-audio"):
                trial = base / f"{broken or 'good'}-{i}"
                figures = await _service_trial(trial, exchange.url, broken)
                for key, value in figures.items():
                    runs.setdefault(key, []).append(value)
    return {
        "trials": trials,
        **{
            key: {
                "median_s": round(statistics.median(values), 2),
                "max_s": round(max(values), 2),
            }
            for key, values in runs.items()
        },
    }


def render(service: dict[str, Any]) -> str:
    """The service figures as a markdown section (docs/benchmarks.md)."""

    def row(key: str, what: str) -> str:
        figure = service[key]
        return f"| {what} | {figure['median_s']:.2f} s | {figure['max_s']:.2f} s |"

    return f"""
## Remote updates ({service["trials"]} trials, the real service on loopback)

The phone service (`appliance run`) on release 1.0.0 takes 1.1.0 from a TUF
repository on 127.0.0.1, restarted the way its systemd unit does it (boot
check, then the service from `current`; without the unit's `RestartSec=2`,
which a phone adds to the gap; with `stay_up_s = 0`: a phone commits
`stay_up_s` later): `bench/update_bench.py`.

| what | median | max |
|---|---|---|
{row("download_to_committed_s", "download -> committed (install, restart, health)")}
{row("restart_gap_s", "service stops for the restart -> registered again on 1.1.0")}
{row("exit_to_started_s", "old process exited -> new process started (boot check)")}
{row("rollback_s", "health check fails (no audio device) -> registered again on 1.0.0")}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=3, help="service trials")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = asyncio.run(measure(Path(tmp) / "disk"))
        service = asyncio.run(measure_service(Path(tmp) / "service", args.trials))
    print(json.dumps({**figures, "service": service}, indent=2))
    print(render(service))


if __name__ == "__main__":
    main()
