"""The Vol+/Vol- levels of the front panel: pure, no clock.

Kept apart from :mod:`appliance.ui.panel` because the levels are their own
small machine (per-role levels, their limits, the bar that stays on screen a
moment after the last press) and because the settings file and the screens
need the scale without the panel's states. The panel decides *which* role the
buttons set; :class:`Volume` holds the levels and says what changed.
"""

from __future__ import annotations

from collections.abc import Mapping

from appliance.errors import ConfigError
from appliance.ui.commands import SetVolume

__all__ = [
    "VOLUME_DEFAULT_LEVEL",
    "VOLUME_MAX_LEVEL",
    "VOLUME_ROLES",
    "Volume",
    "volume_gain",
    "volume_range",
]

#: Volume steps of the Vol+/Vol- buttons: level 0 to 8, 3 dB apart, level 6
#: plays sounds as they are (0 dB), 8 is +6 dB. Ringer level 0 is a silent
#: ring (the LED still flashes); a call never goes below level 1 (-15 dB) from
#: the buttons, so that it cannot be mistaken for a dead line.
VOLUME_MAX_LEVEL = 8
VOLUME_DEFAULT_LEVEL = 6
#: The audio roles the buttons set (Device.audio's speaker and ringtone devices).
VOLUME_ROLES = ("speaker", "ringtone")
_VOLUME_STEP_DB = 3.0
#: How long the volume bar stays on screen after the last press.
_VOLUME_SHOW_S = 2.0


def volume_gain(level: int) -> float:
    """The linear gain of a volume level (0 is silent, then 3 dB steps)."""
    if level <= 0:
        return 0.0
    return float(10 ** ((level - VOLUME_DEFAULT_LEVEL) * _VOLUME_STEP_DB / 20))


def _min_level(role: str) -> int:
    return 0 if role == "ringtone" else 1


def volume_range(role: str) -> tuple[int, int]:
    """The lowest and highest level ``role`` may be set to, both included.

    Raises:
        ValueError: ``role`` is not one of :data:`VOLUME_ROLES`.
    """
    if role not in VOLUME_ROLES:
        raise ValueError(f"no volume role {role!r}")
    return _min_level(role), VOLUME_MAX_LEVEL


class Volume:
    """The level of each role and the volume bar on screen.

    Args:
        saved: starting level per role (``speaker``, ``ringtone``), e.g. as
            saved by the controller; missing roles start at the default.

    Raises:
        ConfigError: unknown role or a level that is not an int.
    """

    def __init__(self, saved: Mapping[str, int] | None = None) -> None:
        self._levels = dict.fromkeys(VOLUME_ROLES, VOLUME_DEFAULT_LEVEL)
        for role, level in (saved or {}).items():
            if role not in self._levels:
                raise ConfigError(f"volume.{role}", "must be speaker or ringtone")
            if isinstance(level, bool) or not isinstance(level, int):
                raise ConfigError(f"volume.{role}", f"not a level: {level!r}")
            self._levels[role] = min(max(level, _min_level(role)), VOLUME_MAX_LEVEL)
        #: The role whose bar is on screen ("" = none).
        self.shown = ""
        self._shown_until = 0.0

    def levels(self) -> dict[str, int]:
        """Return the current level of each role."""
        return dict(self._levels)

    def level(self, role: str) -> int:
        """Return ``role``'s level (0 for no role)."""
        return self._levels.get(role, 0)

    def change(self, role: str, delta: int, now: float) -> SetVolume | None:
        """Step ``role`` by ``delta`` and show its bar; the command if it moved."""
        self.shown = role
        self._shown_until = now + _VOLUME_SHOW_S
        return self.set(role, self._levels[role] + delta)

    def set(self, role: str, level: int) -> SetVolume | None:
        """Set ``role`` to ``level`` (clamped to its range); the command if it moved.

        Raises:
            ValueError: ``role`` is not one of :data:`VOLUME_ROLES`.
        """
        if role not in self._levels:
            raise ValueError(f"no volume role {role!r}")
        level = min(max(level, _min_level(role)), VOLUME_MAX_LEVEL)
        if level == self._levels[role]:
            return None
        self._levels[role] = level
        return SetVolume(role, level, volume_gain(level))

    def next_deadline(self) -> float | None:
        """Return when the bar goes away, if it is shown."""
        return self._shown_until if self.shown else None

    def tick(self, now: float) -> None:
        """Hide the bar once its time is up."""
        if self.shown and now >= self._shown_until:
            self.shown = ""
