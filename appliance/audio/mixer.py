"""Output mixing: one open sink per output device, shared by every role.

An :class:`OutputMixer` owns the :class:`~appliance.media.frames.AudioSink` of
one device id and, while it has inputs, writes one mixed 20 ms frame per
period, paced by :class:`~appliance.media.devices.FramePacer`. Inputs are

* :class:`StreamInput`: a call's received audio. The media session pushes
  decoded frames as aiortc delivers them; the mixer takes one per period.
* :class:`SoundInput`: one playback of a :class:`~appliance.audio.sounds.Sound`.

Several roles can use one device at once (the ring on the loudspeaker while a
``test()`` chime plays there too), and one role can use several devices
(:class:`FanOutSink` copies a call to every speaker device).

**Why the call input is a small drop-oldest buffer** (anchors.md §6.2,
aiortc#543/#775): aiortc hands decoded frames to an unbounded queue; a sink
that drains more slowly than the far end's clock (a sound card's crystal is
never exactly the sender's) lets that queue, and the mouth-to-ear delay, grow
for the whole call. Here the session writes into :class:`StreamInput`, which
never blocks and keeps at most ``capacity`` frames (default 5 = 100 ms): when
the producer runs ahead the oldest frame is dropped, so the added latency is
bounded by the buffer, whatever the call length. When it runs behind, the
mixer plays silence (an underrun) and waits until ``prefetch`` frames are
queued again, so one late packet costs one gap rather than a gap per frame.

The mixer opens its sink when the first input arrives and closes it as soon
as the last one leaves (synchronously, in :meth:`OutputMixer.remove` or after
the last frame of a sound): a ``file:`` recording is then complete the moment
a call's media is closed, and a sound card is released while the phone is idle.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol

import numpy as np

from appliance.audio.sounds import Sound, SoundCursor
from appliance.errors import AudioDeviceError
from appliance.media.devices import FramePacer, open_sink
from appliance.media.frames import FRAME_SAMPLES, AudioSink, Samples

__all__ = [
    "FanOutSink",
    "MixerInput",
    "OutputMixer",
    "Playback",
    "SoundInput",
    "StreamInput",
]

logger = logging.getLogger(__name__)

_INT16_MIN = -32768
_INT16_MAX = 32767


class MixerInput(Protocol):
    """Something an :class:`OutputMixer` reads one frame per period from."""

    gain: float

    def next_frame(self) -> Samples | None:
        """Return the next 20 ms frame, or None when the input has ended."""
        ...

    def detached(self, error: AudioDeviceError | None) -> None:
        """The mixer dropped this input (ended, removed, or the device failed)."""
        ...


#: Frames (20 ms each) over which a standing delay must persist before one
#: frame is drained: 1 s.
DRAIN_WINDOW = 50


class StreamInput:
    """A bounded, drop-oldest buffer of a call's received audio.

    The buffer exists to ride out network jitter. Frames that stay queued for
    a whole :data:`DRAIN_WINDOW` (the queue never fell below ``prefetch + 1``)
    are pure delay, left behind by a burst: one frame is then dropped, so the
    delay returns to its target instead of staying at the cap. It costs a
    20 ms glitch at most once a second (time-stretching, as NetEQ does, comes
    with the voice-quality work).

    Args:
        capacity: most frames kept (each 20 ms); beyond it the oldest is dropped.
        prefetch: frames to collect before playing, at the start and after
            each underrun; also the delay the drain aims at.
        gain: linear factor applied by the mixer.

    Attributes:
        dropped_frames: frames dropped because the buffer was full.
        drained_frames: frames dropped to bring a standing delay back down.
        underruns: periods in which a primed buffer had no frame to give.
    """

    def __init__(self, capacity: int = 5, prefetch: int = 2, gain: float = 1.0) -> None:
        if capacity < 1 or not 0 <= prefetch <= capacity:
            raise ValueError("need capacity >= 1 and 0 <= prefetch <= capacity")
        self.capacity = capacity
        self.prefetch = prefetch
        self.gain = gain
        self.dropped_frames = 0
        self.drained_frames = 0
        self.underruns = 0
        self._window_frames = 0
        self._window_min = capacity
        self.closed = False
        self._frames: deque[Samples] = deque()
        self._partial: Samples = np.zeros(0, dtype=np.int16)
        self._primed = prefetch == 0

    @property
    def queued_frames(self) -> int:
        """Whole frames waiting to be mixed."""
        return len(self._frames)

    def push(self, samples: Samples) -> None:
        """Add received audio (any length); never blocks."""
        if self.closed:
            return
        data = np.concatenate([self._partial, np.asarray(samples, dtype=np.int16)])
        whole = data.size - data.size % FRAME_SAMPLES
        for start in range(0, whole, FRAME_SAMPLES):
            if len(self._frames) >= self.capacity:
                self._frames.popleft()
                self.dropped_frames += 1
            self._frames.append(data[start : start + FRAME_SAMPLES])
        self._partial = data[whole:].copy()
        if not self._primed and len(self._frames) >= self.prefetch:
            self._primed = True

    def next_frame(self) -> Samples | None:
        """The oldest queued frame, silence while (re)filling, None once closed."""
        if self.closed:
            return None
        if self._primed and self._frames:
            self._control_delay()
            return self._frames.popleft()
        if self._primed:
            self.underruns += 1
            self._primed = self.prefetch == 0
        return np.zeros(FRAME_SAMPLES, dtype=np.int16)

    def _control_delay(self) -> None:
        """Drop one frame after a whole window of standing delay."""
        self._window_min = min(self._window_min, len(self._frames))
        self._window_frames += 1
        if self._window_frames < DRAIN_WINDOW:
            return
        if self._window_min > self.prefetch + 1 and len(self._frames) > 1:
            self._frames.popleft()
            self.drained_frames += 1
        self._window_frames = 0
        self._window_min = self.capacity

    def close(self) -> None:
        """End the input; queued audio is discarded."""
        self.closed = True
        self._frames.clear()

    def detached(self, error: AudioDeviceError | None) -> None:
        """Nothing to report: the owner re-targets streams itself."""


class Playback:
    """One sound playing on one or more devices; await :meth:`wait`.

    Attributes:
        sound: what is playing.
        started: set once the first frame went to a device (or playback
            failed or was stopped before that).
        done: set when every device has finished, failed or was stopped.
        errors: device failures, one per failed device.
    """

    def __init__(self, sound: Sound) -> None:
        self.sound = sound
        self.started = asyncio.Event()
        self.done = asyncio.Event()
        self.errors: list[AudioDeviceError] = []
        self._inputs: list[SoundInput] = []
        self._open = 0
        self._sealed = False

    def _add(self, item: SoundInput) -> None:
        self._inputs.append(item)
        self._open += 1

    @property
    def inputs(self) -> tuple[SoundInput, ...]:
        """Its share on each device it was started on."""
        return tuple(self._inputs)

    def seal(self) -> None:
        """No more devices will be added; an empty playback is done at once."""
        self._sealed = True
        self._check()

    def reopen(self) -> None:
        """Devices are about to be added again (the sound moves to new ones).

        Call :meth:`seal` once they are added.
        """
        self._sealed = False

    def _finished(self, error: AudioDeviceError | None) -> None:
        if error is not None:
            self.errors.append(error)
        self._open -= 1
        self._check()

    def _check(self) -> None:
        if self._sealed and self._open <= 0:
            self.started.set()
            self.done.set()

    @property
    def playing(self) -> bool:
        """Whether some device still plays it."""
        return not self.done.is_set()

    def stop(self) -> None:
        """Stop on every device (the mixers drop it at their next period)."""
        for item in self._inputs:
            item.cursor.stop()

    def stop_now(self) -> None:
        """Stop and leave every mixer at once (an idle mixer closes its sink)."""
        for item in self._inputs:
            item.cursor.stop()
            if item.mixer is not None:
                item.mixer.remove(item)

    async def wait(self) -> None:
        """Wait until playback has ended everywhere."""
        await self.done.wait()


class SoundInput:
    """One device's share of a :class:`Playback`."""

    def __init__(self, playback: Playback, gain: float) -> None:
        self.playback = playback
        self.cursor = SoundCursor(playback.sound)
        self.gain = gain
        #: The mixer playing it, once added (for :meth:`Playback.stop_now`).
        self.mixer: OutputMixer | None = None
        self._done = False
        playback._add(self)

    def next_frame(self) -> Samples | None:
        """The next frame of the sound, None at its end or once stopped."""
        frame = self.cursor.next_frame()
        if frame is not None:
            self.playback.started.set()
        return frame

    def detached(self, error: AudioDeviceError | None) -> None:
        """Report the end (or failure) to the playback, once."""
        if not self._done:
            self._done = True
            self.playback._finished(error)


