"""Digits at Twilio's pace: one string after another, each digit on time.

A call times digits twice: the far phone replays the digits a ``dtmf`` message
carries (all at once on the wire) as ``dtmf`` events spaced as tones would be,
and the sending phone plays its local feedback tones with the same spacing
(:mod:`appliance.media.dtmf` has the timing). Strings are queued back to back,
not overlapped, so digits sent one key press at a time come out in the order
they were pressed; nothing fires once the call has ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from appliance.media import dtmf

__all__ = ["DigitPacer"]


class DigitPacer:
    """Runs ``action(digit)`` per digit on the loop's clock, strings queued.

    Args:
        live: whether the call still runs; checked when each digit is due.
    """

    def __init__(self, live: Callable[[], bool]) -> None:
        self._live = live
        self._free_at = 0.0  # when the previous string ends (loop time)

    def play(self, digits: str, action: Callable[[str], None]) -> None:
        """Schedule ``digits`` after any string still playing."""
        loop = asyncio.get_running_loop()
        start = max(loop.time(), self._free_at)
        self._free_at = start + dtmf.duration(digits)
        for offset, digit in dtmf.schedule(digits):
            loop.call_at(start + offset, self.fire, action, digit)

    def fire(self, action: Callable[[str], None], digit: str) -> None:
        """Run ``action(digit)`` now, unless the call has ended."""
        if self._live():
            action(digit)
