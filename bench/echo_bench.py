"""Speakerphone processing: ERLE, near-end quality in double talk, CPU.

Issue 11 item: echo cancellation with ERLE >= 25 dB on a synthetic echo
path, and the near-end speech during double talk still PESQ-WB >= 3.5.

The scene (``appliance_dev.echo_path``): espeak-ng speech plays on the
speaker three times; the room delays it (device delay plus air), convolves
it with a decaying 120 ms impulse response and attenuates it (the echo
return loss, ERL); another voice talks at the microphone during the last
pass. Each row runs the scene through a fresh processor, 20 ms frames with
the reference fed first, as the phone does:

* ERLE: echo energy over what is left, where only the far end talks, after
  the first pass (the filter's convergence);
* PESQ-WB double talk: the near-end voice alone against the output while
  both talk (the microphone as is scores the "raw" column);
* PESQ-WB clean: the near-end voice alone through the processing, with
  nothing playing (what the processing costs a quiet room);
* CPU: process time of the processing, per minute of audio.

Where the ``pywebrtc_audio`` package is importable (not a dependency), its
WebRTC AEC3 pipeline is measured on the same scenes for comparison.

Run: ``.venv/bin/python bench/echo_bench.py [--quick]``. Needs espeak-ng and
the ``pesq`` package (dev extras).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from appliance.media.echo import ProcessingSettings, VoiceProcessor
from appliance.media.frames import FRAME_SAMPLES, SAMPLE_RATE, Samples
from appliance_dev.analysis import pesq_wb, speech
from appliance_dev.echo_path import (
    EchoScene,
    erle_db,
    make_scene,
    room_response,
    run_processor,
)

FAR_TEXT = (
    "The quick brown fox jumps over the lazy dog near the river bank. "
    "Please call Stella and ask her to bring these things from the store."
)
NEAR_TEXT = "Hello, this is the near end talking over the echo. One two three four."

SETTINGS: dict[str, ProcessingSettings] = {
    "speexdsp EC": ProcessingSettings(echo_cancellation=True),
    "speexdsp EC+NS": ProcessingSettings(True, True, False),
    "speexdsp EC+NS+AGC": ProcessingSettings(True, True, True),
    "speexdsp NS+AGC (no EC)": ProcessingSettings(False, True, True),
}

Runner = Callable[[EchoScene], Samples]


def speex_runner(settings: ProcessingSettings) -> Runner:
    def run(scene: EchoScene) -> Samples:
        processor = VoiceProcessor(settings)
        try:
            return run_processor(processor, scene)
        finally:
            processor.close()

    return run


def webrtc_runner() -> Runner | None:
    """WebRTC AEC3 + NS through pywebrtc_audio, if it is installed."""
    try:
        module: Any = importlib.import_module("pywebrtc_audio")
    except ImportError:
        return None

    def run(scene: EchoScene) -> Samples:
        apm = module.AudioProcessor(
            sample_rate=SAMPLE_RATE, echo_cancellation=True, noise_suppression=True
        )
        out = np.empty_like(scene.mic)
        for start in range(0, scene.mic.size, FRAME_SAMPLES):
            part = slice(start, start + FRAME_SAMPLES)
            out[part] = apm.process(scene.mic[part], scene.far[part])
        return out

    return run


def measure(name: str, run: Runner, scene: EchoScene, delay_ms: int) -> dict[str, Any]:
    started = time.process_time()
    out = run(scene)
    cpu = time.process_time() - started
    near = np.rint(scene.near[scene.double_talk]).astype(np.int16)
    quiet = EchoScene(
        np.zeros_like(scene.far),
        np.zeros_like(scene.echo),
        scene.near,
        np.rint(scene.near).astype(np.int16),
        scene.far_only,
        scene.double_talk,
    )
    clean = run(quiet)
    return {
        "name": name,
        "delay_ms": delay_ms,
        "erle_db": erle_db(scene, out),
        "pesq_dt": pesq_wb(near, out[scene.double_talk]),
        "pesq_raw": pesq_wb(near, scene.mic[scene.double_talk]),
        "pesq_clean": pesq_wb(near, clean[scene.double_talk]),
        "cpu_s_per_min": cpu / (scene.mic.size / SAMPLE_RATE) * 60,
    }


def render(rows: list[dict[str, Any]], erl_db: float) -> str:
    def score(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    lines = [
        f"ERL {erl_db:.0f} dB, 120 ms room response; targets: ERLE >= 25 dB, "
        "PESQ-WB double talk >= 3.5",
        "",
        "| processing | delay | ERLE | PESQ-WB double talk (raw mic) "
        "| PESQ-WB clean | CPU per audio-minute |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['delay_ms']} ms | {r['erle_db']:.1f} dB | "
            f"{score(r['pesq_dt'])} ({score(r['pesq_raw'])}) | "
            f"{score(r['pesq_clean'])} | {r['cpu_s_per_min']:.2f} s |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 ms delay only")
    parser.add_argument("--erl-db", type=float, default=14.0)
    args = parser.parse_args(argv)
    delays = [40] if args.quick else [20, 40, 60]
    runners: dict[str, Runner] = {n: speex_runner(s) for n, s in SETTINGS.items()}
    webrtc = webrtc_runner()
    if webrtc is not None:
        runners["WebRTC AEC3+NS (pywebrtc-audio)"] = webrtc
    with tempfile.TemporaryDirectory() as tmp:
        far = speech(FAR_TEXT, Path(tmp) / "far.wav", lead_s=0.2)
        near = speech(NEAR_TEXT, Path(tmp) / "near.wav", voice="en-gb")
    room = room_response(erl_db=args.erl_db)
    rows = []
    for delay_ms in delays:
        scene = make_scene(far, near, delay_s=delay_ms / 1000, room=room)
        for name, run in runners.items():
            rows.append(measure(name, run, scene, delay_ms))
            print(rows[-1], file=sys.stderr)
    print(render(rows, args.erl_db))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
