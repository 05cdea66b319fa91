"""The phone service's control socket: commands from ``appliance`` on the same machine.

The running service listens on a Unix socket in its runtime directory
(``$RUNTIME_DIRECTORY/control.sock``: ``/run/appliance/control.sock`` under
systemd, which makes the directory 0700 for the appliance user; the
socket's own mode is 0600), so only that user and root can talk to it; no
network port, no extra address family for the hardened unit. A Unix socket
rather than a request file: the command gets its answer on the same
connection, and a request never outlives the process that made it (a stale
request file could act on a phone days later).

The protocol is one JSON object per line: the request
(``{"command": NAME}``), then one answer or more, and the service closes
the connection after the last. The commands belong to parts of the service
(provisioning: ``status``, ``reset``; the updater: ``update-*``), which
hand their handlers to the composition root; this module is only the
channel, so that there is one socket and one way to talk to it. An unknown
command is answered ``{"error": "unknown command"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from appliance.errors import ControlError

__all__ = [
    "DEFAULT_SOCKET",
    "SOCKET_NAME",
    "UNKNOWN",
    "Handler",
    "Send",
    "ask",
    "serve_control",
]

logger = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
#: The service's control socket under systemd (``RuntimeDirectory=appliance``).
DEFAULT_SOCKET = Path("/run/appliance/control.sock")
#: The answer to a command the service does not serve.
UNKNOWN = {"error": "unknown command"}

_MAX_LINE = 1024
_READ_TIMEOUT_S = 5.0

#: Sends one answer line to the asker.
Send = Callable[[dict[str, Any]], Awaitable[None]]
#: Serves one command: the request, and where its answers go.
Handler = Callable[[dict[str, Any], Send], Awaitable[None]]


async def serve_control(path: Path, handlers: Mapping[str, Handler]) -> None:
    """Serve the control socket at ``path`` until cancelled.

    Args:
        handlers: each command's handler, by the command's name.
    """

    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        async def send(message: dict[str, Any]) -> None:
            writer.write(json.dumps(message).encode() + b"\n")
            await writer.drain()

        try:
            line = await asyncio.wait_for(reader.readline(), _READ_TIMEOUT_S)
            try:
                request = json.loads(line[:_MAX_LINE])
                handler = handlers.get(request["command"])
            except (ValueError, KeyError, TypeError):
                handler = None
            if handler is None:
                await send(UNKNOWN)
            else:
                await handler(request, send)
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


def ask(
    path: Path,
    command: str,
    *,
    timeout_s: float = 5.0,
    on_line: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Send ``command`` to the service; return its last answer (blocking).

    ``on_line`` sees every answer as it arrives (some commands send several);
    ``timeout_s`` bounds the connect and the wait for each line.

    Raises:
        ControlError: no service at ``path``, or no (complete) answer in time.
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
            raise ControlError(
                f"no answer from the phone service at {path}: {exc}"
            ) from exc
    if not answer:
        raise ControlError(f"no answer from the phone service at {path}")
    return answer
