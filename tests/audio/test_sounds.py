"""The seed's sounds (pure): durations, looping, cut-offs, DTMF pairs, decoding."""

from __future__ import annotations

import io
import wave

import av
import numpy as np
import pytest

from appliance.audio.sounds import (
    FAKE_DTMF_FREQUENCIES,
    SOUND_NAMES,
    SoundCursor,
    custom_sound,
    decode_audio,
    default_sound,
    dtmf_sound,
)
from appliance.media.frames import FRAME_SAMPLES, SAMPLE_RATE
from appliance.media.levels import rms_dbfs
from appliance_dev.dtmf_detect import detect_digits


def wav_bytes(samples: np.ndarray, rate: int = SAMPLE_RATE, channels: int = 1) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(samples.astype("<i2").tobytes())
    return out.getvalue()


def test_every_seed_sound_has_a_default_within_its_limit():
    for name in SOUND_NAMES:
        sound = default_sound(name)
        assert sound.samples.size > 0, name
        assert rms_dbfs(sound.samples) > -40, name
        if name.startswith("dtmf"):
            assert sound.duration_s <= 1.0 and not sound.loop
        elif name != "incoming":
            assert sound.duration_s <= 3.0 and not sound.loop


def test_us_ring_is_2_s_on_4_s_off_and_loops():
    ring = default_sound("incoming")
    assert ring.loop and ring.duration_s == pytest.approx(6.0)
    s = ring.samples
    assert rms_dbfs(s[int(0.1 * SAMPLE_RATE) : int(1.9 * SAMPLE_RATE)]) > -20
    assert rms_dbfs(s[int(2.1 * SAMPLE_RATE) : int(5.9 * SAMPLE_RATE)]) < -100
    # Played through a cursor it never ends and repeats every 6 s.
    cursor = SoundCursor(ring)
    frames = [cursor.next_frame() for _ in range(int(13 / 0.02))]
    assert all(f is not None for f in frames)
    played = np.concatenate([f for f in frames if f is not None])
    period = 6 * SAMPLE_RATE
    assert np.array_equal(
        played[:FRAME_SAMPLES], played[period : period + FRAME_SAMPLES]
    )


def test_ring_cadence_follows_the_country():
    uk = default_sound("incoming", country="GB").samples
    assert uk.size == int(3.0 * SAMPLE_RATE)  # 0.4 + 0.2 + 0.4 + 2.0 s
    gap = uk[int(0.42 * SAMPLE_RATE) : int(0.58 * SAMPLE_RATE)]
    assert rms_dbfs(gap) < -100


def test_non_looping_sound_ends_and_pads_the_last_frame():
    sound = default_sound("outgoing")
    cursor = SoundCursor(sound, gain=0.5)
    frames = []
    while (frame := cursor.next_frame()) is not None:
        frames.append(frame)
    assert len(frames) == -(-sound.samples.size // FRAME_SAMPLES)
    assert all(f.size == FRAME_SAMPLES for f in frames)
    # gain 0.5 = -6 dB
    full = rms_dbfs(sound.samples)
    assert rms_dbfs(np.concatenate(frames)[: sound.samples.size]) == pytest.approx(
        full - 6.02, abs=0.1
    )


@pytest.mark.parametrize(("name", "limit"), [("outgoing", 3), ("disconnect", 3)])
def test_custom_outgoing_and_disconnect_are_cut_at_3_s(name, limit):
    long = np.full(5 * SAMPLE_RATE, 1000, np.int16)
    sound = custom_sound(name, decode_audio(wav_bytes(long)))
    assert sound.duration_s == pytest.approx(limit)
    assert sound.custom and not sound.loop


def test_custom_dtmf_is_cut_at_1_s_and_incoming_loops_uncut():
    two_s = np.full(2 * SAMPLE_RATE, 500, np.int16)
    assert custom_sound("dtmf5", two_s).duration_s == pytest.approx(1.0)
    ring = custom_sound("incoming", np.full(8 * SAMPLE_RATE, 5, np.int16))
    assert ring.loop and ring.duration_s == pytest.approx(8.0)


def test_decode_converts_rate_and_channels():
    t = np.arange(16000) / 16000
    tone = (8000 * np.sin(2 * np.pi * 500 * t)).astype(np.int16)
    stereo = np.repeat(tone, 2)
    samples = decode_audio(wav_bytes(stereo, rate=16000, channels=2))
    assert abs(samples.size - SAMPLE_RATE) < 200
    assert rms_dbfs(samples) == pytest.approx(rms_dbfs(tone), abs=0.5)


def mp3_bytes(samples: np.ndarray, rate: int) -> bytes:
    """Encode mono int16 samples as MP3 with PyAV (Twilio's own sounds are MP3)."""
    out = io.BytesIO()
    with av.open(out, "w", format="mp3") as container:
        stream = container.add_stream("mp3", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(
            samples.reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return out.getvalue()


def test_decode_reads_mp3_at_44100_hz():
    t = np.arange(44100) / 44100
    tone = (8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    samples = decode_audio(mp3_bytes(tone, 44100))
    # MP3 adds encoder delay and padding (a few ms), nothing more.
    assert SAMPLE_RATE <= samples.size < 1.1 * SAMPLE_RATE
    spectrum = np.abs(np.fft.rfft(samples.astype(float)))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / samples.size
    assert peak_hz == pytest.approx(1000, abs=5)
    assert rms_dbfs(samples) == pytest.approx(rms_dbfs(tone), abs=1.0)


@pytest.mark.parametrize("data", [b"", b"not audio at all" * 10, b"RIFF\x00\x00"])
def test_decode_rejects_garbage(data):
    with pytest.raises(ValueError):
        decode_audio(data)


@pytest.mark.parametrize("digit", list("0123456789*#"))
def test_q23_feedback_decodes_and_fake_feedback_does_not(digit):
    pad = np.zeros(int(0.05 * SAMPLE_RATE), np.int16)
    standard = np.concatenate([pad, dtmf_sound(digit).samples, pad])
    assert [e.digit for e in detect_digits(standard)] == [digit]
    fake = dtmf_sound(digit, fake=True)
    assert fake.duration_s == pytest.approx(0.100)
    assert detect_digits(np.concatenate([pad, fake.samples, pad])) == []
    # ...even when it lasts as long as a real digit (the detector applies
    # Q.24's frequency tolerance, not a duration trick).
    longer = np.concatenate([pad, fake.samples, fake.samples, pad])
    assert detect_digits(longer) == []


def test_fake_pairs_are_the_twilio_table():
    assert FAKE_DTMF_FREQUENCIES["1"] == (720, 1230)
    assert FAKE_DTMF_FREQUENCIES["#"] == (960, 1480)
    spectrum = np.abs(np.fft.rfft(dtmf_sound("5", fake=True).samples))
    freqs = np.fft.rfftfreq(dtmf_sound("5", fake=True).samples.size, 1 / SAMPLE_RATE)
    peaks = sorted(freqs[np.argsort(spectrum)[-2:]])
    assert peaks == pytest.approx([790, 1360], abs=15)
