"""The receive path on real aiortc calls, through a lossy, jittery path.

There is no netem on the test machines, so the impairment sits at the
sender's RTP seam (aiortc's DTLS transport ``_send_rtp``, before SRTP): it
drops packets and delays others on the event loop, and the packets then
cross a real UDP socket to the other phone, which sees holes, late and
reordered packets as from a network.
"""

from __future__ import annotations

import asyncio
import fractions
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiortc.rtcrtpsender
import av
import numpy as np
import pytest
from aiortc import RTCRtpCodecParameters
from aiortc.codecs.opus import OpusEncoder

from appliance.media.devices import open_sink, open_source
from appliance.media.frames import FRAME_SAMPLES, SAMPLE_RATE, Samples
from appliance.media.levels import rms_dbfs
from appliance.media.opus import OpusDecoder
from appliance.media.playout import install_opus_fec
from appliance.media.session import MediaConfig, MediaSession
from tests.conftest import wait_until
from tests.media.helpers import dominant_frequency, read_wav
from tests.media.test_session import connect

LOOPBACK = MediaConfig(local_addresses=("127.0.0.1",))
PCMU = MediaConfig(local_addresses=("127.0.0.1",), codecs=("pcmu",))


class ImpairedPath:
    """Drops and delays the RTP one session sends (RTCP passes untouched)."""

    def __init__(self, session: MediaSession) -> None:
        transport: Any = session._transceiver.sender.transport
        self._send: Callable[[bytes], Awaitable[None]] = transport._send_rtp
        transport._send_rtp = self._send_rtp
        self.drop: Callable[[int], bool] = lambda n: False
        self.delay: Callable[[], float] = lambda: 0.0
        self.sent = 0
        self.dropped = 0
        self._pending: set[asyncio.Task[None]] = set()

    async def _send_rtp(self, data: bytes) -> None:
        if 192 <= data[1] <= 223:  # RTCP (RFC 5761 §4)
            await self._send(data)
            return
        self.sent += 1
        if self.drop(self.sent):
            self.dropped += 1
            return
        delay = self.delay()
        if delay <= 0:
            await self._send(data)
            return
        task = asyncio.create_task(self._later(delay, data))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _later(self, delay: float, data: bytes) -> None:
        await asyncio.sleep(delay)
        await self._send(data)


async def impaired_call(
    tmp_path: Path, config: MediaConfig
) -> tuple[MediaSession, MediaSession, ImpairedPath, Path]:
    """A sends 440 Hz to B through an impaired path; B records to the WAV."""
    wav = tmp_path / "b.wav"
    a = MediaSession(config, open_source("tone:440"), open_sink("null"))
    b = MediaSession(config, open_source("tone:1000"), open_sink(f"file:{wav}"))
    path = ImpairedPath(a)
    await connect(a, b)
    return a, b, path, wav


def frame_levels(samples: Samples) -> list[float]:
    whole = samples.size // FRAME_SAMPLES * FRAME_SAMPLES
    return [rms_dbfs(f) for f in samples[:whole].reshape(-1, FRAME_SAMPLES)]


# -- FEC, codec level --------------------------------------------------------


def speech_like(seconds: float) -> Samples:
    """A voiced, syllable-modulated signal with a gliding pitch."""
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    pitch = 2 * np.pi * np.cumsum(140 + 40 * np.sin(2 * np.pi * 0.7 * t)) / SAMPLE_RATE
    voiced = sum(np.sin(k * pitch) / k for k in range(1, 12))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
    return (6000 * voiced * envelope).astype(np.int16)


def encode(encoder: Any, samples: Samples) -> list[bytes]:
    packets: list[bytes] = []
    for start in range(0, samples.size, FRAME_SAMPLES):
        frame = av.AudioFrame.from_ndarray(
            samples[start : start + FRAME_SAMPLES].reshape(1, -1),
            format="s16",
            layout="mono",
        )
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        frame.pts = start
        packets += encoder.encode(frame)[0]
    return packets


def loss_errors(packets: list[bytes]) -> tuple[float, float]:
    """Squared error against a loss-free decode of every fifth frame lost,
    concealed (PLC) and recovered (FEC from the next packet)."""
    reference, plc, fec = OpusDecoder(), OpusDecoder(), OpusDecoder()
    plc_error = fec_error = 0.0
    for i, packet in enumerate(packets[:-1]):
        clean = reference.decode(packet).astype(np.float64)
        if i % 5 == 2:
            plc_error += float(np.sum((plc.conceal() - clean) ** 2))
            fec_error += float(np.sum((fec.recover(packets[i + 1]) - clean) ** 2))
        else:
            plc.decode(packet)
            fec.decode(packet)
    return plc_error, fec_error


