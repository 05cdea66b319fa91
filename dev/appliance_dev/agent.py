"""``appliance phone``: one Device driven by JSON lines on stdin, events on stdout.

A remote-control console for a phone: each stdin line is a command object, each
stdout line an event or a reply. Tests and benchmarks run phones in their own
processes this way; on a real phone it is a debugging tool.

Commands (``{"cmd": ...}``): ``connect`` (``params``), ``accept``, ``reject``,
``ignore``, ``hangup``, ``mute`` (``on``), ``digits`` (``digits``), ``status``,
``update_token`` (``token``), ``quit``. ``status`` also reports the number
of asyncio tasks alive, for leak checks. Each gets ``{"reply": cmd, "ok": bool}``
(with ``error`` when it failed). Events: ``{"event": name, "t": seconds, ...}``
with the device status, call sid, error code, digit or volume as relevant.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from appliance.app import build_device
from appliance.errors import ApplianceError, TwilioError
from appliance.phone.connection import Connection
from appliance.phone.device import Device
from appliance.phone.options import parse_options
from appliance.service_tasks import release_heap_after_calls
from appliance.system.heap import freeze_startup_heap
from appliance.tasks import TaskSet

__all__ = ["run_agent"]

logger = logging.getLogger(__name__)


class _Agent:
    def __init__(
        self,
        device: Device,
        write: Callable[[dict[str, Any]], None],
        *,
        auto_answer: bool,
    ) -> None:
        self.device = device
        self.write = write
        self.auto_answer = auto_answer
        self.t0 = time.monotonic()
        self.tasks = TaskSet(logger, "phone agent")
        for name in ("ready", "offline", "token_will_expire"):
            device.on(name, self._device_event(name))
        device.on("incoming", self._on_incoming)
        device.on("error", self._on_error)
        for name in ("connect", "disconnect", "cancel"):
            device.on(name, self._call_event(name))

    def emit(self, event: str, **fields: Any) -> None:
        self.write(
            {"event": event, "t": round(time.monotonic() - self.t0, 4), **fields}
        )

    def _device_event(self, name: str) -> Callable[[Device], None]:
        def handler(device: Device) -> None:
            self.emit(name, status=device.status(), identity=device.identity)

        return handler

    def _call_event(self, name: str) -> Callable[[Connection], None]:
        def handler(conn: Connection) -> None:
            self.emit(name, call_sid=conn.call_sid, codec=conn.codec)

        return handler

    def _on_error(self, error: TwilioError) -> None:
        self.emit(
            "error", code=error.code, message=error.message, call_sid=error.call_sid
        )

    def _on_incoming(self, conn: Connection) -> None:
        self.emit(
            "incoming",
            call_sid=conn.call_sid,
            parameters=conn.parameters,
            custom=conn.custom_parameters,
        )
        self._watch(conn)
        if self.auto_answer:
            self._spawn(conn.accept())

    def _watch(self, conn: Connection) -> None:
        conn.on("dtmf", lambda d: self.emit("dtmf", digit=d, call_sid=conn.call_sid))
        conn.on("ringing", lambda early: self.emit("ringing", early_media=early))
        conn.on("mute", lambda m, _c: self.emit("mute", muted=m))
        conn.on("reject", lambda: self.emit("reject", call_sid=conn.call_sid))
        conn.on("warning", lambda n, _d: self.emit("warning", name=n))

    def _spawn(self, coro: Any) -> None:
        self.tasks.spawn(coro)

    async def command(self, cmd: dict[str, Any]) -> bool:
        """Run one command; return False to quit."""
        name = cmd.get("cmd")
        conn = self.device.active_connection()
        try:
            if name == "connect":
                conn = await self.device.connect(cmd.get("params") or {})
                self._watch(conn)
                self.write({"reply": name, "ok": True, "call_sid": conn.call_sid})
                return True
            if name == "quit":
                self.write({"reply": name, "ok": True})
                return False
            if name == "status":
                self.write(
                    {
                        "reply": name,
                        "ok": True,
                        "status": self.device.status(),
                        "call": conn.status() if conn else None,
                        # For leak checks (the soak benchmark): a count that
                        # grows call after call is a task nobody ends.
                        "tasks": len(asyncio.all_tasks()),
                    }
                )
                return True
            if name == "update_token":
                await self.device.update_token(str(cmd["token"]))
            elif conn is None:
                raise ApplianceError("no call")
            elif name == "accept":
                await conn.accept()
            elif name == "reject":
                conn.reject()
            elif name == "ignore":
                conn.ignore()
            elif name == "hangup":
                await conn.disconnect()
            elif name == "mute":
                conn.mute(bool(cmd.get("on", True)))
            elif name == "digits":
                conn.send_digits(str(cmd["digits"]))
            else:
                raise ApplianceError(f"unknown command {name!r}")
        except (ApplianceError, KeyError, TypeError) as exc:
            self.write({"reply": name, "ok": False, "error": str(exc)})
            return True
        self.write({"reply": name, "ok": True})
        return True


async def run_agent(
    token: str, options: dict[str, Any], *, auto_answer: bool, sounds: bool = True
) -> int:
    """Run the agent until ``quit`` or end of input; return an exit status.

    With ``sounds`` False the phone plays no ring, answer or hang-up sound:
    its speaker carries call audio only (speech-quality measurements).
    """
    loop = asyncio.get_running_loop()

    def write(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    device = build_device(parse_options(options))
    heap_release = release_heap_after_calls(device)  # as the service does
    for flag in (device.audio.incoming, device.audio.outgoing, device.audio.disconnect):
        flag(sounds)
    agent = _Agent(device, write, auto_answer=auto_answer)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    # A rejected token is reported as an error event; keep taking commands.
    with contextlib.suppress(TwilioError):
        await device.setup(token)
    freeze_startup_heap()  # as the service does once it is up
    while True:
        line = await reader.readline()
        if not line:
            break
        try:
            cmd = json.loads(line)
        except ValueError:
            write({"reply": None, "ok": False, "error": "not JSON"})
            continue
        if not isinstance(cmd, dict) or not await agent.command(cmd):
            break
    await agent.tasks.close()
    await device.destroy()
    await heap_release.close()
    return 0
