"""The speakerphone processing (libspeexdsp) on a synthetic echo path.

Far-end speech is played, reaches the microphone through a room (delayed,
a decaying impulse response, attenuated by 14 dB) and the near end joins in
for the last pass. The canceller must remove the echo (ERLE >= 25 dB, issue
11) and keep the near-end talker during double talk (PESQ-WB >= 3.5 of the
near end alone against the output). With every feature off the microphone
passes bit-exact. The processing is deterministic, so nothing here depends
on the machine's load.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from appliance.media.echo import (
    MAX_REFERENCE_FRAMES,
    ProcessingSettings,
    ReferenceQueue,
    VoiceProcessor,
)
from appliance.media.frames import FRAME_SAMPLES
from appliance_dev.analysis import pesq_wb, speech
from appliance_dev.echo_path import EchoScene, erle_db, make_scene, run_processor

#: Issue 11, item 7.
MIN_ERLE_DB = 25.0
MIN_DOUBLE_TALK_PESQ_WB = 3.5

ALL_ON = ProcessingSettings(True, True, True)
FAR_TEXT = (
    "The quick brown fox jumps over the lazy dog. Please call me back when "
    "you get this message, thank you very much."
)
NEAR_TEXT = "Hello, this is the near end talking over the echo. One two three four."


@cache
def voices(tmp: str) -> tuple[np.ndarray, np.ndarray]:
    far = speech(FAR_TEXT, f"{tmp}/far.wav", lead_s=0.2)
    near = speech(NEAR_TEXT, f"{tmp}/near.wav", voice="en-gb")
    return far, near


@pytest.fixture(scope="module")
def speech_pair(tmp_path_factory: pytest.TempPathFactory):
    return voices(str(tmp_path_factory.mktemp("echo")))


def scene_for(speech_pair, delay_s: float) -> EchoScene:
    far, near = speech_pair
    return make_scene(far, near, delay_s=delay_s)


@pytest.mark.parametrize("delay_ms", [20, 40, 60])
def test_echo_is_cancelled_by_25_db_at_device_delays(speech_pair, delay_ms):
    scene = scene_for(speech_pair, delay_ms / 1000)
    processor = VoiceProcessor(ProcessingSettings(echo_cancellation=True))
    out = run_processor(processor, scene)
    processor.close()
    assert erle_db(scene, out) >= MIN_ERLE_DB
    # Without the canceller the same measure says the echo is all there.
    assert erle_db(scene, scene.mic) < 1.0


def test_all_features_on_cancel_echo_and_keep_double_talk(speech_pair):
    scene = scene_for(speech_pair, 0.040)
    processor = VoiceProcessor(ALL_ON)
    out = run_processor(processor, scene)
    processor.close()
    assert erle_db(scene, out) >= MIN_ERLE_DB
    near = np.rint(scene.near[scene.double_talk]).astype(np.int16)
    mos = pesq_wb(near, out[scene.double_talk])
    raw = pesq_wb(near, scene.mic[scene.double_talk])
    assert mos is not None and raw is not None, "pesq is a dev dependency"
    assert mos >= MIN_DOUBLE_TALK_PESQ_WB, (mos, raw)
    assert raw < 2.5  # the echo alone would ruin the near end


def test_a_wrong_reference_cancels_nothing(speech_pair):
    # The reference must be what the speaker played: silence instead of it
    # leaves the echo (the test above is no accident of the suppressor).
    scene = scene_for(speech_pair, 0.040)
    silent = EchoScene(
        np.zeros_like(scene.far),
        scene.echo,
        scene.near,
        scene.mic,
        scene.far_only,
        scene.double_talk,
    )
    processor = VoiceProcessor(ProcessingSettings(echo_cancellation=True))
    assert erle_db(scene, run_processor(processor, silent)) < 10.0
    processor.close()


def test_everything_off_passes_the_microphone_bit_exact(speech_pair):
    scene = scene_for(speech_pair, 0.040)
    processor = VoiceProcessor(ProcessingSettings())
    assert not processor.active
    out = run_processor(processor, scene)
    assert np.array_equal(out, scene.mic)
    frame = scene.mic[:FRAME_SAMPLES]
    assert processor.near(frame) is frame


def test_frames_must_be_whole_processing_frames():
    processor = VoiceProcessor(ProcessingSettings(noise_suppression=True))
    two = np.zeros(2 * FRAME_SAMPLES, np.int16)
    assert processor.near(two).size == two.size
    with pytest.raises(ValueError):
        processor.near(np.zeros(FRAME_SAMPLES + 1, np.int16))
    processor.close()
    with pytest.raises(RuntimeError):
        processor.near(np.zeros(FRAME_SAMPLES, np.int16))


def test_reference_queue_is_one_stream_bounded_and_padded():
    queue = ReferenceQueue()
    ramp = np.arange(3 * FRAME_SAMPLES, dtype=np.int16)
    queue.push(ramp[:FRAME_SAMPLES])
    queue.push(ramp[FRAME_SAMPLES:])
    # Read in other bites than written: the samples come out in order.
    assert np.array_equal(queue.take(100), ramp[:100])
    assert np.array_equal(queue.take(2000), ramp[100:2100])
    tail = queue.take(1000)
    assert np.array_equal(tail[:780], ramp[2100:]) and not tail[780:].any()
    assert queue.underruns == 1 and queue.queued == 0
    # Nothing played: silence, not an underrun.
    assert not queue.take(FRAME_SAMPLES).any() and queue.underruns == 1
    # A writer far ahead: the oldest is dropped, the newest kept.
    for value in range(MAX_REFERENCE_FRAMES + 2):
        queue.push(np.full(FRAME_SAMPLES, value, np.int16))
    assert queue.queued == MAX_REFERENCE_FRAMES * FRAME_SAMPLES
    assert queue.dropped == 2 * FRAME_SAMPLES
    assert queue.take(1)[0] == 2


def frame_of(value: int) -> np.ndarray:
    return np.full(FRAME_SAMPLES, value, np.int16)


def test_a_burst_is_kept_and_a_standing_backlog_drained():
    queue = ReferenceQueue(window=10)
    # A stall: the mixer catches up with six frames at once, then the
    # capture's backlog is read at once. Nothing is lost: the pairing holds.
    for value in range(6):
        queue.push(frame_of(value))
    got = [int(queue.take(FRAME_SAMPLES)[0]) for _ in range(6)]
    for value in range(6, 20):
        queue.push(frame_of(value))
        got.append(int(queue.take(FRAME_SAMPLES)[0]))
    assert got == list(range(20)) and queue.dropped == 0
    # A writer that stays 4 frames ahead for a whole window: drained to one.
    for value in range(4):
        queue.push(frame_of(100 + value))
    for value in range(10):
        queue.push(frame_of(104 + value))
        queue.take(FRAME_SAMPLES)
    assert queue.dropped == 3 * FRAME_SAMPLES
    assert queue.queued == FRAME_SAMPLES
