"""The phone service (``appliance run``) as systemd runs it: a real process with
a config file, a 0600 token file, a notify socket and a watchdog, registering
with a real exchange; plus the config layers it reads.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from appliance.config import load_config, read_token
from appliance.errors import ConfigError
from appliance.exchange.server import ExchangeServer
from appliance.ui.notices import render_config_error
from appliance_dev.exchange_process import stop_process
from tests.conftest import local_device, make_token, scaled, wait_until

HW = Path(__file__).resolve().parents[1] / "hw"


def write_token(path: Path, token: str) -> None:
    """Replace the token file atomically, as provisioning does."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(token + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)


@dataclass
class Service:
    """``python -m appliance run`` and what it sent to the notify socket."""

    process: asyncio.subprocess.Process
    notices: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def saw(self, needle: str) -> bool:
        return any(needle in n for n in self.notices)

    async def whole_log(self) -> str:
        """Everything it wrote to stderr, once it has exited."""
        await asyncio.wait_for(self.tasks[1], scaled(5))  # the reader reached EOF
        return "".join(self.stderr)


@pytest.fixture
async def service(
    tmp_path: Path,
) -> AsyncIterator[Callable[[Path], Awaitable[Service]]]:
    """Yields a starter: ``await start(config_path)`` runs the service."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.setblocking(False)
    started: list[Service] = []
    loop = asyncio.get_running_loop()

    async def read_notices(svc: Service) -> None:
        while True:
            svc.notices.append((await loop.sock_recv(notify, 4096)).decode())

    async def read_stderr(svc: Service) -> None:
        async for line in svc.process.stderr:  # type: ignore[union-attr]  # stderr=PIPE below
            svc.stderr.append(line.decode(errors="replace"))

    async def start(config: Path) -> Service:
        env = {
            **os.environ,
            "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
            "WATCHDOG_USEC": "400000",  # pings every 0.2 s
        }
        env.pop("APPLIANCE_TOKEN", None)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "appliance",
            "run",
            "--config",
            str(config),
            stdin=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        svc = Service(process)
        svc.tasks += [
            loop.create_task(read_notices(svc)),
            loop.create_task(read_stderr(svc)),
        ]
        started.append(svc)
        return svc

    try:
        yield start
    finally:
        for svc in started:
            await stop_process(svc.process, grace_s=scaled(10))
            for task in svc.tasks:
                task.cancel()
            await asyncio.gather(*svc.tasks, return_exceptions=True)
        notify.close()


def service_config(tmp_path: Path, exchange_url: str, *, ui: bool = True) -> Path:
    config = tmp_path / "appliance.toml"
    text = f"""
[phone]
token_file = "{tmp_path / "token"}"

[device]
signaling_url = "{exchange_url}"
local_addresses = ["127.0.0.1"]
input_device = "null"
output_device = "null"

[log]
level = "debug"
"""
    if ui:
        text += f"""