SinkOpener = Callable[[str], AudioSink]
FailureCallback = Callable[[str, AudioDeviceError], object]


class OutputMixer:
    """Mixes inputs into the sink of one output device.

    Args:
        device_id: the device (``alsa:...``, ``file:...``, ``null``).
        opener: opens the sink (default :func:`appliance.media.devices.open_sink`).
        on_failed: called with (device_id, error) once when the open sink
            reports that its device is gone (an ALSA sink's ``failed`` flag).

    Attributes:
        frames_written: mixed frames written since construction.
        monitor: called with each mixed frame right after it was written to
            the device (the echo canceller's far-end reference), or None.
    """

    def __init__(
        self,
        device_id: str,
        *,
        opener: SinkOpener = open_sink,
        on_failed: FailureCallback | None = None,
    ) -> None:
        self.device_id = device_id
        self._opener = opener
        self._on_failed = on_failed
        self._inputs: list[MixerInput] = []
        self._sink: AudioSink | None = None
        self._task: asyncio.Task[None] | None = None
        self._failed_reported = False
        self.frames_written = 0
        self.monitor: Callable[[Samples], None] | None = None
        self.closed = False

    @property
    def running(self) -> bool:
        """Whether the sink is open and frames are being written."""
        return self._sink is not None

    @property
    def inputs(self) -> list[MixerInput]:
        """The current inputs (a copy)."""
        return list(self._inputs)

    def add(self, item: MixerInput) -> None:
        """Start mixing ``item``; opens the sink if needed.

        Raises:
            AudioDeviceError: the device cannot be opened (``item`` is not added).
        """
        if self.closed:
            raise AudioDeviceError(message=f"{self.device_id}: mixer closed")
        if self._sink is None:
            self._sink = self._opener(self.device_id)
            self._failed_reported = False
        self._inputs.append(item)
        if isinstance(item, SoundInput):
            item.mixer = self
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(self._sink), name=f"mixer-{self.device_id}"
            )

    def remove(self, item: MixerInput, error: AudioDeviceError | None = None) -> None:
        """Stop mixing ``item``; the sink closes at once if nothing is left."""
        if item in self._inputs:
            self._inputs.remove(item)
            item.detached(error)
        if not self._inputs:
            self._shutdown()

    def close(self) -> None:
        """Drop every input and close the sink; the mixer cannot be reused."""
        self.closed = True
        for item in list(self._inputs):
            self.remove(item)
        self._shutdown()

    def _shutdown(self) -> None:
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        sink, self._sink = self._sink, None
        if sink is not None:
            try:
                sink.close()
            except AudioDeviceError as exc:
                logger.warning("%s: closing failed: %s", self.device_id, exc)

    def _mix(self) -> Samples | None:
        """One period: sum every input's frame; drop inputs that ended."""
        total = np.zeros(FRAME_SAMPLES, dtype=np.float64)
        produced = False
        for item in list(self._inputs):
            frame = item.next_frame()
            if frame is None:
                self._inputs.remove(item)
                item.detached(None)
                continue
            produced = True
            total[: frame.size] += frame[:FRAME_SAMPLES] * item.gain
        if not produced:
            return None
        mixed: Samples = np.clip(np.rint(total), _INT16_MIN, _INT16_MAX).astype(
            np.int16
        )
        return mixed

    async def _run(self, sink: AudioSink) -> None:
        pacer = FramePacer()
        try:
            while self._inputs and self._sink is sink:
                await pacer.wait()
                frame = self._mix()
                if frame is None:
                    break
                try:
                    await sink.write_frame(frame)
                except AudioDeviceError as exc:
                    self._report_failure(exc)
                    break
                self.frames_written += 1
                if self.monitor is not None:
                    self.monitor(frame)
                if getattr(sink, "failed", False):
                    self._report_failure(
                        AudioDeviceError(message=f"{self.device_id}: device lost")
                    )
        finally:
            if self._sink is sink and not self._inputs:
                self._shutdown()

    def _report_failure(self, error: AudioDeviceError) -> None:
        if self._failed_reported:
            return
        self._failed_reported = True
        logger.warning("output %s failed: %s", self.device_id, error.message)
        # A failed device is done with: this mixer closes and a new one
        # reopens the device if it is wanted again. The owner moves what
        # played here first; what is left then ends with the error, so a
        # device test fails and a recording is closed instead of waiting
        # for frames that will never be written.
        self.closed = True
        if self._on_failed is not None:
            self._on_failed(self.device_id, error)
        for item in list(self._inputs):
            self.remove(item, error)
        self._shutdown()


