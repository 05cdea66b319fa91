"""One call's WebRTC media: an aiortc RTCPeerConnection between a source and a sink.

A :class:`MediaSession` owns one ``RTCPeerConnection`` with one audio
transceiver (sendrecv). It sends what an :class:`~appliance.media.frames.AudioSource`
produces and writes what it receives, decoded and converted to 48 kHz mono
int16, to an :class:`~appliance.media.frames.AudioSink`. SDP is exchanged whole
(no trickle ICE): :meth:`MediaSession.create_offer` and
:meth:`MediaSession.accept_offer` return descriptions that already carry every
candidate, as Twilio's ``invite``/``answer`` messages expect
(signaling-protocol.md §2).

What this module adds to aiortc 1.16 / aioice 0.13:

* ICE host candidates restricted to configured addresses, and DSCP EF on the
  media socket (``appliance.media.ice``).
* No default STUN server: aiortc falls back to a public Google STUN server
  when ``iceServers`` is None, so we always pass a list.
* Codec preference order, mute, input/output levels on Twilio's 0..1 scale
  (``appliance.media.levels``) and a flat :class:`MediaStats`.

What aiortc lacks, and where the fix goes (anchors.md §6):

* **No telephone-event** (RFC 4733): added by
  ``appliance.media.telephone_event``; when the far side does not accept it,
  digits go by signaling (Twilio's own fallback, the ``dtmf`` message).
* **aiortc sends its own first choice** where the far side (the Twilio SDK
  in Chromium) sends its own, so the two directions differed: the far side's
  order now wins on both sides (``appliance.media.codecs``), and the codecs
  reported are those actually sent and received.
* **No AEC/NS/AGC**: not fixed here. Echo cancellation needs the far-end
  reference next to the capture, so it belongs in the audio backend (WebRTC
  APM or the handset codec's DSP), before the source.
* **Jitter buffer and loss concealment**: aiortc's audio buffer releases on
  packet arrival, smooths nothing, and never recovers from a lost packet
  (anchors.md §6). It is replaced by an adaptive buffer with Opus PLC and
  FEC (``appliance.media.jitter``, ``appliance.media.playout``), fed from the
  telephone-event tap.
* **Opus sending**: aiortc's encoder is 96 kb/s stereo without FEC, and its
  upmix made us 3 dB quieter at the far end. The send track encodes mono
  voice-rate Opus with in-band FEC itself and gives aiortc the packets
  (``appliance.media.sending``); our SDP says so (stereo=0; sprop-stereo=0;
  useinbandfec=1).

Threading: everything runs on the event loop. aiortc event handlers only
translate (start the receive pump, schedule ``on_failed``); the work is in
tasks that :meth:`MediaSession.close` cancels and awaits.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack

from appliance.errors import ConfigError, NegotiationError
from appliance.media import codecs as sdp_codecs
from appliance.media.frames import SAMPLE_RATE, AudioSink, AudioSource, Samples
from appliance.media.ice import (
    DSCP_EF_TOS,
    HOST_ADDRESSES,
    install_host_address_hook,
    mark_sockets,
)
from appliance.media.levels import level_from_dbfs, rms_dbfs
from appliance.media.playout import PlayoutPath, bypass_aiortc_buffers, pump_track
from appliance.media.sending import (
    DEFAULT_BITRATE,
    MAX_BITRATE,
    MIN_BITRATE,
    Meters,
    SourceTrack,
    register_opus_fmtp,
    send_bitrate,
)
from appliance.media.telephone_event import (
    EventTap,
    audio_capabilities,
    codec_preferences,
)
from appliance.tasks import TaskSet

__all__ = [
    "DSCP_EF_TOS",
    "MEDIA_CLOSED_GRACE_S",
    "IceServer",
    "MediaConfig",
    "MediaSession",
    "MediaStats",
    "supported_codecs",
]

logger = logging.getLogger(__name__)

#: Seconds a connection aiortc closed by itself may wait for the call's
#: hang-up (which closes the session) before it counts as failed media.
MEDIA_CLOSED_GRACE_S = 2.0


def supported_codecs() -> tuple[str, ...]:
    """Return the audio codec names aiortc can negotiate (mime subtypes)."""
    names = (c.mimeType.split("/", 1)[1] for c in audio_capabilities())
    return tuple(name for name in names if name != sdp_codecs.TELEPHONE_EVENT)


@dataclass(frozen=True)
class IceServer:
    """A STUN or TURN server (``stun:host:port``, ``turn:host:port?transport=udp``)."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def __post_init__(self) -> None:
        if not self.urls:
            raise ConfigError("ice_servers.urls", "needs at least one URL")


