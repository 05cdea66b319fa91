"""The Opus send settings: quality and encoder cost per bit rate, complexity and FEC.

Two espeak-ng sentences (48 kHz mono) go through our encoder
(``appliance.media.opus.OpusEncoder``) and decoder; PESQ-WB is measured on
the loss-free decode and with every 20th or 10th frame lost and rebuilt from
the next packet's FEC (``OpusDecoder.recover``); the encoder's CPU time per
20 ms frame is the best of three passes. This is what chose the defaults in
``appliance.media.sending``.

Run alone: ``python bench/opus_bench.py [--out FILE]`` (about a minute).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from appliance.media.frames import FRAME_SAMPLES
from appliance.media.opus import OpusDecoder, OpusEncoder
from appliance.media.sending import (
    AUDIO_BAND_HZ,
    COMPLEXITY,
    DEFAULT_BITRATE,
    EXPECTED_LOSS_PERCENT,
)
from appliance_dev.analysis import pesq_wb, speech

SENTENCES = (
    ("The quick brown fox jumps over the lazy dog near the river bank.", "en-us"),
    (
        "Please call Stella and ask her to bring these things from the store.",
        "en-gb+f3",
    ),
)


def _speech() -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        parts = [
            speech(text, Path(tmp) / f"s{i}.wav", voice=voice, lead_s=0.3, tail_s=0.3)
            for i, (text, voice) in enumerate(SENTENCES)
        ]
    signal = np.concatenate(parts)
    return signal[: signal.size // FRAME_SAMPLES * FRAME_SAMPLES]


def _decode(packets: list[bytes], lose_every: int) -> np.ndarray:
    decoder, out = OpusDecoder(), []
    for i, packet in enumerate(packets):
        if lose_every and i % lose_every == 3 and i + 1 < len(packets):
            out.append(decoder.recover(packets[i + 1]))
        else:
            out.append(decoder.decode(packet))
    return np.concatenate(out)


def measure(
    signal: np.ndarray, bitrate: int, complexity: int, loss: int, band_hz: int
) -> dict[str, Any]:
    frames = signal.reshape(-1, FRAME_SAMPLES)
    times = []
    for _ in range(3):
        encoder = OpusEncoder(bitrate, complexity, loss, max_audio_hz=band_hz)
        start = time.process_time()
        packets = [encoder.encode(frame) for frame in frames]
        times.append(time.process_time() - start)
    return {
        "bitrate": bitrate,
        "complexity": complexity,
        "loss": loss,
        "band_hz": band_hz,
        "us_per_frame": 1e6 * min(times) / len(frames),
        "kbps": 8 * sum(map(len, packets)) / (len(packets) * 0.020) / 1000,
        "pesq": pesq_wb(signal, _decode(packets, 0)),
        "pesq_5": pesq_wb(signal, _decode(packets, 20)),
        "pesq_10": pesq_wb(signal, _decode(packets, 10)),
    }


def run() -> list[dict[str, Any]]:
    signal = _speech()
    rows = []
    for bitrate in (24000, 28000, 32000):
        for complexity in (3, 5, 6, 8, 10):
            rows.append(
                measure(
                    signal, bitrate, complexity, EXPECTED_LOSS_PERCENT, AUDIO_BAND_HZ
                )
            )
    for loss, band in ((10, AUDIO_BAND_HZ), (EXPECTED_LOSS_PERCENT, 20000), (0, 8000)):
        rows.append(measure(signal, DEFAULT_BITRATE, COMPLEXITY, loss, band))
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| bit rate | complexity | FEC for | band | encode / frame | sent | "
        "PESQ-WB | 5 % lost | 10 % lost |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mark = (
            " **(default)**"
            if (r["bitrate"], r["complexity"], r["loss"], r["band_hz"])
            == (DEFAULT_BITRATE, COMPLEXITY, EXPECTED_LOSS_PERCENT, AUDIO_BAND_HZ)
            else ""
        )
        lines.append(
            f"| {r['bitrate'] // 1000} kb/s{mark} | {r['complexity']} | "
            f"{r['loss']} % | {r['band_hz'] // 1000} kHz | "
            f"{r['us_per_frame']:.0f} µs | {r['kbps']:.1f} kb/s | {r['pesq']:.2f} | "
            f"{r['pesq_5']:.2f} | {r['pesq_10']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", help="write the markdown table here")
    args = parser.parse_args()
    rows = run()
    print(json.dumps(rows))
    text = render(rows)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
