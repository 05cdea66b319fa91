"""When a playback stream gives back part of its pre-fill (pure: times in).

A playback stream starts with :data:`PREFILL_MS` of silence in its ring, and
that silence stays as delay for as long as the stream plays. A stream's
first second is its riskiest (the device and the sound server start, a
call's first packets arrive in a burst), so the full pre-fill is right at the
start; later, a quarter of the phone's added mouth-to-ear delay is buffer
that only guards against stalls this machine may never have (docs/audio.md,
the delay budget). So:

* once the stream has played :data:`SETTLE_S` since its (re)start without an
  underrun, the part above :data:`SETTLED_PREFILL_MS` is left out of the
  next quiet chunk (RMS below :data:`QUIET_RMS`, about -40 dBFS: a pause in
  speech, where 20 ms missing is not heard), or of any chunk once
  :data:`FORCE_SETTLE_S` have passed;
* an underrun shows the machine stalls: the stream restarts with the full
  pre-fill and keeps it until it has played :data:`CALM_AFTER_UNDERRUN_S`
  without another (fast to grow, slow to shrink, as jitter buffers are).
  Settling again after a few seconds would trade an audible gap every few
  seconds on a busy machine for 20 ms of delay, while one stall (a sound
  server starting another stream, a burst of work) should not cost the rest
  of a long call;
* a restart after the producer fell silent (the far side stopped sending)
  is no such evidence, and may settle again.

The sink calls :meth:`PrefillSettler.restarted` after each pre-fill,
:meth:`~PrefillSettler.underran` on an underrun it counts, and
:meth:`~PrefillSettler.cut` before writing each chunk.
"""

from __future__ import annotations

import numpy as np

from appliance.media.frames import Samples

__all__ = [
    "CALM_AFTER_UNDERRUN_S",
    "FORCE_SETTLE_S",
    "PREFILL_MS",
    "QUIET_RMS",
    "SETTLED_PREFILL_MS",
    "SETTLE_S",
    "PrefillSettler",
]

#: Playback pre-fill at a stream's (re)start, and the level it settles to.
PREFILL_MS = 40
SETTLED_PREFILL_MS = 20
#: Playing this long without an underrun lets the pre-fill settle in a quiet
#: chunk...
SETTLE_S = 2.0
QUIET_RMS = 328.0
#: ...or in whatever chunk comes after this long.
FORCE_SETTLE_S = 10.0
#: After an underrun, the stream must play this long without another before
#: it settles (in a quiet chunk, or any chunk FORCE_SETTLE_S - SETTLE_S later).
CALM_AFTER_UNDERRUN_S = 30.0


class PrefillSettler:
    """Decides how many frames of a chunk to leave out, and when.

    Args:
        excess_frames: device frames of pre-fill above the settled level.

    Attributes:
        settled_frames: frames given back since the stream opened.
    """

    def __init__(self, excess_frames: int) -> None:
        self.excess_frames = excess_frames
        self.settled_frames = 0
        self._owed = 0  # frames still to give back since the last restart
        self._since = 0.0
        self._hold = SETTLE_S  # calm time needed before settling

    def restarted(self, now: float) -> None:
        """The full pre-fill was written at ``now`` (start or restart)."""
        self._owed = self.excess_frames
        self._since = now

    def underran(self) -> None:
        """The stream underran while its producer was sending."""
        self._hold = CALM_AFTER_UNDERRUN_S
        self._owed = 0

    def cut(self, frames: int, samples: Samples, now: float) -> int:
        """Frames to leave out at the start of a chunk of ``frames`` frames
        written at ``now``.

        ``samples`` is the chunk (any channel layout; only its level counts).
        """
        if self._owed == 0:
            return 0
        held = now - self._since
        if held < self._hold:
            return 0
        if held < self._hold + FORCE_SETTLE_S - SETTLE_S:
            level = samples.astype(np.float64)
            if float(np.sqrt(np.mean(level * level))) >= QUIET_RMS:
                return 0
        cut = min(self._owed, frames)
        self._owed -= cut
        self.settled_frames += cut
        return cut
