"""A synthetic speakerphone echo path, for the echo canceller's tests and bench.

The loudspeaker's signal (the far end) reaches the microphone through the
room: delayed (the sound card's buffers and the air), filtered by a decaying
impulse response (the room's reflections) and attenuated (the echo return
loss, ERL). The microphone adds the near-end talker. :func:`make_scene`
builds that mix from two speech signals; :func:`run_processor` feeds it
through a :class:`~appliance.media.echo.VoiceProcessor` frame by frame, the
reference first, as the phone does; :func:`erle_db` says how much echo left.

ERLE (echo return loss enhancement) is the echo's energy at the microphone
over what is left of it at the output, measured where only the far end
talks, after the filter has converged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from appliance.media.echo import VoiceProcessor
from appliance.media.frames import FRAME_SAMPLES, SAMPLE_RATE, Samples

__all__ = ["EchoScene", "erle_db", "make_scene", "room_response", "run_processor"]

Signal = npt.NDArray[np.float64]


def room_response(
    *,
    length_s: float = 0.12,
    decay_s: float = 0.025,
    erl_db: float = 14.0,
    seed: int = 1,
) -> Signal:
    """A room: exponentially decaying noise whose energy is ``-erl_db`` dB."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(length_s * SAMPLE_RATE)) / SAMPLE_RATE
    taps: Signal = rng.standard_normal(t.size) * np.exp(-t / decay_s)
    taps *= 10 ** (-erl_db / 20) / np.sqrt(np.sum(taps**2))
    return taps


@dataclass(frozen=True)
class EchoScene:
    """What the speaker played, what the microphone heard, and its parts.

    Attributes:
        far: the loudspeaker's signal (the reference).
        echo: the far end as the microphone hears it.
        near: the near-end talker as the microphone hears it (zeros elsewhere).
        mic: echo + near + a little sensor noise, as int16.
        far_only: samples where only the far end talks (after a first pass
            for the filter to converge).
        double_talk: samples where both talk.
    """

    far: Samples
    echo: Signal
    near: Signal
    mic: Samples
    far_only: slice
    double_talk: slice


def _int16(signal: Signal) -> Samples:
    out: Samples = np.clip(np.rint(signal), -32768, 32767).astype(np.int16)
    return out


def make_scene(
    far_speech: Samples,
    near_speech: Samples,
    *,
    delay_s: float = 0.040,
    room: Signal | None = None,
    repeats: int = 3,
    near_gain: float = 0.7,
    seed: int = 2,
) -> EchoScene:
    """The far end talks ``repeats`` times; the near end joins in the last pass.

    The scene is a whole number of 20 ms frames long.
    """
    far = np.tile(far_speech.astype(np.float64), repeats)
    total = far.size - far.size % FRAME_SAMPLES
    far = far[:total]
    taps = room_response() if room is None else room
    delay = int(delay_s * SAMPLE_RATE)
    echo = np.concatenate([np.zeros(delay), np.convolve(far, taps)])[:total]
    near = np.zeros(total)
    start = total - near_speech.size - SAMPLE_RATE // 2
    if start < total // 2:
        raise ValueError("near-end speech too long for the far end's last pass")
    near[start : start + near_speech.size] = near_speech * near_gain
    noise = np.random.default_rng(seed).standard_normal(total) * 3.0
    return EchoScene(
        far=_int16(far),
        echo=echo,
        near=near,
        mic=_int16(echo + near + noise),
        far_only=slice(total // repeats, start),
        double_talk=slice(start, start + near_speech.size),
    )


def run_processor(processor: VoiceProcessor, scene: EchoScene) -> Samples:
    """Feed the scene through ``processor`` as the phone does: reference first."""
    out = np.empty_like(scene.mic)
    for start in range(0, scene.mic.size, FRAME_SAMPLES):
        frame = slice(start, start + FRAME_SAMPLES)
        processor.far(scene.far[frame])
        out[frame] = processor.near(scene.mic[frame])
    return out


def erle_db(scene: EchoScene, output: Samples) -> float:
    """Echo return loss enhancement over the far-end-only part, in dB."""
    part = scene.far_only
    echo = float(np.sum(scene.echo[part] ** 2))
    left = float(np.sum(output[part].astype(np.float64) ** 2))
    return 10 * float(np.log10(echo / max(left, 1.0)))
