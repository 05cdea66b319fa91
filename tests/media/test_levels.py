import math

import numpy as np
import pytest

from appliance.media.levels import SILENCE_DBFS, level_from_dbfs, rms_dbfs


def test_full_scale_sine_reads_minus_3_dbfs():
    t = np.arange(48_000)
    sine = np.rint(32767 * np.sin(2 * np.pi * 1000 * t / 48_000)).astype(np.int16)
    assert rms_dbfs(sine) == pytest.approx(-3.01, abs=0.01)


def test_half_amplitude_is_6_db_lower():
    t = np.arange(4800)
    full = 32767 * np.sin(2 * np.pi * 500 * t / 48_000)
    half = np.rint(full / 2).astype(np.int16)
    assert rms_dbfs(half) == pytest.approx(rms_dbfs(np.rint(full)) - 6.02, abs=0.02)


def test_silence_and_empty_blocks_read_the_floor_not_minus_infinity():
    assert rms_dbfs(np.zeros(960, dtype=np.int16)) == SILENCE_DBFS
    assert rms_dbfs(np.zeros(0, dtype=np.int16)) == SILENCE_DBFS
    assert math.isfinite(rms_dbfs(np.ones(1, dtype=np.int16)))


def test_level_maps_minus_100_to_minus_30_db_onto_0_to_1():
    assert level_from_dbfs(-100.0) == 0.0
    assert level_from_dbfs(-30.0) == 1.0
    assert level_from_dbfs(-65.0) == pytest.approx(0.5)


def test_level_is_clamped_and_nan_is_zero():
    assert level_from_dbfs(-140.0) == 0.0
    assert level_from_dbfs(SILENCE_DBFS) == 0.0
    assert level_from_dbfs(0.0) == 1.0
    assert level_from_dbfs(float("nan")) == 0.0
