"""The phone service as systemd runs it, for the update tests and the bench.

:class:`Supervisor` does what ``systemd/appliance.service`` says, with the
phone's root in a temp dir: before each start the boot check
(``python -I -m appliance update boot``: the test environment's own code,
as the unit runs the image's), then ``python -m appliance run`` with
``PYTHONPATH=ROOT/opt/appliance/current/lib`` (the release ``current``
names), a notify socket, and a restart after ``restart_s`` whenever the
unit's ``Restart=`` and ``RestartPreventExitStatus=`` say systemd restarts it
(:func:`unit_restarts`, read from ``systemd/appliance.service``). It keeps a
timeline: starts, exits, and what each process sent to the notify socket,
with monotonic times.

Also here: :func:`appliance_wheel`, a wheel of this repository's own code
under another version (optionally patched), which is what a release of the
phone software holds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
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

from appliance.update.artifact import build_artifact
from appliance.update.releases import Releases
from appliance_dev.unit_file import unit_settings
from tests.conftest import local_device, make_token, scaled
from tests.update.helpers import Publisher, release

SOURCE = Path(__file__).resolve().parents[2] / "appliance"

#: Signals systemd counts as a clean exit (systemd.service(5), SuccessExitStatus=).
_CLEAN_SIGNALS = {signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE}


def unit_restarts(status: int, settings: dict[str, list[str]] | None = None) -> bool:
    """Whether systemd starts the unit again after its service ended with
    ``status`` (negative: killed by that signal) without being stopped, by
    the unit's ``Restart=`` and ``RestartPreventExitStatus=``
    (systemd.service(5); the watchdog's kill is SIGABRT, not clean).
    """
    settings = unit_settings() if settings is None else settings
    prevent = " ".join(settings.get("RestartPreventExitStatus", [])).split()
    if str(status) in prevent:
        return False
    clean = status == 0 or (status < 0 and -status in _CLEAN_SIGNALS)
    policy = settings.get("Restart", ["no"])[-1]
    rules = {"no": False, "always": True, "on-success": clean, "on-failure": not clean}
    if policy not in rules:
        raise AssertionError(f"Restart={policy}: teach the test supervisor")
    return rules[policy]


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
    #: More of the service's environment (``RUNTIME_DIRECTORY``: the control
    #: socket's directory, as systemd's ``RuntimeDirectory=`` sets it).
    env: dict[str, str] = field(default_factory=dict)
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
        """SIGKILL the service now, with its children (pip), as systemd kills
        the unit's control group: a crash, or the power cut of one."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)

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
                if self._stopping or not unit_restarts(status):
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
        env = {**os.environ, **self.env, "NOTIFY_SOCKET": str(notify_path)}
        env.pop("PYTHONPATH", None)
        env.pop("APPLIANCE_TOKEN", None)
        boot = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-m", "appliance", "update",
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
            env=env, cwd=cwd, start_new_session=True,  # its own group, as a unit
        )  # fmt: skip
        self._log("start", str(process.pid))
        assert process.stderr is not None
        async for raw in process.stderr:
            self._log("log", raw.decode(errors="replace").rstrip())
        status = await process.wait()
        self._log("exit", str(status))
        return status


# --- a phone root, its config and releases ------------------------------------

HW = Path(__file__).resolve().parents[2] / "hw"
PHONE = "desk-1"


