"""An audio loop: what is written to the sink comes back out of the source.

The local exchange's "echo" destination answers a call with a
:class:`~appliance.media.session.MediaSession` whose sink and source are the
two ends of one :class:`LoopbackAudio`, so the caller hears themselves.

The sink side re-cuts whatever it is given into 20 ms frames and queues them;
the source side is paced in real time like any other source
(:class:`~appliance.media.devices.FramePacer`) and returns silence when the
queue is empty. The queue is bounded and drops the *oldest* frame when full:
the sender's clock and ours are not the same clock, and a bounded delay
matters more for an echo test than completeness.

Example::

    loop = LoopbackAudio(max_frames=10)
    session = MediaSession(config, loop.source, loop.sink)
"""

from __future__ import annotations

import logging
from collections import deque

import numpy as np

from appliance.errors import AudioDeviceError
from appliance.media.devices import FramePacer
from appliance.media.frames import FRAME_SAMPLES, Samples

__all__ = ["LoopbackAudio", "LoopbackSink", "LoopbackSource"]

logger = logging.getLogger(__name__)


class LoopbackAudio:
    """A connected source and sink pair with a bounded, drop-oldest queue.

    Args:
        max_frames: capacity of the queue in 20 ms frames (the most delay the
            loop can add, apart from pacing); at least 1.

    Raises:
        ValueError: ``max_frames`` is less than 1.
    """

    def __init__(self, max_frames: int = 10) -> None:
        if max_frames < 1:
            raise ValueError(f"max_frames must be at least 1, got {max_frames}")
        self.max_frames = max_frames
        self._frames: deque[Samples] = deque()
        self._partial = np.zeros(0, dtype=np.int16)
        self.dropped_frames = 0
        self.source = LoopbackSource(self)
        self.sink = LoopbackSink(self)

    @property
    def queued_frames(self) -> int:
        """Complete frames waiting to be read."""
        return len(self._frames)

    def _push(self, samples: Samples) -> None:
        data = np.concatenate([self._partial, np.asarray(samples, dtype=np.int16)])
        whole = data.size - data.size % FRAME_SAMPLES
        for start in range(0, whole, FRAME_SAMPLES):
            if len(self._frames) >= self.max_frames:
                self._frames.popleft()
                self.dropped_frames += 1
                if self.dropped_frames == 1 or self.dropped_frames % 500 == 0:
                    logger.debug(
                        "loopback full: %d frames dropped", self.dropped_frames
                    )
            self._frames.append(data[start : start + FRAME_SAMPLES].copy())
        self._partial = data[whole:].copy()

    def _pop(self) -> Samples:
        if self._frames:
            return self._frames.popleft()
        return np.zeros(FRAME_SAMPLES, dtype=np.int16)

    def close(self) -> None:
        """Close both ends."""
        self.source.close()
        self.sink.close()


class LoopbackSource:
    """The reading end of a :class:`LoopbackAudio`."""

    def __init__(self, loop: LoopbackAudio) -> None:
        self._loop = loop
        self._pacer = FramePacer()
        self.closed = False

    async def read_frame(self) -> Samples:
        """Wait for the next frame time; return the oldest queued frame or silence.

        Raises:
            AudioDeviceError: the source is closed.
        """
        if self.closed:
            raise AudioDeviceError(31402, "loopback: read from a closed source")
        await self._pacer.wait()
        return self._loop._pop()

    def close(self) -> None:
        """Mark this end closed."""
        self.closed = True


class LoopbackSink:
    """The writing end of a :class:`LoopbackAudio`."""

    def __init__(self, loop: LoopbackAudio) -> None:
        self._loop = loop
        self.closed = False

    async def write_frame(self, samples: Samples) -> None:
        """Queue ``samples`` (any length) for the source.

        Raises:
            AudioDeviceError: the sink is closed.
        """
        if self.closed:
            raise AudioDeviceError(31402, "loopback: write to a closed sink")
        self._loop._push(samples)

    def close(self) -> None:
        """Mark this end closed."""
        self.closed = True
