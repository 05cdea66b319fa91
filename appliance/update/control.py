"""``appliance update ...`` while the service runs: the updater's commands on
the service's control socket.

The running service holds the updater's lock (two updaters must never act
at once), so a command that opened the state itself could only work with
the service stopped, and stopping the phone to ask it something is what the
updater exists to avoid. So ``appliance update status|check|install|
rollback`` first asks the service over its control socket
(:mod:`appliance.system.control`, the channel ``appliance provision`` uses
too), and acts on the disk itself only when no service answers, or one
without an updater (whose lock is then free). The service carries the step
out with its own updater: its policy, its repository, and its knowledge of
the phone (an install still waits until the phone is idle)::

    -> {"command": "update-status"}
    <- {"phase": "idle", "current": "1.0.0", ..., "progress": 0.0,
        "links": {"current": "1.0.0", "previous": ""}}
    -> {"command": "update-install"}            (update-check, update-rollback)
    <- the same status at each change (at least every HEARTBEAT_S), the
       last when the step is done: checked; switched and restarting, or at
       rest (nothing to install, failed); switched back
    <- {"error": "cannot install while downloading"}     (refused)

After ``install`` or ``rollback`` the service restarts; the new one runs
the health check as for any update.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError, ControlError, UpdateError
from appliance.system import control
from appliance.update.machine import Phase
from appliance.update.service import Updater

__all__ = ["HEARTBEAT_S", "STEPS", "ask_service", "status_of", "update_commands"]

logger = logging.getLogger(__name__)

#: The steps a command can ask for (``update-<step>`` on the socket).
STEPS = ("check", "install", "rollback")

#: A step under way sends its status at least this often (the asker's
#: timeout tells a hung service from a long step).
HEARTBEAT_S = 5.0

#: How often a step under way looks at the download progress (no event).
_POLL_S = 0.5

_RESTING = (Phase.IDLE, Phase.COMMITTED, Phase.ROLLED_BACK)


def status_of(updater: Updater) -> dict[str, Any]:
    """The updater's status with the release links, as the CLI prints it."""
    releases = updater.releases
    links = {"current": releases.current, "previous": releases.previous}
    return {**updater.status(), "links": links}


def _done(step: str, updater: Updater) -> bool:
    """Whether a step asked for is as far as the asker waits for."""
    state = updater.machine.state
    if step == "check":
        return state.phase is not Phase.CHECKING
    if step == "install":
        return state.phase in _RESTING or state.phase is Phase.RESTARTING
    return (
        state.phase is not Phase.ROLLING_BACK
        or updater.releases.current == state.rollback_to
    )


def update_commands(updater: Updater) -> dict[str, control.Handler]:
    """The handlers of ``update-status`` and ``update-<step>``, for the service."""

    async def on_status(_request: dict[str, Any], send: control.Send) -> None:
        await send(status_of(updater))

    def on_step(step: str) -> control.Handler:
        async def handle(_request: dict[str, Any], send: control.Send) -> None:
            with updater.watch() as changed:
                try:
                    updater.request(step)
                except ApplianceError as exc:
                    await send({"error": str(exc)})
                    return
                logger.info("update: %s asked from the command line", step)
                await _follow(updater, step, changed, send)

        return handle

    return {
        "update-status": on_status,
        **{f"update-{step}": on_step(step) for step in STEPS},
    }


async def _follow(
    updater: Updater, step: str, changed: asyncio.Event, send: control.Send
) -> None:
    loop = asyncio.get_running_loop()
    last: dict[str, Any] | None = None
    sent_at = 0.0
    while True:
        changed.clear()
        answer = status_of(updater)
        now = loop.time()
        if answer != last or now - sent_at >= HEARTBEAT_S:
            await send(answer)
            last, sent_at = answer, now
        if _done(step, updater):
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), _POLL_S)


def ask_service(
    path: Path,
    step: str,
    *,
    timeout_s: float,
    on_line: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any] | None:
    """Ask the running service for ``status`` or a step; its last status.

    ``on_line`` sees each status as the step goes on. ``None``: no service
    answers at ``path``, or it runs no updater; the caller acts itself.

    Raises:
        UpdateError: the service refused the step (the reason is the message).
    """
    seen: list[dict[str, Any]] = []

    def record(line: dict[str, Any]) -> None:
        seen.append(line)
        if on_line is not None and "error" not in line:
            on_line(line)

    try:
        answer = control.ask(
            path, f"update-{step}", timeout_s=timeout_s, on_line=record
        )
    except ControlError:
        if not seen:
            return None
        answer = seen[-1]  # the service went away during the step (it restarts)
    if answer == control.UNKNOWN:
        return None
    if "error" in answer:
        raise UpdateError(str(answer["error"]))
    return answer
