"""One side of a call across an :class:`~appliance_dev.netem.ImpairedLink`.

Run inside one namespace (``link.command(side, [python, -m,
appliance_dev.netem_call, ...])``); the caller relays the SDP between the two
sides as JSON lines on stdin/stdout, so no signaling server and no address
outside the link is involved. ICE gathers only on ``--address`` (the
namespace's end of the link) and uses no STUN or TURN server. Both stacks run
at the phone unit's nice value, as the phone does when deployed.

Two stacks, the same media files:

* ``phone``: our :class:`~appliance.media.session.MediaSession` (adaptive
  jitter buffer, Opus PLC and FEC) with ``file:`` source and sink;
* ``aiortc``: a bare ``RTCPeerConnection`` with aiortc's ``MediaPlayer`` and
  ``MediaRecorder`` (the minimal aiortc phone of anchors.md), nothing changed
  but the host address.

Instead of files, either side can use sound cards (``--mic``/``--speaker``:
ALSA PCM names, e.g. the virtual cards of :mod:`appliance_dev.rig`): the phone
through its ALSA backend, aiortc through a track and a player that do
blocking pyalsaaudio reads and writes in a worker thread, as a minimal aiortc
phone would (PyAV's wheels carry their own ALSA library, which cannot load the
cards' PulseAudio plugin).

:func:`call_across` starts both sides (the offerer in namespace ``a``
sending, the answerer in ``b`` recording) and relays between them.

Lines out: ``{"sdp": ...}`` (offer or answer), ``{"event": "connected",
"after_s": ...}``, then after ``--seconds`` of call ``{"event": "done",
...counters}``. Lines in: ``{"sdp": ...}`` (the other side's description).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import fractions
import json
import select
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import alsaaudio
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaBlackhole, MediaPlayer, MediaRecorder
from aiortc.mediastreams import AudioStreamTrack
from av import AudioFrame

from appliance.media.devices import open_sink, open_source
from appliance.media.ice import HOST_ADDRESSES, install_host_address_hook
from appliance.media.session import MediaConfig, MediaSession
from appliance_dev.netem import ImpairedLink
from appliance_dev.unit_file import run_as_unit

__all__ = ["call_across", "main"]


def call_across(
    link: ImpairedLink,
    stack: str,
    *,
    source: Path | None = None,
    sink: Path | None = None,
    seconds: float = 1.0,
    limit_s: float = 30.0,
    cards: dict[str, tuple[str, str]] | None = None,
    env: dict[str, str] | None = None,
    profile: Path | None = None,
) -> dict[str, Any]:
    """A one-way call from namespace ``a`` to ``b`` with ``stack``; both sides'
    reports: ``{"a": {...}, "b": {...}}`` with "connected" and "done" lines.

    ``cards`` gives a side its sound card, ``(mic PCM, speaker PCM)``, in
    place of the files (a call both ways); ``env`` is the sides' environment;
    ``profile``: each side writes its main thread's cProfile stats to
    ``profile`` + ``-a`` / ``-b``.

    Raises:
        RuntimeError: a side exited or said nothing within its limit.
    """
    sides: dict[str, subprocess.Popen[str]] = {}
    files = {"a": ("--source", source), "b": ("--sink", sink)}
    try:
        for side, role in (("a", "offer"), ("b", "answer")):
            flag, path = files[side]
            argv = [sys.executable, "-m", "appliance_dev.netem_call"]
            argv += ["--stack", stack, "--role", role, "--address", link.address(side)]
            argv += ["--seconds", str(seconds), "--limit", str(limit_s)]
            if cards and side in cards:
                argv += ["--mic", cards[side][0], "--speaker", cards[side][1]]
            elif path is not None:
                argv += [flag, str(path)]
            if profile is not None:
                argv += ["--profile", f"{profile}-{side}"]
            sides[side] = subprocess.Popen(
                link.command(side, argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
        offer = _line(sides["a"], 30.0)
        _tell(sides["b"], offer)
        _tell(sides["a"], _line(sides["b"], 30.0))
        report: dict[str, Any] = {}
        for side, proc in sides.items():
            report[side] = {"connected": _line(proc, limit_s + 5)}
        for side, proc in sides.items():
            report[side]["done"] = _line(proc, seconds + 60.0)
        for proc in sides.values():
            proc.wait(30)
        return report
    finally:
        for proc in sides.values():  # only ours, by PID
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()


def _line(proc: subprocess.Popen[str], limit_s: float) -> dict[str, Any]:
    stream: IO[str] | None = proc.stdout
    assert stream is not None
    ready, _, _ = select.select([stream], [], [], limit_s)
    line = stream.readline() if ready else ""
    if not line:
        raise RuntimeError(
            f"call side {proc.pid} said nothing within {limit_s:.0f} s "
            f"(exit status {proc.poll()})"
        )
    obj: dict[str, Any] = json.loads(line)
    return obj


def _tell(proc: subprocess.Popen[str], obj: dict[str, Any]) -> None:
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(obj) + "\n")
    proc.stdin.flush()


def _say(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


async def _hear(reader: asyncio.StreamReader) -> dict[str, Any]:
    line = await reader.readline()
    if not line:
        raise SystemExit("stdin closed before the other side's description")
    obj: dict[str, Any] = json.loads(line)
    return obj


async def _stdin() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    return reader


async def _until(check: Any, limit_s: float) -> float:
    """Poll ``check()`` every 20 ms; seconds it took (raises on timeout)."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > limit_s:
            raise TimeoutError(f"not connected within {limit_s:.0f} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


async def _phone(args: argparse.Namespace, stdin: asyncio.StreamReader) -> None:
    config = MediaConfig(local_addresses=(args.address,), dscp=False)
    source = open_source(
        f"alsa:{args.mic}"
        if args.mic
        else f"file:{args.source}"
        if args.source
        else "null"
    )
    sink = open_sink(
        f"alsa:{args.speaker}"
        if args.speaker
        else f"file:{args.sink}"
        if args.sink
        else "null"
    )
    session = MediaSession(config, source, sink)
    t0 = time.monotonic()
    try:
        if args.role == "offer":
            _say({"sdp": await session.create_offer()})
            await session.apply_answer((await _hear(stdin))["sdp"])
        else:
            _say({"sdp": await session.accept_offer((await _hear(stdin))["sdp"])})
        await _until(lambda: session.connection_state == "connected", args.limit)
        _say({"event": "connected", "after_s": time.monotonic() - t0})
        targets: list[float] = []
        # By the clock, not by count: a starved loop oversleeps every tick.
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            await asyncio.sleep(0.1)
            targets.append(session.playout.buffer.target_delay)
        stats = await session.stats()
        targets.sort()
        _say(
            {
                "event": "done",
                "packets_received": stats.packets_received,
                "packets_sent": stats.packets_sent,
                "jitter": dataclasses.asdict(session.playout.stats()),
                "target_ms_median": 1000 * targets[len(targets) // 2] if targets else 0,
            }
        )
    finally:
        await session.close()


_ALSA = {"rate": 48_000, "channels": 1, "periodsize": 960, "periods": 4}


class _AlsaMic(MediaStreamTrack):
    """A minimal aiortc microphone: blocking 20 ms reads in a worker thread."""

    kind = "audio"

    def __init__(self, pcm_name: str) -> None:
        super().__init__()
        self._pcm = alsaaudio.PCM(
            alsaaudio.PCM_CAPTURE,
            device=pcm_name,
            format=alsaaudio.PCM_FORMAT_S16_LE,
            **_ALSA,
        )
        self._pts = 0

    async def recv(self) -> AudioFrame:
        length, data = 0, b""
        while length <= 0:
            length, data = await asyncio.to_thread(self._pcm.read)
        samples = np.frombuffer(data, dtype=np.int16).reshape(1, -1)
        frame = AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 48_000
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, 48_000)
        self._pts += samples.shape[1]
        return frame


class _AlsaSpeaker:
    """A minimal aiortc speaker: every decoded frame, mixed to mono, written
    with a blocking write in a worker thread (the card paces the reads)."""

    def __init__(self, pcm_name: str) -> None:
        self._pcm = alsaaudio.PCM(
            alsaaudio.PCM_PLAYBACK,
            device=pcm_name,
            format=alsaaudio.PCM_FORMAT_S16_LE,
            **_ALSA,
        )
        self._tracks: list[MediaStreamTrack] = []
        self._tasks: list[asyncio.Task[None]] = []

    def addTrack(self, track: MediaStreamTrack) -> None:  # noqa: N802 (aiortc's name)
        self._tracks.append(track)

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._play(t)) for t in self._tracks]

    async def _play(self, track: MediaStreamTrack) -> None:
        while True:
            frame = await track.recv()
            assert isinstance(frame, AudioFrame)
            samples = frame.to_ndarray().reshape(-1, len(frame.layout.channels))
            mono = samples.mean(axis=1).astype(np.int16)
            await asyncio.to_thread(self._pcm.write, mono.tobytes())

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _aiortc(args: argparse.Namespace, stdin: asyncio.StreamReader) -> None:
    install_host_address_hook()
    HOST_ADDRESSES.set((args.address,))
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    track: MediaStreamTrack | None
    if args.mic:
        track = _AlsaMic(args.mic)
    else:
        track = MediaPlayer(args.source).audio if args.source else AudioStreamTrack()
    assert track is not None
    pc.addTrack(track)
    recorder: MediaRecorder | MediaBlackhole | _AlsaSpeaker = (
        _AlsaSpeaker(args.speaker)
        if args.speaker
        else MediaRecorder(args.sink)
        if args.sink
        else MediaBlackhole()
    )
    pc.on("track", recorder.addTrack)
    t0 = time.monotonic()
    try:
        if args.role == "offer":
            await pc.setLocalDescription(await pc.createOffer())
            _say({"sdp": pc.localDescription.sdp})
            answer = (await _hear(stdin))["sdp"]
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        else:
            offer = (await _hear(stdin))["sdp"]
            await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            _say({"sdp": pc.localDescription.sdp})
        await recorder.start()
        await _until(lambda: pc.connectionState == "connected", args.limit)
        _say({"event": "connected", "after_s": time.monotonic() - t0})
        await asyncio.sleep(args.seconds)
        report = await pc.getStats()
        received = sum(
            int(getattr(s, "packetsReceived", 0))
            for s in report.values()
            if s.type == "inbound-rtp"
        )
        sent = sum(
            int(getattr(s, "packetsSent", 0))
            for s in report.values()
            if s.type == "outbound-rtp"
        )
        _say({"event": "done", "packets_received": received, "packets_sent": sent})
    finally:
        await recorder.stop()
        await pc.close()


async def _run(args: argparse.Namespace) -> None:
    stdin = await _stdin()
    await (_phone if args.stack == "phone" else _aiortc)(args, stdin)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", choices=("phone", "aiortc"), required=True)
    parser.add_argument("--role", choices=("offer", "answer"), required=True)
    parser.add_argument("--address", required=True, help="the only ICE address")
    parser.add_argument("--source", help="WAV to send (default: silence)")
    parser.add_argument("--sink", help="WAV to record (default: discard)")
    parser.add_argument("--mic", help="ALSA PCM to capture (instead of --source)")
    parser.add_argument("--speaker", help="ALSA PCM to play (instead of --sink)")
    parser.add_argument("--seconds", type=float, default=1.0, help="call length")
    parser.add_argument("--limit", type=float, default=30.0, help="connect limit")
    parser.add_argument("--profile", help="write cProfile stats (main thread) here")
    run_as_unit()  # either stack at the phone unit's Nice=, before any thread
    args = parser.parse_args(argv)
    if not args.profile:
        asyncio.run(_run(args))
        return 0
    profiler = cProfile.Profile(time.thread_time)  # the loop thread alone
    try:
        profiler.runcall(asyncio.run, _run(args))
    finally:
        profiler.dump_stats(args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
