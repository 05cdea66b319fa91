"""Audio benchmarks on the tap rig (test-rig.md §8): latency, drift, quality, cost.

All four virtual devices (A's mic feed and speaker, B's mic feed and speaker)
are channels of one PulseAudio null sink, recorded by one stream, so every
delay below is a sample offset on one clock; when the feeder or recorder
started does not enter (test-rig.md §8).

* (a) rig loopback: a raw pyalsaaudio passthrough A_mic -> A_spk (10 ms
  periods, 3 periods, 2 periods of silence pre-filled: the §8 recipe), so the
  rig's own share of every figure is known;
* (b) mouth-to-ear A mic -> B speaker over a call through the local exchange,
  each phone an ``appliance phone`` process with ``alsa:`` devices: chirps on
  A's mic feed, located on the feed channel and found on B's speaker channel
  by normalized cross-correlation; reported with and without (a);
* (c) the same delay every 2 s over a 10-minute call (quick: 60 s): first,
  last, max and slope;
* (d) PESQ-WB (``pesq`` package) or windowed correlation on speech, both
  directions at once, before the chirps;
* (e) CPU seconds per call-minute and peak RSS (VmHWM) of each phone process.

Order matters on this rig (§8 gotcha 1): the recorder and feeders start
first, with a long silent lead, and stop only after the phones.

Run alone: ``python bench/audio_bench.py [--quick]``; ``make bench`` runs it
through ``bench/run.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import call_bench  # the bench directory is not a package

from appliance_dev.analysis import (
    align,
    chirp,
    find_delays,
    locate_onsets,
    pesq_wb,
    read_wav,
    speech,
    windowed_correlation,
    write_wav,
)
from appliance_dev.exchange_process import stop_process
from appliance_dev.rig import RATE, VirtualCards

#: Silence at the start of every feed: phones start and call inside it.
LEAD_S = 12.0
CHIRP_EVERY_S = 2.0
SPEECH = {
    "A": "The quick brown fox jumps over the lazy dog near the river bank. "
    "Please call Stella and ask her to bring these things from the store.",
    "B": "Six spoons of fresh snow peas, five thick slabs of blue cheese, "
    "and maybe a snack for her brother Bob.",
}
VOICES = {"A": "en-us", "B": "en-gb+f3"}

# test-rig.md §8 passthrough: blocking read -> write, 10 ms periods, 3 periods,
# 2 periods of silence pre-filled (a 1-period pre-fill underruns at once).
PASSTHROUGH = """
import sys, alsaaudio
kw = dict(rate=48000, channels=1, format=alsaaudio.PCM_FORMAT_S16_LE,
          periodsize=480, periods=3)
cap = alsaaudio.PCM(alsaaudio.PCM_CAPTURE, device=sys.argv[1], **kw)
play = alsaaudio.PCM(alsaaudio.PCM_PLAYBACK, device=sys.argv[2], **kw)
play.write(bytes(2 * 960))
while True:
    n, data = cap.read()
    if n > 0:
        play.write(data)
