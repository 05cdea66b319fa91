"""ALSA capture and playback (pyalsaaudio) as media-layer sources and sinks.

Design: **one thread per direction**. Each
:class:`~appliance.hardware.alsa_capture.AlsaSource` and :class:`AlsaSink`
owns a daemon thread that does blocking ``PCM.read()`` / ``PCM.write()`` of
fixed 10 ms periods and exchanges 20 ms frames with the
event loop through a bounded queue. pyalsaaudio releases the GIL inside
``snd_pcm_readi``/``snd_pcm_writei``, so the threads cost little, and a busy
event loop (Opus encoding, a slow handler) cannot starve the sound card: that
was the deciding argument against ``PCM_NONBLOCK`` + ``loop.add_reader``, where
every loop stall longer than the ALSA ring becomes an xrun (style.md §4.4).

Drop policy (bounded latency beats completeness in a call):

* capture: at most ``max_queue_frames`` (default 10 = 200 ms) wait for the
  loop; on overflow the **oldest** frame is dropped.
* playback: at most ``max_queue_ms`` (default 120 ms) wait for the device; on
  overflow the **oldest** audio is dropped. ``write_frame`` never blocks, so
  producers must pace themselves (audio.py: a sink consumes frames as they
  are decoded).

An *xrun* is any event where audio was lost because someone was late: the ALSA
ring overran or underran (the thread was late), or a queue overflowed (the
loop or the device was late). Each event increments ``xruns``, is logged at
WARNING (rate limited) and is recovered without raising. pyalsaaudio ≥ 0.10
reports an xrun as a negative length (``-EPIPE``) and re-prepares the PCM;
older releases raise ``ALSAAudioError("Broken pipe")``: both are handled.

Each I/O thread asks for real-time scheduling (``SCHED_FIFO`` at the modest
priority :data:`RT_PRIORITY`, below the sound server's) for itself alone, as
its first act: it does little work, but that work must happen on time even
when the CPU is saturated or held to a quota (a cgroup's CFS quota does not
throttle real-time threads). Where the system refuses (no ``LimitRTPRIO=``, no
capability, a cgroup without real-time runtime) the thread keeps its normal
policy and the refusal is logged once per process at INFO; nothing else
changes. The unit grants it (systemd/appliance.service).

Playback is pre-filled with 40 ms of silence when a stream starts or restarts:
without it the first write underruns at once (test-rig.md §2 gotcha 2, §8
gotcha 3).

Devices are opened at 48 kHz mono s16 when they accept it. Otherwise (USB
headsets and codecs that only do 44.1/16/8 kHz or stereo) we convert: channels
with numpy (capture averages them, playback duplicates mono), rates with
PyAV's swresample.

A device that disappears (USB unplug: read/write raise repeatedly) does not
crash anything: the object enters a failed state, calls ``on_lost`` once (in
the event loop when one is known, else in the I/O thread), and from then on
returns paced silence / discards frames until closed.

Example::

    source = open_alsa_source("alsa:plughw:CARD=Headset,DEV=0")  # alsa_capture
    sink = open_alsa_sink("alsa:plughw:CARD=Headset,DEV=0", on_lost=fallback)
    frame = await source.read_frame()
    await sink.write_frame(frame)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from appliance.errors import AudioDeviceError
from appliance.hardware.resample import Resampler
from appliance.media.frames import SAMPLE_RATE, Samples

try:
    import alsaaudio
except ImportError:  # pragma: no cover - pyalsaaudio is the "hardware" extra
    alsaaudio = None

__all__ = [
    "ID_PREFIX",
    "RT_PRIORITY",
    "AlsaSink",
    "AlsaStream",
    "open_alsa_sink",
    "strip_prefix",
]

logger = logging.getLogger(__name__)

ID_PREFIX = "alsa:"
LostCallback = Callable[[AudioDeviceError], object]

#: Default period: 10 ms (issue 3 asks for 10-20 ms periods).
PERIOD_MS = 10
#: Consecutive non-xrun errors after which a device counts as gone.
LOST_AFTER_ERRORS = 3
#: A playback restart after this much silence from the producer is not an xrun.
IDLE_GAP_S = 0.25
#: At most one xrun warning per device in this many seconds.
XRUN_LOG_INTERVAL_S = 5.0
JOIN_TIMEOUT_S = 1.0
#: SCHED_FIFO priority of the I/O threads: above every normal thread, below
#: PulseAudio/PipeWire's (5-20 on desktops, 20 on the test rig) and far below
#: the kernel's own threads (50 and up). The unit's LimitRTPRIO= matches it.
RT_PRIORITY = 10

_rt_outcome_logged = False


# ---------------------------------------------------------------------------
# Helpers


def strip_prefix(name: str) -> str:
    return name[len(ID_PREFIX) :] if name.startswith(ID_PREFIX) else name


def _ask_realtime(what: str) -> bool:
    """Put the calling thread (only it: Linux applies the policy per thread)
    under SCHED_FIFO at :data:`RT_PRIORITY`; False if the system refuses."""
    global _rt_outcome_logged  # one line per process, not per stream
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
    except (OSError, AttributeError) as exc:
        if not _rt_outcome_logged:
            _rt_outcome_logged = True
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            logger.info(
                "ALSA %s thread runs without real-time priority (%s); "
                "audio may break up when the CPU is busy",
                what,
                reason,
            )
        return False
    if not _rt_outcome_logged:
        _rt_outcome_logged = True
        logger.info("ALSA I/O threads run at SCHED_FIFO priority %d", RT_PRIORITY)
    return True


def is_xrun_error(exc: BaseException) -> bool:
    """Return True for the errors older pyalsaaudio raises on an xrun/suspend."""
    text = str(exc)
    return any(
        marker in text
        for marker in (
            "Broken pipe",  # snd_strerror(-EPIPE): overrun/underrun
            "Streams pipe error",  # -ESTRPIPE: system suspend
        )
    )


class _XrunLog:
    """Rate-limited WARNING logging of xruns for one device."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._last = -float("inf")
        self._suppressed = 0

    def report(self, kind: str, total: int) -> None:
        now = time.monotonic()
        if now - self._last >= XRUN_LOG_INTERVAL_S:
            logger.warning(
                "%s: %s (%d xruns so far, %d not logged)",
                self.what,
                kind,
                total,
                self._suppressed,
            )
            self._last = now
            self._suppressed = 0
        else:
            self._suppressed += 1