def test_a_lost_opus_frame_is_recovered_from_the_next_packets_fec():
    install_opus_fec()
    opus = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2)
    ours = aiortc.rtcrtpsender.get_encoder(opus)  # type: ignore[attr-defined]
    signal = speech_like(2.0)
    plc_error, fec_error = loss_errors(encode(ours, signal))
    assert fec_error < 0.5 * plc_error
    # aiortc's own encoder sends no FEC: "recovering" is only concealing.
    plain_plc, plain_fec = loss_errors(encode(OpusEncoder(), signal))
    assert plain_fec == pytest.approx(plain_plc, rel=0.01)


# -- real calls ----------------------------------------------------------------


async def test_both_sides_play_through_the_adaptive_buffer_not_aiortcs(tmp_path):
    a, b, _, _ = await impaired_call(tmp_path, LOOPBACK)
    try:
        await wait_until(lambda: a.playout.stats().played >= 25)
        await wait_until(lambda: b.playout.stats().played >= 25)
        # aiortc still counts the packets (statistics, RTCP).
        assert (await b.stats()).packets_received >= 25
        for session in (a, b):
            for transceiver in session._pc.getTransceivers():
                receiver: Any = transceiver.receiver
                buffer = receiver._RTCRtpReceiver__jitter_buffer
                assert buffer.add(None) == (False, None)
    finally:
        await a.close()
        await b.close()


async def test_opus_losses_are_recovered_by_fec_with_no_gap(tmp_path):
    a, b, path, wav = await impaired_call(tmp_path, LOOPBACK)
    path.drop = lambda n: n > 25 and n % 10 == 0  # 10 % loss, single losses
    await wait_until(lambda: path.dropped >= 8)
    await wait_until(lambda: b.playout.stats().played >= 100)
    stats = b.playout.stats()
    await a.close()
    await b.close()

    # Most single losses come back from FEC (a loop stall on a busy machine
    # can make a packet late, and that frame is concealed instead).
    assert stats.recovered >= 5
    samples, _, _ = read_wav(wav)
    levels = frame_levels(samples)[15:-5]
    # The tone at about -15 dBFS (as sent); a frame rebuilt from FEC (a coarser SILK
    # copy) comes out up to about 12 dB lower, a hole would be silence.
    assert min(levels) > -35
    assert np.median(levels) == pytest.approx(-15, abs=1.5)
    assert dominant_frequency(samples) == pytest.approx(440, abs=5)


async def test_pcmu_losses_are_concealed_by_the_faded_last_frame(tmp_path):
    a, b, path, wav = await impaired_call(tmp_path, PCMU)
    path.drop = lambda n: n > 25 and n % 10 == 0
    await wait_until(lambda: path.dropped >= 8)
    await wait_until(lambda: b.playout.stats().played >= 100)
    stats = b.playout.stats()
    await a.close()
    await b.close()

    assert a.codec == "PCMU"
    assert stats.concealed >= 5 and stats.recovered == 0
    samples, _, _ = read_wav(wav)
    levels = frame_levels(samples)[15:-5]
    # -15 dBFS sent; a single concealed frame repeats the last at -6 dB.
    assert min(levels) > -24
    assert dominant_frequency(samples) == pytest.approx(440, abs=5)


async def test_the_delay_grows_under_jitter_stays_bounded_and_shrinks_back(
    tmp_path,
):
    a, b, path, _ = await impaired_call(tmp_path, LOOPBACK)
    rng = random.Random(11)
    delays: list[float] = []

    def sample() -> bool:
        delay = b.playout.buffer.delay(time.monotonic())
        if delay is not None:
            delays.append(delay)
        return False

    try:
        await wait_until(lambda: b.playout.stats().played >= 25)
        calm = b.playout.buffer.target_delay
        path.delay = lambda: rng.uniform(0.0, 0.080)  # 40 +/- 40 ms
        await wait_until(lambda: sample() or b.playout.buffer.target_delay >= 0.050)
        grown = b.playout.buffer.target_delay
        path.delay = lambda: 0.0
        await wait_until(
            lambda: sample() or b.playout.buffer.target_delay <= calm + 0.005,
            limit_s=10,
        )
        await wait_until(
            lambda: (
                (d := b.playout.buffer.delay(time.monotonic())) is not None
                and d <= 0.050
            ),
            limit_s=10,
        )
    finally:
        await a.close()
        await b.close()
    assert calm <= 0.030, calm  # a clean path holds a frame or so
    # The growth itself is the wait above (it fails the test if the target
    # never reaches 50 ms); grown, the target stays within its bound.
    assert grown <= b.playout.buffer.max_delay_s, grown
    assert max(delays) <= b.playout.buffer.max_delay_s + 0.060
    assert b.playout.stats().stretched > 0
