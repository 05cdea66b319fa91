"""The send path of a call: the microphone track and the phone's own Opus encoder.

aiortc's Opus encoder is fixed at 96 kb/s stereo with no FEC (anchors.md
§6.3): FFmpeg upmixes our mono frames (3 dB quieter at the far end) and
resamples them, and aiortc runs each 20 ms frame through the default thread
pool. A voice call needs none of that. :class:`SourceTrack` encodes the
phone's mono 48 kHz frames itself with libopus (``appliance.media.opus``)
and hands aiortc finished packets.

The hook is public aiortc behaviour, not a patch: a ``MediaStreamTrack`` may
return an encoded ``av.Packet`` instead of a frame (what ``MediaPlayer`` does
with ``decode=False``), and the sender then only packs it (the encoder's
``pack``, RTP timestamp from the packet's ``pts``), with no executor hop. So
the track returns packets when Opus is what we send, and plain frames for
aiortc's G.711/G.722 encoders otherwise. The SDP side goes through aiortc's
public codec table (``aiortc.codecs.CODECS``, as ``telephone_event`` does):
:func:`register_opus_fmtp` writes our Opus format parameters into it, which
aiortc then puts in every offer and answer (RFC 7587 §7):

* ``stereo=0; sprop-stereo=0``: we want mono and send mono;
* ``useinbandfec=1``: our decoder uses the far side's FEC
  (``appliance.media.playout``), so we ask for it.

We do not send ``maxaveragebitrate``: our decoder takes any rate, and the
browser's own default for mono is already 32 kb/s. We honour the far side's,
though: the encoder never exceeds a ``maxaveragebitrate`` it states.

The settings, measured on espeak-ng speech (two sentences, PESQ-WB through
our encoder and decoder, every 20th frame lost and rebuilt from FEC; figures
in docs/benchmarks.md):

* **32 kb/s** by default (``[device] opus_bitrate_bps``): the best of
  24/28/32 kb/s at every loss tried (3.75 / 3.44 at 0 / 5 % loss, against
  3.54 / 3.25 at 28 and 3.27 / 3.00 at 24 kb/s); the FEC copy takes part of
  the rate, which hurts most at the low end. It is also WebRTC's default
  for mono Opus, what a browser sends.
* **Wideband at most**: the handset reproduces up to about 7 kHz and PSTN
  legs carry less, and above wideband libopus leaves SILK, the mode that
  carries FEC, more often (measured at 5 % loss: 3.24 with fullband allowed,
  3.44 with the cap; at complexity 5-6 fullband lost the FEC altogether).
* **FEC for 5 % loss**: better than 10 % at 0, 5 and 10 % actual loss (the
  larger copy starves the primary frame). Without FEC a 5 % loss scored 1.93.
* **Complexity 8**: libopus 1.3's SILK encoder gives identical output at 8,
  9 and 10 (measured), so 8 is the cheapest setting of its best quality:
  about 0.34 ms per frame on the 2-core Xeon test machine, 1.7 % of a core
  (0.16 ms at 5, which costs 0.3-0.4 PESQ-WB). It runs inline in the send
  task on the event loop, with no thread-pool hop.
"""

from __future__ import annotations

import fractions
import logging
from collections.abc import Mapping
from typing import Any

import av
import numpy as np
from aiortc.codecs import CODECS
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from appliance.errors import AudioDeviceError
from appliance.media.devices import FramePacer
from appliance.media.frames import FRAME_SAMPLES, SAMPLE_RATE, AudioSource, Samples
from appliance.media.levels import level_from_dbfs, rms_dbfs
from appliance.media.opus import MAX_BITRATE, MIN_BITRATE, OPUS_SILENCE, OpusEncoder

__all__ = [
    "AUDIO_BAND_HZ",
    "COMPLEXITY",
    "DEFAULT_BITRATE",
    "EXPECTED_LOSS_PERCENT",
    "MAX_BITRATE",
    "MIN_BITRATE",
    "OPUS_FMTP",
    "Meters",
    "SourceTrack",
    "register_opus_fmtp",
    "send_bitrate",
]

logger = logging.getLogger(__name__)

