"""Speech across an impaired link between two network namespaces, per stack.

Issue item: PESQ-WB >= 3.5 at 5 % loss with 40 +/- 10 ms jitter, measured
through a userspace forwarder between namespaces (this kernel has no netem),
side by side with plain aiortc. Unlike ``jitter_bench.py`` (which impairs
aiortc's RTP seam inside one process), every packet here (STUN, DTLS, SRTP,
RTCP) crosses a real impaired IP link (``appliance_dev.netem``), and each side
of the call is its own process in its own namespace
(``appliance_dev.netem_call``), SDP relayed over pipes, ICE on the namespace
addresses only.

For each loss level (0, 2, 5, 10 %, always 40 +/- 10 ms each way, seeded alike
for every stack) and each stack:

* ``phone``: our MediaSession (adaptive jitter buffer, Opus PLC and FEC);
* ``aiortc``: a bare RTCPeerConnection with MediaPlayer / MediaRecorder;
* ``baresip``: Debian's baresip, SIP and plain RTP straight between the two
  namespaces (``appliance_dev.netem_baresip``), when it is installed;

the same espeak-ng speech goes from namespace a to b three times in a row;
each copy is scored (PESQ-WB) and the last copy's alignment against the first
gives the growth of the delay (``jitter_bench.score``).

Needs root (namespaces, TUN). Run alone:
``.venv/bin/python bench/netem_bench.py [--out report.md]``; ``make bench``
runs it through ``bench/run.py`` (``--no-netem`` leaves it out).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jitter_bench  # the bench directory is not a package

from appliance_dev.analysis import speech, write_wav
from appliance_dev.netem import ImpairedLink, Impairment, unavailable_reason
from appliance_dev.netem_baresip import baresip_across, baresip_missing
from appliance_dev.netem_call import call_across
from appliance_dev.rig import RATE

LOSSES = (0.0, 0.02, 0.05, 0.10)
DELAY_S, JITTER_S = 0.040, 0.010
STACKS = ("phone", "aiortc", "baresip")
SEED = 1
COLOURS = {"phone": "blue", "aiortc": "red", "baresip": "darkgreen"}
#: Silence after the last copy, so every stack's call outlasts the speech.
TAIL_S = 3.0


def run(
    losses: tuple[float, ...] = LOSSES, only: tuple[str, ...] = STACKS
) -> dict[str, Any]:
    """Every stack (of ``only``) at every loss level; raises
    LinkUnavailableError if the machine cannot make namespaces (not root)."""
    rows: list[dict[str, Any]] = []
    missing = baresip_missing()
    stacks = [s for s in only if s != "baresip" or missing is None]
    if missing:
        print(f"  baresip left out: {missing}", flush=True)
    with tempfile.TemporaryDirectory(prefix="netem-bench-") as tmp:
        work = Path(tmp)
        feed = work / "speech.wav"
        reference = speech(jitter_bench.TEXT, work / "once.wav", lead_s=0.5, tail_s=0.5)
        copies = jitter_bench.COPIES
        tail = np.zeros(int(TAIL_S * RATE))
        write_wav(feed, np.concatenate([np.tile(reference, copies), tail]))
        seconds = copies * reference.size / RATE + TAIL_S + 3.0
        silence = work / "silence.wav"
        write_wav(silence, np.zeros(int((seconds + 60) * RATE)))
        for loss in losses:
            spec = Impairment(loss, DELAY_S, JITTER_S)
            for stack in stacks:
                out = work / f"{stack}-{loss:g}.wav"
                print(f"  {stack}, {spec.describe()}...", flush=True)
                report: dict[str, Any] = {"b": {"done": {}, "connected": {}}}
                with ImpairedLink(spec, seed=SEED) as link:
                    if stack == "baresip":
                        where = work / f"baresip-{loss:g}"
                        out = baresip_across(link, feed, silence, where, seconds)
                    else:
                        report = call_across(
                            link, stack, source=feed, sink=out, seconds=seconds
                        )
                load = os.getloadavg()[0]
                scores, growth, recorded = jitter_bench.score(
                    reference.astype(np.float64), out, copies
                )
                a_to_b = link.stats.get("a_to_b", {})
                done = report["b"]["done"]
                rows.append(
                    {
                        "stack": stack,
                        "loss": loss,
                        "pesq_wb": scores,
                        "pesq_wb_median": statistics.median(scores) if scores else None,
                        "delay_growth_ms": growth,
                        "recorded_s": recorded,
                        "connect_s": report["b"]["connected"].get("after_s"),
                        "link_dropped": a_to_b.get("dropped", 0)
                        / max(a_to_b.get("seen", 1), 1),
                        "link_reordered": a_to_b.get("reordered", 0),
                        "receiver": done,
                        "load_1min": load,
                    }
                )
                print(f"  {json.dumps(rows[-1])}", flush=True)
    return {"seconds": round(seconds, 1), "copies": copies, "rows": rows}


def plot(result: dict[str, Any], path: Path) -> None:
    """PESQ-WB (y, 1-4.5) against loss % (x), one line per stack."""
    width, height, pad = 720, 420, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    rows = result["rows"]
    x_max = max(100 * r["loss"] for r in rows) * 1.1 or 1.0
    y_lo, y_hi = 1.0, 4.6

    def point(x: float, y: float) -> tuple[float, float]:
        return (
            pad + (width - 2 * pad) * x / x_max,
            height - pad - (height - 2 * pad) * (y - y_lo) / (y_hi - y_lo),
        )

    draw.rectangle([pad, pad, width - pad, height - pad], outline="black")
    draw.text(
        (pad, 15),
        f"PESQ-WB against loss, {1000 * DELAY_S:.0f} +/- {1000 * JITTER_S:.0f} ms "
        "each way (namespaces, userspace forwarder)",
        fill="black",
    )
    draw.text((width // 2 - 20, height - pad + 28), "loss, %", fill="black")
    for y in (1.0, 2.0, 3.0, 3.5, 4.0, 4.5):
        x0, py = point(0, y)
        x1, _ = point(x_max, y)
        draw.line([x0, py, x1, py], fill="orange" if y == 3.5 else "lightgray")
        draw.text((pad - 28, py - 6), f"{y:.1f}", fill="gray")
    for loss in sorted({r["loss"] for r in rows}):
        px, _ = point(100 * loss, y_lo)
        draw.text((px - 6, height - pad + 8), f"{100 * loss:g}", fill="gray")
    for n, stack in enumerate(STACKS):
        mine = [r for r in rows if r["stack"] == stack and r["pesq_wb_median"]]
        points = [point(100 * r["loss"], r["pesq_wb_median"]) for r in mine]
        colour = COLOURS[stack]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for (px, py), r in zip(points, mine, strict=True):
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
            draw.text((px + 5, py - 14), f"{r['pesq_wb_median']:.2f}", fill=colour)
        draw.text((width - pad - 120, pad + 10 + 16 * n), stack, fill=colour)
    draw.text(
        (width - pad - 120, pad + 10 + 16 * len(STACKS)), "target 3.5", fill="orange"
    )
    image.save(path)


HEADER = (
    "| loss | stack | PESQ-WB (median) | per copy | delay growth | recorded "
    "| link A->B dropped / reordered | connect | load | receiver |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def render(result: dict[str, Any] | None, reason: str = "", png: str = "") -> str:
    """The section of docs/benchmarks.md (``reason``: why it was not run)."""
    title = "\n## Speech through loss and jitter across namespaces\n"
    if result is None:
        return f"{title}\nNot measured: {reason}\n"
    lines = []
    for r in result["rows"]:
        scores = ", ".join(f"{x:.2f}" for x in r["pesq_wb"]) or "n/a"
        done = r["receiver"]
        extra = ""
        if "jitter" in done:
            j = done["jitter"]
            extra = (
                f"target {done['target_ms_median']:.0f} ms; {j['recovered']} FEC, "
                f"{j['concealed']} PLC, {j['late']} late, {j['stretched']} stretched"
            )
        median = r["pesq_wb_median"]
        connect = "SIP" if r["connect_s"] is None else f"{r['connect_s']:.2f} s"
        growth = r["delay_growth_ms"]
        # The copies are alike: a lag past a second means the alignment
        # slipped (heavy loss), not the delay.
        grew = f"{growth:+.0f} ms" if abs(growth) < 1000 else "n/a"
        lines.append(
            f"| {100 * r['loss']:g} % | {r['stack']} | "
            f"{'n/a' if median is None else f'{median:.2f}'} | {scores} | "
            f"{grew} | {r['recorded_s']:.1f} s | "
            f"{100 * r['link_dropped']:.1f} % / {r['link_reordered']} | "
            f"{connect} | {r['load_1min']:.1f} | {extra} |"
        )
    at5 = {r["stack"]: r["pesq_wb_median"] for r in result["rows"] if r["loss"] == 0.05}
    verdict = ""
    if at5.get("phone") is not None:
        verdict = (
            f"At 5 % loss the phone scores {at5['phone']:.2f} "
            f"({'meets' if at5['phone'] >= 3.5 else 'misses'} the 3.5 target)"
        )
        for other in STACKS[1:]:
            if at5.get(other) is not None:
                verdict += f", {other} {at5[other]:.2f}"
        verdict += ".\n"
    picture = f"\n![PESQ-WB against loss]({png})\n" if png else ""
    return f"""{title}
