"""ALSA backend on clocked virtual sound cards (appliance_dev.rig, test-rig.md §2).

These tests need PulseAudio and the ALSA pulse plugin; without them the rig
fixture fails with an install hint (they are the point, so no skip).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from appliance.errors import AudioDeviceError
from appliance.hardware.alsa_capture import AlsaSource, open_alsa_source
from appliance.hardware.alsa_devices import (
    AlsaDeviceInfo,
    CardMonitor,
    list_pcm_devices,
    pcm_label,
)
from appliance.hardware.alsa_pcm import RT_PRIORITY, AlsaSink, open_alsa_sink
from appliance.media.frames import FRAME_SAMPLES, SAMPLE_RATE
from appliance.media.listing import DeviceChange, DeviceSetTracker
from appliance_dev.rig import VirtualCards
from tests.conftest import installed_cards, scaled, wait_until

pytestmark = pytest.mark.slow  # virtual sound cards


@pytest.fixture(scope="module")
def rig():
    with installed_cards(["A", "B", "C"]) as cards:
        yield cards


def write_tone(path: Path, freq: float, seconds: float, amplitude=0.3) -> Path:
    n = np.arange(round(seconds * SAMPLE_RATE))
    x = (amplitude * 32767 * np.sin(2 * np.pi * freq * n / SAMPLE_RATE)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(x.tobytes())
    return path


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == SAMPLE_RATE
        return np.frombuffer(w.readframes(w.getnframes()), "<i2")


def peak_hz(x: np.ndarray) -> float:
    """Dominant frequency, with parabolic interpolation of the FFT peak."""
    x = x.astype(float) * np.hanning(x.size)
    spec = np.abs(np.fft.rfft(x))
    k = int(np.argmax(spec[1:-1])) + 1
    a, b, c = np.log(spec[k - 1 : k + 2] + 1e-9)
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * SAMPLE_RATE / x.size


def band_db(x: np.ndarray, freq: float) -> float:
    """Level of ``freq`` relative to the strongest component, in dB."""
    spec = np.abs(np.fft.rfft(x.astype(float) * np.hanning(x.size)))
    k = round(freq * x.size / SAMPLE_RATE)
    return 20 * np.log10(spec[k - 3 : k + 4].max() / spec.max())


def loud_span(x: np.ndarray) -> np.ndarray:
    """The contiguous part between the first and the last loud sample."""
    loud = np.flatnonzero(np.abs(x) > 1000)
    return x[loud[0] : loud[-1]] if loud.size else x[:0]


def tone_frame(freq: float, index: int, amplitude=0.25) -> np.ndarray:
    n = np.arange(index * FRAME_SAMPLES, (index + 1) * FRAME_SAMPLES)
    return (amplitude * 32767 * np.sin(2 * np.pi * freq * n / SAMPLE_RATE)).astype(
        np.int16
    )


async def play_tone(sink: AlsaSink, freq: float, frames: int) -> None:
    """Write frames paced in real time, like a decoder would."""
    start = time.monotonic()
    for i in range(frames):
        await sink.write_frame(tone_frame(freq, i))
        # A decoder's pace: 20 ms per frame on a fixed schedule.
        await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - time.monotonic()))


async def read_frames(source: AlsaSource, count: int) -> np.ndarray:
    frames = [await source.read_frame() for _ in range(count)]
    assert all(f.dtype == np.int16 and f.shape == (FRAME_SAMPLES,) for f in frames)
    return np.concatenate(frames)


async def test_source_reads_fed_tone_in_real_time(rig, tmp_path):
    feed = rig.feed("A", write_tone(tmp_path / "t.wav", 1000, 6.5))
    try:
        await asyncio.sleep(scaled(0.3))  # feeder first: test-rig.md §8 gotcha 1
        source = open_alsa_source("alsa:A_mic")
        try:
            await source.read_frame()  # the stream is running from here
            start = time.monotonic()
            audio = await read_frames(source, 250)  # 5 s
            elapsed = time.monotonic() - start
        finally:
            source.close()
    finally:
        feed.stop()
    assert 4.8 <= elapsed <= 5.2
    steady = audio[SAMPLE_RATE // 2 :]
    assert peak_hz(steady) == pytest.approx(1000, abs=1)
    rms = np.sqrt(np.mean(steady.astype(float) ** 2))
    assert rms == pytest.approx(0.3 * 32767 / np.sqrt(2), rel=0.02)
    assert source.xruns == 0


def _system_grants_realtime() -> bool:
    """Whether a thread of this process may take SCHED_FIFO at RT_PRIORITY:
    root in CI may; an unprivileged user without an RTPRIO limit (or a cgroup
    without real-time runtime) may not. Tried on a throwaway thread."""
    granted: list[bool] = []

    def attempt() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
        except OSError:
            granted.append(False)
        else:
            granted.append(True)

    probe = threading.Thread(target=attempt)
    probe.start()
    probe.join()
    return granted[0]


def _policy_of(thread_name: str) -> int:
    (thread,) = [t for t in threading.enumerate() if t.name == thread_name]
    assert thread.native_id is not None
    return os.sched_getscheduler(thread.native_id)


async def test_io_threads_ask_for_realtime_and_keep_working_without_it(rig, tmp_path):
    # Both outcomes are checked, so the test runs (and can fail) everywhere:
    # where the system grants real-time scheduling (root in CI, the unit's
    # LimitRTPRIO=) both I/O threads must run SCHED_FIFO and the main thread
    # must not; where it refuses, they must run as before and stream anyway.
    grants = _system_grants_realtime()
    feed = rig.feed("C", write_tone(tmp_path / "t.wav", 1000, 4))
    try:
        await asyncio.sleep(scaled(0.3))  # feeder first: test-rig.md §8 gotcha 1
        source = open_alsa_source("alsa:C_mic")
        sink = open_alsa_sink("alsa:C_spk")
        try:
            for _ in range(10):
                await sink.write_frame(await source.read_frame())
            await wait_until(lambda: sink.realtime is not None)
            assert source.realtime is grants
            assert sink.realtime is grants
            expected = os.SCHED_FIFO if grants else os.SCHED_OTHER
            assert _policy_of("alsa-capture-C_mic") == expected
            assert _policy_of("alsa-playback-C_spk") == expected
            if grants:
                param = os.sched_getparam(
                    next(
                        t.native_id or 0
                        for t in threading.enumerate()
                        if t.name == "alsa-capture-C_mic"
                    )
                )
                assert param.sched_priority == RT_PRIORITY
            assert os.sched_getscheduler(0) == os.SCHED_OTHER  # only the I/O threads
        finally:
            source.close()
            sink.close()
    finally:
        feed.stop()


async def test_sink_playback_is_recorded_from_speaker_monitor(rig, tmp_path):
    recording = rig.record("A", tmp_path / "spk.wav")
    await asyncio.sleep(scaled(0.3))  # no event says it is connected
    sink = open_alsa_sink("alsa:A_spk")
    try:
        await play_tone(sink, 700, 75)  # 1.5 s
    finally:
        sink.close()
    await asyncio.sleep(scaled(0.2))  # the recorder takes the tail
    recording.stop()
    played = loud_span(read_wav(tmp_path / "spk.wav"))
    assert played.size / SAMPLE_RATE == pytest.approx(1.5, abs=0.06)
    assert peak_hz(played) == pytest.approx(700, abs=1)
    assert sink.xruns == 0


async def test_two_phones_at_once_without_crosstalk(rig, tmp_path):
    feeds = [
        rig.feed("A", write_tone(tmp_path / "a.wav", 600, 3)),
        rig.feed("B", write_tone(tmp_path / "b.wav", 1500, 3)),
    ]
    recs = [rig.record(n, tmp_path / f"spk{n}.wav") for n in "AB"]
    await asyncio.sleep(scaled(0.3))  # no event says it is connected
    mic_a, mic_b = AlsaSource("A_mic"), AlsaSource("B_mic")
    spk_a, spk_b = AlsaSink("A_spk"), AlsaSink("B_spk")
    try:
        heard = await asyncio.gather(
            read_frames(mic_a, 75),
            read_frames(mic_b, 75),
            play_tone(spk_a, 440, 75),
            play_tone(spk_b, 2000, 75),
        )
    finally:
        for dev in (mic_a, mic_b, spk_a, spk_b):
            dev.close()
        await asyncio.sleep(scaled(0.1))  # the recorders take the tail
        for proc in (*recs, *feeds):
            proc.stop()
    heard_a, heard_b = (x[SAMPLE_RATE // 2 :] for x in heard[:2])
    assert peak_hz(heard_a) == pytest.approx(600, abs=1)
    assert peak_hz(heard_b) == pytest.approx(1500, abs=1)
    assert band_db(heard_a, 1500) < -60
    assert band_db(heard_b, 600) < -60
    out_a, out_b = (read_wav(tmp_path / f"spk{n}.wav") for n in "AB")
    out_a, out_b = (loud_span(x) for x in (out_a, out_b))
    assert out_a.size > SAMPLE_RATE and out_b.size > SAMPLE_RATE
    assert peak_hz(out_a[:SAMPLE_RATE]) == pytest.approx(440, abs=2)
    assert peak_hz(out_b[:SAMPLE_RATE]) == pytest.approx(2000, abs=2)


async def test_xrun_recovery_when_loop_or_thread_stall(rig, tmp_path):
    feed = rig.feed("A", write_tone(tmp_path / "t.wav", 800, 4))
    await asyncio.sleep(scaled(0.3))  # no event says it is connected
    source = AlsaSource("A_mic")
    try:
        await read_frames(source, 10)
        assert source.xruns == 0
        # 1. The event loop stalls 300 ms: the 200 ms frame queue overflows.
        time.sleep(0.3)  # noqa: ASYNC251 - blocking the loop is the test
        await read_frames(source, 5)
        assert source.xruns == 1
        assert source.dropped_frames >= 4
        # 2. The capture thread stalls 300 ms (it cannot get the GIL back):
        # the ALSA ring (80 ms) overruns; the backlog is dropped.
        old = sys.getswitchinterval()
        sys.setswitchinterval(1.0)
        try:
            until = time.monotonic() + 0.3
            while time.monotonic() < until:
                pass
        finally:
            sys.setswitchinterval(old)
        await wait_until(lambda: source.xruns == 2)
        # The source keeps working in real time, with the tone.
        await read_frames(source, 15)  # drain what the queue still holds
        start = time.monotonic()
        audio = await read_frames(source, 25)
        assert time.monotonic() - start == pytest.approx(0.5, abs=0.1)
        assert peak_hz(audio) == pytest.approx(800, abs=2)
        assert not source.failed
    finally:
        source.close()
        feed.stop()


async def test_devices_that_only_do_16k_stereo_or_44k1_stereo_are_converted(
    rig, tmp_path
):
    feed = rig.feed("B", write_tone(tmp_path / "t.wav", 1000, 2))
    recording = rig.record("B", tmp_path / "spk.wav")
    await asyncio.sleep(scaled(0.3))  # no event says it is connected
    source = AlsaSource("B_mic", rate=16000, channels=2)
    sink = AlsaSink("B_spk", rate=44100, channels=2)
    try:
        assert (source.config.rate, source.config.channels) == (16000, 2)
        assert (sink.config.rate, sink.config.channels) == (44100, 2)
        heard, _ = await asyncio.gather(
            read_frames(source, 50), play_tone(sink, 700, 50)
        )
    finally:
        source.close()
        sink.close()
        await asyncio.sleep(scaled(0.1))  # the recorder takes the tail
        recording.stop()
        feed.stop()
    assert peak_hz(heard[SAMPLE_RATE // 4 :]) == pytest.approx(1000, abs=1)
    out = read_wav(tmp_path / "spk.wav")
    out = loud_span(out)
    assert out.size > 0.8 * SAMPLE_RATE
    assert peak_hz(out) == pytest.approx(700, abs=1)


async def test_devices_lost_with_their_sound_server_fail_softly(tmp_path):
    # A private rig, killed mid-stream: every device vanishes at once, like a
    # USB headset pulled out. (Unloading one sink would not do: PulseAudio
    # moves its streams to the default sink instead.)
    lost: list[tuple[str, AudioDeviceError]] = []
    with VirtualCards(["U"]) as own_rig:
        own_rig.install()
        feed = own_rig.feed("U", write_tone(tmp_path / "t.wav", 1000, 3))
        await asyncio.sleep(scaled(0.2))  # no event says it is connected
        source = AlsaSource("U_mic", on_lost=lambda e: lost.append(("mic", e)))
        sink = AlsaSink("U_spk", on_lost=lambda e: lost.append(("spk", e)))
        try:
            await asyncio.gather(read_frames(source, 5), play_tone(sink, 500, 5))
            own_rig.kill_daemon()
            deadline = time.monotonic() + scaled(2)
            i = 5
            while len(lost) < 2 and time.monotonic() < deadline:
                i += 1
                await sink.write_frame(tone_frame(500, i))
                await source.read_frame()
            assert sorted(kind for kind, _ in lost) == ["mic", "spk"]
            for _, error in lost:
                assert error.code == 31402 and "lost" in error.message
            assert source.failed and sink.failed
            # No exceptions from now on: paced silence in, writes discarded.
            await read_frames(source, 2)
            start = time.monotonic()
            silence = await read_frames(source, 10)
            assert time.monotonic() - start == pytest.approx(0.2, abs=0.05)
            assert not silence.any()
            await play_tone(sink, 500, 3)
            assert len(lost) == 2  # reported once each
        finally:
            source.close()
            sink.close()
            feed.stop()
    with pytest.raises(AudioDeviceError):
        await source.read_frame()
    with pytest.raises(AudioDeviceError):
        await sink.write_frame(tone_frame(500, 0))


@pytest.mark.parametrize("opener", [open_alsa_source, open_alsa_sink])
def test_unknown_pcm_gives_audio_device_error_31402(rig, opener):
    with pytest.raises(AudioDeviceError) as info:
        opener("alsa:no_such_pcm")
    assert info.value.code == 31402
    assert "no_such_pcm" in info.value.message


def test_list_pcm_devices_includes_the_rig_pcms(rig):
    devices = list_pcm_devices()
    inputs = {d.id for d in devices if d.direction == "input"}
    outputs = {d.id for d in devices if d.direction == "output"}
    for phone in "ABC":
        assert f"alsa:{phone}_mic" in inputs
        assert f"alsa:{phone}_spk" in outputs
        assert f"alsa:{phone}_mic" not in outputs
    assert "alsa:null" not in inputs | outputs  # plugin helpers are hidden
    assert all(d.label for d in devices)


def test_pcm_labels_use_card_names():
    cards = {"Headset": "USB Headset", "Headphones": "bcm2835 Headphones"}
    assert pcm_label("plughw:CARD=Headset,DEV=0", cards) == "USB Headset"
    assert pcm_label("hw:CARD=Headset,DEV=1", cards) == "USB Headset, device 1, direct"
    assert pcm_label("dmix:CARD=Headphones,DEV=0", cards) == (
        "bcm2835 Headphones, shared"
    )
    assert pcm_label("sysdefault:CARD=Gone", cards) == "Gone"
    assert pcm_label("A_mic", cards) == "A_mic"


def _dev(name: str, direction="input", label=None) -> AlsaDeviceInfo:
    return AlsaDeviceInfo(f"alsa:{name}", label or name, direction)


def test_device_set_tracker_reports_added_and_removed():
    tracker = DeviceSetTracker([_dev("a"), _dev("b", "output")])
    assert tracker.update([_dev("a"), _dev("b", "output")]) is None
    assert tracker.update([_dev("a", label="renamed"), _dev("b", "output")]) is None
    change = tracker.update([_dev("a"), _dev("b"), _dev("c", "output")])
    assert change is not None
    assert change.added == (_dev("b"), _dev("c", "output"))
    assert change.removed == (_dev("b", "output"),)
    assert change.added_ids == {"alsa:b", "alsa:c"}
    change = tracker.update([])
    assert change is not None
    assert change.removed_ids == {"alsa:a", "alsa:b", "alsa:c"}
    assert tracker.devices == []


async def test_card_monitor_sees_a_pcm_appear_and_go(rig, tmp_path):
    extra = tmp_path / "hotplug.conf"
    extra.write_text(
        "pcm.Hotplug_mic { type pulse; "
        f'server "{rig.server}"; device "micA"; '
        'hint { show on description "Hot-plugged|IOIDInput" } }\n'
    )
    changes: list[DeviceChange] = []
    monitor = CardMonitor(interval_s=0.05)
    base = os.environ["ALSA_CONFIG_PATH"]
    monitor.start(changes.append)
    try:
        # Nothing to wait for: no change may come. Four polls' time.
        await asyncio.sleep(scaled(0.2))
        assert changes == []
        os.environ["ALSA_CONFIG_PATH"] = f"{base}:{extra}"  # the card appears
        await wait_until(lambda: len(changes) == 1)
        os.environ["ALSA_CONFIG_PATH"] = base  # and goes away
        await wait_until(lambda: len(changes) == 2)
    finally:
        os.environ["ALSA_CONFIG_PATH"] = base
        await monitor.stop()
    assert changes[0].added_ids == {"alsa:Hotplug_mic"} and not changes[0].removed
    assert changes[1].removed_ids == {"alsa:Hotplug_mic"} and not changes[1].added


async def test_tap_rig_measures_passthrough_latency_on_one_clock(tmp_path):
    # test-rig.md §8: mic feeds and speakers are channels of one null sink, so
    # one recording shows the path delay independent of process start times.
    rng = np.random.default_rng(0)
    clicks = np.zeros(SAMPLE_RATE * 3, np.int16)
    positions = [
        SAMPLE_RATE // 2 + k * 12_000 + int(rng.integers(0, 2000)) for k in range(4)
    ]
    for p in positions:
        clicks[p : p + 96] = rng.normal(0, 8000, 96).astype(np.int16)  # 2 ms burst
    wav = tmp_path / "clicks.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(clicks.tobytes())
    with VirtualCards(["A", "B"], tap=True) as tap:
        tap.install()
        recording = tap.record_tap(tmp_path / "tap.wav")
        feed = tap.feed("A", wav)  # recorder and feeder before the device (§8)
        await asyncio.sleep(scaled(0.3))  # no event says it is connected
        source, sink = AlsaSource("A_mic"), AlsaSink("A_spk")
        try:
            for _ in range(120):  # 2.4 s passthrough, mic -> speaker
                await sink.write_frame(await source.read_frame())
        finally:
            source.close()
            sink.close()
        feed.wait(scaled(5))
        recording.stop()
    with wave.open(str(tmp_path / "tap.wav"), "rb") as w:
        assert w.getnchannels() == 4
        y = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 4)
    feed_ch, spk_ch = y[:, 0].astype(float), y[:, 1].astype(float)
    onsets = np.flatnonzero(
        (np.abs(feed_ch[1:]) > 3000) & (np.abs(feed_ch[:-1]) <= 3000)
    )
    starts = [p for i, p in enumerate(onsets) if i == 0 or p - onsets[i - 1] > 1000]
    assert len(starts) >= 3
    lags = []
    for onset in starts:
        ref = feed_ch[onset - 50 : onset + 150]
        corr = np.correlate(spk_ch[onset - 50 : onset + 9600], ref, mode="valid")
        lags.append(int(np.argmax(corr)))
    assert max(lags) - min(lags) <= 2, lags  # constant delay within a run
    assert 10 <= np.median(lags) / 48 <= 120  # ms: period + pre-fill, bounded
    assert not y[:, 2:].any()  # phone B's channels: no crosstalk
