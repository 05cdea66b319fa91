"""The receive path of a call: RTP packets through our jitter buffer to the sink.

aiortc's own audio jitter buffer is replaced (``appliance.media.jitter``
explains why). The packets are taken where the telephone-event tap already
sees every decrypted RTP packet (``appliance.media.telephone_event``,
``EventTap.on_audio``); aiortc still gets each packet afterwards, for its
statistics and RTCP receiver reports, but its buffer is swapped for one that
never releases a frame (:func:`bypass_aiortc_buffers`), so aiortc decodes
nothing and the remote track stays silent until it ends.

:class:`PlayoutPath` runs the playout clock: every 20 ms (deadlines on the
loop's clock, so the clock does not drift with scheduling delays) it asks the
buffer for a frame, decodes it, conceals or recovers a loss, and writes 48 kHz
mono to the sink:

* Opus through libopus (``appliance.media.opus``): PLC for a loss, in-band
  FEC from the next packet when it is already here.
* G.711 and G.722 through aiortc's decoders; a loss repeats the last frame
  at half the level per frame for three frames, then silence.

The sending side: :func:`install_opus_fec` makes aiortc's Opus encoders put
in-band FEC in every packet, tuned for an expected loss, so the far side's
buffer can recover single losses the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

import aiortc.rtcrtpsender
import av
import numpy as np
from aiortc import RTCRtpCodecParameters
from aiortc.codecs import get_decoder
from aiortc.codecs.opus import OpusEncoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError

from appliance.errors import AudioDeviceError
from appliance.media.codecs import Negotiated
from appliance.media.frames import FRAME_SAMPLES, FRAME_SECONDS, SAMPLE_RATE, Samples
from appliance.media.jitter import FrameKind, JitterBuffer, JitterStats
from appliance.media.opus import OpusDecoder, load_libopus

__all__ = [
    "EXPECTED_LOSS_PERCENT",
    "PlayoutPath",
    "bypass_aiortc_buffers",
    "install_opus_fec",
    "pump_track",
]

logger = logging.getLogger(__name__)

#: The packet loss our Opus encoder prepares its FEC for (libopus uses it to
#: choose how much of the bit rate the redundant copy may take).
EXPECTED_LOSS_PERCENT = 10

# An Opus packet this short carries silence or comfort noise: a frame the
# buffer may skip unheard. G.711 silence is tested on the bytes.
_OPUS_QUIET_BYTES = 12
_ULAW_QUIET = 0x70  # mu-law bytes (magnitude bits) at or above are < -48 dBFS
_FADE_FRAMES = 3
_HOOK_MARK = "_appliance_opus_fec"


def install_opus_fec(expected_loss_percent: int = EXPECTED_LOSS_PERCENT) -> None:
    """Make aiortc's Opus encoders send in-band FEC (idempotent).

    aiortc 1.16 opens its FFmpeg ``libopus`` encoder with only
    ``application=voip``; FFmpeg's ``fec`` and ``packet_loss`` options turn
    on libopus's LBRR frames (RFC 6716 §2.1.7), which makes it use its SILK
    or hybrid mode. The senders look ``get_encoder`` up as a global of
    ``aiortc.rtcrtpsender`` when the first frame is sent, so the wrapper there
    works for every later call.
    """
    original = aiortc.rtcrtpsender.get_encoder  # type: ignore[attr-defined]
    if getattr(original, _HOOK_MARK, False):
        return

    def get_encoder(codec: RTCRtpCodecParameters) -> Any:
        encoder = original(codec)
        if isinstance(encoder, OpusEncoder):
            # The codec context opens on the first encode: options set now apply.
            options = dict(encoder.codec.options)
            options.update(fec="1", packet_loss=str(expected_loss_percent))
            encoder.codec.options = options
        return encoder

    setattr(get_encoder, _HOOK_MARK, True)
    aiortc.rtcrtpsender.get_encoder = get_encoder  # type: ignore[attr-defined]


class _NoBuffer:
    """Takes aiortc's place as jitter buffer and releases nothing."""

    def add(self, packet: Any) -> tuple[bool, None]:
        return False, None


def bypass_aiortc_buffers(pc: Any) -> bool:
    """Swap aiortc's audio jitter buffers on ``pc`` for :class:`_NoBuffer`.

    aiortc 1.16 keeps the buffer in a private attribute of RTCRtpReceiver;
    returns False (and the caller keeps aiortc's path) if it has moved.
    """
    found = True
    for transceiver in pc.getTransceivers():
        if transceiver.kind != "audio":
            continue
        name = "_RTCRtpReceiver__jitter_buffer"
        if not hasattr(transceiver.receiver, name):
            found = False
            continue
        setattr(transceiver.receiver, name, _NoBuffer())
    return found


class _Decoder(Protocol):
    def decode(self, payload: bytes) -> Samples: ...
    def recover(self, following: bytes) -> Samples: ...
    def conceal(self, run: int) -> Samples: ...
    def close(self) -> None: ...


class _OpusPath:
    """Opus with libopus's PLC and FEC."""

    def __init__(self) -> None:
        self._decoder = OpusDecoder()

    def decode(self, payload: bytes) -> Samples:
        return self._decoder.decode(payload)

    def recover(self, following: bytes) -> Samples:
        return self._decoder.recover(following)

    def conceal(self, run: int) -> Samples:
        # libopus fades its own concealment out over a long loss.
        return self._decoder.conceal()

    def close(self) -> None:
        self._decoder.close()


