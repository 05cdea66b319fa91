"""Audio device ids and the built-in sources and sinks behind them.

A device id names an implementation of :class:`~appliance.media.frames.AudioSource`
or :class:`~appliance.media.frames.AudioSink` (``appliance.media.frames``):

==================  ==========================================================
``tone:HZ``         source only: a sine (``tone:440``) or a sum of sines
                    (``tone:350+440``), each at -12 dBFS peak
``file:PATH.wav``   source: plays a 16-bit PCM WAV once (any rate, any channel
                    count, converted to 48 kHz mono), then silence.
                    sink: records a 48 kHz mono 16-bit WAV
``null``            source: silence. sink: discards
``alsa:NAME``       the ALSA backend (``appliance.hardware.alsa_devices``)
==================  ==========================================================

Backends are chosen by the kind before the first colon. The built-in kinds
are registered here; a kind that is not registered yet is looked up once in
the ``appliance.audio_backends`` entry-point group of the installed package
metadata (as gpiozero finds its pin factories by name), whose object is an
:class:`AudioBackend`. So the media layer never imports a hardware backend,
and a test or the composition root may :func:`register_backend` its own.

Sources pace themselves like a sound card would: frame *k* is released at
``start + k * 20 ms`` on the monotonic clock (:class:`FramePacer`), so timing
errors never accumulate. Sinks take frames as fast as they come.

Example::

    source = open_source("tone:350+440")
    sink = open_sink("file:/tmp/call.wav")
    frame = await source.read_frame()
    await sink.write_frame(frame)
    sink.close()   # finalises the WAV header
"""

from __future__ import annotations

import abc
import asyncio
import importlib.metadata
import logging
import math
import re
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from appliance.errors import AudioDeviceError
from appliance.media.frames import (
    FRAME_SAMPLES,
    FRAME_SECONDS,
    SAMPLE_RATE,
    AudioSink,
    AudioSource,
    Samples,
)
from appliance.media.listing import DeviceMonitor
from appliance.media.tones import ToneGenerator

__all__ = [
    "ENTRY_POINT_GROUP",
    "TONE_AMPLITUDE",
    "AudioBackend",
    "DeviceId",
    "FilePlayer",
    "FileRecorder",
    "FramePacer",
    "NullSink",
    "NullSource",
    "SinkOpener",
    "SourceOpener",
    "ToneSource",
    "backend_monitor",
    "open_sink",
    "open_source",
    "parse_device_id",
    "register_backend",
]

logger = logging.getLogger(__name__)

#: Peak amplitude of each sine of a ``tone:`` source: -12 dBFS.
TONE_AMPLITUDE = 10.0 ** (-12.0 / 20.0)

#: Opens a source from the part of the device id after ``kind:``.
SourceOpener = Callable[[str], AudioSource]
#: Opens a sink from the part of the device id after ``kind:``.
SinkOpener = Callable[[str], AudioSink]

_KIND = re.compile(r"[a-z][a-z0-9_-]*")

#: Entry-point group in which installed packages declare audio backends.
ENTRY_POINT_GROUP = "appliance.audio_backends"


def _device_error(message: str) -> AudioDeviceError:
    return AudioDeviceError(31402, message)


@dataclass(frozen=True)
class DeviceId:
    """A parsed device id: ``kind`` and the ``argument`` after the first colon.

    ``"alsa:plughw:1,0"`` parses to ``DeviceId("alsa", "plughw:1,0")``;
    ``"null"`` to ``DeviceId("null", "")``.
    """

    kind: str
    argument: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.argument}" if self.argument else self.kind


@dataclass(frozen=True)
class AudioBackend:
    """What a device kind opens, and how its devices are listed.

    Attributes:
        kind: lower-case name, the part of a device id before the colon.
        open_source: opens a source from the argument after ``kind:``, or
            None if the kind has no sources.
        open_sink: likewise for sinks.
        monitor: makes the :class:`~appliance.media.listing.DeviceMonitor`
            that lists this kind's devices, or None if they cannot be listed.
    """

    kind: str
    open_source: SourceOpener | None
    open_sink: SinkOpener | None
    monitor: Callable[[], DeviceMonitor] | None = None


_BACKENDS: dict[str, AudioBackend] = {}
_DISCOVERED = False


