"""Pure tests of appliance.cadence (ring/ringback patterns)."""

import math

import pytest

from appliance.cadence import (
    COUNTRIES,
    STATUS_FAST,
    STATUS_STEADY,
    Cadence,
    is_on,
    next_change,
    tones_for,
)
from appliance.errors import ConfigError


def test_us_ring_is_two_seconds_on_four_off():
    us = tones_for("us")
    assert us.ring.on_off_ms == (2000, 4000)
    assert us.ringback.frequencies_hz == (440.0, 480.0)
    assert is_on(us.ring, 0.0)
    assert is_on(us.ring, 1.999)
    assert not is_on(us.ring, 2.0)
    assert not is_on(us.ring, 5.999)
    assert is_on(us.ring, 6.0)
    assert next_change(us.ring, 0.5) == pytest.approx(2.0)
    assert next_change(us.ring, 2.5) == pytest.approx(6.0)
    assert next_change(us.ring, 6.1) == pytest.approx(8.0)


def test_uk_double_ring():
    uk = tones_for("UK")
    assert uk is tones_for("GB")
    assert uk.ringback.frequencies_hz == (400.0, 450.0)
    samples = [is_on(uk.ring, t / 10) for t in range(31)]
    # 0.4 on, 0.2 off, 0.4 on, 2.0 off, repeat at 3.0 s.
    assert samples[:4] == [True] * 4
    assert samples[4:6] == [False] * 2
    assert samples[6:10] == [True] * 4
    assert samples[10:30] == [False] * 20
    assert samples[30] is True
    assert next_change(uk.ring, 0.0) == pytest.approx(0.4)
    assert next_change(uk.ring, 0.45) == pytest.approx(0.6)
    assert next_change(uk.ring, 1.5) == pytest.approx(3.0)


def test_cept_425_hz_one_on_four_off():
    for code in ("DE", "EU"):
        tones = tones_for(code)
        assert tones.ringback.frequencies_hz == (425.0,)
        assert tones.ring.on_off_ms == (1000, 4000)


def test_every_country_has_a_valid_cadence():
    for code, tones in COUNTRIES.items():
        assert tones.ring.period_s > 0, code
        assert not tones.ring.is_constant, code
        assert tones.ringback.frequencies_hz, code


def test_unknown_country_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        tones_for("XX")
    assert info.value.key == "country"


def test_constant_patterns_never_change():
    assert is_on(STATUS_STEADY, 123.4)
    assert next_change(STATUS_STEADY, 5.0) == math.inf
    off = Cadence((0, 500))
    assert not is_on(off, 0.3)
    assert next_change(off, 0.3) == math.inf


def test_odd_length_pattern_joins_the_wrap_around():
    pattern = Cadence((100, 100, 100))  # on 100, off 100, on 100+100 (wraps)
    assert is_on(pattern, 0.25)
    assert next_change(pattern, 0.25) == pytest.approx(0.4)
    assert is_on(pattern, 0.35)
    assert not is_on(pattern, 0.45)


def test_zero_length_segments_are_skipped():
    pattern = Cadence((100, 0, 100, 200))
    assert next_change(pattern, 0.0) == pytest.approx(0.2)


def test_negative_elapsed_counts_as_start():
    assert is_on(STATUS_FAST, -1.0)


@pytest.mark.parametrize("segments", [(), (-1, 100), (0, 0)])
def test_invalid_cadence(segments):
    with pytest.raises(ValueError):
        Cadence(segments)
