"""Call benchmarks over the local exchange on loopback.

* setup: time from ``Device.connect()`` until both phones report the call
  accepted (caller ``accept`` and callee ``accept`` after auto-answer), over N
  calls, in one process with the exchange in its own process.
* cpu: CPU seconds per call-minute of each phone, each phone in its own process
  (``appliance phone``), exchange in a third; Opus, tone microphones, recordings
  discarded. CPU is read from /proc/PID/stat (utime + stime) over the call only.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance import Device
from appliance.tokens import create_access_token
from appliance_dev.exchange_process import start_exchange_process, stop_process

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Credentials:
    account: str
    key: str
    secret: str
    app: str

    @classmethod
    def fresh(cls) -> Credentials:
        return cls(
            "AC" + secrets.token_hex(16),
            "SK" + secrets.token_hex(16),
            secrets.token_urlsafe(16),
            "AP" + secrets.token_hex(16),
        )

    def token(self, identity: str) -> str:
        return create_access_token(
            account_sid=self.account,
            api_key_sid=self.key,
            api_secret=self.secret,
            identity=identity,
            now=time.time(),
            outgoing_application_sid=self.app,
        )


async def start_exchange(creds: Credentials) -> tuple[asyncio.subprocess.Process, str]:
    return await start_exchange_process(creds.account, creds.key, creds.secret)


async def stop(proc: asyncio.subprocess.Process) -> None:
    await stop_process(proc, grace_s=10.0)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def bench_setup(calls: int) -> dict[str, Any]:
    creds = Credentials.fresh()
    proc, url = await start_exchange(creds)
    common = {"signaling_url": url, "local_addresses": ["127.0.0.1"]}
    alice = Device(input_device="tone:440", **common)
    bob = Device(input_device="tone:660", **common)
    callee_accepted: asyncio.Queue[float] = asyncio.Queue()

    async def answer(conn: Any) -> None:
        await conn.accept()
        callee_accepted.put_nowait(time.perf_counter())

    bob.on("incoming", answer)
    try:
        await alice.setup(creds.token("alice"))
        await bob.setup(creds.token("bob"))
        samples: list[float] = []
        caller_only: list[float] = []
        for _ in range(calls):
            accepted = asyncio.Event()
            t0 = time.perf_counter()
            conn = await alice.connect({"To": "bob"})
            conn.on("accept", lambda _c, done=accepted: done.set())
            await asyncio.wait_for(accepted.wait(), 10)
            t_caller = time.perf_counter()
            t_callee = await asyncio.wait_for(callee_accepted.get(), 10)
            samples.append(max(t_caller, t_callee) - t0)
            caller_only.append(t_caller - t0)
            await asyncio.sleep(0.3)  # let media flow briefly, as a real call
            await conn.disconnect()
            await asyncio.sleep(0.2)
    finally:
        await alice.destroy()
        await bob.destroy()
        await stop(proc)
    ms = [1000 * s for s in samples]
    return {
        "calls": calls,
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "max_ms": max(ms),
        "mean_ms": statistics.fmean(ms),
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def _agent(
    url: str,
    token: str,
    tone: str,
    auto_answer: bool,
    *,
    output: str = "null",
    env: dict[str, str] | None = None,
    stderr: int | None = None,
) -> asyncio.subprocess.Process:
    """An ``appliance phone`` agent on 127.0.0.1 speaking JSON lines."""
    args = [
        sys.executable,
        "-m",
        "appliance",
        "phone",
        "--signaling-url",
        url,
        "--input",
        tone,
        "--output",
        output,
        "--local-address",
        "127.0.0.1",
    ]
    if auto_answer:
        args.append("--auto-answer")
    # The token goes through the environment, never the command line (ps).
    return await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        env={**(os.environ if env is None else env), "APPLIANCE_TOKEN": token},
    )


async def _until(
    proc: asyncio.subprocess.Process, key: str, value: str, limit_s: float = 20.0
) -> dict[str, Any]:
    assert proc.stdout is not None
    deadline = time.monotonic() + limit_s
    while True:
        line = await asyncio.wait_for(
            proc.stdout.readline(), max(0.1, deadline - time.monotonic())
        )
        if not line:
            raise RuntimeError("phone agent exited")
        obj: dict[str, Any] = json.loads(line)
        if obj.get(key) == value:
            return obj


async def _send(proc: asyncio.subprocess.Process, cmd: dict[str, Any]) -> None:
    assert proc.stdin is not None
    proc.stdin.write((json.dumps(cmd) + "\n").encode())
    await proc.stdin.drain()


async def bench_cpu(seconds: float) -> dict[str, Any]:
    creds = Credentials.fresh()
    exchange, url = await start_exchange(creds)
    alice = await _agent(url, creds.token("alice"), "tone:440", auto_answer=False)
    bob = await _agent(url, creds.token("bob"), "tone:660", auto_answer=True)
    try:
        await _until(alice, "event", "ready")
        await _until(bob, "event", "ready")
        await _send(alice, {"cmd": "connect", "params": {"To": "bob"}})
        await _until(alice, "event", "connect")
        await asyncio.sleep(2.0)  # ICE and DTLS done; measure the steady state
        start = {p.pid: cpu_seconds(p.pid) for p in (alice, bob, exchange)}
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - t0
        used = {
            p.pid: cpu_seconds(p.pid) - start[p.pid] for p in (alice, bob, exchange)
        }
        await _send(alice, {"cmd": "hangup"})
        await _until(alice, "event", "disconnect")
        for proc in (alice, bob):
            await _send(proc, {"cmd": "quit"})
            await asyncio.wait_for(proc.wait(), 15)
    finally:
        for proc in (alice, bob):
            await stop_process(proc, grace_s=0.0)
        await stop(exchange)
    per_minute = {
        name: used[p.pid] * 60.0 / elapsed
        for name, p in (("alice", alice), ("bob", bob), ("exchange", exchange))
    }
    return {
        "seconds": round(elapsed, 1),
        **{f"{k}_cpu_s_per_min": v for k, v in per_minute.items()},
    }