def register_backend(
    kind: str,
    open_source: SourceOpener | None,
    open_sink: SinkOpener | None,
    *,
    monitor: Callable[[], DeviceMonitor] | None = None,
) -> None:
    """Make ``kind:ARGUMENT`` device ids open with the given functions.

    Each opener receives the argument (the text after ``kind:``, possibly
    empty), must raise :class:`AudioDeviceError` if it cannot open the device,
    and may block briefly (it is called from the event loop). Registering a
    kind again replaces the previous openers.

    Raises:
        ValueError: ``kind`` is not a valid name, or both openers are None.
    """
    _add(AudioBackend(kind, open_source, open_sink, monitor))


def _add(backend: AudioBackend) -> None:
    if not _KIND.fullmatch(backend.kind):
        raise ValueError(f"invalid audio device kind {backend.kind!r}")
    if backend.open_source is None and backend.open_sink is None:
        raise ValueError(f"audio device kind {backend.kind!r} needs a source or a sink")
    if backend.kind in _BACKENDS:
        logger.debug("replacing audio backend %s", backend.kind)
    _BACKENDS[backend.kind] = backend


def _discover() -> None:
    """Add the installed backends (entry points) not registered yet, once.

    A backend that fails to load (its library missing) is logged and left
    out: its ids are then unknown, which opening one reports as 31402.
    """
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in _BACKENDS:
            continue
        try:
            backend = entry.load()
        except ImportError as exc:
            logger.warning("audio backend %s unavailable: %s", entry.name, exc)
            continue
        if not isinstance(backend, AudioBackend) or backend.kind != entry.name:
            logger.warning("entry point %s is not an AudioBackend", entry.value)
            continue
        _add(backend)


def backend_monitor() -> DeviceMonitor | None:
    """A monitor of the first installed backend whose devices can be listed."""
    _discover()
    for backend in _BACKENDS.values():
        if backend.monitor is not None:
            return backend.monitor()
    return None


def _parse_tone(argument: str) -> tuple[float, ...]:
    parts = argument.split("+")
    freqs: list[float] = []
    for part in parts:
        try:
            freq = float(part)
        except ValueError:
            raise _device_error(
                f"tone:{argument}: {part!r} is not a frequency in Hz "
                "(expected e.g. tone:440 or tone:350+440)"
            ) from None
        if not (math.isfinite(freq) and 0.0 < freq < SAMPLE_RATE / 2):
            raise _device_error(
                f"tone:{argument}: {part} Hz is outside 0..{SAMPLE_RATE // 2} Hz"
            )
        freqs.append(freq)
    return tuple(freqs)


def parse_device_id(device_id: str) -> DeviceId:
    """Split and validate an audio device id.

    Raises:
        AudioDeviceError: (code 31402) the id is empty or malformed, its kind
            is not registered, or a built-in kind's argument is invalid.
    """
    kind, colon, argument = device_id.partition(":")
    if not kind:
        raise _device_error(f"empty audio device kind in {device_id!r}")
    if kind not in _BACKENDS:
        _discover()
    if kind not in _BACKENDS:
        builtin = ", ".join(sorted(_BUILTIN_KINDS))
        installed = ", ".join(sorted(set(_BACKENDS) - _BUILTIN_KINDS)) or "none"
        raise _device_error(
            f"unknown audio device {device_id!r} (known kinds: {builtin}; "
            f"installed backends: {installed})"
        )
    if kind == "null":
        if colon:
            raise _device_error(f"{device_id!r}: the null device takes no argument")
    elif kind == "tone":
        if not argument:
            raise _device_error(f"{device_id!r}: expected tone:HZ or tone:HZ+HZ")
        _parse_tone(argument)
    elif kind == "file" and (
        not argument.lower().endswith(".wav") or argument.lower() == ".wav"
    ):
        raise _device_error(f"{device_id!r}: expected file:PATH.wav")
    return DeviceId(kind, argument)


def open_source(device_id: str) -> AudioSource:
    """Open the audio source named by ``device_id``.

    Raises:
        AudioDeviceError: (31402) bad id, no such source, or it failed to open.
    """
    parsed = parse_device_id(device_id)
    opener = _BACKENDS[parsed.kind].open_source
    if opener is None:
        raise _device_error(f"{device_id!r} cannot be used as a source")
    return opener(parsed.argument)


