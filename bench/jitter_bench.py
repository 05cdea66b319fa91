"""Speech through loss and jitter: the phone's receive path against plain aiortc.

Issue item: PESQ-WB >= 3.5 at 5 % loss with 40 +/- 10 ms jitter, where plain
aiortc scores about 1.1. Two calls in this process on 127.0.0.1, each sending
the same espeak-ng speech one way through the same impairment, seeded alike:

* ``phone``: two ``MediaSession``s (adaptive jitter buffer, Opus PLC and FEC,
  our encoder sending FEC);
* ``aiortc``: two bare ``RTCPeerConnection``s with aiortc's ``MediaPlayer`` and
  ``MediaRecorder``, nothing changed (the minimal aiortc phone of the anchors).

The impairment wraps the sender's RTP seam (aiortc's DTLS transport
``_send_rtp``, before SRTP): packets are dropped at random and the others
delayed on the event loop, then cross a real UDP socket. This machine has no
netem; a userspace forwarder between namespaces would delay the same way.

The speech goes three times in a row: each copy is scored, and the
alignment of the last copy against the first gives the growth of the delay.

Run: ``.venv/bin/python bench/jitter_bench.py [--loss 5] [--jitter-ms 10]``.
Needs espeak-ng and the ``pesq`` package (dev extras).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
from aiortc import RTCPeerConnection
from aiortc.contrib.media import MediaPlayer, MediaRecorder

from appliance.media.devices import open_sink, open_source
from appliance.media.session import MediaConfig, MediaSession
from appliance_dev.analysis import align, pesq_wb, read_wav, speech, write_wav
from appliance_dev.rig import RATE

TEXT = (
    "The quick brown fox jumps over the lazy dog near the river bank. "
    "Please call Stella and ask her to bring these things from the store. "
    "Six spoons of fresh snow peas, five thick slabs of blue cheese, "
    "and maybe a snack for her brother Bob."
)

#: The speech is sent this many times in a row, one PESQ figure each.
COPIES = 3


class Impairment:
    """Drops ``loss`` of the RTP packets and delays the rest by ``delay()``."""

    def __init__(self, transport: Any, loss: float, jitter: tuple[float, float]):
        self._send: Callable[[bytes], Awaitable[None]] = transport._send_rtp
        transport._send_rtp = self._send_rtp
        self._rng = random.Random(1)
        self._loss = loss
        self._jitter = jitter
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = self.dropped = 0

    async def _send_rtp(self, data: bytes) -> None:
        if 192 <= data[1] <= 223:  # RTCP
            await self._send(data)
            return
        self.sent += 1
        if self._rng.random() < self._loss:
            self.dropped += 1
            return
        task = asyncio.create_task(self._later(self._rng.uniform(*self._jitter), data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _later(self, delay: float, data: bytes) -> None:
        await asyncio.sleep(delay)
        await self._send(data)


async def phone_call(
    feed: Path, out: Path, seconds: float, loss: float, jitter: tuple[float, float]
) -> dict[str, Any]:
    config = MediaConfig(local_addresses=("127.0.0.1",))
    a = MediaSession(config, open_source(f"file:{feed}"), open_sink("null"))
    b = MediaSession(config, open_source("null"), open_sink(f"file:{out}"))
    path = Impairment(a._transceiver.sender.transport, loss, jitter)
    offer = await a.create_offer()
    await a.apply_answer(await b.accept_offer(offer))
    targets: list[float] = []
    for _ in range(int(seconds * 10)):
        await asyncio.sleep(0.1)
        targets.append(b.playout.buffer.target_delay)
    stats = b.playout.stats()
    await a.close()
    await b.close()
    return {
        "dropped": path.dropped / max(path.sent, 1),
        "stats": stats,
        "target_ms": 1000 * float(np.median(targets)),
    }


async def aiortc_call(
    feed: Path, out: Path, seconds: float, loss: float, jitter: tuple[float, float]
) -> dict[str, Any]:
    a, b = RTCPeerConnection(), RTCPeerConnection()
    player = MediaPlayer(str(feed))
    recorder = MediaRecorder(str(out))
    assert player.audio is not None
    a.addTrack(player.audio)
    b.on("track", recorder.addTrack)
    path = Impairment(a.getTransceivers()[0].sender.transport, loss, jitter)
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(b.localDescription)
    await recorder.start()
    await asyncio.sleep(seconds)
    await recorder.stop()
    await a.close()
    await b.close()
    return {"dropped": path.dropped / max(path.sent, 1)}


def score(
    reference: np.ndarray, out: Path, copies: int
) -> tuple[list[float], float, float]:
    """PESQ-WB of each copy of ``reference`` in the recording, how much later
    (ms) the last copy arrived than the first (the delay's growth), and the
    seconds recorded (a receiver that loses frames from the timeline records
    less than the call lasted)."""
    recorded, rate, channels = read_wav(out)
    mono = recorded.reshape(-1, channels).mean(axis=1) if channels > 1 else recorded
    assert rate == RATE
    # The copies are alike: look for the first one within half a copy.
    first = align(reference, mono[: reference.size * 3 // 2]).lag
    scores, lags = [], []
    for k in range(copies):
        start = max(first + k * reference.size - RATE // 2, 0)
        window = mono[start : start + reference.size + RATE]
        if window.size < reference.size:
            break  # the call ended before this copy was through
        lag = start + align(reference, window).lag
        lags.append(lag - k * reference.size)
        figure = pesq_wb(reference, mono[lag : lag + reference.size])
        if figure is not None:
            scores.append(figure)
    growth = 1000 * (lags[-1] - lags[0]) / RATE if len(lags) > 1 else float("nan")
    return scores, growth, mono.size / RATE


async def main_async(seconds: float, loss: float, jitter: tuple[float, float]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        feed = work / "speech.wav"
        reference = speech(TEXT, work / "once.wav", lead_s=0.5, tail_s=0.5)
        write_wav(feed, np.tile(reference, COPIES))
        seconds = max(seconds, COPIES * reference.size / RATE + 8.0)
        rows = []
        for name, call in (("phone", phone_call), ("aiortc", aiortc_call)):
            out = work / f"{name}.wav"
            result = await call(feed, out, seconds, loss, jitter)
            scores, growth, recorded = score(reference.astype(np.float64), out, COPIES)
            rows.append((name, scores, growth, recorded, result))
    lo, hi = (1000 * x for x in jitter)
    print(f"## Speech at {100 * loss:.0f} % loss, {lo:.0f}-{hi:.0f} ms delay\n")
    print(f"Call of {seconds:.0f} s, the speech sent {COPIES} times.\n")
    print("| receiver | PESQ-WB per copy | delay growth | recorded | lost | buffer |")
    print("|---|---|---|---|---|---|")
    for name, scores, growth, recorded, result in rows:
        figure = ", ".join(f"{x:.2f}" for x in scores) or "n/a (no pesq)"
        extra = ""
        if "stats" in result:
            s = result["stats"]
            extra = (
                f"target {result['target_ms']:.0f} ms median; {s.recovered} FEC, "
                f"{s.concealed} PLC, {s.late} late, {s.stretched} stretched, "
                f"{s.dropped} skipped"
            )
        print(
            f"| {name} | {figure} | {growth:+.0f} ms | {recorded:.1f} s | "
            f"{100 * result['dropped']:.1f} % | {extra} |"
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--loss", type=float, default=5.0, help="percent")
    parser.add_argument("--delay-ms", type=float, default=40.0)
    parser.add_argument("--jitter-ms", type=float, default=10.0)
    args = parser.parse_args()
    jitter = (
        (args.delay_ms - args.jitter_ms) / 1000,
        (args.delay_ms + args.jitter_ms) / 1000,
    )
    return asyncio.run(main_async(args.seconds, args.loss / 100, jitter))


if __name__ == "__main__":
    sys.exit(main())