class FanOutSink:
    """The call's :class:`AudioSink`: copies received audio to several mixers.

    The owner (the audio helper) attaches one :class:`StreamInput` per speaker
    device with :meth:`attach` and may change the set during the call;
    :meth:`close` (called by the media session at the end of the call)
    detaches them all, which lets idle mixers close their devices at once.

    Args:
        on_close: called once with this sink when it is closed.
        capacity: :class:`StreamInput` capacity for each device.
        prefetch: :class:`StreamInput` prefetch for each device.
    """

    def __init__(
        self,
        on_close: Callable[[FanOutSink], object] | None = None,
        *,
        capacity: int = 5,
        prefetch: int = 2,
    ) -> None:
        self._on_close = on_close
        self.capacity = capacity
        self.prefetch = prefetch
        self.streams: dict[str, tuple[OutputMixer, StreamInput]] = {}
        self.gain = 1.0
        self.closed = False

    def attach(self, mixer: OutputMixer) -> None:
        """Play the call on ``mixer``'s device too.

        Raises:
            AudioDeviceError: the device cannot be opened.
        """
        if self.closed:
            return
        entry = self.streams.get(mixer.device_id)
        if entry is not None:
            if entry[0] is mixer:
                return
            # The device's old mixer failed (unplugged, then back): move on.
            self.detach(mixer.device_id)
        stream = StreamInput(self.capacity, self.prefetch, self.gain)
        mixer.add(stream)
        self.streams[mixer.device_id] = (mixer, stream)

    def detach(self, device_id: str) -> None:
        """Stop playing the call on ``device_id``."""
        entry = self.streams.pop(device_id, None)
        if entry is not None:
            mixer, stream = entry
            stream.close()
            mixer.remove(stream)

    def set_gain(self, gain: float) -> None:
        """Change the volume of the call audio on every device."""
        self.gain = gain
        for _mixer, stream in self.streams.values():
            stream.gain = gain

    async def write_frame(self, samples: Samples) -> None:
        """Queue received audio on every attached device; never blocks."""
        for _mixer, stream in self.streams.values():
            stream.push(samples)

    def close(self) -> None:
        """Detach from every device; idempotent."""
        if self.closed:
            return
        self.closed = True
        # The owner first stops what belongs to the call (key clicks...), so
        # that detaching the call leaves idle mixers that close at once.
        if self._on_close is not None:
            self._on_close(self)
        for device_id in list(self.streams):
            self.detach(device_id)
