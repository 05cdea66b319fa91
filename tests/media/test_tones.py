import numpy as np
import pytest

from appliance.media.tones import DTMF_FREQUENCIES, ToneGenerator
from tests.media.helpers import dominant_frequency


def test_frames_join_with_continuous_phase():
    whole = ToneGenerator((440.0,), 0.5).next_frame(960 * 3)
    pieces = ToneGenerator((440.0,), 0.5)
    joined = np.concatenate(
        [
            pieces.next_frame(960),
            pieces.next_frame(333),
            pieces.next_frame(960 * 2 - 333),
        ]
    )
    assert np.max(np.abs(whole.astype(int) - joined.astype(int))) <= 1


def test_single_tone_has_requested_frequency_and_amplitude():
    samples = ToneGenerator((1000.0,), 0.25).next_frame(48_000)
    assert dominant_frequency(samples) == pytest.approx(1000.0, abs=1.0)
    assert np.max(np.abs(samples)) == pytest.approx(0.25 * 32767, abs=2)


def test_dual_tone_contains_both_frequencies():
    samples = ToneGenerator((350.0, 440.0), 0.25).next_frame(48_000).astype(float)
    spectrum = np.abs(np.fft.rfft(samples))  # 1 Hz bins
    strongest = sorted(np.argsort(spectrum)[-2:].tolist())
    assert strongest == [350, 440]
    assert np.max(np.abs(samples)) <= 0.5 * 32767 + 1


def test_phase_stays_accurate_over_a_long_call():
    gen = ToneGenerator((1000.0,), 0.5)
    for _ in range(50 * 60 * 10):  # ten minutes of 20 ms frames
        gen.next_frame(960)
    frame = gen.next_frame(960)
    # 1 kHz at 48 kHz repeats every 48 samples; 30000 frames is a whole
    # number of periods, so the next frame starts at phase zero again.
    expected = ToneGenerator((1000.0,), 0.5).next_frame(960)
    assert np.max(np.abs(frame.astype(int) - expected.astype(int))) <= 1


def test_sum_is_clipped_to_int16():
    samples = ToneGenerator((500.0, 500.0), 1.0).next_frame(960)
    assert samples.dtype == np.int16
    assert samples.max() == 32767
    assert samples.min() == -32768


@pytest.mark.parametrize(
    ("freqs", "amplitude"), [((0.0,), 0.5), ((24_000.0,), 0.5), ((440.0,), 1.5)]
)
def test_out_of_range_parameters_are_rejected(freqs, amplitude):
    with pytest.raises(ValueError, match=r"outside|within"):
        ToneGenerator(freqs, amplitude)


def test_no_frequencies_gives_silence():
    assert not ToneGenerator((), 0.5).next_frame(960).any()


def test_dtmf_table_is_the_q23_keypad():
    assert sorted(DTMF_FREQUENCIES) == sorted("0123456789*#")
    assert DTMF_FREQUENCIES["1"] == (697, 1209)
    assert DTMF_FREQUENCIES["5"] == (770, 1336)
    assert DTMF_FREQUENCIES["0"] == (941, 1336)
    assert DTMF_FREQUENCIES["#"] == (941, 1477)
    lows = {low for low, _ in DTMF_FREQUENCIES.values()}
    highs = {high for _, high in DTMF_FREQUENCIES.values()}
    assert lows == {697, 770, 852, 941}
    assert highs == {1209, 1336, 1477}
