"""Provisioning's commands on the service's control socket:
``appliance provision status|reset``.

The socket and its protocol (one JSON line each way, on
``$RUNTIME_DIRECTORY/control.sock``) are :mod:`appliance.system.control`;
these are provisioning's two commands on it. ``reset`` first answers
``{"state": "confirm"}`` while the panel asks the person at the phone, then
the outcome::

    -> {"command": "status"}
    <- {"phase": "ready", "identity": "alice", "token_expires_at": 1.7e9, ...}
    -> {"command": "reset"}
    <- {"state": "confirm"}
    <- {"result": "reset" | "cancelled" | "busy" | "failed" | "no_panel"}

Nothing secret is ever sent: the status holds no credential and no token.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from appliance.errors import ControlError, ProvisioningError
from appliance.system import control

__all__ = ["ask", "provisioning_commands"]

logger = logging.getLogger(__name__)


def provisioning_commands(
    status: Callable[[], dict[str, object]],
    confirm_reset: Callable[[], Awaitable[str]] | None,
) -> dict[str, control.Handler]:
    """The handlers of ``status`` and ``reset``, for the control socket.

    Args:
        status: the provisioning status (no secrets).
        confirm_reset: asks on the panel and performs the reset once
            confirmed; ``None`` = no panel, so no reset from the command line.
    """

    async def on_status(_request: dict[str, Any], send: control.Send) -> None:
        await send(dict(status()))

    async def on_reset(_request: dict[str, Any], send: control.Send) -> None:
        if confirm_reset is None:
            await send({"result": "no_panel"})
            return
        await send({"state": "confirm"})
        logger.info("provisioning reset asked from the command line")
        await send({"result": await confirm_reset()})

    return {"status": on_status, "reset": on_reset}


def ask(
    path: Path,
    command: str,
    *,
    timeout_s: float = 5.0,
    on_line: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """:func:`appliance.system.control.ask` for ``status`` and ``reset``.

    Raises:
        ProvisioningError: no service at ``path``, or no answer in time.
    """
    try:
        return control.ask(path, command, timeout_s=timeout_s, on_line=on_line)
    except ControlError as exc:
        raise ProvisioningError(str(exc)) from exc
