"""Soak: many short calls between two phone processes through one exchange.

A leak that costs a few kilobytes, one descriptor or one task per call is
invisible in a test of ten calls and fatal on a desk phone that makes calls
for months without a restart. This benchmark places N calls from phone A to
phone B (each an ``appliance phone`` process; B answers on ``incoming``),
each connected for a few hundred milliseconds of Opus both ways and then hung
up by A, and samples every process between calls:

* RSS (``VmRSS`` of /proc/PID/status), in MB, and the peak so far
  (``VmHWM``; issue 11 asks for <= 60 MB);
* open descriptors (entries of /proc/PID/fd);
* asyncio tasks alive, as the phone's ``status`` command reports them (the
  exchange has no such console: its row shows RSS and descriptors only).

The first 100 calls are warm-up (imports, codec tables, allocator arenas);
growth is measured from call 100 to the last call. Target (issue 12): RSS
growth <= 5 MB per process, descriptors and tasks flat.

Run alone: ``.venv/bin/python bench/soak_bench.py --calls 1000 --out docs/soak.md``
or as part of ``make bench`` with ``--soak N`` given to bench/run.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from call_bench import Credentials, _agent, _send, start_exchange, stop

from appliance_dev.exchange_process import stop_process

WARM_UP_CALLS = 100
RSS_TARGET_MB = 5.0


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def rss_mb(pid: int) -> float:
    """Resident memory now (``VmRSS``)."""
    return _status_mb(pid, "VmRSS")


def peak_rss_mb(pid: int) -> float:
    """The most resident memory the process ever had (``VmHWM``)."""
    return _status_mb(pid, "VmHWM")


def open_fds(pid: int) -> int:
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


class _Lines:
    """Reads one agent's stdout, keeping what was not yet asked for."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def until(
        self, want: dict[str, set[str]], limit_s: float = 20.0
    ) -> dict[str, Any]:
        """The next line whose ``key`` is one of the wanted values."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + limit_s
        while True:
            line = await asyncio.wait_for(
                self.proc.stdout.readline(), max(0.1, deadline - time.monotonic())
            )
            if not line:
                raise RuntimeError("phone agent exited")
            obj: dict[str, Any] = json.loads(line)
            for key, values in want.items():
                if obj.get(key) in values:
                    return obj

    async def tasks(self) -> int:
        await _send(self.proc, {"cmd": "status"})
        reply = await self.until({"reply": {"status"}})
        return int(reply["tasks"])


async def run(calls: int, media_s: float = 0.3) -> dict[str, Any]:
    """Place ``calls`` calls; return the samples and the growth figures."""
    creds = Credentials.fresh()
    exchange, url = await start_exchange(creds)
    alice_p = await _agent(url, creds.token("alice"), "tone:440", auto_answer=False)
    bob_p = await _agent(url, creds.token("bob"), "tone:660", auto_answer=True)
    alice, bob = _Lines(alice_p), _Lines(bob_p)
    samples: list[dict[str, Any]] = []
    failed = 0
    t0 = time.monotonic()

    async def sample(done: int) -> None:
        row: dict[str, Any] = {"calls": done, "t_s": round(time.monotonic() - t0, 1)}
        for name, lines in (("alice", alice), ("bob", bob)):
            pid = lines.proc.pid
            row[name] = {
                "rss_mb": round(rss_mb(pid), 2),
                "peak_mb": round(peak_rss_mb(pid), 2),
                "fds": open_fds(pid),
                "tasks": await lines.tasks(),
            }
        row["exchange"] = {
            "rss_mb": round(rss_mb(exchange.pid), 2),
            "fds": open_fds(exchange.pid),
        }
        samples.append(row)
        print(json.dumps(row), flush=True)

    every = max(1, min(50, calls // 20))
    try:
        await alice.until({"event": {"ready"}})
        await bob.until({"event": {"ready"}})
        await sample(0)
        for n in range(1, calls + 1):
            await _send(alice_p, {"cmd": "connect", "params": {"To": "bob"}})
            got = await alice.until({"event": {"connect", "disconnect", "error"}})
            if got["event"] != "connect":
                failed += 1
                await alice.until({"event": {"disconnect"}}, 10.0)
                continue
            await asyncio.sleep(media_s)
            await _send(alice_p, {"cmd": "hangup"})
            await alice.until({"event": {"disconnect"}})
            await bob.until({"event": {"disconnect"}})
            if n in (WARM_UP_CALLS, calls) or n % every == 0:
                await sample(n)
        for proc in (alice_p, bob_p):
            await _send(proc, {"cmd": "quit"})
            await asyncio.wait_for(proc.wait(), 15)
    finally:
        for proc in (alice_p, bob_p):
            await stop_process(proc, grace_s=0.0)
        await stop(exchange)
    return {
        "calls": calls,
        "failed": failed,
        "media_s": media_s,
        "seconds": round(time.monotonic() - t0, 1),
        "samples": samples,
        "growth": growth(samples),
    }


def growth(samples: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Change per process from the warm-up sample to the last one."""
    base = next((s for s in samples if s["calls"] >= WARM_UP_CALLS), samples[0])
    last = samples[-1]
    out: dict[str, dict[str, float]] = {}
    for name in ("alice", "bob", "exchange"):
        out[name] = {
            key: last[name][key] - base[name][key]
            for key in base[name]
            if key in last[name]
        }
        out[name]["from_calls"] = base["calls"]
    return out


