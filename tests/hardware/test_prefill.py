"""PrefillSettler: when a playback stream gives back its extra pre-fill."""

from __future__ import annotations

import numpy as np

from appliance.hardware.prefill import (
    CALM_AFTER_UNDERRUN_S,
    FORCE_SETTLE_S,
    SETTLE_S,
    PrefillSettler,
)

FRAMES = 960  # a 20 ms chunk at 48 kHz
QUIET = np.zeros(FRAMES, np.int16)
LOUD = np.full(FRAMES, 8000, np.int16)


def started(at: float = 100.0) -> PrefillSettler:
    settler = PrefillSettler(960)
    settler.restarted(at)
    return settler


def test_nothing_is_given_back_before_the_stream_has_held():
    settler = started()
    assert settler.cut(FRAMES, QUIET, 100.0 + SETTLE_S - 0.01) == 0
    assert settler.settled_frames == 0


def test_the_first_quiet_chunk_after_settle_s_gives_the_excess_back_once():
    settler = started()
    assert settler.cut(FRAMES, LOUD, 100.0 + SETTLE_S) == 0  # speech: wait
    assert settler.cut(FRAMES, QUIET, 100.0 + SETTLE_S + 0.02) == 960
    assert settler.cut(FRAMES, QUIET, 100.0 + SETTLE_S + 0.04) == 0
    assert settler.settled_frames == 960


def test_without_a_pause_any_chunk_gives_it_back_after_force_settle_s():
    settler = started()
    assert settler.cut(FRAMES, LOUD, 100.0 + FORCE_SETTLE_S - 0.01) == 0
    assert settler.cut(FRAMES, LOUD, 100.0 + FORCE_SETTLE_S) == 960


def test_a_short_chunk_gives_back_what_it_holds_and_the_next_the_rest():
    settler = started()
    assert settler.cut(400, QUIET[:400], 100.0 + SETTLE_S) == 400
    assert settler.cut(FRAMES, QUIET, 100.0 + SETTLE_S + 0.01) == 560
    assert settler.settled_frames == 960


def test_after_an_underrun_the_full_prefill_stays_until_a_long_calm():
    settler = started()
    settler.underran()
    settler.restarted(101.0)
    for t in (
        101.0 + SETTLE_S,
        101.0 + FORCE_SETTLE_S,
        101.0 + CALM_AFTER_UNDERRUN_S - 0.01,
    ):
        assert settler.cut(FRAMES, QUIET, t) == 0
    assert settler.cut(FRAMES, LOUD, 101.0 + CALM_AFTER_UNDERRUN_S) == 0  # speech
    assert settler.cut(FRAMES, QUIET, 101.0 + CALM_AFTER_UNDERRUN_S + 0.02) == 960


def test_each_underrun_restarts_the_long_calm():
    settler = started()
    assert settler.cut(FRAMES, QUIET, 100.0 + SETTLE_S) == 960
    settler.underran()
    settler.restarted(103.0)
    settler.underran()
    settler.restarted(120.0)
    assert settler.cut(FRAMES, QUIET, 103.0 + CALM_AFTER_UNDERRUN_S) == 0
    assert settler.cut(FRAMES, QUIET, 120.0 + CALM_AFTER_UNDERRUN_S) == 960
    assert settler.settled_frames == 1920


def test_after_an_underrun_a_long_chunk_of_speech_settles_in_time():
    settler = started()
    settler.underran()
    settler.restarted(100.0)
    late = 100.0 + CALM_AFTER_UNDERRUN_S + FORCE_SETTLE_S - SETTLE_S
    assert settler.cut(FRAMES, LOUD, late - 0.01) == 0
    assert settler.cut(FRAMES, LOUD, late) == 960


def test_a_restart_after_silence_from_the_producer_settles_again():
    settler = started()
    assert settler.cut(FRAMES, QUIET, 100.0 + SETTLE_S) == 960
    settler.restarted(110.0)  # the far side paused; not an underrun
    assert settler.cut(FRAMES, QUIET, 110.0 + SETTLE_S - 0.01) == 0
    assert settler.cut(FRAMES, QUIET, 110.0 + SETTLE_S) == 960
    assert settler.settled_frames == 1920


def test_the_level_of_a_stereo_chunk_counts_not_its_layout():
    settler = started()
    stereo_loud = np.repeat(LOUD, 2)
    assert settler.cut(FRAMES, stereo_loud, 100.0 + SETTLE_S) == 0
    assert settler.cut(FRAMES, np.repeat(QUIET, 2), 100.0 + SETTLE_S) == 960
