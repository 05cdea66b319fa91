"""The audio seam between calls and sound devices.

Inside the firmware all call audio is mono, signed 16-bit, 48 kHz, in 20 ms
frames (960 samples): Opus's native rate and WebRTC's default packet time. A
source produces such frames paced in real time (a sound card paces itself; a
generator sleeps); a sink consumes them. Device ids name the implementation:
``tone:HZ``, ``file:PATH.wav``, ``null`` (``appliance.media.devices``), and
``alsa:NAME`` from the ALSA backend.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "FRAME_SAMPLES",
    "FRAME_SECONDS",
    "SAMPLE_RATE",
    "AudioSink",
    "AudioSource",
    "Samples",
]

SAMPLE_RATE = 48_000
FRAME_SECONDS = 0.020
FRAME_SAMPLES = int(SAMPLE_RATE * FRAME_SECONDS)

#: Mono signed 16-bit samples at :data:`SAMPLE_RATE`.
Samples = npt.NDArray[np.int16]


class AudioSource(Protocol):
    """A microphone: yields 20 ms frames in real time."""

    async def read_frame(self) -> Samples:
        """Wait for and return the next frame of :data:`FRAME_SAMPLES` samples."""
        ...

    def close(self) -> None:
        """Release the device; later reads are not allowed."""
        ...


class AudioSink(Protocol):
    """A speaker: consumes frames as they are decoded."""

    async def write_frame(self, samples: Samples) -> None:
        """Play (or record) ``samples``; any length, usually one frame."""
        ...

    def close(self) -> None:
        """Flush and release the device."""
        ...
