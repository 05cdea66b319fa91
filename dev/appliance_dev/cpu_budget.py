"""CPU budgets for benchmarks: cgroup v1 ``cpu`` groups with a CFS quota, and
CPU burners beside them.

A Raspberry Pi core is several times slower than one of the build machine's;
holding a process to a share of one core (``cpu.cfs_quota_us`` of
``cpu.cfs_period_us``) while other processes keep every core busy is how the
benchmarks ask whether audio holds on such a budget. Everything made here is
removed again by its owner (groups by directory, burners by PID), also when
the body of a ``with`` fails.

Needs root and the v1 ``cpu`` controller mounted at :data:`CGROUP_ROOT`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["CGROUP_ROOT", "PERIOD_US", "CpuGroup", "burners", "unavailable_reason"]

CGROUP_ROOT = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 100_000


def unavailable_reason() -> str | None:
    """Why groups cannot be made here, or None."""
    if not (CGROUP_ROOT / "cpu.cfs_quota_us").exists():
        return f"needs the cgroup v1 cpu controller at {CGROUP_ROOT}"
    if not os.access(CGROUP_ROOT, os.W_OK):
        return f"needs write access to {CGROUP_ROOT} (root)"
    return None


class CpuGroup:
    """One cgroup v1 ``cpu`` group with a CFS quota, removed on close.

    Processes join it themselves before they exec (:meth:`wrap`), so every
    thread and child they start is held too. A sampler thread sums the CPU
    time of its members (utime + stime, last value seen per PID).
    """

    def __init__(self, name: str, quota: float, rt_us: int = 0) -> None:
        """Make the group ``name`` allowing ``quota`` of one core and
        ``rt_us`` microseconds a second of real-time runtime."""
        self.path = CGROUP_ROOT / name
        self.path.mkdir()
        self.rt_granted = True
        try:
            (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(int(quota * PERIOD_US)))
            rt = self.path / "cpu.rt_runtime_us"
            if rt.exists() and rt_us:
                try:
                    rt.write_text(str(rt_us))
                except OSError:  # the parent has no runtime to hand out
                    self.rt_granted = False
        except BaseException:
            self.path.rmdir()
            raise
        self._seen: dict[int, float] = {}
        self._rt_seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def __enter__(self) -> CpuGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` started inside this group (a shell joins it, then execs)."""
        procs = str(self.path / "cgroup.procs")
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, *argv]

    def _sample(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while not self._stop.wait(0.25):
            with contextlib.suppress(OSError):
                for pid in (self.path / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError, ValueError, IndexError):
                        stat = Path(f"/proc/{pid}/stat").read_text()
                        fields = stat.rsplit(")", 1)[1].split()
                        used = (int(fields[11]) + int(fields[12])) / tick
                        self._seen[int(pid)] = max(self._seen.get(int(pid), 0), used)
                    self._sample_rt_threads(pid, tick)

    def _sample_rt_threads(self, pid: str, tick: int) -> None:
        """CPU time of the member's threads under a real-time policy."""
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                    if int(fields[38]) in (os.SCHED_FIFO, os.SCHED_RR):
                        used = (int(fields[11]) + int(fields[12])) / tick
                        tid = int(task.name)
                        self._rt_seen[tid] = max(self._rt_seen.get(tid, 0), used)

    def cpu_seconds(self) -> float:
        return sum(self._seen.values())

    def rt_cpu_seconds(self) -> float:
        """Of :meth:`cpu_seconds`, what real-time threads used."""
        return sum(self._rt_seen.values())

    def throttled(self) -> dict[str, float]:
        stat = dict(
            line.split()
            for line in (self.path / "cpu.stat").read_text().splitlines()
            if line.strip()
        )
        return {
            "periods": float(stat.get("nr_periods", 0)),
            "throttled": float(stat.get("nr_throttled", 0)),
            "throttled_s": float(stat.get("throttled_time", 0)) / 1e9,
        }

    def close(self) -> None:
        """Stop sampling and remove the group. Its members are ours (the
        call sides, ended by PID by whoever started them): any left are
        moved back to the root group first so the directory can go."""
        self._stop.set()
        self._sampler.join(2.0)
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                left = (self.path / "cgroup.procs").read_text().split()
                for pid in left:
                    with contextlib.suppress(OSError):
                        (CGROUP_ROOT / "cgroup.procs").write_text(pid)
                time.sleep(0.1)
        print(f"  could not remove {self.path}", flush=True)


@contextlib.contextmanager
def burners(count: int) -> Iterator[list[int]]:
    """``count`` busy processes beside the call; ended by PID."""
    procs = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(count)]
    try:
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
