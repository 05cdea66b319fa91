"""The phone service as systemd runs it, for the update tests and the bench.

:class:`Supervisor` does what ``systemd/appliance.service`` says, with the
phone's root in a temp dir: before each start the boot check
(``python -E -m appliance update boot``: the test environment's own code,
as the unit runs the image's), then ``python -m appliance run`` with
``PYTHONPATH=ROOT/opt/appliance/current/lib`` (the release ``current``
names), a notify socket, and a restart after ``restart_s`` whenever the
service exits with a status other than 0 and 2 (``Restart=on-failure``,
``RestartPreventExitStatus=2``). It keeps a timeline: starts, exits, and
what each process sent to the notify socket, with monotonic times.

Also here: :func:`appliance_wheel`, a wheel of this repository's own code
under another version (optionally patched), which is what a release of the
phone software holds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import signal
import socket
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "appliance"


def appliance_wheel(
    out: Path, version: str, patches: dict[str, tuple[str, str]] | None = None
) -> Path:
    """A wheel of the ``appliance`` package as it is here, at ``version``.

    ``patches`` maps a file (relative to the package) to (old, new) text, to
    make a broken release; each ``old`` must be found.
    """
    files: dict[str, bytes] = {}
    for path in sorted(SOURCE.rglob("*")):
        if path.is_dir() or "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        rel = path.relative_to(SOURCE).as_posix()
        text = path.read_bytes()
        if rel == "__init__.py":
            text = text.replace(
                b'__version__ = "', f'__version__ = "{version}" #'.encode()
            )
        for name, (old, new) in (patches or {}).items():
            if name == rel:
                assert old.encode() in text, f"{old!r} not in {rel}"
                text = text.replace(old.encode(), new.encode())
        files[f"appliance/{rel}"] = text
    dist = f"appliance-{version}.dist-info"
    files[f"{dist}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: appliance\nVersion: {version}\n".encode()
    )
    files[f"{dist}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n"
    )
    entry_points = metadata.distribution("appliance").read_text("entry_points.txt")
    files[f"{dist}/entry_points.txt"] = (entry_points or "").encode()
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest())
        record.append(f"{name},sha256={digest.rstrip(b'=').decode()},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    out.mkdir(parents=True, exist_ok=True)
    wheel = out / f"appliance-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return wheel


@dataclass
class Event:
    """One line of the timeline."""

    t: float
    generation: int
    what: str  # "start", "exit", "notify", "log"
    detail: str = ""


@dataclass
class Supervisor:
    """Runs the service under the unit's rules (see the module docstring)."""

    root: Path
    config: Path
    restart_s: float = 0.1
    events: list[Event] = field(default_factory=list)
    process: asyncio.subprocess.Process | None = None
    generation: int = 0
    _task: asyncio.Task[None] | None = None
    _stopping: bool = False
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def _log(self, what: str, detail: str = "") -> None:
        self.events.append(Event(time.monotonic(), self.generation, what, detail))
        self._changed.set()

    def start(self) -> None:
        """Start the unit (a task on the running loop)."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the unit: SIGTERM, then SIGKILL after a while."""
        self._stopping = True
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def kill9(self) -> None:
        """SIGKILL the service process now (a crash, or the power cut of one)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)

    async def wait_for(
        self, predicate: Callable[[Event], bool], limit_s: float
    ) -> Event:
        """The first event from now on (or already seen) matching ``predicate``."""
        async with asyncio.timeout(limit_s):
            seen = 0
            while True:
                for event in self.events[seen:]:
                    if predicate(event):
                        return event
                seen = len(self.events)
                self._changed.clear()
                await self._changed.wait()

    def log_text(self) -> str:
        return "\n".join(
            f"{e.t:.3f} [{e.generation}] {e.what} {e.detail}" for e in self.events
        )

    async def _run(self) -> None:
        path = self.root / "notify.sock"
        path.unlink(missing_ok=True)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(path))
        notify.setblocking(False)
        loop = asyncio.get_running_loop()

        async def notices() -> None:
            while True:
                data = await loop.sock_recv(notify, 4096)
                for line in data.decode().splitlines():
                    if not line.startswith("WATCHDOG"):
                        self._log("notify", line)

        reader = loop.create_task(notices())
        try:
            while not self._stopping:
                status = await self._start_once(path)
                if self._stopping or status in (0, 2):
                    return
                await asyncio.sleep(self.restart_s)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            notify.close()

    async def _start_once(self, notify_path: Path) -> int:
        self.generation += 1
        # WorkingDirectory=/run/appliance: not a source tree, whose package
        # `python -m` would find first.
        cwd = self.root / "run/appliance"
        cwd.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
        env.pop("PYTHONPATH", None)
        env.pop("APPLIANCE_TOKEN", None)
        boot = await asyncio.create_subprocess_exec(
            sys.executable, "-E", "-m", "appliance", "update",
            "--root", str(self.root), "boot",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env=env, cwd=cwd,
        )  # fmt: skip
        out, _ = await boot.communicate()
        self._log("boot", out.decode().strip())
        env["PYTHONPATH"] = str(self.root / "opt/appliance/current/lib")
        env["PYTHONUNBUFFERED"] = "1"
        self.process = process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "appliance", "run", "--config", str(self.config),
            stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env=env, cwd=cwd,
        )  # fmt: skip
        self._log("start", str(process.pid))
        assert process.stderr is not None
        async for raw in process.stderr:
            self._log("log", raw.decode(errors="replace").rstrip())
        status = await process.wait()
        self._log("exit", str(status))
        return status