class _FadePath:
    """Any codec aiortc decodes; a loss repeats the last frame, fading out."""

    def __init__(self, name: str, clock_rate: int) -> None:
        self._decoder = get_decoder(
            RTCRtpCodecParameters(mimeType=f"audio/{name}", clockRate=clock_rate)
        )
        self._resampler = av.AudioResampler(
            format="s16", layout="mono", rate=SAMPLE_RATE
        )
        self._last = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self._timestamp = 0

    def decode(self, payload: bytes) -> Samples:
        parts = []
        frame = JitterFrame(data=payload, timestamp=self._timestamp)
        for decoded in self._decoder.decode(frame):
            assert isinstance(decoded, av.AudioFrame)
            for converted in self._resampler.resample(decoded):
                parts.append(converted.to_ndarray().reshape(-1))
        if not parts:
            return np.zeros(0, dtype=np.int16)
        self._last = np.concatenate(parts).astype(np.int16, copy=False)
        return self._last

    def recover(self, following: bytes) -> Samples:
        return self.conceal(1)

    def conceal(self, run: int) -> Samples:
        if run > _FADE_FRAMES:
            return np.zeros(FRAME_SAMPLES, dtype=np.int16)
        return (self._last.astype(np.float32) * 0.5**run).astype(np.int16)

    def close(self) -> None:
        pass


def _is_quiet(name: str, payload: bytes) -> bool:
    if name == "opus":
        return len(payload) <= _OPUS_QUIET_BYTES
    if name == "pcmu" and payload:
        magnitude = np.frombuffer(payload, dtype=np.uint8) & 0x7F
        return bool(magnitude.min() >= _ULAW_QUIET)
    return False


class PlayoutPath:
    """Buffers the received RTP audio and plays it to ``sink`` on a 20 ms clock.

    Args:
        write: the sink's ``write_frame``.
        on_samples: called with every frame written (for the level meter).
        clock: the loop's monotonic clock (``loop.time``).
    """

    def __init__(
        self,
        write: Callable[[Samples], Any],
        on_samples: Callable[[Samples], None],
        clock: Callable[[], float],
    ) -> None:
        self._write = write
        self._on_samples = on_samples
        self._clock = clock
        self._names: dict[int, str] = {}
        self._clock_rates: dict[int, int] = {}
        self._pt: int | None = None
        self._buffer = JitterBuffer()
        self._decoder: _Decoder | None = None
        self._wakeup = asyncio.Event()

    def configure(self, negotiated: Negotiated) -> None:
        """Learn the payload types of the audio codecs negotiated."""
        for codec in negotiated.answer:
            if not codec.is_event:
                self._names[codec.payload_type] = codec.name.lower()
                self._clock_rates[codec.payload_type] = codec.clock_rate

    def feed(self, data: bytes) -> None:
        """Take one decrypted RTP packet of audio (at least 12 bytes)."""
        pt = data[1] & 0x7F
        name = self._names.get(pt)
        if name is None:
            return
        if pt != self._pt:
            self._switch(pt, name)
        header = 12 + 4 * (data[0] & 0x0F)
        if data[0] & 0x10 and len(data) >= header + 4:
            header += 4 + 4 * int.from_bytes(data[header + 2 : header + 4], "big")
        end = len(data) - (data[-1] if data[0] & 0x20 else 0)
        payload = data[header:end]
        sequence = int.from_bytes(data[2:4], "big")
        self._buffer.push(
            sequence, payload, self._clock(), quiet=_is_quiet(name, payload)
        )
        self._wakeup.set()

    def _switch(self, pt: int, name: str) -> None:
        if self._decoder is not None:
            self._decoder.close()
        self._pt = pt
        use_opus = name == "opus" and load_libopus() is not None
        self._decoder = (
            _OpusPath() if use_opus else _FadePath(name, self._clock_rates[pt])
        )
        self._buffer = JitterBuffer(fec=use_opus)

    def stats(self) -> JitterStats:
        """What the jitter buffer did so far."""
        return self._buffer.stats()

    @property
    def buffer(self) -> JitterBuffer:
        """The current stream's jitter buffer (for readings)."""
        return self._buffer

    async def run(self) -> None:
        """Play until cancelled; returns if the sink fails."""
        await self._wakeup.wait()
        deadline = self._clock()
        try:
            while True:
                samples = self._play(deadline)
                if samples is not None and samples.size:
                    self._on_samples(samples)
                    await self._write(samples)
                deadline += FRAME_SECONDS
                now = self._clock()
                if deadline < now - 10 * FRAME_SECONDS:
                    deadline = now  # the loop stalled: do not catch up in a burst
                await asyncio.sleep(max(0.0, deadline - now))
        except AudioDeviceError as exc:
            logger.warning("audio sink failed, no more playback: %s", exc)

    def _play(self, now: float) -> Samples | None:
        decoder = self._decoder
        playout = self._buffer.pop(now)
        if playout is None or decoder is None:
            return None
        if playout.kind is FrameKind.AUDIO and playout.payload is not None:
            return decoder.decode(playout.payload)
        if playout.kind is FrameKind.FEC and playout.payload is not None:
            return decoder.recover(playout.payload)
        return decoder.conceal(playout.concealed_run)

    def close(self) -> None:
        """Free the decoder."""
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None


async def pump_track(
    track: Any,
    write: Callable[[Samples], Any],
    on_samples: Callable[[Samples], None],
) -> None:
    """aiortc's own receive path, where its buffer could not be replaced.

    Opus decodes to s16 stereo 48 kHz, PCMU/PCMA to s16 mono 8 kHz; the sink
    always wants s16 mono 48 kHz.
    """
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    try:
        while True:
            frame = await track.recv()
            if not isinstance(frame, av.AudioFrame):
                continue
            for converted in resampler.resample(frame):
                samples = converted.to_ndarray().reshape(-1).astype(np.int16)
                on_samples(samples)
                await write(samples)
    except MediaStreamError:
        logger.debug("remote track ended")
    except AudioDeviceError as exc:
        logger.warning("audio sink failed, no more playback: %s", exc)