@dataclass(frozen=True)
class PcmConfig:
    rate: int
    channels: int
    period_frames: int
    buffer_frames: int


def open_pcm(
    kind: Literal["capture", "playback"],
    name: str,
    rate: int,
    channels: int,
    periods: int,
) -> tuple[Any, PcmConfig]:
    """Open a PCM in blocking mode; raise AudioDeviceError with a clear message."""
    what = f"ALSA {kind} device {name!r}"
    if alsaaudio is None:
        raise AudioDeviceError(message=f"{what}: pyalsaaudio is not installed")
    pcm_type = alsaaudio.PCM_CAPTURE if kind == "capture" else alsaaudio.PCM_PLAYBACK
    try:
        pcm = alsaaudio.PCM(
            pcm_type,
            alsaaudio.PCM_NORMAL,
            device=name,
            rate=rate,
            channels=channels,
            format=alsaaudio.PCM_FORMAT_S16_LE,
            periodsize=max(1, rate * PERIOD_MS // 1000),
            periods=periods,
        )
        info = pcm.info()
    except alsaaudio.ALSAAudioError as exc:
        raise AudioDeviceError(message=f"{what} could not be opened: {exc}") from exc
    # pyalsaaudio silently keeps whatever the device chose; read it back.
    if info["format"] != alsaaudio.PCM_FORMAT_S16_LE:
        pcm.close()
        raise AudioDeviceError(
            message=f"{what} does not support S16_LE (got {info['format_name']}); "
            "use its plughw: name"
        )
    config = PcmConfig(
        rate=int(info["rate"]),
        channels=int(info["channels"]),
        period_frames=int(info["period_size"]),
        buffer_frames=int(info["buffer_size"]),
    )
    if config.rate != SAMPLE_RATE or config.channels != 1:
        logger.info(
            "%s opened at %d Hz, %d channel(s): converting to %d Hz mono",
            what,
            config.rate,
            config.channels,
            SAMPLE_RATE,
        )
    return pcm, config


# ---------------------------------------------------------------------------
# Common machinery


class AlsaStream:
    """State shared by source and sink: thread, counters, failure reporting."""

    kind: Literal["capture", "playback"]

    def __init__(self, pcm_name: str, on_lost: LostCallback | None) -> None:
        self.pcm_name = strip_prefix(pcm_name)
        self.xruns = 0
        self.dropped_frames = 0
        self._on_lost = on_lost
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        self._failed = False
        self._dropping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
        self._xrun_log = _XrunLog(f"ALSA {self.kind} {self.pcm_name!r}")
        self._thread: threading.Thread | None = None
        #: Whether the I/O thread got real-time scheduling (None until it ran).
        self.realtime: bool | None = None

    @property
    def device_id(self) -> str:
        """The device id, ``alsa:NAME``."""
        return ID_PREFIX + self.pcm_name

    @property
    def failed(self) -> bool:
        """True once the device is gone (see ``on_lost``)."""
        return self._failed

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def _start_thread(self, target: Callable[[], None]) -> None:
        def body() -> None:
            self.realtime = _ask_realtime(self.kind)
            target()

        self._thread = threading.Thread(
            target=body, name=f"alsa-{self.kind}-{self.pcm_name}", daemon=True
        )
        self._thread.start()

    def _count_xrun(self, kind: str) -> None:
        with self._lock:
            self.xruns += 1
            total = self.xruns
        self._xrun_log.report(kind, total)

    def _note_drop(self, dropped: int) -> None:
        """Count dropped frames; one overflow episode counts as one xrun."""
        if not dropped:
            self._dropping = False
            return
        with self._lock:
            self.dropped_frames += dropped
            first = not self._dropping
            self._dropping = True
            if first:
                self.xruns += 1
            total = self.xruns
        if first:
            self._xrun_log.report("queue overflow, oldest audio dropped", total)

    def _lose(self, exc: BaseException) -> None:
        """Enter the failed state (I/O thread) and report it once."""
        with self._lock:
            if self._failed or self._closed:
                return
            self._failed = True
        error = AudioDeviceError(
            message=f"ALSA {self.kind} device {self.pcm_name!r} was lost: {exc}"
        )
        logger.warning("%s", error.message)
        self._wake()
        callback = self._on_lost
        if callback is None:
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closed meanwhile
                loop.call_soon_threadsafe(callback, error)
                return
        try:
            callback(error)
        except Exception:  # supervision boundary of the I/O thread
            logger.exception("on_lost callback failed")

    def _wake(self) -> None:
        """Wake whoever waits on this stream (overridden)."""

    def _join(self) -> None:
        self._stop.set()
        self._wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(JOIN_TIMEOUT_S)
            if thread.is_alive():
                logger.warning("ALSA %s thread did not stop in time", self.kind)


def resolve_future(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


# ---------------------------------------------------------------------------
# Playback


class AlsaSink(AlsaStream):
    """An ALSA playback device as an :class:`~appliance.media.frames.AudioSink`.

    Args:
        pcm_name: ALSA PCM name, with or without the ``alsa:`` prefix.
        on_lost: called once with an :class:`AudioDeviceError` when the device
            disappears; afterwards frames are discarded.
        rate: rate to ask the device for (default 48000).
        channels: channel count to ask for (default 1).
        periods: ALSA ring size in 10 ms periods. Through the pulse plugin the
            whole ring can become latency (test-rig.md §8 gotcha 3).
        prefill_ms: silence written when the stream (re)starts.
        max_queue_ms: audio kept waiting for the device before the oldest is
            dropped.

    Raises:
        AudioDeviceError: (31402) the device cannot be opened.

    Attributes:
        xruns: underruns of the ALSA ring or overflows of the frame queue.
        dropped_frames: frames dropped because the device did not take them.
    """

    kind = "playback"

    def __init__(
        self,
        pcm_name: str,
        *,
        on_lost: LostCallback | None = None,
        rate: int = SAMPLE_RATE,
        channels: int = 1,
        periods: int = 6,
        prefill_ms: int = 40,
        max_queue_ms: int = 120,
    ) -> None:
        super().__init__(pcm_name, on_lost)
        self._pcm, self.config = open_pcm(
            "playback", self.pcm_name, rate, channels, periods
        )
        self._cond = threading.Condition(self._lock)
        self._queue: deque[Samples] = deque()
        self._queued = 0
        self._max_queued = SAMPLE_RATE * max_queue_ms // 1000
        cfg = self.config
        prefill_frames = min(cfg.rate * prefill_ms // 1000, cfg.buffer_frames)
        self._prefill = bytes(2 * cfg.channels * prefill_frames)
        self._resampler = (
            Resampler(SAMPLE_RATE, cfg.rate) if cfg.rate != SAMPLE_RATE else None
        )
        self._errors = 0
        self._started = False  # prefill written since the last (re)start
        self._last_write = -float("inf")
        self._start_thread(self._run)

    async def write_frame(self, samples: Samples) -> None:
        """Queue ``samples`` (48 kHz mono int16, any length) for playback.

        Never blocks; discards silently once the device is lost.

        Raises:
            AudioDeviceError: the sink was closed.
        """
        self._loop = asyncio.get_running_loop()
        chunk = np.asarray(samples, dtype=np.int16).reshape(-1).copy()
        with self._cond:
            if self._closed:
                raise AudioDeviceError(message=f"{self.device_id} is closed")
            if self._failed or chunk.size == 0:
                return
            self._queue.append(chunk)
            self._queued += chunk.size
            dropped = 0
            while self._queued > self._max_queued and len(self._queue) > 1:
                self._queued -= self._queue.popleft().size
                dropped += 1
            self._cond.notify()
        self._note_drop(dropped)

    def close(self) -> None:
        """Play what is queued (bounded by ``max_queue_ms``), then release."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
        self._join()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- I/O thread --

    def _run(self) -> None:
        pcm = self._pcm
        drain = False
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._stop.is_set():
                        self._cond.wait(0.1)
                    if not self._queue:  # stopping and nothing left to play
                        drain = not self._failed
                        return
                    chunk = self._queue.popleft()
                    self._queued -= chunk.size
                if not self._play(pcm, self._to_device(chunk)):
                    return
        finally:
            if drain and self._started:
                with contextlib.suppress(alsaaudio.ALSAAudioError):
                    pcm.drain()
            with contextlib.suppress(alsaaudio.ALSAAudioError):
                pcm.close()

    def _to_device(self, chunk: Samples) -> bytes:
        if self._resampler is not None:
            chunk = self._resampler.convert(chunk)
        channels = self.config.channels
        if channels != 1:
            chunk = np.repeat(chunk, channels)
        return chunk.astype("<i2", copy=False).tobytes()

    def _play(self, pcm: Any, data: bytes) -> bool:
        """Write one chunk; return False once the device is lost."""
        if not data:
            return True
        if not self._started:
            if self._write(pcm, self._prefill) is None:
                return not self._failed
            self._started = True
        result = self._write(pcm, data)
        if result is None:
            return not self._failed
        if result < 0:  # -EPIPE: underrun; the PCM is prepared again
            if time.monotonic() - self._last_write > IDLE_GAP_S:
                logger.debug("%s restarts after idle", self.device_id)
            else:
                self._count_xrun("playback underrun")
            if self._write(pcm, self._prefill) is None:
                return not self._failed
            self._write(pcm, data)
        self._last_write = time.monotonic()
        return True

    def _write(self, pcm: Any, data: bytes) -> int | None:
        """Return frames written, a negative errno on xrun, None on error."""
        try:
            written = int(pcm.write(data))
        except alsaaudio.ALSAAudioError as exc:
            if is_xrun_error(exc):
                with contextlib.suppress(alsaaudio.ALSAAudioError):
                    pcm.drop()  # next write prepares again
                return -errno.EPIPE
            self._errors += 1
            if self._errors >= LOST_AFTER_ERRORS:
                self._lose(exc)
            else:
                self._stop.wait(PERIOD_MS / 1000)
            return None
        self._errors = 0
        return written


# ---------------------------------------------------------------------------
# Factories


def open_alsa_sink(name: str, *, on_lost: LostCallback | None = None) -> AlsaSink:
    """Open ``alsa:NAME`` (or ``NAME``) for playback.

    Raises:
        AudioDeviceError: (31402) unknown or unusable device.
    """
    return AlsaSink(name, on_lost=on_lost)
