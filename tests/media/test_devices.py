import asyncio
import time

import numpy as np
import pytest

from appliance.errors import AudioDeviceError
from appliance.media import devices
from appliance.media.devices import (
    DeviceId,
    FilePlayer,
    FileRecorder,
    FramePacer,
    NullSink,
    NullSource,
    open_sink,
    open_source,
    parse_device_id,
    register_backend,
)
from appliance.media.frames import FRAME_SAMPLES
from appliance.media.levels import rms_dbfs
from tests.conftest import scaled
from tests.media.helpers import dominant_frequency, read_wav, write_wav


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("null", DeviceId("null", "")),
        ("tone:440", DeviceId("tone", "440")),
        ("tone:350+440", DeviceId("tone", "350+440")),
        ("file:/tmp/x.wav", DeviceId("file", "/tmp/x.wav")),
        ("file:rel/dir/Y.WAV", DeviceId("file", "rel/dir/Y.WAV")),
    ],
)
def test_valid_ids_parse_into_kind_and_argument(text, expected):
    assert parse_device_id(text) == expected
    assert str(parse_device_id(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":440",
        "bogus",
        "bogus:1",
        "alsa-typo:hw",
        "tone",
        "tone:",
        "tone:abc",
        "tone:440+",
        "tone:0",
        "tone:-5",
        "tone:24000",
        "tone:nan",
        "file:",
        "file:.wav",
        "file:/tmp/x.mp3",
        "null:x",
        "null:",
    ],
)
def test_malformed_or_unknown_ids_raise_31402(text):
    with pytest.raises(AudioDeviceError) as info:
        parse_device_id(text)
    assert info.value.code == 31402
    assert isinstance(info.value, OSError)
    assert repr(text) in info.value.message or text in info.value.message


def test_unknown_kind_message_lists_known_kinds():
    with pytest.raises(AudioDeviceError, match="known kinds: file, null, tone"):
        parse_device_id("speaker:1")


def test_tone_cannot_be_a_sink():
    with pytest.raises(AudioDeviceError, match="cannot be used as a sink") as info:
        open_sink("tone:440")
    assert info.value.code == 31402


def test_missing_file_source_raises(tmp_path):
    with pytest.raises(AudioDeviceError, match="no such file") as info:
        open_source(f"file:{tmp_path / 'absent.wav'}")
    assert info.value.code == 31402


def test_sink_in_missing_directory_raises(tmp_path):
    with pytest.raises(AudioDeviceError, match="does not exist") as info:
        open_sink(f"file:{tmp_path / 'no' / 'such' / 'dir.wav'}")
    assert info.value.code == 31402


def test_file_that_is_not_a_wav_raises(tmp_path):
    path = tmp_path / "noise.wav"
    path.write_bytes(b"this is not RIFF data at all")
    with pytest.raises(AudioDeviceError, match="not a readable WAV"):
        open_source(f"file:{path}")


def test_8_bit_wav_is_rejected(tmp_path):
    import wave

    path = tmp_path / "u8.wav"
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(1)
        writer.setframerate(8000)
        writer.writeframes(bytes(800))
    with pytest.raises(AudioDeviceError, match="only 16-bit"):
        open_source(f"file:{path}")


async def test_tone_source_sends_its_frequency_at_about_minus_12_dbfs_peak():
    source = open_source("tone:440")
    frames = [await source.read_frame() for _ in range(10)]
    source.close()
    samples = np.concatenate(frames)
    assert all(frame.shape == (FRAME_SAMPLES,) for frame in frames)
    assert dominant_frequency(samples) == pytest.approx(440, abs=5)
    peak_db = 20 * np.log10(np.max(np.abs(samples)) / 32768)
    assert peak_db == pytest.approx(-12, abs=0.5)
    assert rms_dbfs(samples) == pytest.approx(-15, abs=0.5)


async def test_dual_tone_source_mixes_both():
    source = open_source("tone:350+440")
    samples = np.concatenate([await source.read_frame() for _ in range(50)])
    source.close()
    spectrum = np.abs(np.fft.rfft(samples.astype(float)))  # 1 Hz bins over 1 s
    assert sorted(np.argsort(spectrum)[-2:].tolist()) == [350, 440]


async def test_closed_source_refuses_to_read():
    source = open_source("null")
    source.close()
    with pytest.raises(AudioDeviceError):
        await source.read_frame()


async def test_sources_pace_in_real_time():
    source = NullSource()
    start = time.monotonic()
    for _ in range(26):  # the first frame is immediate, then 25 periods
        frame = await source.read_frame()
    elapsed = time.monotonic() - start
    assert not frame.any()
    assert 0.49 <= elapsed < 0.5 + scaled(0.1)


async def test_pacer_follows_a_fixed_schedule_without_drift():
    # The consumer spends 7 ms between reads: a pacer that slept a fixed
    # 20 ms per read would fall 7 ms further behind with every frame.
    start = time.monotonic()
    released = []
    pacer = FramePacer(0.02)
    for _ in range(11):
        await pacer.wait()
        released.append(time.monotonic() - start)
        await asyncio.sleep(0.007)
    # Frame k is released at k * 20 ms, not k * 27 ms.
    assert released[10] == pytest.approx(0.200, abs=scaled(0.015))
    assert pacer.resyncs == 0


