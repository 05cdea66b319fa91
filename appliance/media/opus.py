"""libopus's decoder, for the loss concealment and FEC that FFmpeg hides.

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

__all__ = ["OpusDecoder", "load_libopus"]

logger = logging.getLogger(__name__)

# The longest Opus packet lasts 120 ms (RFC 6716 §3.2.5).
_MAX_SAMPLES = SAMPLE_RATE * 120 // 1000


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