"""


def _chirp_train(seconds: float) -> np.ndarray:
    marker = chirp()
    every = int(CHIRP_EVERY_S * RATE)
    out = np.zeros(int(seconds * RATE))
    for start in range(0, out.size - marker.size, every):
        out[start : start + marker.size] = marker
    return out


def _delays_ms(
    feed: np.ndarray, speaker: np.ndarray, start: int = 0
) -> list[tuple[float, float]]:
    """(feed time s, delay ms) of every chirp found after sample ``start``."""
    length = chirp().size
    onsets = [o for o in locate_onsets(feed, threshold=2000.0) if o >= start]
    found = find_delays(feed, speaker, onsets, length=length)
    return [(o / RATE, 1000.0 * d / RATE) for o, d, _s in found if d is not None]


def _series(values: list[float]) -> dict[str, float]:
    return {
        "median_ms": statistics.median(values),
        "min_ms": min(values),
        "max_ms": max(values),
    }


async def rig_loopback(rig: VirtualCards, work: Path) -> dict[str, Any]:
    """(a) the rig's own latency: a passthrough on phone A's devices."""
    feed = np.concatenate([np.zeros(3 * RATE), _chirp_train(12.0)])
    write_wav(work / "loop-feed.wav", np.rint(feed))
    rec = rig.record_tap(work / "loop.wav")
    feeder = rig.feed("A", work / "loop-feed.wav")
    await asyncio.sleep(1.0)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PASSTHROUGH,
        rig.mic_pcm("A"),
        rig.spk_pcm("A"),
        env=rig.env,
    )
    try:
        await asyncio.to_thread(feeder.wait, 60)
        await asyncio.sleep(0.5)
    finally:
        await stop_process(proc)
        rec.stop()
    data, _rate, channels = read_wav(work / "loop.wav")
    tap = data.reshape(-1, channels).astype(np.float64)
    delays = [d for _t, d in _delays_ms(tap[:, 0], tap[:, 1])]
    if not delays:
        raise RuntimeError("rig loopback: no chirp found on the speaker channel")
    return {"chirps": len(delays), **_series(delays)}


async def _phone(
    rig: VirtualCards, name: str, url: str, token: str, auto_answer: bool
) -> asyncio.subprocess.Process:
    """A phone agent on the virtual cards of ``name``; its log is kept."""
    return await call_bench._agent(
        url,
        token,
        f"alsa:{rig.mic_pcm(name)}",
        auto_answer,
        output=f"alsa:{rig.spk_pcm(name)}",
        env=rig.env,
        stderr=asyncio.subprocess.PIPE,
    )


async def _collect(stream: asyncio.StreamReader | None, lines: list[str]) -> None:
    """Keep a phone's log lines (xrun warnings explain latency steps)."""
    while stream is not None and (line := await stream.readline()):
        lines.append(line.decode(errors="replace").rstrip())


def _xruns(lines: list[str], kind: str) -> int:
    """The last "N xruns so far" the phone logged for its ALSA ``kind`` device.

    The warnings are rate-limited, so the running total is the true count.
    """
    counts = [
        int(m.group(1))
        for line in lines
        if f"ALSA {kind}" in line and (m := re.search(r"\((\d+) xruns so far", line))
    ]
    return max(counts, default=0)


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


