"""What the update machine decides by: the ``[update]`` policy and the start limits.

:class:`UpdatePolicy` is plain, frozen data, validated when it is built (a
bad window or a negative bound is a :class:`~appliance.errors.ConfigError`
naming its key), so :mod:`appliance.update.machine` never checks its
settings again. ``[update]`` in the configuration
(:mod:`appliance.update.settings`) builds one for the service; the boot check
and ``appliance update`` build their own.

The start limits live here too because they are shared with the unit file:
the boot check switches a release back after :data:`MAX_STARTS` starts on
trial, and ``StartLimitBurst`` of systemd/appliance.service must leave room
for them (:data:`START_LIMIT_BURST_MIN`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from appliance.errors import ConfigError

__all__ = ["MAX_STARTS", "START_LIMIT_BURST_MIN", "Policy", "UpdatePolicy"]

#: Starts of a release on trial before it is switched back (a crash loop): the
#: boot check switches ``current`` back at start ``MAX_STARTS + 1``.
MAX_STARTS = 3

#: The least ``StartLimitBurst`` of the unit (systemd/appliance.service) that
#: lets a crash loop always end on the old release before systemd gives up.
#: Inside one ``StartLimitIntervalSec`` a failed update takes up to
#: ``MAX_STARTS + 2`` starts: the start that installed and switched, the
#: ``MAX_STARTS`` starts on trial, and the start the boot check switches back
#: on; two more are the margin (a restart by hand, one watchdog kill of the
#: old release). tests/update/test_boot.py reads the unit and checks it.
START_LIMIT_BURST_MIN = MAX_STARTS + 2 + 2


class Policy(StrEnum):
    """``[update] policy`` in the config."""

    AUTOMATIC = "automatic"
    WINDOW = "window"
    MANUAL = "manual"


@dataclass(frozen=True)
class UpdatePolicy:
    """The ``[update]`` settings the machine decides by."""

    policy: Policy = Policy.AUTOMATIC
    #: Daily install window for ``window``, local minutes since midnight;
    #: ``start > end`` wraps past midnight (e.g. 22:00-05:00).
    window: tuple[int, int] = (120, 300)
    check_interval_s: float = 6 * 3600.0
    idle_after_s: float = 60.0
    health_timeout_s: float = 120.0
    #: After the health facts, the service stays up this long before the
    #: commit (0: commit at once).
    stay_up_s: float = 60.0
    max_starts: int = MAX_STARTS

    def __post_init__(self) -> None:
        start, end = self.window
        if not (0 <= start < 1440 and 0 <= end < 1440) or start == end:
            raise ConfigError("update.window", "must be two different times of day")
        if self.check_interval_s <= 0 or self.health_timeout_s <= 0:
            raise ConfigError("update", "intervals must be positive")
        if self.max_starts < 1:
            raise ConfigError("update.max_starts", "must be at least 1")
        if self.stay_up_s < 0:
            raise ConfigError("update.stay_up_s", "must not be negative")

    def in_window(self, minute_of_day: int) -> bool:
        """Whether ``minute_of_day`` lies in the install window."""
        start, end = self.window
        if start < end:
            return start <= minute_of_day < end
        return minute_of_day >= start or minute_of_day < end
