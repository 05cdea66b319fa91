"""Speech both ways under a Pi-class CPU budget, per stack, on the tap rig.

Issue item: with each phone process held to 25 % of one core (a cgroup v1 CPU
quota) and two CPU burners running, a 5-minute speech call scores PESQ-WB >=
4.0 both ways with latency growth <= 10 ms.

For each stack (same method as ``netem_bench.py``, side by side in one run):

* ``phone``: our MediaSession with its ALSA backend (``appliance_dev.netem_call``);
* ``aiortc``: a bare RTCPeerConnection, PyAV's ``alsa`` capture and playback;
* ``baresip``: Debian's baresip with its ``alsa`` module
  (``appliance_dev.netem_baresip``), when it is installed;

each call side is its own process in its own network namespace (a link with
no impairment: the namespaces only give each side its own address and port),
placed before it execs in its own cgroup of the v1 ``cpu`` controller with
``cpu.cfs_quota_us`` = 25 % of ``cpu.cfs_period_us``. The cgroup also gets a
little real-time runtime (``cpu.rt_runtime_us``; this kernel schedules
real-time threads by group, and a new group has none), so a thread that asks
for real-time priority gets it, as under the unit (only the phone's ALSA
threads ask). Two ``yes`` processes burn the machine's two cores beside.

Both sides talk at once on the tap rig (test-rig.md §8): A and B each say
their sentence again and again for the length of the call. Every copy is
found on the mic-feed channel and then on the far speaker channel of the one
recording, so its delay is a sample offset on one clock (the click method of
the audio bench, with speech as the click); the delay growth is the last
copies' delay less the first copies'. Each copy is scored with PESQ-WB.

Needs root (namespaces, cgroups), the virtual cards, and the v1 ``cpu``
controller at /sys/fs/cgroup/cpu. Run alone:
``.venv/bin/python bench/budget_bench.py [--seconds 60] [--out section.md]``;
``make bench`` runs it through ``bench/run.py`` (5-minute calls; ``--no-budget``
leaves it out, ``--budget-seconds`` shortens them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))

from audio_bench import PASSTHROUGH  # the bench directory is not a package

from appliance_dev import cpu_budget
from appliance_dev.analysis import align, pesq_wb, read_wav, speech, write_wav
from appliance_dev.cpu_budget import PERIOD_US, CpuGroup, burners
from appliance_dev.netem import ImpairedLink, Impairment, unavailable_reason
from appliance_dev.netem_baresip import baresip_cards, baresip_missing
from appliance_dev.netem_call import call_across
from appliance_dev.rig import RATE, RigProcess, RigUnavailableError, VirtualCards

STACKS = ("phone", "aiortc", "baresip")
COLOURS = {"phone": "blue", "aiortc": "red", "baresip": "darkgreen", "rig": "gray"}
#: The control (``--stacks rig``): no phone at all, a raw pyalsaaudio
#: passthrough A mic -> B speaker and B mic -> A speaker in the same groups
#: beside the same burners (audio_bench's, test-rig.md §8). If this breaks
#: up, the machine cannot hold audio at all in that run, whatever the phones do.
#: 25 % of one core: a Raspberry Pi core is several times slower than one here.
QUOTA = 0.25
#: Real-time runtime per second for each group. The phone's two ALSA threads
#: use about 3 % of a core here (through the PulseAudio plugin); a group that
#: runs out is frozen for the rest of the second, so leave room: 10 %. What
#: they really use is reported ("rt_cpu_s").
RT_RUNTIME_US = 100_000
BURNERS = 2
#: SCHED_RR priority of the rig's feeders and recorder (the server runs at 20).
WORLD_RT = 15
#: Silence before the first copy: the sides start, connect and settle in it
#: (process start-up alone takes seconds under the quota).
LEAD_S = 25.0
GAP_S = 1.0
SPEECH = {
    "a": "The quick brown fox jumps over the lazy dog near the river bank.",
    "b": "Six spoons of fresh snow peas, five thick slabs of blue cheese.",
}
VOICES = {"a": "en-us", "b": "en-gb+f3"}
#: The copies that set the start and the end of the delay (median of each).
ENDS = 3
#: Longest path delay searched for, seconds.
MAX_DELAY_S = 1.5


def unavailable() -> str | None:
    """Why this bench cannot run here, or None."""
    reason = unavailable_reason()
    if reason:
        return reason
    return cpu_budget.unavailable_reason()


class BudgetedLink(ImpairedLink):
    """An :class:`ImpairedLink` whose side ``a`` / ``b`` processes start in
    their own CPU group."""

    groups: dict[str, CpuGroup]

    def command(self, side: str, argv: Sequence[str]) -> list[str]:
        return self.groups[side].wrap(super().command(side, argv))


def _feed(said: np.ndarray, seconds: float) -> tuple[np.ndarray, list[int]]:
    """Lead silence, then copies of ``said`` for ``seconds``; copy starts."""
    every = said.size + int(GAP_S * RATE)
    starts = list(range(int(LEAD_S * RATE), int((LEAD_S + seconds) * RATE), every))
    starts = [s for s in starts if s + said.size <= (LEAD_S + seconds) * RATE]
    out = np.zeros(int((LEAD_S + seconds + 60) * RATE))
    for s in starts:
        out[s : s + said.size] = said
    return out, starts


def _spans(feed: np.ndarray) -> list[tuple[int, int]]:
    """The copies as they entered the mic: sound on the feed channel, split
    where it is silent for more than half the gap between copies."""
    hop = RATE // 50
    frames = feed[: feed.size // hop * hop].reshape(-1, hop)
    loud = np.flatnonzero(np.abs(frames).max(axis=1) > 0)
    if loud.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(loud) > GAP_S * 50 / 2)
    firsts = np.concatenate([[loud[0]], loud[breaks + 1]])
    lasts = np.concatenate([loud[breaks], [loud[-1]]])
    return [
        (int(a) * hop, (int(b) + 1) * hop) for a, b in zip(firsts, lasts, strict=True)
    ]


def _copies(
    said: np.ndarray, feed: np.ndarray, speaker: np.ndarray
) -> list[dict[str, float]]:
    """Each copy's delay (feed channel -> far speaker channel) and PESQ-WB.

    The reference is the copy as recorded on the feed channel, not the file:
    a feeder starved by the burners inserts silence, and the phone can only
    be judged on what really entered its microphone (test-rig.md §8).
    """
    out: list[dict[str, float]] = []
    spans = [(a, b) for a, b in _spans(feed) if b - a > said.size // 2]
    for on, off in spans:
        fed = feed[on:off]
        heard = speaker[on : off + int(MAX_DELAY_S * RATE)]
        if heard.size < fed.size or not np.any(heard):
            continue
        found = align(fed, heard)
        segment = heard[found.lag : found.lag + fed.size]
        if segment.size < fed.size:  # cut off by the end of the recording
            continue
        out.append(
            {
                "t_s": (on - spans[0][0]) / RATE,
                "delay_ms": 1000.0 * found.lag / RATE,
                "correlation": found.correlation,
                "fed_s": fed.size / RATE,
                "pesq_wb": _pesq(fed, segment),
            }
        )
    return out


def _pesq(reference: np.ndarray, degraded: np.ndarray) -> float:
    """PESQ-WB, or 0.0 where it cannot score (no pesq package, no speech)."""
    try:
        return pesq_wb(reference, degraded) or 0.0
    except RuntimeError as exc:  # pesq's PesqError: too short, no utterances
        print(f"  PESQ failed on a copy: {exc}", flush=True)
        return 0.0


def _direction(copies: list[dict[str, float]], sent: int) -> dict[str, Any]:
    if not copies:
        return {"copies": 0, "sent": sent}
    delays = [c["delay_ms"] for c in copies]
    scores = [c["pesq_wb"] for c in copies]
    first = statistics.median(delays[:ENDS])
    return {
        "copies": len(copies),
        "sent": sent,
        "pesq_wb_median": statistics.median(scores),
        "pesq_wb_min": min(scores),
        "first_delay_ms": first,
        "last_delay_ms": statistics.median(delays[-ENDS:]),
        "growth_ms": statistics.median(delays[-ENDS:]) - first,
        "max_growth_ms": max(delays) - first,
        "series": [(round(c["t_s"], 1), round(c["delay_ms"], 1)) for c in copies],
    }


def _world_on_time(procs: Sequence[RigProcess]) -> None:
    """The feeders and the recorder stand for mouths and ears: real-time
    (round robin, below the sound server), so the burners cannot starve them
    and shift what enters a microphone."""
    for proc in procs:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(proc.pid, os.SCHED_RR, os.sched_param(WORLD_RT))


def _passthrough(
    link: ImpairedLink,
    cards: dict[str, tuple[str, str]],
    seconds: float,
    env: dict[str, str],
) -> None:
    """The control: each side's mic straight to the other side's speaker."""
    procs = []
    try:
        for side, other in (("a", "b"), ("b", "a")):
            argv = [sys.executable, "-c", PASSTHROUGH, cards[side][0], cards[other][1]]
            procs.append(subprocess.Popen(link.command(side, argv), env=env))
        time.sleep(seconds)
    finally:
        for proc in procs:  # ours, by PID
            proc.kill()
            proc.wait()


def call_on_rig(
    rig: VirtualCards,
    stack: str,
    seconds: float,
    work: Path,
    quota: float = QUOTA,
    rt_us: int = RT_RUNTIME_US,
    profile: Path | None = None,
) -> dict[str, Any]:
    """One call both ways of ``stack`` under the budget; the figures."""
    said = {
        s: speech(SPEECH[s], work / f"say-{s}.wav", voice=VOICES[s]).astype(np.float64)
        for s in "ab"
    }
    starts: dict[str, list[int]] = {}
    for side, phone in (("a", "A"), ("b", "B")):
        feed, starts[side] = _feed(said[side], seconds)
        write_wav(work / f"feed-{phone}.wav", np.rint(feed))
    cards = {s: (rig.mic_pcm(p), rig.spk_pcm(p)) for s, p in (("a", "A"), ("b", "B"))}
    tap = work / f"tap-{stack}.wav"
    call_s = LEAD_S + seconds + 5.0
    groups: dict[str, CpuGroup] = {}
    tag = f"appliance-budget-{os.getpid()}-{stack}"
    rec = rig.record_tap(tap)
    feeders = [rig.feed(p, work / f"feed-{p}.wav") for p in "AB"]
    _world_on_time([rec, *feeders])
    try:
        # Recorder and feeders first, the sides after (test-rig.md §8 gotcha 1).
        time.sleep(1.0)
        for side in "ab":
            groups[side] = CpuGroup(f"{tag}-{side}", quota, rt_us)
        link = BudgetedLink(Impairment())
        link.groups = groups
        t0 = time.monotonic()
        with link:
            if stack == "rig":
                _passthrough(link, cards, call_s, rig.env)
            elif stack == "baresip":
                baresip_cards(link, cards, work / "baresip", call_s, env=rig.env)
            else:
                call_across(
                    link,
                    stack,
                    seconds=call_s,
                    limit_s=60.0,
                    cards=cards,
                    env=rig.env,
                    profile=profile,
                )
        wall = time.monotonic() - t0
        cpu = {s: g.cpu_seconds() for s, g in groups.items()}
        rt_cpu = {s: g.rt_cpu_seconds() for s, g in groups.items()}
        throttled = {s: g.throttled() for s, g in groups.items()}
        rt = all(g.rt_granted for g in groups.values())
    finally:
        for group in groups.values():
            group.close()
        for feeder in feeders:
            feeder.stop()
        rec.stop()
    data, _rate, channels = read_wav(tap)
    chans = data.reshape(-1, channels).astype(np.float64)
    feed_a, spk_a, feed_b, spk_b = (chans[:, i] for i in range(4))
    a_to_b = _copies(said["a"], feed_a, spk_b)
    b_to_a = _copies(said["b"], feed_b, spk_a)
    return {
        "stack": stack,
        "wall_s": round(wall, 1),
        "cpu_s": cpu,
        "cpu_s_per_min": {s: 60.0 * v / wall for s, v in cpu.items()},
        "rt_cpu_s": rt_cpu,
        "throttled": throttled,
        "rt_runtime_granted": rt,
        "a_to_b": _direction(a_to_b, len(starts["a"])),
        "b_to_a": _direction(b_to_a, len(starts["b"])),
        "load_1min": os.getloadavg()[0],
    }


def run(
    seconds: float,
    only: Sequence[str] = STACKS,
    keep: Path | None = None,
    *,
    progress: Path | None = None,
    quota: float = QUOTA,
    burn: int = BURNERS,
    rt_us: int = RT_RUNTIME_US,
    profile: Path | None = None,
) -> dict[str, Any]:
    """Every stack of ``only``, one after another, each beside the burners;
    ``keep``: leave the recordings and logs there.

    Raises:
        RigUnavailableError: no virtual cards here.
    """
    missing = baresip_missing()
    stacks = [s for s in only if s != "baresip" or missing is None]
    if missing and "baresip" in only:
        print(f"  baresip left out: {missing}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="budget-bench-") as tmp:
        work = keep or Path(tmp)
        rig = VirtualCards(["A", "B"], tap=True).start()
        try:
            for stack in stacks:
                print(f"  {stack}, {seconds:.0f} s under the budget...", flush=True)
                where = work / stack
                where.mkdir()
                with burners(burn):
                    prof = profile / stack if profile else None
                    row = call_on_rig(rig, stack, seconds, where, quota, rt_us, prof)
                rows.append(row)
                if progress is not None:  # a later failure keeps this row
                    progress.write_text(json.dumps(_result(seconds, quota, burn, rows)))
                brief = {k: v for k, v in row.items() if k not in ("a_to_b", "b_to_a")}
                for d in ("a_to_b", "b_to_a"):
                    brief[d] = {k: v for k, v in row[d].items() if k != "series"}
                print(f"  {json.dumps(brief)}", flush=True)
        finally:
            rig.stop()
    return _result(seconds, quota, burn, rows)


def _result(
    seconds: float, quota: float, burn: int, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    return {"seconds": seconds, "quota": quota, "burners": burn, "rows": rows}


def plot(result: dict[str, Any], path: Path) -> None:
    """Delay (y, ms) over the call (x, s), one line per stack and direction."""
    width, height, pad = 760, 440, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    series = [
        (r["stack"], d, r[d]["series"])
        for r in result["rows"]
        for d in ("a_to_b", "b_to_a")
        if r[d].get("series")
    ]
    points = [p for _s, _d, pts in series for p in pts]
    x_max = max((t for t, _ in points), default=1.0) * 1.05 or 1.0
    y_max = max((d for _, d in points), default=100.0) * 1.15
    y_lo = 0.0

    def xy(t: float, d: float) -> tuple[float, float]:
        return (
            pad + (width - 2 * pad) * t / x_max,
            height - pad - (height - 2 * pad) * (d - y_lo) / (y_max - y_lo),
        )

    draw.rectangle([pad, pad, width - pad, height - pad], outline="black")
    draw.text(
        (pad, 15),
        f"Mouth-to-ear delay over the call, each process held to "
        f"{100 * result['quota']:.0f} % of a core, {result['burners']} CPU burners "
        "beside",
        fill="black",
    )
    draw.text((width // 2 - 30, height - pad + 28), "call time, s", fill="black")
    draw.text((8, pad - 20), "delay, ms", fill="black")
    step = 50 if y_max < 400 else 100
    for y in range(0, int(y_max) + 1, step):
        x0, py = xy(0, y)
        x1, _ = xy(x_max, y)
        draw.line([x0, py, x1, py], fill="lightgray")
        draw.text((pad - 34, py - 6), f"{y}", fill="gray")
    for t in range(0, int(x_max) + 1, 60 if x_max > 120 else 10):
        px, _ = xy(t, y_lo)
        draw.text((px - 6, height - pad + 8), f"{t}", fill="gray")
    for n, (stack, direction, pts) in enumerate(series):
        colour = COLOURS[stack]
        line = [xy(t, d) for t, d in pts]
        if len(line) > 1:
            draw.line(line, fill=colour, width=2 if direction == "a_to_b" else 1)
        for px, py in line:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
        label = f"{stack} {direction.replace('_to_', '->').upper()}"
        draw.text((width - pad - 140, pad + 8 + 14 * n), label, fill=colour)
    image.save(path)


TABLE_HEAD = (
    "| stack | direction | PESQ-WB median | worst copy | copies heard "
    "| delay at start | delay growth | CPU s per call-minute | periods throttled |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def render(
    result: dict[str, Any] | None, reason: str = "", png: str = "", command: str = ""
) -> str:
    """The section of docs/benchmarks.md (``reason``: why it was not run)."""
    title = "\n## Speech under a Pi-class CPU budget (cgroup quota, burners)\n"
    if result is None:
        return f"{title}\nNot measured: {reason}\n"
    lines = []
    verdicts = []
    for r in result["rows"]:
        for d in ("a_to_b", "b_to_a"):
            x = r[d]
            name = d.replace("_to_", " -> ").upper()
            side = d[0]
            cpu = r["cpu_s_per_min"][side]
            thr = r["throttled"][side]
            share = thr["throttled"] / max(thr["periods"], 1.0)
            if not x["copies"]:
                lines.append(
                    f"| {r['stack']} | {name} | n/a | n/a | 0/{x['sent']} | n/a | "
                    f"n/a | {cpu:.1f} s | {100 * share:.0f} % |"
                )
                continue
            lines.append(
                f"| {r['stack']} | {name} | {x['pesq_wb_median']:.2f} | "
                f"{x['pesq_wb_min']:.2f} | {x['copies']}/{x['sent']} | "
                f"{x['first_delay_ms']:.0f} ms | {x['growth_ms']:+.1f} ms "
                f"(max {x['max_growth_ms']:+.1f}) | {cpu:.1f} s | {100 * share:.0f} % |"
            )
        if r["stack"] == "phone":
            both = [r[d] for d in ("a_to_b", "b_to_a")]
            ok = all(
                x["copies"]
                and x["pesq_wb_median"] >= 4.0
                and x["pesq_wb_min"] >= 4.0
                and abs(x["growth_ms"]) <= 10.0
                for x in both
            )
            verdicts.append(
                f"The phone {'meets' if ok else 'misses'} the target "
                "(PESQ-WB >= 4.0 both ways, every copy, delay growth <= 10 ms)."
            )
    picture = f"\n![Delay over the call under the budget]({png})\n" if png else ""
    how = f"`{command}`" if command else "`bench/budget_bench.py`"
    return f"""{title}
