"""RFC 4733 telephone-events on an aiortc call: the hook into aiortc 1.16.

aiortc knows no ``telephone-event`` payload (anchors.md §1.1): it neither offers
it nor sends it, and drops it on receipt as an unknown payload type. Three
small hooks add it, each guarded so that a changed aiortc only loses RFC 4733
(digits then go by signaling, as before) and never the call:

1. **SDP.** :func:`register_codecs` appends ``telephone-event/48000`` (PT 110)
   and ``telephone-event/8000`` (PT 126, the numbers Chrome uses) to aiortc's
   table of audio codecs, so they can be named in codec preferences; a
   session lists the one matching each audio clock it offers (RFC 4733 §2.1:
   events share the audio stream's clock). When the far side offers other
   numbers, aiortc answers with the far side's (RFC 3264 §6.1). aiortc never
   picks them to encode: they always come after an audio codec.
2. **Sending.** Every RTP packet aiortc sends goes through the DTLS
   transport's ``_send_rtp`` (before SRTP protection). :class:`EventTap`
   wraps that method on this session's transport instance and lets an
   :class:`~appliance.media.rfc4733.EventSender` replace audio packets by
   event packets while digits play (same SSRC and sequence, RFC 4733 §2.5.1).
3. **Receiving.** Decrypted RTP goes through the transport's
   ``_handle_rtp_data`` before aiortc routes it to the decoder. The tap hands
   packets of a telephone-event payload type to an
   :class:`~appliance.media.rfc4733.EventReceiver` and passes aiortc a packet
   of *silence* in the negotiated audio codec instead, with the same sequence
   number and the timestamp the audio would have had (our sender replaces
   audio packets by events one for one). Dropping them instead would leave a
   hole in the sequence: the receive buffer (``appliance.media.jitter``)
   would conceal each as a loss (aiortc's own buffer, when it is in use,
   stalls across a hole), and the statistics would count the events as lost.
   Everything else
   passes on untouched; the tap notes the payload type of the audio received
   and hands every audio packet (the silence in place of events included) to
   ``on_audio``, the receive path's jitter buffer (``appliance.media.playout``),
   before aiortc sees it.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import RTCRtpCodecParameters, RTCRtpSender
from aiortc.codecs import CODECS

from appliance.media.codecs import TELEPHONE_EVENT, Negotiated
from appliance.media.opus import OPUS_SILENCE
from appliance.media.rfc4733 import (
    EventReceiver,
    EventSender,
    RtpHeader,
    parse_rtp_header,
)

__all__ = [
    "EVENT_PAYLOAD_TYPES",
    "EventTap",
    "audio_capabilities",
    "codec_preferences",
    "register_codecs",
]

logger = logging.getLogger(__name__)

# One packet of silence per audio codec (mime subtype, lower case); the
# G.711 ones are as long as the packet (one byte per 8 kHz sample).
_G711_SILENCE = {"pcmu": 0xFF, "pcma": 0xD5}

_DEFAULT_PACKET_S = 0.020
_SEQ_TS = struct.Struct("!HI")

#: Our telephone-event payload types by clock rate.
EVENT_PAYLOAD_TYPES = {48000: 110, 8000: 126}
# The events we take (RFC 4733 §2.4.1 fmtp: DTMF 0-15), written differently
# for each clock: aiortc matches codec preferences by mime type and fmtp only,
# not by clock rate, so two equal entries would be confused.
_EVENT_LISTS = {48000: "0-15", 8000: "0-11,12-15"}
_MIME = f"audio/{TELEPHONE_EVENT}"


def register_codecs() -> None:
    """Add telephone-event at both clocks to aiortc's audio codecs (idempotent)."""
    audio = CODECS["audio"]
    have = {(c.mimeType.lower(), c.clockRate) for c in audio}
    for rate, pt in EVENT_PAYLOAD_TYPES.items():
        if (_MIME, rate) not in have:
            audio.append(
                RTCRtpCodecParameters(
                    mimeType=_MIME,
                    clockRate=rate,
                    channels=1,
                    payloadType=pt,
                    parameters={_EVENT_LISTS[rate]: None},
                )
            )


def audio_capabilities() -> list[Any]:
    """aiortc's audio codec capabilities, telephone-event included."""
    register_codecs()
    return list(RTCRtpSender.getCapabilities("audio").codecs)


def codec_preferences(names: tuple[str, ...] | list[str], *, events: bool) -> list[Any]:
    """Capabilities for ``names`` in order, then telephone-event at their clocks."""
    capabilities = audio_capabilities()
    preferred = [
        codec
        for name in names
        for codec in capabilities
        if codec.mimeType.split("/", 1)[1].lower() == name.lower()
    ]
    if events:
        clocks = {codec.clockRate for codec in preferred}
        preferred += [
            codec
            for codec in capabilities
            if codec.mimeType.lower() == _MIME and codec.clockRate in clocks
        ]
    return preferred


def _is_rtcp(data: bytes) -> bool:
    # RFC 5761 §4: with rtcp-mux, packet types 192-223 are RTCP.
    return len(data) >= 2 and 192 <= data[1] <= 223


