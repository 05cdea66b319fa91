"""DTMF detector against the ITU-T Q.24 limits (anchors.md §3.2)."""

from __future__ import annotations

import numpy as np
import pytest

from appliance_dev.dtmf_detect import (
    COLUMN_HZ,
    DIGITS,
    ROW_HZ,
    DtmfDetector,
    detect_digits,
)

FS = 48_000
#: Twilio's fake local DTMF pairs, digit -> (high, low) Hz (signaling-protocol.md §7).
FAKE_LOCAL = {
    "1": (1230, 720),
    "2": (1360, 720),
    "3": (1480, 720),
    "4": (1230, 790),
    "5": (1360, 790),
    "6": (1480, 790),
    "7": (1230, 870),
    "8": (1360, 870),
    "9": (1480, 870),
    "*": (1230, 960),
    "0": (1360, 960),
    "#": (1480, 960),
}


def pair(low, high, seconds, low_dbfs=-10.0, high_dbfs=-10.0):
    t = np.arange(round(seconds * FS)) / FS
    return 32767 * (
        10 ** (low_dbfs / 20) * np.sin(2 * np.pi * low * t + 0.3)
        + 10 ** (high_dbfs / 20) * np.sin(2 * np.pi * high * t + 1.1)
    )


def silence(seconds):
    return np.zeros(round(seconds * FS))


def pcm(x):
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def digits_in(x):
    return "".join(e.digit for e in detect_digits(pcm(x)))


def digit_signal(digit, seconds, **levels):
    for r, row in enumerate(DIGITS):
        if digit in row:
            return pair(ROW_HZ[r], COLUMN_HZ[row.index(digit)], seconds, **levels)
    raise ValueError(digit)


def test_all_twelve_digits_detected_in_order_with_start_times():
    keys = "123456789*0#"
    parts, starts, t = [], [], 0.1
    parts.append(silence(0.1))
    for key in keys:
        parts += [digit_signal(key, 0.1), silence(0.07)]  # W3C 100 ms / 70 ms
        starts.append(t)
        t += 0.17
    noise = np.random.default_rng(1).normal(0, 30, sum(p.size for p in parts))
    events = detect_digits(pcm(np.concatenate(parts) + noise))
    assert "".join(e.digit for e in events) == keys
    for event, start in zip(events, starts, strict=True):
        assert start - 0.001 <= event.start <= start + 0.011


def test_blocks_of_any_size_give_the_same_events():
    x = pcm(np.concatenate([silence(0.05), digit_signal("5", 0.08), silence(0.1)]))
    whole = detect_digits(x)
    detector = DtmfDetector(start_time=100.0)
    rng = np.random.default_rng(2)
    pieces, pos, got = [], 0, []
    while pos < x.size:
        n = int(rng.integers(1, 700))
        pieces.append(x[pos : pos + n])
        pos += n
    for piece in pieces:
        got += detector.feed(piece)
    assert [e.digit for e in got] == ["5"] == [e.digit for e in whole]
    assert got[0].start == pytest.approx(100.0 + whole[0].start)


@pytest.mark.parametrize("deviation", [0.015, -0.015])
@pytest.mark.parametrize("tone", ["low", "high", "both"])
def test_frequency_off_by_1_5_percent_is_accepted(deviation, tone):
    low = 852 * (1 + deviation * (tone != "high"))
    high = 1336 * (1 + deviation * (tone != "low"))
    assert digits_in(np.concatenate([silence(0.05), pair(low, high, 0.1)])) == "8"


@pytest.mark.parametrize("deviation", [0.035, -0.035])
@pytest.mark.parametrize("tone", ["low", "high"])
def test_frequency_off_by_3_5_percent_is_rejected(deviation, tone):
    low = 852 * (1 + deviation * (tone == "low"))
    high = 1336 * (1 + deviation * (tone == "high"))
    assert digits_in(np.concatenate([silence(0.05), pair(low, high, 0.1)])) == ""


@pytest.mark.parametrize("offset_ms", range(0, 10, 3))
def test_20_ms_tone_rejected_45_ms_accepted(offset_ms):
    lead = silence(0.05 + offset_ms / 1000)
    assert digits_in(np.concatenate([lead, digit_signal("9", 0.020)])) == ""
    assert digits_in(np.concatenate([lead, digit_signal("9", 0.023), lead])) == ""
    assert digits_in(np.concatenate([lead, digit_signal("9", 0.045), lead])) == "9"
    assert digits_in(np.concatenate([lead, digit_signal("9", 0.040), lead])) == "9"


@pytest.mark.parametrize(
    ("low_dbfs", "high_dbfs", "expected"),
    [
        (-10, -17, "5"),  # normal twist 7 dB < 8 dB
        (-10, -19, ""),  # normal twist 9 dB
        (-13, -10, "5"),  # reverse twist 3 dB < 4 dB
        (-15, -10, ""),  # reverse twist 5 dB
    ],
)
def test_twist_limits(low_dbfs, high_dbfs, expected):
    x = digit_signal("5", 0.1, low_dbfs=low_dbfs, high_dbfs=high_dbfs)
    assert digits_in(np.concatenate([silence(0.05), x])) == expected


def test_signal_must_be_15_db_above_other_energy():
    x = digit_signal("0", 0.1)
    power = np.mean(x**2)
    rng = np.random.default_rng(3)
    for snr_db, expected in ((20, "0"), (10, "")):
        noise = rng.normal(0, np.sqrt(power / 10 ** (snr_db / 10)), x.size)
        assert digits_in(x + noise) == expected, snr_db


def test_fake_local_dtmf_pairs_are_not_detected():
    for digit, (high, low) in FAKE_LOCAL.items():
        x = np.concatenate([silence(0.05), pair(low, high, 0.1, -20, -20)])
        assert digits_in(x) == "", digit


def test_random_speech_like_noise_gives_no_digits():
    rng = np.random.default_rng(4)
    n = FS * 10
    # Pink-ish noise with a syllable-rate (4 Hz) envelope, at speech level.
    white = rng.normal(0, 1, n)
    spectrum = np.fft.rfft(white) / np.sqrt(np.arange(1, n // 2 + 2))
    noise = np.fft.irfft(spectrum, n)
    envelope = np.abs(np.sin(2 * np.pi * 2 * np.arange(n) / FS)) ** 2
    x = noise / noise.std() * 6000 * envelope
    assert digits_in(x) == ""


def test_short_interruption_does_not_repeat_a_digit_but_a_pause_does():
    tone = digit_signal("#", 0.08)
    interrupted = np.concatenate([tone, silence(0.010), tone])
    assert digits_in(interrupted) == "#"
    paused = np.concatenate([tone, silence(0.045), tone])
    assert digits_in(paused) == "##"


def test_quiet_tones_below_the_level_floor_are_ignored():
    x = digit_signal("1", 0.1, low_dbfs=-50, high_dbfs=-50)
    assert digits_in(x) == ""
