"""Speakerphone voice processing: echo cancellation, noise suppression, AGC.

A desk phone on speaker hears its own loudspeaker: without echo cancellation
the far end hears itself back a few hundred milliseconds later. The browser
applies WebRTC's processing under ``getUserMedia``; the seed exposes it as
``audio_constraints`` (``echo_cancellation``, ``noise_suppression``,
``auto_gain_control``). This module is the processing itself, a sans-I/O
core: :meth:`VoiceProcessor.far` takes what went to the speaker,
:meth:`VoiceProcessor.near` takes a microphone frame and returns the frame
to send. Nothing here reads a clock or a device.

**Library: libspeexdsp, through ctypes** (Debian's ``libspeexdsp1``, the same
pattern as :mod:`appliance.media.opus` for libopus). Its C API is small and
stable (``speex_echo_*``: an MDF frequency-domain adaptive filter;
``speex_preprocess_*``: noise suppression, residual-echo suppression and AGC),
and the package is in Debian and Raspberry Pi OS for arm64 and armhf, so the
phone needs no compiler and no wheel. The alternatives were measured on the
same synthetic echo path (bench/echo_bench.py; docs/audio.md has the
figures): WebRTC's AEC3 through the ``pywebrtc-audio`` wheels cancels more
echo (40-49 dB) but its suppressor gates the near-end talker during double
talk (PESQ-WB about 1.1, and 1.5 even with no echo at all), and the binding
is young (0.2.0); Debian's ``libwebrtc-audio-processing`` (0.3) has only a
C++ API, so it would need a compiled shim. speexdsp keeps most of the
near-end speech (PESQ-WB 3.3-3.8 depending on the speech, against 1.4 for the
microphone as is) at 29-41 dB of echo return loss enhancement.

**Alignment with the speaker.** The reference must be what the loudspeaker
actually plays, so the output mixer hands over each mixed frame as it writes
it to the device (``OutputMixer.monitor``). Those frames reach the speaker
later (the sink's queue, the ALSA ring, the DAC) and come back through the
ADC and the capture period: the echo in a capture frame lags its reference by
that device delay plus the room's reverberation. :class:`ReferenceQueue`
keeps the reference as one continuous sample stream, consumed in lockstep
with the capture (one capture frame takes exactly as many reference
samples), so scheduling jitter in the event loop never shifts the pairing.
Because a reference frame is consumed no later than one frame after it was
written, and the device delay is at least the playback prefill, the echo
always comes after its reference (the filter must be causal); the adaptive
filter's window (:data:`DEFAULT_TAIL_MS`, 200 ms) then spans the whole
device delay plus the room's tail, so no separate delay estimator is needed.
When nothing plays, the queue runs dry and the reference is silence. After a
stall of the event loop the mixer catches up with a burst and the capture
frames wait in their own queue, so the reference queue may fill for a while
without anything being lost: it is kept (up to :data:`MAX_REFERENCE_FRAMES`).
Only a backlog that persists for :data:`DRAIN_WINDOW` reads (the capture lost
frames, or the two devices' clocks drift apart) is dropped down to one
frame, which restores the pairing once instead of shifting it at every burst.

With every feature off :meth:`VoiceProcessor.near` returns the frame it was
given, untouched (bit-exact passthrough).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections import deque
from dataclasses import dataclass
from functools import cache

import numpy as np

from appliance.media.frames import FRAME_SAMPLES, SAMPLE_RATE, Samples

__all__ = [
    "DEFAULT_TAIL_MS",
    "DRAIN_WINDOW",
    "MAX_REFERENCE_FRAMES",
    "ProcessingSettings",
    "ReferenceQueue",
    "VoiceProcessor",
    "load_libspeexdsp",
]

logger = logging.getLogger(__name__)

#: The adaptive filter's length: device delay plus the room's echo tail.
DEFAULT_TAIL_MS = 200
#: Reference frames kept for a late capture (drop oldest beyond): 500 ms.
MAX_REFERENCE_FRAMES = 25
#: Reads (20 ms each) over which a standing reference backlog is measured.
DRAIN_WINDOW = 100
#: Noise attenuation when noise suppression is on (speexdsp's default).
NOISE_SUPPRESS_DB = -15
#: Most residual-echo attenuation with only the far end talking, and while
#: the near end talks too (speexdsp's defaults: -40 and -15 dB). Milder
#: than the defaults: the linear filter already removes 30-40 dB, and a
#: deep suppressor cuts into the near-end talker during double talk (PESQ-WB
#: 3.30 -> 3.45 and 3.65 -> 3.80 on bench/echo_bench.py's and the test's
#: speech, ERLE down by 1-2 dB).
ECHO_SUPPRESS_DB = -25
ECHO_SUPPRESS_ACTIVE_DB = -8

# speex_echo_ctl / speex_preprocess_ctl requests (speex_echo.h,
# speex_preprocess.h; part of the library's stable ABI).
_ECHO_SET_SAMPLING_RATE = 24
_PRE_SET_DENOISE = 0
_PRE_SET_AGC = 2
_PRE_SET_AGC_LEVEL = 6
_PRE_SET_NOISE_SUPPRESS = 18
_PRE_SET_ECHO_SUPPRESS = 20
_PRE_SET_ECHO_SUPPRESS_ACTIVE = 22
_PRE_SET_ECHO_STATE = 24
_PRE_SET_AGC_MAX_GAIN = 30

_PRE_SET_AGC_INCREMENT = 26
_PRE_SET_AGC_DECREMENT = 28

# The AGC is kept gentle: a fast or large gain change pumps the residual echo
# up in far-end-only periods and distorts the near end in double talk (both
# measured by bench/echo_bench.py: 20 dB of gain cost 10 dB of ERLE).
#: The AGC's target speech level (float build: linear, of 32768): -8.7 dBFS.
AGC_LEVEL = 12000.0
#: At most this much gain from the AGC.
AGC_MAX_GAIN_DB = 6
#: How fast the AGC may raise / lower its gain, in dB per second.
AGC_SLEW_DB = 6


@cache
def load_libspeexdsp() -> ctypes.CDLL | None:
    """Load libspeexdsp once; None (with a warning) if it is not installed."""
    name = ctypes.util.find_library("speexdsp") or "libspeexdsp.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        logger.warning(
            "libspeexdsp not found: no echo cancellation or noise suppression"
        )
        return None
    handle = ctypes.c_void_p
    lib.speex_echo_state_init.restype = handle
    lib.speex_echo_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.speex_echo_state_destroy.restype = None
    lib.speex_echo_state_destroy.argtypes = [handle]
    lib.speex_echo_cancellation.restype = None
    lib.speex_echo_cancellation.argtypes = [handle, handle, handle, handle]
    lib.speex_echo_ctl.restype = ctypes.c_int
    lib.speex_echo_ctl.argtypes = [handle, ctypes.c_int, handle]
    lib.speex_preprocess_state_init.restype = handle
    lib.speex_preprocess_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.speex_preprocess_state_destroy.restype = None
    lib.speex_preprocess_state_destroy.argtypes = [handle]
    lib.speex_preprocess_run.restype = ctypes.c_int
    lib.speex_preprocess_run.argtypes = [handle, handle]
    lib.speex_preprocess_ctl.restype = ctypes.c_int
    lib.speex_preprocess_ctl.argtypes = [handle, ctypes.c_int, handle]
    return lib


@dataclass(frozen=True)
class ProcessingSettings:
    """Which processing runs on the microphone (the seed's constraints)."""

    echo_cancellation: bool = False
    noise_suppression: bool = False
    auto_gain_control: bool = False

    @property
    def enabled(self) -> bool:
        """Whether any processing runs (else the input is passed through)."""
        return (
            self.echo_cancellation or self.noise_suppression or self.auto_gain_control
        )


class ReferenceQueue:
    """The far-end reference as one sample stream, read in capture-sized bites.

    Args:
        max_frames: reference frames kept; older ones are dropped.
        window: reads over which a standing backlog is measured and drained.

    Attributes:
        underruns: reads that found too little reference (padded with silence).
        dropped: samples dropped because the writer ran ahead.
    """

    def __init__(
        self, max_frames: int = MAX_REFERENCE_FRAMES, window: int = DRAIN_WINDOW
    ) -> None:
        self._chunks: deque[Samples] = deque()
        self._queued = 0
        self._limit = max_frames * FRAME_SAMPLES
        self._window = window
        self._reads = 0
        self._low = self._limit
        self.underruns = 0
        self.dropped = 0

    @property
    def queued(self) -> int:
        """Samples waiting to be read."""
        return self._queued

    def push(self, samples: Samples) -> None:
        """Append what was just written to the speaker."""
        if samples.size == 0:
            return
        self._chunks.append(samples)
        self._queued += samples.size
        self._drop(self._queued - self._limit)

    def _drop(self, excess: int) -> None:
        while excess > 0:
            head = self._chunks[0]
            if head.size <= excess:
                self._chunks.popleft()
                cut = head.size
            else:
                self._chunks[0] = head[excess:]
                cut = excess
            self._queued -= cut
            self.dropped += cut
            excess -= cut

    def take(self, count: int) -> Samples:
        """The next ``count`` samples; silence where none were written."""
        out = np.zeros(count, dtype=np.int16)
        filled = 0
        while filled < count and self._chunks:
            head = self._chunks[0]
            part = min(count - filled, head.size)
            out[filled : filled + part] = head[:part]
            if part == head.size:
                self._chunks.popleft()
            else:
                self._chunks[0] = head[part:]
            self._queued -= part
            filled += part
        if filled < count and filled > 0:
            self.underruns += 1
        self._low = min(self._low, self._queued)
        self._reads += 1
        if self._reads >= self._window:
            # More than a frame waited at every read of the window: a standing
            # backlog, not a burst; drain it to one frame.
            self._drop(self._low - FRAME_SAMPLES)
            self._reads = 0
            self._low = self._limit
        return out

    def clear(self) -> None:
        """Forget everything queued."""
        self._chunks.clear()
        self._queued = 0
        self._reads = 0
        self._low = self._limit


class VoiceProcessor:
    """Echo cancellation, noise suppression and AGC on 48 kHz mono int16.

    Args:
        settings: what to run; all off means passthrough and no library.
        frame_samples: samples per processed frame (20 ms by default; a
            capture frame must be a multiple of it).
        tail_ms: the echo canceller's filter length.

    Raises:
        RuntimeError: processing is wanted but libspeexdsp is missing or
            refused to create its state.
    """

    def __init__(
        self,
        settings: ProcessingSettings,
        *,
        frame_samples: int = FRAME_SAMPLES,
        tail_ms: int = DEFAULT_TAIL_MS,
    ) -> None:
        self.settings = settings
        self.frame_samples = frame_samples
        self.reference = ReferenceQueue()
        self._lib: ctypes.CDLL | None = None
        self._echo: int | None = None
        self._pre: int | None = None
        if not settings.enabled:
            return
        lib = load_libspeexdsp()
        if lib is None:
            raise RuntimeError("libspeexdsp is not installed")
        self._lib = lib
        self._pre = lib.speex_preprocess_state_init(frame_samples, SAMPLE_RATE)
        if not self._pre:
            raise RuntimeError("speex_preprocess_state_init failed")
        if settings.echo_cancellation:
            tail = SAMPLE_RATE * tail_ms // 1000
            self._echo = lib.speex_echo_state_init(frame_samples, tail)
            if not self._echo:
                self.close()
                raise RuntimeError("speex_echo_state_init failed")
            self._echo_ctl(_ECHO_SET_SAMPLING_RATE, ctypes.c_int(SAMPLE_RATE))
            # The preprocessor then also suppresses the residual echo that
            # the linear filter leaves (non-linearities, a filter adapting).
            lib.speex_preprocess_ctl(self._pre, _PRE_SET_ECHO_STATE, self._echo)
            self._pre_ctl(_PRE_SET_ECHO_SUPPRESS, ctypes.c_int(ECHO_SUPPRESS_DB))
            self._pre_ctl(
                _PRE_SET_ECHO_SUPPRESS_ACTIVE, ctypes.c_int(ECHO_SUPPRESS_ACTIVE_DB)
            )
        # speexdsp applies its spectral gain (noise and residual echo) only
        # with "denoise" on: with noise suppression off but echo cancellation
        # on, denoise runs with a 0 dB noise floor, so only echo is removed.
        wants_gain = settings.noise_suppression or settings.echo_cancellation
        self._pre_ctl(_PRE_SET_DENOISE, ctypes.c_int(int(wants_gain)))
        noise_db = NOISE_SUPPRESS_DB if settings.noise_suppression else 0
        self._pre_ctl(_PRE_SET_NOISE_SUPPRESS, ctypes.c_int(noise_db))
        self._pre_ctl(_PRE_SET_AGC, ctypes.c_int(int(settings.auto_gain_control)))
        if settings.auto_gain_control:
            self._pre_ctl(_PRE_SET_AGC_LEVEL, ctypes.c_float(AGC_LEVEL))
            self._pre_ctl(_PRE_SET_AGC_MAX_GAIN, ctypes.c_int(AGC_MAX_GAIN_DB))
            self._pre_ctl(_PRE_SET_AGC_INCREMENT, ctypes.c_int(AGC_SLEW_DB))
            self._pre_ctl(_PRE_SET_AGC_DECREMENT, ctypes.c_int(-AGC_SLEW_DB))

    def _echo_ctl(self, request: int, value: ctypes.c_int) -> None:
        assert self._lib is not None
        self._lib.speex_echo_ctl(self._echo, request, ctypes.addressof(value))

    def _pre_ctl(self, request: int, value: ctypes.c_int | ctypes.c_float) -> None:
        assert self._lib is not None
        self._lib.speex_preprocess_ctl(self._pre, request, ctypes.addressof(value))

    @property
    def active(self) -> bool:
        """Whether frames are processed (False: passthrough)."""
        return self._pre is not None

    def far(self, samples: Samples) -> None:
        """Feed what was just written to the loudspeaker (the echo reference)."""
        if self._echo is not None:
            self.reference.push(samples)

    def near(self, samples: Samples) -> Samples:
        """Process one capture frame; returns it unchanged when inactive.

        Raises:
            ValueError: the frame is not a multiple of ``frame_samples``.
            RuntimeError: the processor was closed.
        """
        if not self.active:
            if self._lib is not None:
                raise RuntimeError("voice processor closed")
            return samples
        size = self.frame_samples
        if samples.size % size:
            raise ValueError(f"{samples.size} samples is not a multiple of {size}")
        lib = self._lib
        assert lib is not None
        result = np.empty(samples.size, dtype=np.int16)
        near = np.ascontiguousarray(samples, dtype=np.int16)
        for start in range(0, samples.size, size):
            piece = near[start : start + size]
            out = result[start : start + size]
            if self._echo is not None:
                far = self.reference.take(size)
                lib.speex_echo_cancellation(
                    self._echo, piece.ctypes.data, far.ctypes.data, out.ctypes.data
                )
            else:
                out[:] = piece
            lib.speex_preprocess_run(self._pre, out.ctypes.data)
        return result

    def close(self) -> None:
        """Free the library state (idempotent); later frames raise."""
        lib = self._lib
        if lib is None:
            return
        if self._pre is not None:
            lib.speex_preprocess_state_destroy(self._pre)
            self._pre = None
        if self._echo is not None:
            lib.speex_echo_state_destroy(self._echo)
            self._echo = None
        self.reference.clear()