[ui]
enabled = true
pinmap = "{HW / "pinmap-reference.toml"}"
pin_factory = "mock"
display_driver = "dummy"
state_file = "{tmp_path / "panel.json"}"
"""
    config.write_text(text)
    return config


@pytest.mark.slow  # a real aiortc call
async def test_service_registers_tells_systemd_follows_the_token_file_and_stops(
    exchange: ExchangeServer, service, tmp_path: Path
) -> None:
    first = make_token("desk-1")
    write_token(tmp_path / "token", first)
    svc: Service = await service(service_config(tmp_path, exchange.url))

    await wait_until(lambda: svc.saw("READY=1"), 15.0)
    await wait_until(lambda: svc.saw("STATUS=registered as desk-1"), 5.0)
    await wait_until(lambda: sum("WATCHDOG=1" in n for n in svc.notices) >= 2, 5.0)
    assert any("front panel 'reference' started" in line for line in svc.stderr)
    # Once up, the start-up heap is out of the collector's full passes.
    await wait_until(
        lambda: any("start-up heap frozen" in line for line in svc.stderr), 5.0
    )

    # Provisioning writes a new token (here for another identity): the
    # service picks it up from the file and registers with it.
    second = make_token("desk-2")
    write_token(tmp_path / "token", second)
    await wait_until(lambda: svc.saw("STATUS=registered as desk-2"), 15.0)
    caller = local_device(exchange.url, enable_ringing_state=True)
    try:
        await caller.setup(make_token("caller"))
        rang = asyncio.Event()
        call = await caller.connect({"To": "desk-2"})
        call.on("ringing", lambda _early: rang.set())
        await asyncio.wait_for(rang.wait(), scaled(5))
        await call.disconnect()
    finally:
        await caller.destroy()

    svc.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(svc.process.wait(), scaled(10)) == 0
    await wait_until(lambda: svc.saw("STOPPING=1"), 2.0)
    log = await svc.whole_log()
    assert "phone service stopped" in log
    # Logging never prints a token, not even at DEBUG.
    assert "registered" in log  # the log is there, it is just clean
    for token in (first, second):
        assert token not in log
        assert token.split(".")[2] not in log  # nor the signature alone


async def test_service_refuses_a_token_file_others_can_read(
    exchange: ExchangeServer, service, tmp_path: Path
) -> None:
    token = make_token("desk-1")
    (tmp_path / "token").write_text(token)
    (tmp_path / "token").chmod(0o644)
    svc: Service = await service(service_config(tmp_path, exchange.url, ui=False))
    assert await asyncio.wait_for(svc.process.wait(), scaled(15)) == 2
    log = await svc.whole_log()
    assert "chmod 600" in log
    assert token not in log
    assert not svc.saw("READY=1")


async def test_service_runs_on_when_the_gateway_refuses_the_token(
    exchange: ExchangeServer, service, tmp_path: Path
) -> None:
    # Expired: the phone stays up (offline) so that a new file can bring it up.
    write_token(tmp_path / "token", make_token("desk-1", now=time.time() - 7200))
    svc: Service = await service(service_config(tmp_path, exchange.url, ui=False))
    await wait_until(lambda: svc.saw("READY=1"), 15.0)
    assert svc.process.returncode is None
    write_token(tmp_path / "token", make_token("desk-1"))
    await wait_until(lambda: svc.saw("STATUS=registered as desk-1"), 15.0)


async def test_service_status_tells_the_truth_and_nothing_follows_stopping(
    exchange: ExchangeServer, service, tmp_path: Path
) -> None:
    write_token(tmp_path / "token", make_token("desk-1", now=time.time() - 7200))
    svc: Service = await service(service_config(tmp_path, exchange.url, ui=False))
    await wait_until(lambda: svc.saw("READY=1"), 15.0)
    ready = next(n for n in svc.notices if "READY=1" in n)
    # Started, but not registered, and the status says why.
    assert "STATUS=not registered: " in ready, ready
    assert "refused the token" in ready and "expired" in ready.lower(), ready
    write_token(tmp_path / "token", make_token("desk-1"))
    await wait_until(lambda: svc.saw("STATUS=registered as desk-1"), 15.0)

    svc.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(svc.process.wait(), scaled(10)) == 0
    # Datagrams arrive in order: once this one is read, every notice the
    # service sent before it exited has been read too.
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"END-OF-TEST", str(tmp_path / "notify.sock"))
    await wait_until(lambda: svc.saw("END-OF-TEST"), 5.0)
    stopping = next(i for i, n in enumerate(svc.notices) if "STOPPING=1" in n)
    assert svc.notices[stopping + 1 :] == ["END-OF-TEST"], svc.notices


# --- the config layers -------------------------------------------------------


def test_layers_override_key_by_key_and_name_their_sources(tmp_path: Path) -> None:
    image = tmp_path / "image.toml"
    image.write_text(
        '[device]\nedge = "frankfurt"\ndebug = true\n[ui]\ncountry = "GB"\n'
    )
    provisioned = tmp_path / "provisioned.toml"
    provisioned.write_text('[device]\nedge = "dublin"\n')
    config = load_config([image, tmp_path / "missing.toml", provisioned])
    assert config.sources == ("<default>", str(image), str(provisioned))
    assert config.device.edge == "dublin"  # the later layer wins...
    assert config.device.debug is True  # ...key by key
    assert config.ui.country == "GB"
    assert config.ui.max_fps == 10  # the shipped default stays


@pytest.mark.parametrize(
    ("text", "key", "hint"),
    [
        ('[phone]\ntoken_fil = "/x"\n', "phone.token_fil", "token_file"),
        ("[devise]\n", "devise", "device"),
        ('[log]\nlevel = "loud"\n', "log.level", "debug"),
        ("[device]\nbackoff_max_ms = 100\n", "device.backoff_max_ms", ""),
        ("[phone\n", "", "not valid TOML"),
    ],
)
def test_bad_config_names_the_key_at_fault(tmp_path, text, key, hint) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config([path])
    assert key in str(info.value) and hint in str(info.value)


def test_token_file_checks_and_the_secret_never_shows(tmp_path: Path) -> None:
    path = tmp_path / "token"
    with pytest.raises(ConfigError, match="cannot read"):
        read_token(path)
    path.write_text("  \n")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="empty"):
        read_token(path)
    path.write_text("eyJ.secret.value\n")
    secret = read_token(path)
    assert secret.reveal() == "eyJ.secret.value"
    assert "secret" not in f"{secret} {secret!r} {[secret]}"
    assert repr(secret) == str([secret])[1:-1] == "Secret('********')"


# --- a fatal configuration error -------------------------------------------


def panel_config(tmp_path: Path, extra: str) -> Path:
    """A phone with the mock panel whose OLED is mirrored to screen.png."""
    config = tmp_path / "appliance.toml"
    config.write_text(
        f"""
