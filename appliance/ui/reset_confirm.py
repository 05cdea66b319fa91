"""The "Reset provisioning?" confirmation's timers: pure, no clock.

The panel enters and leaves the confirmation through its transition table
(:mod:`appliance.ui.panel`); what the confirmation itself keeps is two
deadlines: the prompt is abandoned after :data:`RESET_CONFIRM_S`, and Hangup
held for :data:`RESET_HOLD_S` confirms. They sit here so the panel's table
reads as gestures and the timing rules read in one place.
"""

from __future__ import annotations

from appliance.ui.commands import ResetCancelled, ResetProvisioning

__all__ = ["RESET_CONFIRM_S", "RESET_HOLD_S", "ResetConfirm"]

#: Hold Hangup this long on the "Reset provisioning?" screen to confirm.
RESET_HOLD_S = 3.0
#: The confirmation is abandoned after this long.
RESET_CONFIRM_S = 30.0


class ResetConfirm:
    """The deadlines of one confirmation prompt."""

    def __init__(self) -> None:
        self._until = 0.0
        #: When the Hangup being held confirms (None = not held).
        self.hold_until: float | None = None

    def open(self, now: float) -> None:
        """The prompt is shown at ``now``."""
        self._until = now + RESET_CONFIRM_S
        self.hold_until = None

    def hold(self, now: float) -> None:
        """Hangup went down at ``now``."""
        self.hold_until = now + RESET_HOLD_S

    def release(self) -> None:
        """Hangup came up before the hold confirmed."""
        self.hold_until = None

    def deadlines(self) -> list[float]:
        """Return the times :meth:`due` may answer differently."""
        if self.hold_until is None:
            return [self._until]
        return [self._until, self.hold_until]

    def due(self, now: float) -> ResetProvisioning | ResetCancelled | None:
        """Return the outcome the prompt reached by ``now``, if any."""
        if self.hold_until is not None and now >= self.hold_until:
            return ResetProvisioning()
        if now >= self._until:
            return ResetCancelled()
        return None