async def test_pacer_restarts_the_schedule_after_a_long_stall():
    pacer = FramePacer(0.02, max_lag_s=0.05)
    await pacer.wait()
    await asyncio.sleep(0.2)  # the reader stalled for 10 frame periods
    start = time.monotonic()
    for _ in range(3):
        await pacer.wait()
    # No burst of the 10 missed frames: the first returns at once, then 2
    # periods of real time pass.
    assert pacer.resyncs == 1
    assert time.monotonic() - start >= 0.035


async def test_file_source_converts_plays_once_then_silence(tmp_path):
    # 110 ms of 1 kHz, stereo, 8 kHz: becomes 5280 samples at 48 kHz mono.
    t = np.arange(880)
    tone = np.rint(8000 * np.sin(2 * np.pi * 1000 * t / 8000)).astype(np.int16)
    path = tmp_path / "in.wav"
    write_wav(path, np.repeat(tone, 2), rate=8000, channels=2)

    source = open_source(f"file:{path}")
    assert isinstance(source, FilePlayer)
    frames = [await source.read_frame() for _ in range(8)]
    source.close()

    played = np.concatenate(frames[:5])
    assert dominant_frequency(played) == pytest.approx(1000, abs=10)
    assert np.max(np.abs(played)) == pytest.approx(8000, rel=0.05)
    assert np.abs(frames[5][:400]).max() > 4000  # the last 10 ms of the file
    assert not frames[5][600:].any()
    assert not frames[6].any() and not frames[7].any()
    assert source.finished


async def test_file_source_at_48k_mono_is_bit_exact(tmp_path):
    rng = np.random.default_rng(7)
    original = rng.integers(-20000, 20000, FRAME_SAMPLES * 3, dtype=np.int16)
    path = tmp_path / "exact.wav"
    write_wav(path, original, rate=48_000)
    source = open_source(f"file:{path}")
    frames = [await source.read_frame() for _ in range(3)]
    source.close()
    assert np.array_equal(np.concatenate(frames), original)


async def test_file_sink_records_48k_mono_wav(tmp_path):
    path = tmp_path / "out.wav"
    sink = open_sink(f"file:{path}")
    assert isinstance(sink, FileRecorder)
    rng = np.random.default_rng(1)
    written = [
        rng.integers(-30000, 30000, FRAME_SAMPLES, dtype=np.int16) for _ in range(23)
    ]
    for frame in written:
        await sink.write_frame(frame)
    await sink.write_frame(written[0][:100])  # any length is accepted
    sink.close()
    sink.close()  # idempotent

    samples, rate, channels = read_wav(path)
    assert (rate, channels) == (48_000, 1)
    assert np.array_equal(samples, np.concatenate([*written, written[0][:100]]))


async def test_file_sink_writes_in_chunks_before_close(tmp_path):
    path = tmp_path / "chunks.wav"
    sink = open_sink(f"file:{path}")
    for _ in range(25):
        await sink.write_frame(np.ones(FRAME_SAMPLES, dtype=np.int16))
    # 25 frames > one 10-frame chunk: data reached the file before close().
    assert path.stat().st_size >= 44 + 2 * 10 * FRAME_SAMPLES
    sink.close()
    samples, _, _ = read_wav(path)
    assert samples.size == 25 * FRAME_SAMPLES


async def test_closed_file_sink_refuses_writes(tmp_path):
    sink = open_sink(f"file:{tmp_path / 'c.wav'}")
    sink.close()
    with pytest.raises(AudioDeviceError):
        await sink.write_frame(np.zeros(FRAME_SAMPLES, dtype=np.int16))


async def test_null_source_is_silent_and_null_sink_discards():
    source = open_source("null")
    sink = open_sink("null")
    frame = await source.read_frame()
    await sink.write_frame(np.ones(FRAME_SAMPLES, dtype=np.int16))
    assert frame.shape == (FRAME_SAMPLES,) and not frame.any()
    assert isinstance(sink, NullSink) and sink.samples_written == FRAME_SAMPLES
    sink.close()
    source.close()


@pytest.fixture
def isolated_registry(monkeypatch):
    monkeypatch.setattr(devices, "_BACKENDS", dict(devices._BACKENDS))


@pytest.mark.usefixtures("isolated_registry")
async def test_registered_backend_opens_by_kind():
    opened = []

    def open_test_source(argument):
        opened.append(argument)
        return NullSource()

    register_backend("alsa", open_test_source, None)
    source = open_source("alsa:plughw:1,0")
    assert opened == ["plughw:1,0"]
    assert not (await source.read_frame()).any()
    with pytest.raises(AudioDeviceError, match="cannot be used as a sink"):
        open_sink("alsa:plughw:1,0")


@pytest.mark.usefixtures("isolated_registry")
def test_register_backend_validates_its_arguments():
    with pytest.raises(ValueError, match="invalid"):
        register_backend("Bad Kind", lambda _: NullSource(), None)
    with pytest.raises(ValueError, match="needs a source or a sink"):
        register_backend("empty", None, None)