Each call side is its own process, held to {100 * result["quota"]:.0f} % of
one core by its own cgroup (v1 `cpu` controller: `cpu.cfs_quota_us` =
{int(result["quota"] * PERIOD_US)} of `cpu.cfs_period_us` = {PERIOD_US}, plus
{RT_RUNTIME_US // 1000} ms a second of real-time runtime, which only threads
that ask for real-time priority use: the phone's ALSA threads), with
{result["burners"]} `yes` processes burning both cores beside it. The sides
run at the unit's nice value (-5) in two network namespaces joined by a link
without impairment, on the virtual sound cards of the tap rig (test-rig.md
§8), both talking at once for {result["seconds"]:.0f} s: each says its
sentence again and again (espeak-ng). Every copy is located on the mic-feed
channel and on the far speaker channel of one recording (one clock), which
gives its delay; the growth is the median of the last {ENDS} copies' delays
less that of the first {ENDS}. Stacks: `phone` = our MediaSession with its
ALSA backend; `aiortc` = a bare RTCPeerConnection with PyAV's alsa capture
and playback; `baresip` = Debian's baresip with its alsa module (the netem
bench's media settings); `rig` (when run) = the control, no phone at all: a
raw pyalsaaudio passthrough from each mic to the other speaker in the same
groups beside the same burners. Made with {how}.
{picture}
{TABLE_HEAD}
{chr(10).join(lines)}

{" ".join(verdicts)}
"Delay at start" includes the rig's own loopback (about 20 ms, see the audio
section). "CPU s per call-minute" is the side's process (user + system); the
budget allows 15 s. "Periods throttled" is the share of 100 ms periods in
which the group hit its quota. Load average at the end of each call:
{", ".join(f"{r['stack']} {r['load_1min']:.1f}" for r in result["rows"])}.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="call length")
    parser.add_argument("--out", help="write the markdown section here")
    parser.add_argument("--png", default="docs/budget-delay.png")
    parser.add_argument("--stacks", default=",".join(STACKS), help="which to run")
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument("--keep", help="keep recordings and logs in this directory")
    parser.add_argument("--quota", type=float, default=QUOTA, help="share of a core")
    parser.add_argument("--burners", type=int, default=BURNERS)
    parser.add_argument("--profile", help="cProfile each side into DIR/STACK-a|b")
    parser.add_argument(
        "--rt-runtime-us", type=int, default=RT_RUNTIME_US, help="0: no real time"
    )
    parser.add_argument("--from-json", help="render a result without a run")
    args = parser.parse_args()
    command = "bench/budget_bench.py" + (
        f" --seconds {args.seconds:g}" if args.seconds != 300.0 else ""
    )
    if args.from_json:
        result = json.loads(Path(args.from_json).read_text())
    else:
        reason = unavailable()
        if reason:
            print(render(None, reason))
            return 0
        # A plain kill ends the run through the context managers and the
        # finally blocks (groups, burners, namespaces), as Ctrl-C does.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        t0 = time.monotonic()
        try:
            keep = Path(args.keep) if args.keep else None
            result = run(
                args.seconds,
                tuple(args.stacks.split(",")),
                keep,
                quota=args.quota,
                burn=args.burners,
                rt_us=args.rt_runtime_us,
                profile=Path(args.profile) if args.profile else None,
                progress=Path(args.json) if args.json else None,
            )
        except RigUnavailableError as exc:
            print(render(None, str(exc)))
            return 0
        print(f"({time.monotonic() - t0:.0f} s)")
        if args.json:
            Path(args.json).write_text(json.dumps(result))
    plot(result, Path(args.png))
    text = render(result, png=Path(args.png).name, command=command)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