Each call side is its own process in its own network namespace; the two
namespaces are joined only by a userspace forwarder between two TUN devices
(`dev/appliance_dev/netem.py`: this kernel has no netem) that drops, delays by
{1000 * DELAY_S:.0f} +/- {1000 * JITTER_S:.0f} ms (uniform, so packets overtake
each other) and forwards every packet, STUN, DTLS and RTCP included, seeded
alike for each stack. The same espeak-ng speech goes one way {result["copies"]}
times in a {result["seconds"]:.0f} s call (`bench/netem_bench.py`). Stacks:
`phone` = our MediaSession (adaptive jitter buffer, Opus PLC and FEC);
`aiortc` = a bare RTCPeerConnection with aiortc's MediaPlayer/MediaRecorder;
`baresip` = Debian's baresip 1.0 with its example config's media settings
(jitter buffer 5-10 frames, Opus 28 kb/s, no FEC), SIP and plain RTP straight
between the namespaces, aufile as microphone, a clocked aubridge speaker, the
decoded audio dumped by sndfile (`dev/appliance_dev/netem_baresip.py`).
{picture}
{HEADER}
{chr(10).join(lines)}

{verdict}"Load" is the machine's 1-minute load average at the end of each call
(2 cores; other work shares the machine). All call sides run at the phone
unit's nice value (-5) and the forwarder at -10, so the link itself holds its
timing under load. The phone and baresip play out on a 20 ms clock, as a
sound card would: a packet later than the buffer's delay is concealed, and a
CPU-starved process misses ticks. aiortc's MediaRecorder writes frames as they
arrive, with no playout clock, so starvation costs it nothing, but it drops
late frames from the timeline: it records less than the call lasted and its
copies drift earlier ("delay growth" negative; "recorded" is the length of
the receiver's recording).
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the markdown section here")
    parser.add_argument("--png", default="docs/netem-pesq.png")
    parser.add_argument("--stacks", default=",".join(STACKS), help="which to run")
    parser.add_argument(
        "--from-json", help="render a result this bench printed, without a run"
    )
    args = parser.parse_args()
    if args.from_json:
        result = json.loads(Path(args.from_json).read_text())
        plot(result, Path(args.png))
        return _emit(render(result, png=Path(args.png).name), args.out)
    reason = unavailable_reason()
    if reason:
        print(render(None, reason))
        return 0
    # A plain kill ends the run through the context managers (the forwarder
    # and the namespaces are cleaned up), as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    t0 = time.monotonic()
    result = run(only=tuple(args.stacks.split(",")))
    print(json.dumps(result, indent=1))
    plot(result, Path(args.png))
    print(f"({time.monotonic() - t0:.0f} s)")
    return _emit(render(result, png=Path(args.png).name), args.out)


def _emit(text: str, out: str | None) -> int:
    if out:
        Path(out).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
