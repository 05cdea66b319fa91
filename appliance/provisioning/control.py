"""The phone service's control socket: ``appliance provision status|reset``.

The service listens on a Unix socket in its runtime directory
(``$RUNTIME_DIRECTORY/control.sock``: ``/run/appliance/control.sock`` under
systemd, which makes the directory 0700 for the appliance user; the
socket's own mode is 0600), so only that user and root can talk to it; no
network port, no extra address family for the hardened unit. A Unix socket
rather than a request file: the command gets its answer on the same
connection, and a request never outlives the process that made it (a stale
request file could reset a phone days later).

The protocol is one JSON line each way, except that ``reset`` first
answers ``{"state": "confirm"}`` while the panel asks the person at the
phone, then the outcome::

    -> {"command": "status"}
    <- {"phase": "ready", "identity": "alice", "token_expires_at": 1.7e9, ...}
    -> {"command": "reset"}
    <- {"state": "confirm"}
    <- {"result": "reset" | "cancelled" | "busy" | "failed" | "no_panel"}

Nothing secret is ever sent: the status holds no credential and no token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from appliance.errors import ProvisioningError

__all__ = ["SOCKET_NAME", "ask", "serve_control"]

logger = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
_MAX_LINE = 1024
_READ_TIMEOUT_S = 5.0


async def serve_control(
    path: Path,
    status: Callable[[], dict[str, object]],
    confirm_reset: Callable[[], Awaitable[str]] | None,
) -> None:
    """Serve the control socket at ``path`` until cancelled.

    Args:
        status: the provisioning status (no secrets).
        confirm_reset: asks on the panel and performs the reset once
            confirmed; ``None`` = no panel, so no reset from the command line.
    """

    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), _READ_TIMEOUT_S)
            try:
                request = json.loads(line[:_MAX_LINE])
                command = request["command"]
            except (ValueError, KeyError, TypeError):
                command = None
            if command == "status":
                await _send(writer, status())
            elif command == "reset":
                if confirm_reset is None:
                    await _send(writer, {"result": "no_panel"})
                else:
                    await _send(writer, {"state": "confirm"})
                    logger.info("provisioning reset asked from the command line")
                    await _send(writer, {"result": await confirm_reset()})
            else:
                await _send(writer, {"error": "unknown command"})
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the asker went away
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    # A socket left by a process that was killed is replaced.
    await asyncio.to_thread(path.unlink, missing_ok=True)
    server = await asyncio.start_unix_server(handle, path)
    try:
        await asyncio.to_thread(path.chmod, 0o600)  # the directory is 0700 too
        logger.info("control socket %s", path)
        async with server:
            await server.serve_forever()
    finally:
        server.close()
        # Cancelled: no awaiting here; one unlink does not block the loop long.
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)  # noqa: ASYNC240


async def _send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(json.dumps(message).encode() + b"\n")
    await writer.drain()


def ask(
    path: Path,
    command: str,
    *,
    timeout_s: float = 5.0,
    on_line: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Send ``command`` to the service; return its last answer (blocking).

    ``on_line`` sees every answer as it arrives (``reset`` sends two).

    Raises:
        ProvisioningError: no service at ``path``, or no answer in time.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(path))
            sock.sendall(json.dumps({"command": command}).encode() + b"\n")
            answer: dict[str, Any] = {}
            for line in sock.makefile("rb"):
                parsed = json.loads(line)
                if not isinstance(parsed, dict):
                    raise ValueError("not an object")
                answer = parsed
                if on_line is not None:
                    on_line(answer)
        except (OSError, ValueError) as exc:
            raise ProvisioningError(
                f"no answer from the phone service at {path}: {exc}"
            ) from exc
    if not answer:
        raise ProvisioningError(f"no answer from the phone service at {path}")
    return answer
