"""RFC 4733 telephone-events: the packet format and the two state machines (pure).

Why in the media and not only in signaling: a browser (or any WebRTC peer)
sends and expects keypad digits as RTP ``telephone-event`` packets on the
audio stream; a ``dtmf`` signaling frame never reaches it.

Sending (:class:`EventSender`) works by *replacing* outgoing audio packets:
while a digit plays, each audio packet the sender produces is turned into an
event packet with the same SSRC and sequence number, so the stream stays one
gap-free sequence and events are paced by the audio clock.
The rules followed:

* payload: event code, E bit, volume, duration (RFC 4733 §2.3); volume 10
  (-10 dBm0), a usual sender level;
* every packet of one event carries the RTP timestamp of the event's start
  (§2.2.1) and a duration that grows by one packet each time (§2.5.1.2);
* the first packet of an event has the RTP marker bit set (§2.2.2);
* the final packet has the E bit and is sent three times in all, with new
  sequence numbers and the same duration (§2.5.1.4), within the gap;
* the event clock is the audio clock (the payload type chosen is the
  telephone-event negotiated at the audio codec's rate), so a digit of
  ``TONE_S`` lasts ``TONE_S * rate`` units and the gap before the next is
  at least ``GAP_S`` of ordinary audio.

Receiving (:class:`EventReceiver`) reports each event once, on its first
packet: the updates and the three end packets carry the timestamp of an event
already reported and are duplicates (§2.5.2); packets with a duration of zero
carry no tone and are skipped.

This module only builds and parses bytes; timing comes from the RTP packets
handed to it. ``appliance.media.telephone_event`` connects it to aiortc.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

from appliance.media import dtmf

__all__ = [
    "EVENT_CODES",
    "EventReceiver",
    "EventSender",
    "RtpHeader",
    "build_event_payload",
    "parse_event_payload",
    "parse_rtp_header",
]

#: Event codes of RFC 4733 §3.2 (DTMF named events).
EVENT_CODES: dict[str, int] = {
    **{str(n): n for n in range(10)},
    "*": 10,
    "#": 11,
    "A": 12,
    "B": 13,
    "C": 14,
    "D": 15,
}
_DIGITS = {code: digit for digit, code in EVENT_CODES.items()}

VOLUME = 10  # -10 dBm0
END_REPEATS = 3  # §2.5.1.4: the final packet goes out three times
_EVENT = struct.Struct("!BBH")


@dataclass(frozen=True)
class RtpHeader:
    """The fields of an RTP header this module needs (RFC 3550 §5.1)."""

    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    header_length: int  # fixed header + CSRCs + extension, in bytes


def parse_rtp_header(packet: bytes) -> RtpHeader | None:
    """Return the header of an RTP packet, or None if it is not one."""
    if len(packet) < 12 or packet[0] >> 6 != 2:
        return None
    length = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:  # header extension
        if len(packet) < length + 4:
            return None
        (words,) = struct.unpack_from("!H", packet, length + 2)
        length += 4 + 4 * words
    if len(packet) < length:
        return None
    sequence, timestamp = struct.unpack_from("!HI", packet, 2)
    return RtpHeader(
        marker=bool(packet[1] & 0x80),
        payload_type=packet[1] & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        header_length=length,
    )


def build_event_payload(code: int, *, end: bool, duration: int) -> bytes:
    """Return the 4-byte payload of RFC 4733 §2.3."""
    return _EVENT.pack(code, (0x80 if end else 0) | VOLUME, min(duration, 0xFFFF))


def parse_event_payload(payload: bytes) -> tuple[int, bool, int] | None:
    """Return (event code, end bit, duration), or None if too short."""
    if len(payload) < _EVENT.size:
        return None
    code, flags, duration = _EVENT.unpack_from(payload)
    return code, bool(flags & 0x80), duration


def _rewrite(
    packet: bytes, header: RtpHeader, payload_type: int, marker: bool, ts: int
) -> bytes:
    """Same SSRC, sequence and extensions; new marker, payload type, timestamp."""
    head = bytearray(packet[: header.header_length])
    head[0] &= 0xDF  # no padding: the payload is replaced
    head[1] = (0x80 if marker else 0) | payload_type
    struct.pack_into("!I", head, 4, ts)
    return bytes(head)


@dataclass
class _Playing:
    code: int
    start_ts: int
    length: int  # event duration to reach, in clock units
    sent: int = 0  # packets sent for this event
    ends_left: int = END_REPEATS


class EventSender:
    """Turn outgoing audio packets into telephone-event packets while digits play.

    Args:
        payload_type: the negotiated telephone-event payload type.
        clock_rate: the RTP clock of the audio stream (and of the events).
    """

    def __init__(self, payload_type: int, clock_rate: int) -> None:
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self._queue: deque[str] = deque()
        self._playing: _Playing | None = None
        self._resume_ts: int | None = None  # audio until this timestamp
        self._last_ts: int | None = None
        self._step = 0  # clock units per packet, learnt from the stream
        self.events_sent = 0

    def queue(self, digits: str) -> None:
        """Queue digits (0-9 * # and ``w`` for a pause) after those queued before."""
        self._queue.extend(dtmf.validate(digits))

    @property
    def busy(self) -> bool:
        """Whether digits are still queued or playing."""
        return bool(self._queue) or self._playing is not None

    def process(self, packet: bytes) -> bytes:
        """Return the packet to send in place of the audio ``packet``."""
        header = parse_rtp_header(packet)
        if header is None:
            return packet
        ts = header.timestamp
        if self._last_ts is not None:
            step = (ts - self._last_ts) & 0xFFFFFFFF
            if 0 < step < self.clock_rate:  # ignore wraps and jumps
                self._step = step
        self._last_ts = ts
        if self._playing is None and not self._start(ts):
            return packet
        playing = self._playing
        assert playing is not None
        first = playing.sent == 0
        playing.sent += 1
        duration = min(playing.sent * self._step, playing.length)
        end = duration >= playing.length
        if end:
            playing.ends_left -= 1
            if playing.ends_left == 0:
                self._playing = None
                self.events_sent += 1
                # The gap runs from the end of the tone; the repeated end
                # packets go out within it.
                gap = round(dtmf.GAP_S * self.clock_rate)
                end_ts = playing.start_ts + playing.length + gap
                self._resume_ts = end_ts & 0xFFFFFFFF
        payload = build_event_payload(playing.code, end=end, duration=duration)
        head = _rewrite(packet, header, self.payload_type, first, playing.start_ts)
        return head + payload

    def _start(self, ts: int) -> bool:
        """Start the next queued digit at ``ts`` if its time has come."""
        if self._step == 0:
            return False  # one more packet to learn the packet length
        if self._resume_ts is not None:
            if ((ts - self._resume_ts) & 0xFFFFFFFF) >= 0x80000000:
                return False  # still in the gap or pause (ts < resume)
            self._resume_ts = None
        while self._queue:
            digit = self._queue.popleft()
            if digit == "w":
                self._resume_ts = (ts + round(dtmf.PAUSE_S * self.clock_rate)) & (
                    0xFFFFFFFF
                )
                return False
            self._playing = _Playing(
                code=EVENT_CODES[digit],
                start_ts=ts,
                length=round(dtmf.TONE_S * self.clock_rate),
            )
            return True
        return False


class EventReceiver:
    """Report each received telephone-event once (see the module docstring)."""

    def __init__(self) -> None:
        self._last_ts: int | None = None
        self.packets = 0  # event packets seen, duplicates included

    def add(self, header: RtpHeader, payload: bytes) -> str | None:
        """Return the digit if this packet starts a new event, else None."""
        self.packets += 1
        parsed = parse_event_payload(payload)
        if parsed is None:
            return None
        code, _end, duration = parsed
        if duration == 0 or header.timestamp == self._last_ts:
            return None
        self._last_ts = header.timestamp
        return _DIGITS.get(code)