async def call_run(rig: VirtualCards, work: Path, seconds: float) -> dict[str, Any]:
    """(b)-(e): one call, speech both ways, then a chirp train A -> B."""
    said = {
        n: speech(SPEECH[n], work / f"say{n}.wav", voice=VOICES[n]).astype(np.float64)
        for n in "AB"
    }
    talk = max(s.size for s in said.values()) + RATE
    total = int(LEAD_S * RATE) + talk + int(seconds * RATE) + RATE
    feeds = {n: np.zeros(total) for n in "AB"}
    start_speech = int(LEAD_S * RATE)
    for n in "AB":
        feeds[n][start_speech : start_speech + said[n].size] = said[n]
        # B's feed is as long as A's: a feeder disconnecting mid-call makes
        # the running ALSA clients underrun (§8 gotcha 1).
    chirps_at = start_speech + talk
    train = _chirp_train(seconds)
    feeds["A"][chirps_at : chirps_at + train.size] = train
    for n in "AB":
        write_wav(work / f"feed{n}.wav", np.rint(feeds[n]))

    creds = call_bench.Credentials.fresh()
    exchange, url = await call_bench.start_exchange(creds)
    rec = rig.record_tap(work / "call.wav")
    feeders = [rig.feed(n, work / f"feed{n}.wav") for n in "AB"]
    t_feed = time.monotonic()
    phones: dict[str, asyncio.subprocess.Process] = {}
    logs: dict[str, list[str]] = {"A": [], "B": []}
    readers = []
    try:
        phones["A"] = await _phone(rig, "A", url, creds.token("alice"), False)
        phones["B"] = await _phone(rig, "B", url, creds.token("bob"), True)
        for n, proc in phones.items():
            readers.append(asyncio.create_task(_collect(proc.stderr, logs[n])))
        await call_bench._until(phones["A"], "event", "ready")
        await call_bench._until(phones["B"], "event", "ready")
        await call_bench._send(phones["A"], {"cmd": "connect", "params": {"To": "bob"}})
        await call_bench._until(phones["A"], "event", "connect")
        connected_s = time.monotonic() - t_feed
        if connected_s > LEAD_S - 1.0:
            raise RuntimeError(f"call up only {connected_s:.1f} s into the feed")
        # CPU over the chirp train only: the steady state of a call.
        await asyncio.sleep(max(0.0, chirps_at / RATE - (time.monotonic() - t_feed)))
        cpu0 = {n: call_bench.cpu_seconds(p.pid) for n, p in phones.items()}
        t0 = time.monotonic()
        await asyncio.to_thread(feeders[0].wait, total / RATE + 120)
        elapsed = time.monotonic() - t0
        cpu = {
            n: (call_bench.cpu_seconds(p.pid) - cpu0[n]) * 60.0 / elapsed
            for n, p in phones.items()
        }
        rss = {n: _peak_rss_mb(p.pid) for n, p in phones.items()}
        await call_bench._send(phones["A"], {"cmd": "hangup"})
        await call_bench._until(phones["A"], "event", "disconnect")
        for proc in phones.values():
            await call_bench._send(proc, {"cmd": "quit"})
            await asyncio.wait_for(proc.wait(), 15)
    finally:
        for proc in phones.values():
            await stop_process(proc, grace_s=0.0)
        for feeder in feeders:
            feeder.stop()
        rec.stop()
        await call_bench.stop(exchange)
        await asyncio.gather(*readers, return_exceptions=True)

    data, _rate, channels = read_wav(work / "call.wav")
    tap = data.reshape(-1, channels).astype(np.float64)
    feed_a, spk_a, feed_b, spk_b = (tap[:, i] for i in range(4))
    # Where the feed really started on the recording's clock: the first
    # speech sample on A's feed channel (feeders may start late, §8).
    speech_on = {}
    for n, channel in (("A", feed_a), ("B", feed_b)):
        found = align(said[n], channel)
        speech_on[n] = found.lag
    quality: dict[str, Any] = {}
    for far, near, spk in (("A", "B", spk_b), ("B", "A", spk_a)):
        lag = align(said[far], spk, min_lag=speech_on[far]).lag
        segment = spk[lag : lag + said[far].size]
        quality[f"{far}_to_{near}"] = {
            "pesq_wb": pesq_wb(said[far], segment),
            "correlation": windowed_correlation(said[far], spk, lag),
        }
    train_start = speech_on["A"] + talk - RATE // 2
    samples = _delays_ms(feed_a, spk_b, start=train_start)
    if not samples:
        raise RuntimeError("no chirp found on B's speaker channel")
    times = np.array([t for t, _d in samples])
    delays = np.array([d for _t, d in samples])
    first = float(np.median(delays[:5]))
    last = float(np.median(delays[-5:]))
    slope = float(np.polyfit(times - times[0], delays, 1)[0]) * 60.0
    steps = np.diff(delays)
    return {
        "call_seconds": round(elapsed, 1),
        "chirps_sent": train.size // int(CHIRP_EVERY_S * RATE),
        "chirps_found": len(samples),
        "mouth_to_ear": {
            "first_ms": first,
            "last_ms": last,
            "max_ms": float(delays.max()),
            "min_ms": float(delays.min()),
            "median_ms": float(np.median(delays)),
            "slope_ms_per_min": slope,
            "steps_up": int(np.sum(steps > 5.0)),
            "steps_down": int(np.sum(steps < -5.0)),
            "every_10s_ms": [
                round(float(delays[i]), 1)
                for i in range(0, delays.size, int(10 / CHIRP_EVERY_S))
            ],
        },
        "quality": quality,
        "cpu_s_per_call_min": cpu,
        "peak_rss_mb": rss,
        "playback_xruns": {n: _xruns(lines, "playback") for n, lines in logs.items()},
    }


