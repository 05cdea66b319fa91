"""libopus through ctypes: a decoder with the loss concealment and FEC that
FFmpeg hides, and the voice encoder the phone sends with.

aiortc decodes Opus through PyAV's ``libopus`` codec context. That path
cannot conceal a loss: FFmpeg's libopus wrapper always calls
``opus_decode`` with ``decode_fec = 0``, and an empty packet means "flush"
to ``avcodec_send_packet``, not "a packet was lost", so neither PLC
(RFC 6716 §4.4, ``opus_decode`` with no data) nor in-band FEC (§2.1.7: decode
the LBRR data of the next packet with ``decode_fec = 1``) can be asked for.
libopus itself is on every system where FFmpeg's libopus support comes from
the distribution (Debian's ``libopus0``), so :class:`OpusDecoder` calls its
four decoder functions through ctypes, decoding straight to mono 48 kHz (the
phone's format, so no downmix or resampling follows).

:class:`OpusEncoder` is the sending half, for the same reason: aiortc's
encoder is fixed at 96 kb/s stereo (anchors.md §6.3) and FFmpeg adds a
resampler and an upmix in front of it. Ours encodes the phone's mono 48 kHz
frames directly, at a voice bit rate, with in-band FEC tuned for an expected
loss and a fixed complexity (``appliance.media.sending`` explains the choices
and hands the packets to aiortc). One ``opus_encode`` call per 20 ms frame;
the samples go to libopus as the numpy buffer, never element by element.

:func:`load_libopus` returns None where the library is missing; the caller
then decodes without PLC or FEC (``appliance.media.playout``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from functools import cache

import numpy as np

from appliance.media.frames import FRAME_SAMPLES, SAMPLE_RATE, Samples

__all__ = ["OPUS_SILENCE", "OpusDecoder", "OpusEncoder", "load_libopus"]

logger = logging.getLogger(__name__)

# The longest Opus packet lasts 120 ms (RFC 6716 §3.2.5).
_MAX_SAMPLES = SAMPLE_RATE * 120 // 1000
#: A 20 ms CELT frame that decodes to digital silence (TOC 0xF8, then the
#: silence flag, RFC 6716 §4.3 table 56).
OPUS_SILENCE = b"\xf8\xff\xfe"
# The longest 20 ms Opus packet is 1275 bytes (RFC 6716 §3.2.1); round up.
_MAX_PACKET = 1500

# Requests and values of opus_defines.h (libopus's stable ABI).
_APPLICATION_VOIP = 2048
_SET_BITRATE = 4002
_GET_BITRATE = 4003
_SET_MAX_BANDWIDTH = 4004
_GET_MAX_BANDWIDTH = 4005
_SET_VBR = 4006
_SET_COMPLEXITY = 4010
_GET_COMPLEXITY = 4011
_SET_INBAND_FEC = 4012
_GET_INBAND_FEC = 4013
_SET_PACKET_LOSS_PERC = 4014
_GET_PACKET_LOSS_PERC = 4015
_SET_DTX = 4016
_SET_FORCE_CHANNELS = 4022
_SET_SIGNAL = 4024
_SIGNAL_VOICE = 3001
#: Audio bandwidth (Hz) -> libopus's bandwidth value (RFC 6716 §2, table 1).
_BANDWIDTHS = {4000: 1101, 6000: 1102, 8000: 1103, 12000: 1104, 20000: 1105}

#: The bit rates libopus accepts (and RFC 7587 §6.1 allows for
#: maxaveragebitrate), bits per second.
MIN_BITRATE = 6000
MAX_BITRATE = 510000

_CtlSet = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int32)
_CtlGet = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int32)
)


@cache
def load_libopus() -> ctypes.CDLL | None:
    """Load libopus once; None (with a warning) if it is not installed."""
    name = ctypes.util.find_library("opus") or "libopus.so.0"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        logger.warning("libopus not found: Opus losses are played as silence")
        return None
    lib.opus_decoder_create.restype = ctypes.c_void_p
    lib.opus_decoder_create.argtypes = [
        ctypes.c_int32,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_int),
    ]
    lib.opus_decode.restype = ctypes.c_int
    lib.opus_decode.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_int32,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_int,
    ]
    lib.opus_decoder_destroy.restype = None
    lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
    lib.opus_encoder_create.restype = ctypes.c_void_p
    lib.opus_encoder_create.argtypes = [
        ctypes.c_int32,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_int),
    ]
    lib.opus_encode.restype = ctypes.c_int32
    lib.opus_encode.argtypes = [
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_int32,
    ]
    lib.opus_encoder_destroy.restype = None
    lib.opus_encoder_destroy.argtypes = [ctypes.c_void_p]
    return lib


class OpusDecoder:
    """One Opus stream decoded to mono 48 kHz int16, with PLC and FEC.

    Raises:
        RuntimeError: libopus is missing or refused to create a decoder.
    """

    def __init__(self) -> None:
        lib = load_libopus()
        if lib is None:
            raise RuntimeError("libopus is not installed")
        error = ctypes.c_int(0)
        handle = lib.opus_decoder_create(SAMPLE_RATE, 1, ctypes.byref(error))
        if error.value != 0 or not handle:
            raise RuntimeError(f"opus_decoder_create failed ({error.value})")
        self._lib = lib
        self._handle: int | None = handle
        self._out = np.zeros(_MAX_SAMPLES, dtype=np.int16)

    def decode(self, payload: bytes) -> Samples:
        """Decode one packet (an empty result if it is corrupt)."""
        return self._run(payload, _MAX_SAMPLES, fec=False)

    def conceal(self, samples: int = FRAME_SAMPLES) -> Samples:
        """Return ``samples`` of packet-loss concealment (RFC 6716 §4.4)."""
        return self._run(None, samples, fec=False)

    def recover(self, following: bytes, samples: int = FRAME_SAMPLES) -> Samples:
        """Rebuild a lost frame from the FEC data in the packet after it.

        Where ``following`` carries no FEC data libopus conceals instead.
        """
        return self._run(following, samples, fec=True)

    def _run(self, payload: bytes | None, samples: int, *, fec: bool) -> Samples:
        if self._handle is None:
            raise RuntimeError("decoder closed")
        count = self._lib.opus_decode(
            self._handle,
            payload,
            len(payload) if payload else 0,
            self._out.ctypes.data,
            samples,
            int(fec),
        )
        if count < 0:
            logger.debug("opus_decode failed (%d)", count)
            return np.zeros(0, dtype=np.int16)
        return self._out[:count].copy()

    def close(self) -> None:
        """Free the decoder (idempotent)."""
        if self._handle is not None:
            self._lib.opus_decoder_destroy(self._handle)
            self._handle = None

    def __del__(self) -> None:
        self.close()


class OpusEncoder:
    """Mono 48 kHz int16 frames to Opus packets, tuned for speech.

    Args:
        bitrate: target average bit rate in bits per second (FEC included).
        complexity: libopus's 0 (cheapest) to 10 (best).
        expected_loss_percent: the packet loss the in-band FEC is sized for;
            0 turns FEC off.
        max_audio_hz: the widest audio band to code: 4000 (narrowband),
            6000, 8000 (wideband), 12000 or 20000 (fullband).

    Raises:
        RuntimeError: libopus is missing or refused a setting.
        ValueError: a setting is out of range.
    """

    def __init__(
        self,
        bitrate: int,
        complexity: int,
        expected_loss_percent: int,
        *,
        max_audio_hz: int = 20000,
    ) -> None:
        self._handle: int | None = None
        if max_audio_hz not in _BANDWIDTHS:
            raise ValueError(f"max_audio_hz must be one of {sorted(_BANDWIDTHS)}")
        if not MIN_BITRATE <= bitrate <= MAX_BITRATE:
            raise ValueError(f"bitrate {bitrate} outside {MIN_BITRATE}-{MAX_BITRATE}")
        if not 0 <= complexity <= 10:
            raise ValueError(f"complexity {complexity} outside 0-10")
        if not 0 <= expected_loss_percent <= 100:
            raise ValueError(f"loss {expected_loss_percent} outside 0-100")
        lib = load_libopus()
        if lib is None:
            raise RuntimeError("libopus is not installed")
        error = ctypes.c_int(0)
        handle = lib.opus_encoder_create(
            SAMPLE_RATE, 1, _APPLICATION_VOIP, ctypes.byref(error)
        )
        if error.value != 0 or not handle:
            raise RuntimeError(f"opus_encoder_create failed ({error.value})")
        self._lib = lib
        self._handle = handle
        self._set = _CtlSet(("opus_encoder_ctl", lib))
        self._get = _CtlGet(("opus_encoder_ctl", lib))
        self._out = ctypes.create_string_buffer(_MAX_PACKET)
        try:
            for request, value in (
                (_SET_SIGNAL, _SIGNAL_VOICE),
                (_SET_FORCE_CHANNELS, 1),
                (_SET_VBR, 1),
                (_SET_DTX, 0),
                (_SET_COMPLEXITY, complexity),
                (_SET_INBAND_FEC, int(expected_loss_percent > 0)),
                (_SET_PACKET_LOSS_PERC, expected_loss_percent),
                (_SET_MAX_BANDWIDTH, _BANDWIDTHS[max_audio_hz]),
            ):
                self._ctl(request, value)
            self.set_bitrate(bitrate)
        except RuntimeError:
            self.close()
            raise

    def _ctl(self, request: int, value: int) -> None:
        result = self._set(self._handle, request, value)
        if result != 0:
            raise RuntimeError(f"opus_encoder_ctl({request}, {value}): {result}")

    def _read(self, request: int) -> int:
        value = ctypes.c_int32(0)
        result = self._get(self._handle, request, ctypes.byref(value))
        if result != 0:
            raise RuntimeError(f"opus_encoder_ctl({request}) failed ({result})")
        return value.value

    def set_bitrate(self, bitrate: int) -> None:
        """Change the target bit rate (e.g. to the far side's maximum)."""
        self._ctl(_SET_BITRATE, min(max(bitrate, MIN_BITRATE), MAX_BITRATE))

    @property
    def bitrate(self) -> int:
        """The target bit rate libopus uses, bits per second."""
        return self._read(_GET_BITRATE)

    @property
    def complexity(self) -> int:
        """libopus's complexity setting (0-10)."""
        return self._read(_GET_COMPLEXITY)

    @property
    def fec(self) -> bool:
        """Whether in-band FEC is on."""
        return bool(self._read(_GET_INBAND_FEC))

    @property
    def max_audio_hz(self) -> int:
        """The widest audio band coded, Hz."""
        value = self._read(_GET_MAX_BANDWIDTH)
        return next(hz for hz, v in _BANDWIDTHS.items() if v == value)

    @property
    def expected_loss_percent(self) -> int:
        """The packet loss the FEC is sized for."""
        return self._read(_GET_PACKET_LOSS_PERC)

    def encode(self, samples: Samples) -> bytes:
        """Encode one 20 ms frame (``FRAME_SAMPLES`` mono int16 samples).

        Raises:
            ValueError: the frame has the wrong size or type.
            RuntimeError: the encoder is closed or libopus failed.
        """
        if self._handle is None:
            raise RuntimeError("encoder closed")
        if samples.shape != (FRAME_SAMPLES,) or samples.dtype != np.int16:
            raise ValueError(f"expected {FRAME_SAMPLES} int16 samples")
        pcm = np.ascontiguousarray(samples)
        count = self._lib.opus_encode(
            self._handle, pcm.ctypes.data, FRAME_SAMPLES, self._out, _MAX_PACKET
        )
        if count < 0:
            raise RuntimeError(f"opus_encode failed ({count})")
        return self._out.raw[:count]

    def close(self) -> None:
        """Free the encoder (idempotent)."""
        if self._handle is not None:
            self._lib.opus_encoder_destroy(self._handle)
            self._handle = None

    def __del__(self) -> None:
        self.close()