@dataclass(frozen=True)
class MediaConfig:
    """How a :class:`MediaSession` negotiates and sends.

    Attributes:
        ice_servers: STUN/TURN servers; ``()`` means none at all (never
            aiortc's default public STUN server).
        local_addresses: restrict ICE host candidates to these IP addresses
            (tests use ``("127.0.0.1",)``); None lets aioice enumerate the
            interfaces (it skips loopback).
        codecs: offered codecs in preference order, by mime subtype,
            case-insensitive ("opus", "PCMU", "PCMA", "G722").
        dscp: mark the media socket EF (DSCP 46) after gathering.
        telephone_event: offer and accept RFC 4733 telephone-event, so that
            digits go in the media when the far side accepts it too.
        opus_bitrate: the bit rate we send Opus at, bits per second
            (``appliance.media.sending`` says why 32 kb/s by default).

    Raises:
        ConfigError: an address is not an IP address, a codec is unknown, or
            the Opus bit rate is out of range.
    """

    ice_servers: tuple[IceServer, ...] = ()
    local_addresses: tuple[str, ...] | None = None
    codecs: tuple[str, ...] = ("opus", "PCMU")
    dscp: bool = True
    telephone_event: bool = True
    opus_bitrate: int = DEFAULT_BITRATE

    def __post_init__(self) -> None:
        if not MIN_BITRATE <= self.opus_bitrate <= MAX_BITRATE:
            raise ConfigError(
                "opus_bitrate",
                f"must be from {MIN_BITRATE} to {MAX_BITRATE} bits per second",
            )
        for address in self.local_addresses or ():
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ConfigError(
                    "local_addresses", f"{address!r} is not an IP address"
                ) from None
        if not self.codecs:
            raise ConfigError("codecs", "needs at least one codec")
        known = {name.lower() for name in supported_codecs()}
        for name in self.codecs:
            if name.lower() not in known:
                raise ConfigError(
                    "codecs",
                    f"unsupported codec {name!r} (supported: "
                    f"{', '.join(supported_codecs())})",
                )


@dataclass(frozen=True)
class MediaStats:
    """Counters of the call so far, flattened from ``RTCPeerConnection.getStats()``.

    Attributes:
        packets_sent: RTP packets sent.
        packets_received: RTP packets received.
        packets_lost: packets the remote stream lost (from sequence numbers).
        jitter_s: inter-arrival jitter of the received stream in seconds
            (RFC 3550 §6.4.1, converted from RTP clock units).
        rtt_s: round-trip time from the peer's RTCP receiver reports, or None
            before the first one.
    """

    packets_sent: int = 0
    packets_received: int = 0
    packets_lost: int = 0
    jitter_s: float = 0.0
    rtt_s: float | None = None


_CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) \d+ ", re.MULTILINE)