[phone]
token_file = "{tmp_path / "token"}"

[ui]
enabled = true
pinmap = "{HW / "pinmap-reference.toml"}"
pin_factory = "mock"
display_driver = "dummy"
screen_file = "{tmp_path / "screen.png"}"
"""
        + extra
    )
    return config


def shows(path: Path, expected: Image.Image) -> bool:
    with Image.open(path) as shown:
        diff = ImageChops.difference(shown.convert("L"), expected.convert("L"))
    return diff.getbbox() is None


@pytest.mark.parametrize(
    ("extra", "key", "reason", "more"),
    [
        (
            "[device]\nbackoff_max_ms = 100\n",
            "device.backoff_max_ms",
            "",
            0,
        ),
        (
            '[devise]\nedge = "dublin"\n[log]\nlevel = "loud"\n',
            "devise",
            "did you mean 'device'",
            1,
        ),
    ],
)
async def test_a_config_error_stops_the_service_and_says_why_on_the_screen(
    service, tmp_path: Path, extra: str, key: str, reason: str, more: int
) -> None:
    write_token(tmp_path / "token", make_token("desk-1"))
    svc: Service = await service(panel_config(tmp_path, extra))
    # 2 is the unit's RestartPreventExitStatus: systemd does not restart it.
    # (30 s: the start-up imports alone take 12 s on a machine at load 12.)
    assert await asyncio.wait_for(svc.process.wait(), scaled(30)) == 2
    log = await svc.whole_log()
    assert f"appliance: error: {key}" in log
    assert "the error is shown on the display" in log
    assert not svc.saw("READY=1")
    error = load_config_error(panel_config(tmp_path, extra))
    assert error.key == key and len(error.problems) == more + 1
    assert reason in error.reason and reason in log
    expected = render_config_error(error.key, error.reason, more)
    assert shows(tmp_path / "screen.png", expected)


async def test_a_broken_ui_section_is_reported_in_the_journal_only(
    service, tmp_path: Path
) -> None:
    write_token(tmp_path / "token", make_token("desk-1"))
    svc: Service = await service(panel_config(tmp_path, "max_fps = 0\n"))
    assert await asyncio.wait_for(svc.process.wait(), scaled(30)) == 2
    log = await svc.whole_log()
    assert "appliance: error: ui.max_fps" in log
    assert "not shown on the display: the [ui] section cannot be used" in log
    assert not (tmp_path / "screen.png").exists()


async def test_a_token_file_others_can_read_is_shown_on_the_screen(
    service, tmp_path: Path
) -> None:
    (tmp_path / "token").write_text(make_token("desk-1"))
    (tmp_path / "token").chmod(0o644)
    svc: Service = await service(panel_config(tmp_path, ""))
    assert await asyncio.wait_for(svc.process.wait(), scaled(30)) == 2
    log = await svc.whole_log()
    assert "phone.token_file" in log and "chmod 600" in log
    with pytest.raises(ConfigError) as info:
        read_token(tmp_path / "token")
    expected = render_config_error(info.value.key, info.value.reason)
    assert shows(tmp_path / "screen.png", expected)


def load_config_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config([path])
    return info.value