class EventTap:
    """Sends and receives telephone-events on one DTLS transport.

    Args:
        transport: the session's ``RTCDtlsTransport`` (all media is bundled on
            it).

    Attributes:
        on_digit: called from the event loop with each digit received.
        on_audio: called with each audio RTP packet received (decrypted).
    """

    def __init__(self, transport: Any) -> None:
        self.on_digit: Callable[[str], None] | None = None
        self.on_audio: Callable[[bytes], None] | None = None
        self._sender: EventSender | None = None
        self._audio_pt: int | None = None
        self._receivers: dict[int, EventReceiver] = {}
        self._codec_names: dict[int, str] = {}
        self.received_audio_pt: int | None = None
        # The last audio packet passed on (sequence, timestamp, header bytes)
        # and the timestamp step per packet, for the silence in place of events.
        self._last_audio: tuple[int, int, bytes] | None = None
        self._step = 0
        self.installed = False
        send = getattr(transport, "_send_rtp", None)
        handle = getattr(transport, "_handle_rtp_data", None)
        if not callable(send) or not callable(handle):
            logger.warning(
                "aiortc transport hooks not found; DTMF goes by signaling only"
            )
            return
        self._send_original: Callable[[bytes], Awaitable[None]] = send
        self._handle_original: Callable[..., Awaitable[None]] = handle
        transport._send_rtp = self._send_rtp
        transport._handle_rtp_data = self._handle_rtp_data
        self.installed = True

    def configure(self, negotiated: Negotiated) -> None:
        """Use what was negotiated: our audio payload type and the event ones."""
        send, event = negotiated.send, negotiated.send_event()
        if send is None:
            return
        self._audio_pt = send.payload_type
        if event is not None and self.installed:
            self._sender = EventSender(event.payload_type, send.clock_rate)
        self._receivers = {c.payload_type: EventReceiver() for c in negotiated.events()}
        self._codec_names = {c.payload_type: c.name.lower() for c in negotiated.answer}
        # Until two audio packets in a row show it: 20 ms, WebRTC's packet time.
        self._step = self._step or round(send.clock_rate * _DEFAULT_PACKET_S)

    @property
    def can_send(self) -> bool:
        """Whether the far side accepted telephone-event at our audio clock."""
        return self._sender is not None

    def send(self, digits: str) -> None:
        """Queue digits (0-9 * # w) to go out as events after any still queued.

        Raises:
            InvalidArgumentError: illegal characters.
            RuntimeError: telephone-event was not negotiated (see can_send).
        """
        if self._sender is None:
            raise RuntimeError("telephone-event was not negotiated")
        self._sender.queue(digits)

    @property
    def packets_received(self) -> int:
        """Event packets received, duplicates included."""
        return sum(r.packets for r in self._receivers.values())

    @property
    def events_sent(self) -> int:
        """Digits whose final packets have all gone out."""
        return self._sender.events_sent if self._sender is not None else 0

    async def _send_rtp(self, data: bytes) -> None:
        sender = self._sender
        if (
            sender is not None
            and sender.busy
            and not _is_rtcp(data)
            and data[1] & 0x7F == self._audio_pt
        ):
            data = sender.process(data)
        await self._send_original(data)

    async def _handle_rtp_data(self, data: bytes, arrival_time_ms: int) -> None:
        if len(data) >= 12:
            receiver = self._receivers.get(data[1] & 0x7F)
            if receiver is None:
                self._note_audio(data)  # the usual case: kept cheap
            else:
                header = parse_rtp_header(data)
                if header is None:
                    return
                digit = receiver.add(header, data[header.header_length :])
                if digit is not None and self.on_digit is not None:
                    # Outside aiortc's receive loop, as the session's handlers.
                    asyncio.get_running_loop().call_soon(self.on_digit, digit)
                silence = self._silence_for(header)
                if silence is None:
                    return
                data = silence
            if self.on_audio is not None:
                self.on_audio(data)
        await self._handle_original(data, arrival_time_ms=arrival_time_ms)

    def _note_audio(self, data: bytes) -> None:
        self.received_audio_pt = data[1] & 0x7F
        sequence, timestamp = _SEQ_TS.unpack_from(data, 2)
        last = self._last_audio
        if last is not None and (sequence - last[0]) & 0xFFFF == 1:
            step = (timestamp - last[1]) & 0xFFFFFFFF
            if 0 < step <= 0xFFFF:
                self._step = step
        self._last_audio = (sequence, timestamp, data[:12])

    def _silence_for(self, header: RtpHeader) -> bytes | None:
        """A silent audio packet in place of the event packet ``header``."""
        last = self._last_audio
        if last is None or self._step == 0 or self.received_audio_pt is None:
            return None
        ahead = (header.sequence - last[0]) & 0xFFFF
        if not 0 < ahead < 0x8000:
            return None  # older than the last audio: aiortc drops it anyway
        name = self._codec_names.get(self.received_audio_pt, "")
        if name == "opus":
            payload = OPUS_SILENCE
        elif name in _G711_SILENCE:
            payload = bytes([_G711_SILENCE[name]]) * self._step
        else:
            return None  # no silence frame at hand: leave the hole
        timestamp = (last[1] + ahead * self._step) & 0xFFFFFFFF
        head = bytearray(last[2])
        head[0] &= 0xC0  # no padding, CSRCs or extension
        head[1] = self.received_audio_pt
        struct.pack_into("!HI", head, 2, header.sequence, timestamp)
        return bytes(head) + payload
