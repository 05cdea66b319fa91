"""Which codec each direction of a call uses, read from the SDP (pure).

Why this exists: aiortc sends with the first codec of its negotiated list,
which it orders by the *local* preference, as offerer and as answerer alike.
The Twilio SDK in Chromium does the same with *its* preference: it reorders
the SDP it creates and the answers it receives (measured in
tests/phone/test_browser_sdk.py: offering [PCMU, Opus] and given an answer
[Opus, PCMU], it still sends PCMU). With the SDK's default order (PCMU, Opus)
against ours (Opus, PCMU) the two directions of one call ran different
codecs. Two stubborn sides cannot both win, so ours yields:

* as answerer we list the codecs we accept in the *offer's* order
  (:func:`sdp_order`) and send the first: the offerer's first choice among
  ours, which is what an offerer that keeps its own order sends;
* as offerer (our offer in our ``codecs`` order) we send the first codec of
  the answer: what an answerer that keeps its own order sends.

So ``codecs`` chooses which codecs a call may use and the order we offer; the
far side's order decides among them. Between two of our phones the caller's
order decides. RFC 3264 §6.1 and §7 allow either: each side may send any
codec both listed.

RFC 4733 ``telephone-event`` entries are listed but never chosen as a codec.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "TELEPHONE_EVENT",
    "Negotiated",
    "RtpCodec",
    "audio_codecs",
    "first_audio",
    "fmtp",
    "sdp_order",
]

TELEPHONE_EVENT = "telephone-event"

_AUDIO_MLINE = re.compile(r"^m=audio \d+ \S+ ([\d ]+)", re.MULTILINE)
_RTPMAP = re.compile(r"^a=rtpmap:(\d+) ([^/\s]+)/(\d+)", re.MULTILINE)
_FMTP = re.compile(r"^a=fmtp:(\d+) (.*?)\r?$", re.MULTILINE)
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


def fmtp(sdp: str, payload_type: int) -> dict[str, str]:
    """Return the format parameters (``a=fmtp``) of one payload type.

    Keys are lower case; a parameter without ``=`` maps to ``""``.
    """
    for pt, line in _FMTP.findall(sdp):
        if int(pt) != payload_type:
            continue
        params = {}
        for item in line.split(";"):
            key, _, value = item.strip().partition("=")
            if key:
                params[key.lower()] = value.strip()
        return params
    return {}


def sdp_order(listed: list[RtpCodec], acceptable: tuple[str, ...]) -> list[str]:
    """Return the acceptable audio codec names (lower case) in listed order."""
    wanted = {name.lower() for name in acceptable}
    ordered: list[str] = []
    for codec in listed:
        name = codec.name.lower()
        if name in wanted and name not in ordered and not codec.is_event:
            ordered.append(name)
    return ordered


def first_audio(listed: list[RtpCodec]) -> RtpCodec | None:
    """Return the first audio (not telephone-event) payload type listed."""
    return next((codec for codec in listed if not codec.is_event), None)


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
