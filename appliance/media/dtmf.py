"""DTMF digit strings: validation and timing (pure).

``send_digits`` accepts 0-9, ``*``, ``#`` and ``w`` (a 500 ms pause). Tones last
160 ms with 70 ms gaps, Twilio's RTCDTMFSender settings (signaling-protocol.md
§5, "DTMF"); the far phone replays received digits with the same timing, so a
consumer (an IVR menu, the front panel) sees them at a realistic pace.
"""

from __future__ import annotations

from appliance.errors import InvalidArgumentError

__all__ = ["GAP_S", "PAUSE_S", "TONE_S", "duration", "schedule", "validate"]

TONE_S = 0.160
GAP_S = 0.070
PAUSE_S = 0.500
_DIGITS = frozenset("0123456789*#")


def validate(digits: str) -> str:
    """Return ``digits`` if it holds only 0-9 * # w.

    Raises:
        InvalidArgumentError: empty, or an illegal character (as the SDK throws).
    """
    if not isinstance(digits, str) or not digits:
        raise InvalidArgumentError("digits", "must be a non-empty string")
    bad = sorted({c for c in digits if c not in _DIGITS and c != "w"})
    if bad:
        raise InvalidArgumentError(
            "digits", f"illegal character(s) {''.join(bad)!r}; use 0-9 * # w"
        )
    return digits


def schedule(digits: str) -> list[tuple[float, str]]:
    """Return ``(offset_s, digit)`` for each digit, pauses applied."""
    result: list[tuple[float, str]] = []
    t = 0.0
    for c in digits:
        if c == "w":
            t += PAUSE_S
        elif c in _DIGITS:
            result.append((t, c))
            t += TONE_S + GAP_S
    return result


def duration(digits: str) -> float:
    """Seconds that playing ``digits`` takes, pauses and gaps included."""
    return sum(
        PAUSE_S if c == "w" else TONE_S + GAP_S
        for c in digits
        if c in _DIGITS or c == "w"
    )
