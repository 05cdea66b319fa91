"""The phone's systemd unit as data, and its scheduling applied to a process.

On a phone, systemd starts the service with the unit's ``Nice=`` (voice
first: the phone outranks whatever else the board runs). The simulator, the
demo and the tests run the same code in ordinary processes; applying the
unit's nice value to them makes them run as the phone does, so a busy machine
tests the phone as deployed rather than a phone with no priority at all. The
value is read from ``systemd/appliance.service`` itself so that the two cannot
drift apart.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["UNIT", "run_as_unit", "unit_nice", "unit_settings"]

#: The unit in the source tree (the development tools run from a checkout).
UNIT = Path(__file__).resolve().parents[2] / "systemd" / "appliance.service"


def unit_settings(path: Path = UNIT) -> dict[str, list[str]]:
    """``Key=value`` lines of the unit, continuation lines joined, per key."""
    settings: dict[str, list[str]] = {}
    logical = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith(("#", ";", "[")) or not line:
            continue
        logical += line
        if logical.endswith("\\"):
            logical = logical[:-1] + " "
            continue
        key, _, value = logical.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
        logical = ""
    return settings


def unit_nice(path: Path = UNIT) -> int:
    """The unit's ``Nice=`` (the last one wins, as in systemd); 0 if unset."""
    values = unit_settings(path).get("Nice", [])
    return int(values[-1]) if values else 0


def run_as_unit(path: Path = UNIT) -> bool:
    """Give the calling thread (and the threads and children it starts later)
    the unit's nice value; False when the system does not allow it.

    Linux keeps a nice value per thread: call this before starting threads.
    Lowering it needs CAP_SYS_NICE or RLIMIT_NICE (systemd needs neither, it
    sets the value before dropping privileges).
    """
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, 0, unit_nice(path))
        return True
    return False