#: Default target bit rate of our Opus stream, bits per second (FEC included).
DEFAULT_BITRATE = 32000
#: libopus complexity (0-10); see the module docstring.
COMPLEXITY = 8
#: The packet loss our in-band FEC is sized for.
EXPECTED_LOSS_PERCENT = 5
#: The widest band we code: wideband (see the module docstring).
AUDIO_BAND_HZ = 8000
#: Our Opus format parameters in SDP (RFC 7587 §7).
OPUS_FMTP: dict[str, int] = {"stereo": 0, "sprop-stereo": 0, "useinbandfec": 1}

_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)


def register_opus_fmtp() -> None:
    """Put :data:`OPUS_FMTP` on aiortc's Opus codec entry (idempotent).

    Raises:
        RuntimeError: aiortc's codec table has no Opus entry (its layout
            changed; the tests catch this first).
    """
    for codec in CODECS["audio"]:
        if codec.mimeType.lower() == "audio/opus":
            codec.parameters.update(OPUS_FMTP)
            return
    raise RuntimeError("aiortc lists no audio/opus codec")


def send_bitrate(configured: int, remote_fmtp: Mapping[str, str]) -> int:
    """Our bit rate, within the far side's ``maxaveragebitrate`` if it states one."""
    try:
        limit = int(remote_fmtp.get("maxaveragebitrate", ""))
    except ValueError:
        return configured
    return max(MIN_BITRATE, min(configured, limit))


class Meters:
    """State shared between the session, its send track and its receive pump."""

    def __init__(self) -> None:
        self.muted = False
        self.input_level = 0.0
        self.output_level = 0.0


class SourceTrack(MediaStreamTrack):
    """The send track: reads the source, applies mute, encodes or makes frames.

    Until :meth:`send_opus` it returns ``av.AudioFrame``s for aiortc's
    encoders; after it, Opus packets from our own encoder.
    """

    kind = "audio"

    def __init__(self, source: AudioSource, meters: Meters) -> None:
        super().__init__()
        self._source = source
        self._meters = meters
        self._pts = 0
        self._encoder: OpusEncoder | None = None
        # Paces silence once the source has failed; None while it works.
        self._fallback: FramePacer | None = None

    def send_opus(self, bitrate: int) -> bool:
        """Encode Opus here from now on; False if libopus is unavailable."""
        if self._encoder is not None:
            self._encoder.set_bitrate(bitrate)
            return True
        try:
            self._encoder = OpusEncoder(
                bitrate,
                COMPLEXITY,
                EXPECTED_LOSS_PERCENT,
                max_audio_hz=AUDIO_BAND_HZ,
            )
        except RuntimeError as exc:
            logger.warning("own Opus encoder unavailable, aiortc's sends: %s", exc)
            return False
        return True

    def send_frames(self) -> None:
        """Hand aiortc plain frames again (a codec other than Opus is sent)."""
        if self._encoder is not None:
            self._encoder.close()
            self._encoder = None

    @property
    def encoder(self) -> OpusEncoder | None:
        """Our Opus encoder while it is in use."""
        return self._encoder

    async def recv(self) -> av.AudioFrame | av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        samples = await self._read()
        self._meters.input_level = level_from_dbfs(rms_dbfs(samples))
        if self._meters.muted:
            # Muted means the peer gets digital silence; the source is still
            # read so its pacing (and a sound card's buffer) keeps going.
            samples = np.zeros_like(samples)
        pts = self._pts
        self._pts += samples.shape[0]
        encoder = self._encoder
        if encoder is not None:  # sources deliver FRAME_SAMPLES (frames.py)
            payload = encoder.encode(samples)
            if not samples.any():
                # SILK decodes silence as faint noise (about -80 dBFS); mute
                # must arrive as digital silence. The encoder still sees the
                # zeros, so its state (and the next packet's FEC) match.
                payload = OPUS_SILENCE
            packet = av.Packet(payload)
            packet.pts = pts
            packet.time_base = _TIME_BASE
            return packet
        frame = av.AudioFrame.from_ndarray(
            samples.reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = _TIME_BASE
        frame.pts = pts
        return frame

    async def _read(self) -> Samples:
        if self._fallback is None:
            try:
                return await self._source.read_frame()
            except AudioDeviceError as exc:
                # Keep the call up with silence rather than ending the RTP
                # stream: the user can still hear the far end.
                logger.warning("audio source failed, sending silence: %s", exc)
                self._fallback = FramePacer()
        await self._fallback.wait()
        return np.zeros(FRAME_SAMPLES, dtype=np.int16)

    def stop(self) -> None:
        super().stop()
        self.send_frames()