def render(result: dict[str, Any] | None, command: str) -> str:
    if result is None:
        return ""
    g = result["growth"]
    names = {"alice": "phone A (caller)", "bob": "phone B (callee)"}
    rows = []
    for name in ("alice", "bob"):
        verdict = "meets" if g[name]["rss_mb"] <= RSS_TARGET_MB else "misses"
        peak = result["samples"][-1][name].get("peak_mb", float("nan"))
        rows.append(
            f"| {names[name]} | {g[name]['rss_mb']:+.1f} MB ({verdict}) | "
            f"{peak:.1f} MB | {g[name]['fds']:+.0f} | {g[name]['tasks']:+.0f} |"
        )
    rows.append(
        f"| exchange | {g['exchange']['rss_mb']:+.1f} MB | n/a | "
        f"{g['exchange']['fds']:+.0f} | n/a |"
    )
    trace = "\n".join(
        f"| {s['calls']} | {s['t_s']:.0f} s | "
        + " | ".join(
            f"{s[n]['rss_mb']:.1f} / {s[n]['fds']} / {s[n].get('tasks', '-')}"
            for n in ("alice", "bob", "exchange")
        )
        + " |"
        for s in result["samples"]
    )
    base = g["alice"]["from_calls"]
    return f"""
## Soak: {result["calls"]} calls between two phone processes

`{command}` (bench/soak_bench.py). Phone A calls phone B
{result["calls"]} times through the local exchange, each phone an `appliance phone`
process, each call connected for {1000 * result["media_s"]:.0f} ms of Opus both
ways, then hung up by A; {result["failed"]} calls failed to connect; the run
took {result["seconds"]:.0f} s. Growth from call {base:.0f} (after warm-up) to
the last call; target: RSS <= {RSS_TARGET_MB:.0f} MB per process, descriptors
and tasks flat. Peak RSS is the most the process ever held (`VmHWM`; issue
11 asks for <= 60 MB).

| process | RSS growth | peak RSS | descriptors | asyncio tasks |
|---|---|---|---|---|
{chr(10).join(rows)}

RSS MB / descriptors / tasks after each sampled call (the exchange has no
task count):

| calls | time | phone A | phone B | exchange |
|---|---|---|---|---|
{trace}
"""


NOTES = """
## Reading the figures

Look at the shape of the RSS column, not only the difference: without the
heap release after each call (appliance/system/native_heap.py), glibc's
arenas kept what each call freed and RSS grew in steps of a few hundred
kilobytes, while a per-call leak would be a straight line. Descriptors and
tasks return to the same counts after every call (a sample taken while the
last hang-up's tasks are finishing shows one or two more).
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--media-s", type=float, default=0.3)
    parser.add_argument("--out", help="write the markdown report here")
    args = parser.parse_args()
    result = asyncio.run(run(args.calls, args.media_s))
    print(json.dumps(result["growth"]), flush=True)
    command = f".venv/bin/python bench/soak_bench.py --calls {args.calls}"
    if args.out:
        command += f" --out {args.out}"
    text = render(result, command)
    if args.out:
        header = (
            f"# Soak benchmark\n\nMeasured {time.strftime('%Y-%m-%d')} on "
            f"{os.cpu_count()} cores, Python {platform.python_version()}.\n"
        )
        Path(args.out).write_text(header + text + NOTES)
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
