"""Ring, ringback and indicator cadences as on/off patterns (pure).

A :class:`Cadence` is a repeating list of segment lengths in milliseconds that
alternate *on, off, on, off, ...*, starting with *on*. The pattern repeats
from ``elapsed_s = 0``; callers anchor ``elapsed_s`` at the moment they start
the pattern (for example when an incoming call starts ringing).

The national values come from ITU-T E.180 Supplement 2 ("Various tones used in
national networks") and the national specifications it lists: the US ring and
ringback cadence 2 s on / 4 s off with 440+480 Hz ringback; the UK double ring
0.4/0.2/0.4/2.0 s with 400+450 Hz; the CEPT (DE and most of the EU) 425 Hz
1 s on / 4 s off.

This module is pure: it takes elapsed time as an argument and never reads the
clock (style guide 4.1 #2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from appliance.errors import ConfigError

__all__ = [
    "COUNTRIES",
    "STATUS_FAST",
    "STATUS_SLOW",
    "STATUS_STEADY",
    "Cadence",
    "CountryTones",
    "ToneSpec",
    "is_on",
    "next_change",
    "tones_for",
]


@dataclass(frozen=True)
class Cadence:
    """A repeating on/off pattern.

    Attributes:
        on_off_ms: segment lengths in ms, alternating on and off and starting
            with on. An odd number of segments is allowed; the last *on* then
            joins the first *on* of the next period. Zero-length segments are
            allowed (``(1000, 0)`` is "always on").
    """

    on_off_ms: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.on_off_ms:
            raise ValueError("a cadence needs at least one segment")
        if any(ms < 0 for ms in self.on_off_ms):
            raise ValueError(f"negative segment in cadence {self.on_off_ms}")
        if sum(self.on_off_ms) <= 0:
            raise ValueError("a cadence must have a positive period")

    @property
    def period_s(self) -> float:
        """Length of one repetition, in seconds."""
        return sum(self.on_off_ms) / 1000.0

    @property
    def is_constant(self) -> bool:
        """Whether the output never changes (always on or always off)."""
        on_ms = sum(self.on_off_ms[0::2])
        return on_ms == 0 or on_ms == sum(self.on_off_ms)


@dataclass(frozen=True)
class ToneSpec:
    """An audible tone: frequencies mixed together, played with a cadence."""

    frequencies_hz: tuple[float, ...]
    cadence: Cadence


@dataclass(frozen=True)
class CountryTones:
    """The tones of one country.

    Attributes:
        country: ISO 3166 alpha-2 code (``"EU"`` stands for the CEPT tones).
        ring: the cadence of the ringer (bell, LED, buzzer) for incoming calls.
        ringback: what the caller hears while the far end rings.
        dial: what the user hears with the handset lifted and nothing dialled.
    """

    country: str
    ring: Cadence
    ringback: ToneSpec
    dial: ToneSpec


_US_RING = Cadence((2000, 4000))
_UK_RING = Cadence((400, 200, 400, 2000))
_CEPT_RING = Cadence((1000, 4000))
_FR_RING = Cadence((1500, 3500))
_JP_RING = Cadence((1000, 2000))

_CONTINUOUS = Cadence((1000, 0))


def _country(
    code: str, ring: Cadence, ringback: tuple[float, ...], dial: tuple[float, ...]
) -> CountryTones:
    return CountryTones(
        code, ring, ToneSpec(ringback, ring), ToneSpec(dial, _CONTINUOUS)
    )


#: Tones by country code. ``CA`` shares the North American plan; ``AU`` uses
#: the same double ring as the UK with a 400+450 Hz ringback (AS/ACIF S002).
#: Dial tones are continuous: 350+440 Hz (North America), 350+450 Hz (UK),
#: 425 Hz (CEPT; also AU, whose 25 Hz modulation is left out), 440 Hz (FR),
#: 400 Hz (JP).
COUNTRIES: dict[str, CountryTones] = {
    "US": _country("US", _US_RING, (440.0, 480.0), (350.0, 440.0)),
    "CA": _country("CA", _US_RING, (440.0, 480.0), (350.0, 440.0)),
    "GB": _country("GB", _UK_RING, (400.0, 450.0), (350.0, 450.0)),
    "AU": _country("AU", _UK_RING, (400.0, 450.0), (425.0,)),
    "DE": _country("DE", _CEPT_RING, (425.0,), (425.0,)),
    "EU": _country("EU", _CEPT_RING, (425.0,), (425.0,)),
    "FR": _country("FR", _FR_RING, (440.0,), (440.0,)),
    "JP": _country("JP", _JP_RING, (400.0,), (400.0,)),
}
# "UK" is not an ISO code but it is what people type.
COUNTRIES["UK"] = COUNTRIES["GB"]

#: Status LED patterns. Slow and fast blink follow common desk-phone practice
#: (1 s and 200 ms half-periods, see anchors.md "Status display / LEDs").
STATUS_STEADY = Cadence((1000, 0))
STATUS_SLOW = Cadence((1000, 1000))
STATUS_FAST = Cadence((200, 200))


def tones_for(country: str) -> CountryTones:
    """Return the tones of ``country`` (case-insensitive ISO code).

    Raises:
        ConfigError: the country is not in :data:`COUNTRIES`.
    """
    try:
        return COUNTRIES[country.upper()]
    except KeyError:
        known = ", ".join(sorted(COUNTRIES))
        raise ConfigError("country", f"unknown country {country!r} ({known})") from None


def _segment_at(pattern: Cadence, elapsed_s: float) -> tuple[bool, float]:
    """Return (is_on, absolute end time of the current run of that state)."""
    period_ms = sum(pattern.on_off_ms)
    elapsed_ms = max(elapsed_s, 0.0) * 1000.0
    cycles = math.floor(elapsed_ms / period_ms)
    position = elapsed_ms - cycles * period_ms
    start = 0.0
    index = 0
    # Find the segment holding `position` (zero-length segments never do).
    segments = pattern.on_off_ms
    while True:
        length = segments[index % len(segments)]
        if position < start + length:
            break
        start += length
        index += 1
    state = index % 2 == 0
    # Extend the run across following segments of the same state, including the
    # wrap-around (an odd-length pattern or zero-length segments).
    end = start + segments[index % len(segments)]
    index += 1
    while True:
        seg_state = (index % len(segments)) % 2 == 0
        length = segments[index % len(segments)]
        if length == 0:
            index += 1
            continue
        if seg_state != state:
            break
        end += length
        index += 1
    return state, (cycles * period_ms + end) / 1000.0


def is_on(pattern: Cadence, elapsed_s: float) -> bool:
    """Return whether the output is on ``elapsed_s`` seconds after the start.

    Negative elapsed times count as the start.
    """
    if pattern.is_constant:
        return sum(pattern.on_off_ms[0::2]) > 0
    return _segment_at(pattern, elapsed_s)[0]


def next_change(pattern: Cadence, elapsed_s: float) -> float:
    """Return the elapsed time (s) at which the output next changes state.

    The result is strictly greater than ``elapsed_s`` and on the same time base;
    ``math.inf`` for a constant pattern.
    """
    if pattern.is_constant:
        return math.inf
    return _segment_at(pattern, elapsed_s)[1]