BROKEN = {
    "crashes": {
        "app.py": ("    notifier = Notifier()\n", '    raise RuntimeError("broken")\n')
    },
    # Ends by itself, cleanly (status 0), at every start: the unit restarts
    # it (Restart=always), so its starts are counted like a crash's.
    "exits-cleanly": {"app.py": ("    notifier = Notifier()\n", "    return 0\n")},
    "never-registers": {
        "app.py": (
            "await status_line.register(device, current[0])",
            "await asyncio.sleep(0)",
        )
    },
    # A new check in the release rejects the configuration 1.0.0 ran with:
    # it must not stop the unit for good (exit 2) while on trial.
    # Ready, registered, audio opened; then gone 2 s later (os._exit: a crash
    # the service cannot catch), at every start, before it stayed up.
    "dies-after-checks": {
        "app.py": (
            '    logger.info("phone service started (%s)"',
            '    asyncio.get_running_loop().call_later(2.0, __import__("os")._exit, 70)'
            '\n    logger.info("phone service started (%s)"',
        )
    },
    "refuses-config": {
        "cli.py": (
            "        config = load_layers(args)\n",
            '        raise ConfigError("device", "refused by this release")\n',
        )
    },
    "no-audio": {
        "audio/helper.py": (
            "checked = []",
            "from appliance.errors import AudioDeviceError as E; "
            "raise E(message='no sound card')",
        )
    },
}


def publish(publisher: Publisher, version: str, broken: str = "") -> None:
    wheel = appliance_wheel(
        publisher.base / "wheels" / version, version, BROKEN.get(broken)
    )
    release("add", "--repo", publisher.repo, "--keys", publisher.keys, "--wheel", wheel)


def phone_root(tmp_path: Path, publisher: Publisher) -> Path:
    """The phone's disk: release 1.0.0 current, config, token, trust anchor."""
    root = tmp_path / "phone"
    wheel = appliance_wheel(tmp_path / "factory", "1.0.0")
    artifact = build_artifact(
        [wheel], tmp_path / "factory", complete=False, platform="any"
    )
    releases = Releases(root)
    releases.install(artifact.path, "1.0.0")
    releases.switch("1.0.0")
    etc = root / "etc/appliance"
    etc.mkdir(parents=True)
    (etc / "update-root.json").write_bytes(publisher.root)
    token = root / "var/lib/appliance/token"
    token.parent.mkdir(parents=True, exist_ok=True)
    token.write_text(make_token(PHONE) + "\n")
    token.chmod(0o600)
    return root


def write_config(
    root: Path,
    exchange_url: str,
    repo_url: str,
    health_s: float = 12.0,
    policy: str = "automatic",
    stay_up_s: float = 1.0,
) -> Path:
    config = root / "etc/appliance/appliance.toml"
    config.write_text(f"""
[phone]
token_file = "{root / "var/lib/appliance/token"}"

[device]
signaling_url = "{exchange_url}"
local_addresses = ["127.0.0.1"]
input_device = "null"
output_device = "null"

[ui]
enabled = true
pinmap = "{HW / "pinmap-reference.toml"}"
pin_factory = "mock"
display_driver = "dummy"
state_file = "{root / "var/lib/appliance/panel.json"}"

[update]
url = "{repo_url}"
trust_root = "{root / "etc/appliance/update-root.json"}"
root = "{root}"
platform = "any"
policy = "{policy}"
idle_after_s = 1
health_timeout_s = {health_s}
stay_up_s = {stay_up_s}
""")
    return config


def state(root: Path) -> dict[str, object]:
    path = root / "var/lib/appliance/update/state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def running(version: str, after: int = 0) -> Callable[[Event], bool]:
    """The updater of a service started after generation ``after`` runs ``version``."""
    return lambda e: (
        e.what == "log"
        and e.generation > after
        and "update: " in e.detail
        and f"running {version}" in e.detail
    )


def registered(e: Event) -> bool:
    return e.what == "notify" and e.detail == f"STATUS=registered as {PHONE}"


async def rings(exchange_url: str) -> bool:
    """Whether the phone rings when called (it is registered and answers)."""
    caller = local_device(exchange_url, enable_ringing_state=True)
    try:
        await caller.setup(make_token(f"caller-{id(caller)}"))
        rang = asyncio.Event()
        call = await caller.connect({"To": PHONE})
        call.on("ringing", lambda _early: rang.set())
        await asyncio.wait_for(rang.wait(), scaled(10))
        await call.disconnect()
        return True
    finally:
        await caller.destroy()
