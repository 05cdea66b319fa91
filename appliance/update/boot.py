"""The boot check: run before the service starts, from the image's own code.

A release on trial may crash before its updater runs (a broken import, a
missing dependency): then nothing in it can count its starts or switch
back. So the unit runs ``appliance update boot`` first (``ExecStartPre``,
with ``python -I`` so that neither ``PYTHONPATH`` nor the working
directory points it at the release under test): it resumes the persisted
state with the release ``current`` names, which counts a start on trial, and
past ``max_starts`` switches ``current`` back to the last committed release.
The service that starts next runs whichever release ``current`` names.

It leaves a mark (``boot-checked`` beside the state) telling the service's
updater that this start was counted already
(:meth:`~appliance.update.machine.UpdateMachine.attach`); without the mark
(the service started by hand) the updater resumes by itself.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from appliance.files import write_atomic
from appliance.update.machine import ActionKind, Phase, UpdateMachine
from appliance.update.policy import MAX_STARTS, UpdatePolicy
from appliance.update.releases import Releases
from appliance.update.service import StateFile
from appliance.update.settings import STATE_DIR

__all__ = ["BOOT_MARK", "boot_check", "on_trial"]

logger = logging.getLogger(__name__)

#: The mark's file name, in the state directory.
BOOT_MARK = "boot-checked"


def boot_check(root: Path, *, max_starts: int = MAX_STARTS) -> str:
    """Resume the update state before the service starts; return a summary.

    Raises:
        UpdateError: another updater holds the lock, or the switch back failed.
    """
    state_dir = root / STATE_DIR
    state_file = StateFile(state_dir / "state.json")
    releases = Releases(root)
    with state_file.lock():
        machine = UpdateMachine(UpdatePolicy(max_starts=max_starts), state_file.load())
        running = releases.current
        machine.resume(time.monotonic(), running)
        state_file.save(machine.state)
        for action in machine.actions():
            # RESTART is left out: the service starts next anyway.
            if action.kind is ActionKind.LINK_PREVIOUS:
                releases.link_previous(action.version)
            elif action.kind is ActionKind.SWITCH_BACK:
                logger.warning(
                    "update: switching back to %s: %s",
                    action.version,
                    machine.state.reason,
                )
                releases.switch_back(action.version)
        write_atomic(state_dir / BOOT_MARK, b"")
    state = machine.state
    summary = f"{state.phase}, current -> {releases.current or '-'}"
    if state.starts:
        summary += f", start {state.starts} of {state.candidate} on trial"
    return summary


#: The phases in which the release ``current`` names is not yet committed.
_ON_TRIAL = frozenset({Phase.SWITCHING, Phase.RESTARTING, Phase.HEALTH_CHECK})


def on_trial(root: Path) -> bool:
    """Whether the release that runs is an update on trial (read-only; no lock).

    An unreadable state (no such file, no permission) is no trial: the
    updater's own start will say what is wrong with it.
    """
    try:
        state = StateFile(root / STATE_DIR / "state.json").load()
    except OSError:
        return False
    return bool(state.candidate) and state.phase in _ON_TRIAL