def open_sink(device_id: str) -> AudioSink:
    """Open the audio sink named by ``device_id``.

    Raises:
        AudioDeviceError: (31402) bad id, no such sink, or it failed to open.
    """
    parsed = parse_device_id(device_id)
    opener = _BACKENDS[parsed.kind].open_sink
    if opener is None:
        raise _device_error(f"{device_id!r} cannot be used as a sink")
    return opener(parsed.argument)


class FramePacer:
    """Release one frame per period against a fixed monotonic schedule.

    The first :meth:`wait` returns at once and starts the schedule; each later
    one sleeps until ``previous_deadline + period``. Because the deadline is
    advanced rather than re-read from the clock, sleep overshoot does not
    accumulate (a loop sleeping a fixed 20 ms would drift by the scheduling
    latency every frame).

    If the reader falls more than ``max_lag_s`` behind (it stopped reading,
    or the loop stalled), the schedule restarts from now instead of releasing
    a burst of frames: a real microphone would have overrun and dropped them.

    Args:
        period_s: frame period in seconds.
        max_lag_s: lag beyond which the schedule restarts.
        clock: monotonic clock, injectable for tests.
    """

    def __init__(
        self,
        period_s: float = FRAME_SECONDS,
        *,
        max_lag_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.period_s = period_s
        self.max_lag_s = max_lag_s
        self._clock = clock
        self._deadline: float | None = None
        self.resyncs = 0

    async def wait(self) -> None:
        """Sleep until the next frame is due."""
        now = self._clock()
        if self._deadline is None:
            self._deadline = now
            return
        self._deadline += self.period_s
        delay = self._deadline - now
        if delay > 0:
            await asyncio.sleep(delay)
        elif -delay > self.max_lag_s:
            self.resyncs += 1
            self._deadline = now


class _PacedSource(abc.ABC):
    """Common part of the generated sources: pacing and the closed state."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False
        self._pacer = FramePacer()

    @abc.abstractmethod
    def _produce(self) -> Samples:
        """The next frame's samples (called once per 20 ms)."""

    async def read_frame(self) -> Samples:
        """Wait for the next 20 ms frame and return it.

        Raises:
            AudioDeviceError: the source is closed.
        """
        if self.closed:
            raise _device_error(f"{self.name}: read from a closed source")
        await self._pacer.wait()
        return self._produce()

    def close(self) -> None:
        """Mark the source closed; later reads raise."""
        self.closed = True


class ToneSource(_PacedSource):
    """A continuous tone (``tone:HZ`` or ``tone:HZ+HZ``) at -12 dBFS per sine."""

    def __init__(self, freqs: tuple[float, ...], amplitude: float = TONE_AMPLITUDE):
        super().__init__("tone:" + "+".join(f"{f:g}" for f in freqs))
        self._generator = ToneGenerator(freqs, amplitude)

    def _produce(self) -> Samples:
        return self._generator.next_frame(FRAME_SAMPLES)


class NullSource(_PacedSource):
    """Digital silence, paced in real time."""

    def __init__(self) -> None:
        super().__init__("null")

    def _produce(self) -> Samples:
        return np.zeros(FRAME_SAMPLES, dtype=np.int16)


def _read_wav(path: Path) -> Samples:
    """Read a 16-bit PCM WAV and convert it to 48 kHz mono int16."""
    try:
        with wave.open(str(path), "rb") as reader:
            channels = reader.getnchannels()
            width = reader.getsampwidth()
            rate = reader.getframerate()
            raw = reader.readframes(reader.getnframes())
    except FileNotFoundError:
        raise _device_error(f"file:{path}: no such file") from None
    except (OSError, wave.Error, EOFError) as exc:
        raise _device_error(f"file:{path}: not a readable WAV file ({exc})") from None
    if width != 2:
        raise _device_error(
            f"file:{path}: {8 * width}-bit samples; only 16-bit PCM is supported"
        )
    interleaved = np.frombuffer(raw, dtype="<i2").reshape(-1, channels)
    # Downmix by averaging the channels (no clipping possible).
    mono: Samples = np.rint(interleaved.astype(np.float64).mean(axis=1)).astype(
        np.int16
    )
    if rate == SAMPLE_RATE or mono.size == 0:
        return mono
    frame = av.AudioFrame.from_ndarray(mono.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    # resample(None) flushes the samples the converter still holds.
    chunks = [*resampler.resample(frame), *resampler.resample(None)]
    converted: Samples = np.concatenate([c.to_ndarray().reshape(-1) for c in chunks])
    return converted


class FilePlayer(_PacedSource):
    """Plays a WAV file once, then silence (``file:PATH.wav`` as a source).

    The whole file is decoded and converted when opened (48 kHz mono int16
    takes 96 kB per second), so reading never touches the disk.

    Raises:
        AudioDeviceError: the file is missing, unreadable or not 16-bit PCM.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        super().__init__(f"file:{self.path}")
        self._samples = _read_wav(self.path)
        self._position = 0

    @property
    def finished(self) -> bool:
        """Whether the whole file has been played."""
        return self._position >= self._samples.size

    def _produce(self) -> Samples:
        chunk = self._samples[self._position : self._position + FRAME_SAMPLES]
        self._position += chunk.size
        if chunk.size == FRAME_SAMPLES:
            return chunk.copy()
        frame = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        frame[: chunk.size] = chunk
        return frame


class FileRecorder:
    """Records to a 48 kHz mono 16-bit WAV (``file:PATH.wav`` as a sink).

    Frames are buffered and written in chunks of about 200 ms with
    ``writeframesraw`` (no seek back to the header per write), so the event
    loop only ever blocks for one small write into the page cache;
    :meth:`close` writes the rest and patches the header sizes.

    Raises:
        AudioDeviceError: the directory does not exist or the file cannot be
            created.
    """

    #: Bytes buffered before a write (10 frames of 20 ms).
    CHUNK_BYTES = 10 * FRAME_SAMPLES * 2

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise _device_error(
                f"file:{self.path}: directory {self.path.parent} does not exist"
            )
        try:
            # Kept open for the life of the sink; close() closes it.
            self._writer: wave.Wave_write = wave.open(str(self.path), "wb")  # noqa: SIM115
        except OSError as exc:
            raise _device_error(f"file:{self.path}: cannot create ({exc})") from None
        self._writer.setnchannels(1)
        self._writer.setsampwidth(2)
        self._writer.setframerate(SAMPLE_RATE)
        self._buffer = bytearray()
        self.samples_written = 0
        self.closed = False

    async def write_frame(self, samples: Samples) -> None:
        """Append ``samples`` (48 kHz mono int16, any length) to the recording.

        Raises:
            AudioDeviceError: the sink is closed or the write failed.
        """
        if self.closed:
            raise _device_error(f"file:{self.path}: write to a closed sink")
        self._buffer += np.asarray(samples, dtype="<i2").tobytes()
        self.samples_written += int(np.size(samples))
        if len(self._buffer) >= self.CHUNK_BYTES:
            self._flush()

    def _flush(self) -> None:
        try:
            self._writer.writeframesraw(bytes(self._buffer))
        except OSError as exc:
            raise _device_error(f"file:{self.path}: write failed ({exc})") from exc
        self._buffer.clear()

    def close(self) -> None:
        """Write what is buffered and finalise the WAV header; idempotent."""
        if self.closed:
            return
        self.closed = True
        try:
            self._flush()
        finally:
            self._writer.close()


class NullSink:
    """Discards everything; counts what it was given."""

    def __init__(self) -> None:
        self.samples_written = 0
        self.closed = False

    async def write_frame(self, samples: Samples) -> None:
        """Discard ``samples``."""
        self.samples_written += int(np.size(samples))

    def close(self) -> None:
        """Mark the sink closed."""
        self.closed = True


def _open_null_source(argument: str) -> AudioSource:
    return NullSource()


def _open_null_sink(argument: str) -> AudioSink:
    return NullSink()


def _open_tone_source(argument: str) -> AudioSource:
    return ToneSource(_parse_tone(argument))


def _open_file_source(argument: str) -> AudioSource:
    return FilePlayer(argument)


def _open_file_sink(argument: str) -> AudioSink:
    return FileRecorder(argument)


register_backend("null", _open_null_source, _open_null_sink)
register_backend("tone", _open_tone_source, None)
register_backend("file", _open_file_source, _open_file_sink)
_BUILTIN_KINDS = frozenset(_BACKENDS)
