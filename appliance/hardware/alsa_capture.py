"""ALSA capture: the microphone side of :mod:`appliance.hardware.alsa_pcm`.

Why a module of its own: capture has a problem playback does not. The
thread, queue, xrun and lost-device rules are shared and live in alsa_pcm.py
(its docstring has the design); what is particular to capture is how an
overrun is noticed at all, and that a reader waiting for a frame must be
woken by the thread.

Capture overruns through the ALSA ``pulse`` plugin (the test rig, and
PulseAudio/PipeWire desktops) are never reported: the server keeps buffering
up to 4 times the ring and the plugin's ``avail()`` saturates just below the ring
size, so a stall turns into permanent extra latency instead. We therefore
treat "ring (almost) full after a read" as an overrun ourselves, and drop the
backlog with ``PCM.drop()``, which is what a hardware overrun does anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections import deque

import numpy as np

from appliance.errors import AudioDeviceError
from appliance.hardware.alsa_pcm import (
    LOST_AFTER_ERRORS,
    PERIOD_MS,
    AlsaStream,
    LostCallback,
    is_xrun_error,
    open_pcm,
    resolve_future,
)
from appliance.hardware.resample import Resampler
from appliance.media.frames import FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE, Samples

try:
    import alsaaudio
except ImportError:  # pragma: no cover - pyalsaaudio is the "hardware" extra
    alsaaudio = None

__all__ = ["AlsaSource", "open_alsa_source"]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# Capture


class AlsaSource(AlsaStream):
    """An ALSA capture device as an :class:`~appliance.media.frames.AudioSource`.

    Args:
        pcm_name: ALSA PCM name (``plughw:CARD=Headset,DEV=0``, ``default``,
            ...), with or without the ``alsa:`` prefix.
        on_lost: called once with an :class:`AudioDeviceError` when the device
            disappears; afterwards :meth:`read_frame` returns paced silence.
        rate: rate to ask the device for (default 48000); the device may pick
            another, which is converted.
        channels: channel count to ask for (default 1).
        periods: ALSA ring size in 10 ms periods. A larger ring adds no
            latency on capture (reads return as soon as a period is ready),
            it only tolerates longer thread stalls.
        max_queue_frames: frames (20 ms) kept for a late event loop.

    Raises:
        AudioDeviceError: (31402) the device cannot be opened.

    Attributes:
        xruns: overruns of the ALSA ring or of the frame queue.
        dropped_frames: frames dropped because the loop did not read them.
    """

    kind = "capture"

    def __init__(
        self,
        pcm_name: str,
        *,
        on_lost: LostCallback | None = None,
        rate: int = SAMPLE_RATE,
        channels: int = 1,
        periods: int = 8,
        max_queue_frames: int = 10,
    ) -> None:
        super().__init__(pcm_name, on_lost)
        self._pcm, self.config = open_pcm(
            "capture", self.pcm_name, rate, channels, periods
        )
        self._frames: deque[Samples] = deque()
        self._max_frames = max_queue_frames
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None
        self._waiter = None
        self._resampler = (
            Resampler(self.config.rate, SAMPLE_RATE)
            if self.config.rate != SAMPLE_RATE
            else None
        )
        self._acc: Samples = np.zeros(0, dtype=np.int16)
        self._silence_next: float | None = None
        self._start_thread(self._run)

    # -- loop side --

    async def read_frame(self) -> Samples:
        """Wait for and return the next 20 ms frame (silence once failed).

        Raises:
            AudioDeviceError: the source was closed.
        """
        loop = asyncio.get_running_loop()
        self._loop = loop
        while True:
            with self._lock:
                if self._closed:
                    raise AudioDeviceError(message=f"{self.device_id} is closed")
                if self._frames:
                    return self._frames.popleft()
                if self._failed:
                    break
                fut: asyncio.Future[None] = loop.create_future()
                self._waiter = (loop, fut)
            try:
                await fut
            finally:
                with self._lock:
                    if self._waiter is not None and self._waiter[1] is fut:
                        self._waiter = None
        return await self._silence()

    async def _silence(self) -> Samples:
        # Pace silence like a sound card would, so consumers do not spin.
        now = time.monotonic()
        if self._silence_next is None or self._silence_next < now - 0.1:
            self._silence_next = now
        await asyncio.sleep(max(0.0, self._silence_next - now))
        self._silence_next += FRAME_SECONDS
        return np.zeros(FRAME_SAMPLES, dtype=np.int16)

    def close(self) -> None:
        """Stop the capture thread and release the device."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._join()

    def _wake(self) -> None:
        with self._lock:
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            loop, fut = waiter
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(resolve_future, fut)

    # -- I/O thread --

    def _run(self) -> None:
        pcm = self._pcm
        cfg = self.config
        errors = 0
        # Ring almost full after a read: we are a whole ring behind (see the
        # module docstring on the pulse plugin).
        behind = cfg.buffer_frames - cfg.period_frames
        try:
            while not self._stop.is_set():
                try:
                    length, data = pcm.read()
                except alsaaudio.ALSAAudioError as exc:
                    if is_xrun_error(exc):
                        self._count_xrun("capture overrun")
                        with contextlib.suppress(alsaaudio.ALSAAudioError):
                            pcm.drop()
                        continue
                    errors += 1
                    if errors >= LOST_AFTER_ERRORS:
                        self._lose(exc)
                        return
                    self._stop.wait(PERIOD_MS / 1000)
                    continue
                if length < 0:
                    self._count_xrun("capture overrun")
                    continue
                if length == 0:
                    # -EAGAIN in blocking mode: nothing to read; should not
                    # happen, count it like an error so a dead device ends.
                    errors += 1
                    if errors >= LOST_AFTER_ERRORS * 10:
                        self._lose(OSError(errno.EAGAIN, "no data from device"))
                        return
                    self._stop.wait(PERIOD_MS / 1000)
                    continue
                errors = 0
                avail = pcm.avail()
                if avail >= behind:
                    self._count_xrun("capture overrun (reader fell behind)")
                    with contextlib.suppress(alsaaudio.ALSAAudioError):
                        pcm.drop()
                self._deliver(np.frombuffer(data, dtype="<i2"))
        finally:
            with contextlib.suppress(alsaaudio.ALSAAudioError):
                pcm.close()

    def _deliver(self, raw: Samples) -> None:
        cfg = self.config
        if cfg.channels != 1:
            frames = raw[: raw.size - raw.size % cfg.channels]
            mixed = frames.reshape(-1, cfg.channels).mean(axis=1)
            raw = mixed.astype(np.int16)
        if self._resampler is not None:
            raw = self._resampler.convert(raw)
        acc = np.concatenate((self._acc, raw)) if self._acc.size else raw
        start = 0
        while acc.size - start >= FRAME_SAMPLES:
            self._push(acc[start : start + FRAME_SAMPLES].copy())
            start += FRAME_SAMPLES
        self._acc = acc[start:].copy()

    def _push(self, frame: Samples) -> None:
        with self._lock:
            dropped = 0
            if len(self._frames) >= self._max_frames:
                self._frames.popleft()
                dropped = 1
            self._frames.append(frame)
            waiter, self._waiter = self._waiter, None
        self._note_drop(dropped)
        if waiter is not None:
            loop, fut = waiter
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(resolve_future, fut)


# ---------------------------------------------------------------------------
# Factory


def open_alsa_source(name: str, *, on_lost: LostCallback | None = None) -> AlsaSource:
    """Open ``alsa:NAME`` (or ``NAME``) for capture.

    Raises:
        AudioDeviceError: (31402) unknown or unusable device.
    """
    return AlsaSource(name, on_lost=on_lost)
