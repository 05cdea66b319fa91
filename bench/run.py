"""Run the benchmarks and write docs/benchmarks.md (``make bench``).

Benchmarks are measurements, not tests: they never fail on a slow machine, but
each target is printed next to its figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import audio_bench
import budget_bench
import call_bench  # the bench directory is not a package
import gc_bench
import netem_bench
import panel_bench
import soak_bench
import update_bench

from appliance_dev.netem import unavailable_reason
from appliance_dev.rig import RigUnavailableError


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def render_panel(panel: dict[str, dict[str, float]]) -> str:
    def row(name: str, what: str, target_ms: float) -> str:
        s = panel[name]
        verdict = "meets" if s["p50_ms"] < target_ms else "misses"
        return (
            f"| {what} | {s['p50_ms']:.1f} ms | {s['p95_ms']:.1f} ms | "
            f"{s['max_ms']:.1f} ms | < {target_ms:.0f} ms ({verdict}) |"
        )

    trials = panel["key_to_tone"]["trials"]
    card = (
        row("key_to_card", "key press -> DTMF tone enters the virtual sound card", 20)
        + "\n"
        if "key_to_card" in panel
        else ""
    )
    return f"""
## Front panel ({trials} trials each, gpiozero mock pins)

| path | p50 | p95 | max | target |
|---|---|---|---|---|
{card}{row("key_to_tone", "key press -> first frame of the local DTMF tone", 20)}
{row("key_to_controller", "key press -> debounced key event at the controller", 20)}
{row("invite_to_ringer", "exchange sends invite -> ringer LED on", 50)}
{row("connect_to_ringer", "caller's connect() -> ringer LED on", 50)}

Key presses drive the mock column pin while the scan thread drives its row; a
press counts after 5 ms of stable contact (`timing.press_debounce_ms`), a
release after 20 ms. The tone is timed at the first non-silent frame written
to the audio sink, through the panel, the controller, `device.audio.play_dtmf`
and the output mixer, and (first row) when those samples enter the ring buffer
of phone A's speaker on the virtual sound card through the ALSA backend
(`bench/panel_bench.py`); what the card adds after that (playback pre-fill,
PulseAudio) is measured in docs/audio.md.
"""


def render(setup: dict[str, float], cpu: dict[str, float], command: str) -> str:
    verdict = "meets" if setup["p50_ms"] < 150 else "misses"
    return f"""# Benchmarks

Reproduce with `{command}` (from a fresh clone; `make bench` sets everything up).
Measured {time.strftime("%Y-%m-%d")} on {machine()}.

## Call setup (issue target: p50 under 150 ms on loopback)

Time from `Device.connect()` until both phones have accepted the call (the
callee answers as soon as `incoming` fires), over {setup["calls"]} calls through
the local exchange running in its own process, all on 127.0.0.1. "Accepted"
means the SDP answer is applied on both sides, as Twilio.Device defines `accept`.
The callee's `incoming` fires once its ringtone has started playing (the seed's
rule), which takes about one 20 ms mixer frame; media (ICE and DTLS) connects
some 30-50 ms after `accept`.

| p50 | p95 | max | mean |
|---|---|---|---|
| {setup["p50_ms"]:.1f} ms | {setup["p95_ms"]:.1f} ms | {setup["max_ms"]:.1f} ms | \
{setup["mean_ms"]:.1f} ms |

The p50 {verdict} the 150 ms target.

## CPU per call-minute

Each phone in its own process (`appliance phone`), Opus both ways with tone
microphones, the received audio decoded and discarded; CPU time (user + system)
of each process over {cpu["seconds"]} s of steady call, scaled to one minute.

| phone A (caller) | phone B (callee) | exchange (signaling only) |
|---|---|---|
| {cpu["alice_cpu_s_per_min"]:.2f} s | {cpu["bob_cpu_s_per_min"]:.2f} s | \
{cpu["exchange_cpu_s_per_min"]:.3f} s |

