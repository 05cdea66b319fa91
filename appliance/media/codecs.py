"""Which codec each direction of a call uses, read from the SDP (pure).

Why this exists: aiortc sends with the first codec of its own negotiated list,
which it always orders by the *local* preference, on both sides. With two
different preference orders (the Twilio SDK's default is PCMU then Opus, ours
Opus then PCMU) the two directions of one call then ran different codecs.
RFC 3264 gives each side one rule: the answerer sends the offer's most
preferred codec that it accepted (§6.1), the offerer the answer's first one
(§7 "SHOULD"). Both land on the same codec only if the answer lists first the
codec the offer preferred. So:

* as answerer we list the accepted codecs in the *offer's* order
  (:func:`answer_order`); our ``codecs`` setting then chooses which codecs
  are acceptable, and the caller's order chooses among them;
* as offerer our order is the offer's, and we send our most preferred codec
  the answer accepted (:func:`offerer_send_codec`): the codec an answerer
  following §6.1 sends back.

RFC 4733 ``telephone-event`` entries are listed but never chosen as a codec.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "TELEPHONE_EVENT",
    "Negotiated",
    "RtpCodec",
    "answer_order",
    "audio_codecs",
    "offerer_send_codec",
]

TELEPHONE_EVENT = "telephone-event"

_AUDIO_MLINE = re.compile(r"^m=audio \d+ \S+ ([\d ]+)", re.MULTILINE)
_RTPMAP = re.compile(r"^a=rtpmap:(\d+) ([^/\s]+)/(\d+)", re.MULTILINE)
_STATIC = {0: ("PCMU", 8000), 8: ("PCMA", 8000), 9: ("G722", 8000)}


@dataclass(frozen=True)
class RtpCodec:
    """One payload type of an SDP audio section."""

    name: str  # mime subtype as written ("opus", "PCMU", "telephone-event")
    clock_rate: int
    payload_type: int

    @property
    def is_event(self) -> bool:
        """Whether this is RFC 4733 telephone-event rather than audio."""
        return self.name.lower() == TELEPHONE_EVENT


def audio_codecs(sdp: str) -> list[RtpCodec]:
    """Return the payload types of the first audio section, in listed order."""
    match = _AUDIO_MLINE.search(sdp)
    if match is None:
        return []
    maps = {int(pt): (name, int(rate)) for pt, name, rate in _RTPMAP.findall(sdp)}
    codecs = []
    for token in match.group(1).split():
        pt = int(token)
        found = maps.get(pt) or _STATIC.get(pt)
        if found is not None:
            codecs.append(RtpCodec(found[0], found[1], pt))
    return codecs


def answer_order(offer: list[RtpCodec], acceptable: tuple[str, ...]) -> list[str]:
    """Return the acceptable codec names in the order the offer lists them."""
    wanted = {name.lower() for name in acceptable}
    ordered: list[str] = []
    for codec in offer:
        name = codec.name.lower()
        if name in wanted and name not in ordered and not codec.is_event:
            ordered.append(name)
    return ordered


def offerer_send_codec(
    answer: list[RtpCodec], preferences: tuple[str, ...]
) -> RtpCodec | None:
    """Return our most preferred audio codec among those the answer accepted."""
    for name in preferences:
        for codec in answer:
            if codec.name.lower() == name.lower() and not codec.is_event:
                return codec
    return None


@dataclass(frozen=True)
class Negotiated:
    """The outcome of one offer/answer for audio.

    Attributes:
        answer: the answer's payload types, in its order.
        send: the audio codec we send (None if no audio codec is common).
    """

    answer: tuple[RtpCodec, ...]
    send: RtpCodec | None

    def events(self) -> tuple[RtpCodec, ...]:
        """The telephone-event payload types both sides accepted."""
        return tuple(c for c in self.answer if c.is_event)

    def send_event(self) -> RtpCodec | None:
        """The telephone-event at the clock of the audio we send, if accepted."""
        if self.send is None:
            return None
        rate = self.send.clock_rate
        return next((c for c in self.events() if c.clock_rate == rate), None)

    def name_of(self, payload_type: int | None) -> str | None:
        """The codec name of a negotiated payload type."""
        found = [c.name for c in self.answer if c.payload_type == payload_type]
        return found[0] if found else None
