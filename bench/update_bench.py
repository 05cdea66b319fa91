"""Update timings on loopback: publish this package's wheel, then time a
phone's check, download and verify, install, switch, and a rollback.

``python bench/update_bench.py`` prints JSON. A measurement, not a test:
the service's own restart gap needs the service under systemd and is not
timed here.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.cli import main as cli  # noqa: E402
from appliance.update.machine import Phase, UpdatePolicy  # noqa: E402
from appliance.update.releases import Releases  # noqa: E402
from appliance.update.service import StateFile, Updater  # noqa: E402
from appliance.update.source import ReleaseSource  # noqa: E402
from tests.update.helpers import make_wheel  # noqa: E402
from tests.update.server import RepositoryServer  # noqa: E402


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
                policy=UpdatePolicy(),
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


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asyncio.run(measure(Path(tmp))), indent=2))