async def run(quick: bool) -> dict[str, Any]:
    """Run every audio benchmark; ``quick`` shortens the drift call to 60 s."""
    seconds = 60.0 if quick else 600.0
    with tempfile.TemporaryDirectory(prefix="audio-bench-") as tmp:
        work = Path(tmp)
        rig = VirtualCards(["A", "B"], tap=True).start()
        try:
            loop = await rig_loopback(rig, work)
            call = await call_run(rig, work, seconds)
        finally:
            rig.stop()
    m2e = call["mouth_to_ear"]
    call["device_added_ms"] = m2e["first_ms"] - loop["median_ms"]
    return {"quick": quick, "rig_loopback": loop, **call}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="60 s call, not 10 min")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        print(json.dumps(asyncio.run(run(args.quick)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def render(audio: dict[str, Any] | None, reason: str = "") -> str:
    """The audio section of docs/benchmarks.md (``reason``: why not measured)."""
    title = "\n## Audio on virtual sound cards (tap rig, test-rig.md §8)\n"
    if audio is None:
        return f"{title}\nNot measured: {reason}\n"
    loop, m2e = audio["rig_loopback"], audio["mouth_to_ear"]
    added = audio["device_added_ms"]
    cpu, rss = audio["cpu_s_per_call_min"], audio["peak_rss_mb"]
    rows = [
        (
            f"rig loopback (raw ALSA passthrough, {loop['chirps']} chirps)",
            f"{loop['median_ms']:.1f} ms",
            "subtracted below",
        ),
        (
            "mouth-to-ear A mic -> B speaker, start of call",
            f"{m2e['first_ms']:.1f} ms",
            "G.114: < 150 ms one way",
        ),
        (
            "same, less the rig loopback (both phones' share)",
            f"{added:.1f} ms",
            f"G.114 App. II: 80 ms for both terminals "
            f"({'meets' if added <= 80 else 'misses'})",
        ),
        (
            f"after {audio['call_seconds'] / 60:.1f} min of call: last / max",
            f"{m2e['last_ms']:.1f} / {m2e['max_ms']:.1f} ms",
            "aiortc baseline 500-600 ms (aiortc#775)",
        ),
        (
            f"drift, linear fit over {audio['chirps_found']}/"
            f"{audio['chirps_sent']} chirps",
            f"{m2e['slope_ms_per_min']:+.2f} ms/min",
            "bounded: < 20 ms per hour",
        ),
        (
            "latency steps up / down (> 5 ms between chirps)",
            f"{m2e['steps_up']} / {m2e['steps_down']}",
            f"speaker xruns, A / B: {audio['playback_xruns']['A']} / "
            f"{audio['playback_xruns']['B']}",
        ),
        (
            "CPU per call-minute, phone A / B",
            f"{cpu['A']:.2f} / {cpu['B']:.2f} s",
            "",
        ),
        ("peak RSS, phone A / B", f"{rss['A']:.0f} / {rss['B']:.0f} MB", ""),
    ]
    table = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
    speech_rows = []
    for direction, q in audio["quality"].items():
        pesq = "n/a (no pesq)" if q["pesq_wb"] is None else f"{q['pesq_wb']:.2f}"
        name = direction.replace("_to_", " -> ")
        speech_rows.append(f"| {name} | {pesq} | {q['correlation']:.3f} |")
    return f"""{title}
Each phone is an `appliance phone` process with `alsa:` devices on clocked
PulseAudio null sinks; all four devices are channels of one sink recorded by
one stream, so every delay is a sample offset on one clock
(`bench/audio_bench.py`; method and latency budget in docs/audio.md).
Samples every 10 s (ms): {", ".join(str(v) for v in m2e["every_10s_ms"])}.

| figure | value | anchor |
|---|---|---|
{table}

Speech both ways at once (espeak-ng, Opus), aligned by cross-correlation:

| direction | PESQ-WB | windowed correlation |
|---|---|---|
{chr(10).join(speech_rows)}
"""