A phone uses about {100 * cpu["alice_cpu_s_per_min"] / 60:.1f} % of one core of
this machine during a call. On a Raspberry Pi expect several times more. The
phone sends mono Opus at 32 kb/s with in-band FEC from its own libopus encoder
(`appliance/media/sending.py`; the settings are measured by
`bench/opus_bench.py`).
"""


async def main_async(args: argparse.Namespace) -> int:
    print(f"call setup over {args.calls} calls...", flush=True)
    setup = await call_bench.bench_setup(args.calls)
    print(json.dumps(setup), flush=True)
    print(f"CPU over a {args.cpu_seconds:.0f} s call...", flush=True)
    cpu = await call_bench.bench_cpu(args.cpu_seconds)
    print(json.dumps(cpu), flush=True)
    print("front panel latencies...", flush=True)
    panel = await panel_bench.run(args.trials)
    print(json.dumps(panel), flush=True)
    print(f"audio on the tap rig (quick={args.quick})...", flush=True)
    try:
        audio: dict[str, Any] | None = await audio_bench.run(args.quick)
        reason = ""
    except RigUnavailableError as exc:
        audio, reason = None, str(exc)
    print(json.dumps(audio), flush=True)
    print("remote updates of the service...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        update = await update_bench.measure_service(Path(tmp), 3)
    print(json.dumps(update), flush=True)
    print("collector pauses in a call...", flush=True)
    pauses = await asyncio.to_thread(gc_bench.run)
    print(json.dumps(pauses), flush=True)
    text = render(setup, cpu, "make bench") + render_panel(panel)
    text += audio_bench.render(audio, reason) + update_bench.render(update)
    text += gc_bench.render(pauses)
    text += await asyncio.to_thread(netem_section, args)
    text += await asyncio.to_thread(budget_section, args)
    if args.soak:
        # Long (about 0.4 s a call): only when asked for.
        print(f"soak over {args.soak} calls...", flush=True)
        soak = await soak_bench.run(args.soak)
        print(json.dumps(soak["growth"]), flush=True)
        text += soak_bench.render(soak, f"bench/run.py --soak {args.soak}")
    else:
        text += SOAK_POINTER
    return _write(text, args.out)


def netem_section(args: argparse.Namespace) -> str:
    """Speech through loss and jitter across namespaces (needs root), or why not."""
    reason = "left out (--no-netem)" if args.no_netem else unavailable_reason()
    if reason:
        print(f"loss and jitter across namespaces: {reason}", flush=True)
        return netem_bench.render(None, reason)
    print("speech through loss and jitter across namespaces...", flush=True)
    result = netem_bench.run()
    png = (
        Path(args.out).resolve().parent if args.out else Path.cwd()
    ) / "netem-pesq.png"
    netem_bench.plot(result, png)
    return netem_bench.render(result, png=png.name)


def budget_section(args: argparse.Namespace) -> str:
    """Speech under a CPU quota beside burners (needs root), or why not."""
    reason = "left out (--no-budget)" if args.no_budget else budget_bench.unavailable()
    if reason:
        print(f"speech under a CPU budget: {reason}", flush=True)
        return budget_bench.render(None, reason)
    print(f"speech under a CPU budget ({args.budget_seconds:.0f} s calls)...")
    try:
        result = budget_bench.run(args.budget_seconds)
    except RigUnavailableError as exc:
        return budget_bench.render(None, str(exc))
    png = (
        Path(args.out).resolve().parent if args.out else Path.cwd()
    ) / "budget-delay.png"
    budget_bench.plot(result, png)
    command = "make bench" + (
        f" (--budget-seconds {args.budget_seconds:g})"
        if args.budget_seconds != 300.0
        else ""
    )
    return budget_bench.render(result, png=png.name, command=command)


SOAK_POINTER = """
## Soak

Not part of a plain `make bench` (about 7 minutes for 1000 calls): the figures
are in docs/soak.md, made with
`.venv/bin/python bench/soak_bench.py --calls 1000 --out docs/soak.md`, or
add `--soak 1000` to bench/run.py to include them here.
"""


def _write(text: str, out: str | None) -> int:
    if out:
        Path(out).write_text(text)
        print(f"wrote {out}")
    else:
        print(text)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--cpu-seconds", type=float, default=60.0)
    parser.add_argument("--trials", type=int, default=30, help="front-panel trials")
    parser.add_argument("--out", help="write the markdown report here")
    parser.add_argument(
        "--soak", type=int, default=0, help="also run the soak over this many calls"
    )
    parser.add_argument(
        "--no-netem",
        action="store_true",
        help="leave out speech through loss and jitter (needs root, ~9 min)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="audio: a 60 s call instead of 10 min"
    )
    parser.add_argument(
        "--no-budget",
        action="store_true",
        help="leave out speech under a CPU quota (needs root, ~20 min)",
    )
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=300.0,
        help="length of each call under the CPU quota (published: 300)",
    )
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