class MediaSession:
    """The media of one call over one aiortc ``RTCPeerConnection``.

    Use either :meth:`create_offer` then :meth:`apply_answer` (outgoing call),
    or :meth:`accept_offer` (incoming call); then :meth:`close` exactly when
    the call ends (it is idempotent). The session owns ``source`` and
    ``sink`` from construction on and closes them in :meth:`close`.

    Args:
        config: negotiation and network settings.
        source: what to send (e.g. the handset microphone).
        sink: where received audio goes (e.g. the handset earpiece).
        on_failed: called once, from the event loop, if the connection fails
            (ICE or DTLS, consent expired, or closed under us with no
            :meth:`close` within ``MEDIA_CLOSED_GRACE_S``); the owner should
            then end the call.

    Example::

        session = MediaSession(MediaConfig(), open_source("alsa:mic"),
                               open_sink("alsa:earpiece"))
        answer_sdp = await session.accept_offer(offer_sdp)
        ...
        await session.close()
    """

    def __init__(
        self,
        config: MediaConfig,
        source: AudioSource,
        sink: AudioSink,
        *,
        on_failed: Callable[[], None] | None = None,
    ) -> None:
        install_host_address_hook()
        register_opus_fmtp()
        self.config = config
        self._source = source
        self._sink = sink
        self._on_failed = on_failed
        self._meters = Meters()
        self._tasks = TaskSet(logger, "media")
        self._receiving = False
        self._failed_reported = False
        self._closed = False
        self._close_done = asyncio.Event()
        self._negotiated = sdp_codecs.Negotiated((), None)
        self._last_stats = MediaStats()

        servers = [
            RTCIceServer(
                urls=list(server.urls),
                username=server.username,
                credential=server.credential,
            )
            for server in config.ice_servers
        ]
        # Always a list: iceServers=None would make aiortc use a public STUN
        # server (stun.l.google.com), which must never happen implicitly.
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self._track = SourceTrack(source, self._meters)
        self._transceiver = self._pc.addTransceiver(self._track, direction="sendrecv")
        self._transceiver.setCodecPreferences(self._codec_preferences(config.codecs))
        #: RFC 4733 digits in the media (``appliance.media.telephone_event``).
        self.events = EventTap(self._transceiver.sender.transport)
        #: The receive path: jitter buffer, concealment, playout clock.
        self.playout = PlayoutPath(sink.write_frame, self._metered, time.monotonic)
        self._bypassed = bypass_aiortc_buffers(self._pc)
        if self._bypassed:
            self.events.on_audio = self.playout.feed
        else:
            logger.warning("aiortc jitter buffer not found; using aiortc's path")
        self._pc.on("track", self._on_track)
        self._pc.on("connectionstatechange", self._on_connection_state)

    # -- negotiation -------------------------------------------------------

    async def create_offer(self) -> str:
        """Create the local offer, gather candidates and return the whole SDP.

        Raises:
            NegotiationError: (53400) the session is closed or the offer could
                not be created or applied.
        """
        self._check_open()
        try:
            offer = await self._pc.createOffer()
            await self._set_local(offer)
        except NegotiationError:
            raise
        except Exception as exc:  # aiortc raises assorted types
            raise NegotiationError(53400, f"cannot create offer: {exc}") from exc
        return self._local_sdp()

    async def apply_answer(self, sdp: str) -> None:
        """Apply the remote answer to our offer; media starts flowing after this.

        Raises:
            NegotiationError: (53402) the answer is malformed, has no common
                codec, or does not fit the current state.
        """
        self._check_open(code=53402)
        answer = sdp_codecs.audio_codecs(sdp)
        order = sdp_codecs.sdp_order(answer, self._order)
        if not order:
            raise NegotiationError(53402, "the answer accepts none of our codecs")
        # Send the answer's first codec, as the far side does (see
        # appliance.media.codecs): aiortc's sender follows the preferences.
        self._transceiver.setCodecPreferences(self._codec_preferences(order))
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))
        except Exception as exc:
            # aiortc's SDP parser raises whatever built-in exception bad input
            # provokes (ValueError, KeyError, IndexError...), plus its own
            # W3C-named errors: all of them mean "cannot apply".
            raise NegotiationError(53402, f"cannot apply answer: {exc}") from exc
        self._negotiated_as(answer, sdp_codecs.first_audio(answer), sdp)

    async def accept_offer(self, sdp: str) -> str:
        """Apply a remote offer and return our complete answer SDP.

        Raises:
            NegotiationError: 53402 if the offer cannot be applied (malformed,
                no common codec), 53400 if the answer cannot be created.
        """
        self._check_open(code=53402)
        order = sdp_codecs.sdp_order(sdp_codecs.audio_codecs(sdp), self._order)
        if not order:
            # aiortc would answer with telephone-event alone.
            raise NegotiationError(53402, "the offer has none of our codecs")
        # Answer in the offer's order and send its first (appliance.media.codecs).
        self._transceiver.setCodecPreferences(self._codec_preferences(order))
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        except Exception as exc:  # see apply_answer
            raise NegotiationError(53402, f"cannot apply offer: {exc}") from exc
        try:
            answer = await self._pc.createAnswer()
            await self._set_local(answer)
        except Exception as exc:  # see apply_answer
            raise NegotiationError(53400, f"cannot create answer: {exc}") from exc
        local = self._local_sdp()
        ours = sdp_codecs.audio_codecs(local)
        self._negotiated_as(ours, sdp_codecs.first_audio(ours), sdp)
        return local

    async def _set_local(self, description: RTCSessionDescription) -> None:
        token = HOST_ADDRESSES.set(self.config.local_addresses)
        try:
            # Candidate gathering happens inside setLocalDescription; the
            # tasks aiortc spawns for it copy this context.
            await self._pc.setLocalDescription(description)
        finally:
            HOST_ADDRESSES.reset(token)
        if self.config.dscp:
            # Sockets exist now, before any connectivity check is sent:
            # aiortc only schedules its connect task, which has not run yet.
            mark_sockets(self._pc, DSCP_EF_TOS)

    def _local_sdp(self) -> str:
        description = self._pc.localDescription
        if description is None:
            raise NegotiationError(53400, "no local description")
        return description.sdp

    @property
    def _order(self) -> tuple[str, ...]:
        return tuple(name.lower() for name in self.config.codecs)

    def _negotiated_as(
        self,
        answer: list[sdp_codecs.RtpCodec],
        send: sdp_codecs.RtpCodec | None,
        remote_sdp: str,
    ) -> None:
        if not self.config.telephone_event:
            answer = [codec for codec in answer if not codec.is_event]
        self._negotiated = sdp_codecs.Negotiated(tuple(answer), send)
        # Our encoder for Opus (appliance.media.sending); aiortc's otherwise.
        if send is not None and send.name.lower() == "opus":
            remote = sdp_codecs.fmtp(remote_sdp, send.payload_type)
            self._track.send_opus(send_bitrate(self.config.opus_bitrate, remote))
        else:
            self._track.send_frames()
        self.events.configure(self._negotiated)
        self.playout.configure(self._negotiated)
        logger.debug("sending %s, events %s", send, self._negotiated.send_event())

    def _check_open(self, code: int = 53400) -> None:
        if self._closed:
            raise NegotiationError(code, "the media session is closed")

    def _codec_preferences(self, names: tuple[str, ...] | list[str]) -> list[Any]:
        return codec_preferences(names, events=self.config.telephone_event)

    # -- aiortc event handlers: translate only -----------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio" or self._receiving or self._closed:
            return
        self._receiving = True
        if self._bypassed:
            self._spawn(self.playout.run())
        else:
            self._spawn(pump_track(track, self._sink.write_frame, self._metered))

    def _on_connection_state(self) -> None:
        state = self._pc.connectionState
        logger.debug("= media connection %s", state)
        if self._failed_reported or self._closed:
            return
        loop = asyncio.get_running_loop()
        if state == "failed":
            # Run the owner's code outside aiortc's event emission.
            loop.call_soon(self._report_failed)
        elif state == "closed":
            # aiortc closes the connection itself when every DTLS transport
            # has closed: after consent freshness expired (aioice closes ICE
            # first, so the state is never "failed"), or after the far end
            # closed its own. The latter comes with a hang-up on signaling,
            # which closes this session meanwhile; if none comes, the call
            # has no media left: failed either way.
            loop.call_later(MEDIA_CLOSED_GRACE_S, self._report_failed)

    def _report_failed(self) -> None:
        if self._failed_reported or self._closed:
            return
        self._failed_reported = True
        if self._on_failed is not None:
            self._on_failed()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.spawn(coro, "media-receive")

    def _metered(self, samples: Samples) -> None:
        self._meters.output_level = level_from_dbfs(rms_dbfs(samples))

    # -- controls and readings ---------------------------------------------

    def set_muted(self, muted: bool) -> None:
        """Send silence instead of the source's audio while ``muted``."""
        self._meters.muted = muted

    @property
    def is_muted(self) -> bool:
        """Whether the outgoing audio is muted."""
        return self._meters.muted

    @property
    def input_level(self) -> float:
        """Level (0..1) of the last frame read from the source, before mute."""
        return self._meters.input_level

    @property
    def output_level(self) -> float:
        """Level (0..1) of the last frame written to the sink."""
        return self._meters.output_level

    @property
    def codec(self) -> str | None:
        """The codec we send, by mime subtype (e.g. ``"opus"``), once negotiated."""
        send = self._negotiated.send
        return send.name if send is not None else None

    @property
    def send_bitrate(self) -> int | None:
        """Our Opus encoder's target bit rate (None while aiortc's encoder sends)."""
        encoder = self._track.encoder
        return encoder.bitrate if encoder is not None else None

    @property
    def receive_codec(self) -> str | None:
        """The codec of the audio received so far (None before the first packet)."""
        return self._negotiated.name_of(self.events.received_audio_pt)

    @property
    def connection_state(self) -> str:
        """aiortc's connection state: new, connecting, connected, failed, closed."""
        return str(self._pc.connectionState)

    async def stats(self) -> MediaStats:
        """Return the packet counters, jitter and RTT collected so far.

        After :meth:`close` this returns the last figures read before it.
        """
        if self._closed:
            return self._last_stats
        report = await self._pc.getStats()
        sent = received = lost = 0
        jitter_units = 0
        rtt: float | None = None
        for entry in report.values():
            kind = getattr(entry, "type", None)
            if kind == "outbound-rtp":
                sent += int(entry.packetsSent)
            elif kind == "inbound-rtp":
                received += int(entry.packetsReceived)
                lost += int(entry.packetsLost)
                jitter_units = max(jitter_units, int(entry.jitter))
            elif kind == "remote-inbound-rtp":
                value = getattr(entry, "roundTripTime", None)
                if value is not None:
                    rtt = float(value)
        send = self._negotiated.send
        clock_rate = send.clock_rate if send is not None else SAMPLE_RATE
        self._last_stats = MediaStats(
            packets_sent=sent,
            packets_received=received,
            packets_lost=lost,
            jitter_s=jitter_units / clock_rate,
            rtt_s=rtt,
        )
        return self._last_stats

    def local_candidate_addresses(self) -> list[str]:
        """Return the addresses of the candidates in the local SDP (for tests)."""
        description = self._pc.localDescription
        if description is None:
            return []
        return _CANDIDATE.findall(description.sdp)

    # -- teardown ----------------------------------------------------------

    async def close(self) -> None:
        """Stop media, close the connection, the sink and the source.

        Idempotent; a second caller waits for the first to finish.
        """
        if self._closed:
            await self._close_done.wait()
            return
        self._closed = True
        try:
            self._track.stop()
            # Stops the sender (cancelling a pending source read) and the
            # receiver (ending the remote track, so the pump returns).
            await self._pc.close()
        finally:
            await self._tasks.close()
            self.playout.close()
            # The pump is gone, so nothing writes to the sink any more.
            try:
                self._sink.close()
            finally:
                self._source.close()
                self._close_done.set()
