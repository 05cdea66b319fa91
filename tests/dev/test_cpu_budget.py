"""CPU groups and burners for the budget bench (appliance_dev.cpu_budget).

Needs root and the cgroup v1 cpu controller; elsewhere these tests are
skipped with the reason (the bench itself says it cannot run, too).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from appliance_dev.cpu_budget import CGROUP_ROOT, CpuGroup, burners, unavailable_reason
from tests.conftest import scaled

pytestmark = pytest.mark.skipif(
    unavailable_reason() is not None, reason=f"cpu groups: {unavailable_reason()}"
)

BUSY = "while True: pass"


def _name() -> str:
    return f"appliance-test-{os.getpid()}-{time.monotonic_ns()}"


def test_a_busy_process_in_a_group_is_held_to_its_quota_and_counted() -> None:
    with CpuGroup(_name(), 0.1) as group:
        proc = subprocess.Popen(group.wrap([sys.executable, "-c", BUSY]))
        try:
            deadline = time.monotonic() + scaled(20.0)
            # The quota bites: periods in which the group was throttled.
            while group.throttled()["throttled"] < 3:
                assert time.monotonic() < deadline, group.throttled()
                time.sleep(0.05)
            while group.cpu_seconds() <= 0:
                assert time.monotonic() < deadline, "the sampler saw no CPU time"
                time.sleep(0.05)
        finally:
            proc.kill()
            proc.wait()
    assert not group.path.exists()


def test_a_failing_body_still_removes_the_group_and_the_burners() -> None:
    pids: list[int] = []
    name = _name()
    with pytest.raises(RuntimeError), burners(2) as started, CpuGroup(name, 0.25) as g:
        pids.extend(started)
        # A member still alive when the group closes is moved out first.
        proc = subprocess.Popen(g.wrap(["sleep", "30"]))
        raise RuntimeError("the body failed")
    proc.kill()
    proc.wait()
    assert not (CGROUP_ROOT / name).exists()
    for pid in pids:  # reaped by burners(): gone, not zombies
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
