"""``appliance provision status|reset`` against a real phone service process
(mock pins, dummy OLED) enrolled at a real provisioner, registered at the
local exchange: the reset is asked on the panel and only a long press of
Hangup performs it."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from appliance.provisioning.config import load_provisioner_config
from appliance.provisioning.credential import StoredCredential, save_credential
from appliance.provisioning.store import PhoneStore
from appliance_dev.exchange_process import stop_process
from tests.conftest import ExchangeProcess, scaled, wait_until
from tests.provisioning.conftest import provisioner_config, start_provisioner
from tests.provisioning.test_end_to_end import phone_config

pytestmark = pytest.mark.slow


@dataclass
class Phone:
    """``python -m appliance_dev.finger``: the service, a finger on its panel."""

    process: asyncio.subprocess.Process
    notices: list[str] = field(default_factory=list)
    screens: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    def saw(self, needle: str) -> bool:
        return any(needle in n for n in self.notices)

    def finger(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")


@pytest.fixture
async def phone(tmp_path: Path) -> AsyncIterator[Callable[[Path], Awaitable[Phone]]]:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.setblocking(False)
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    started: list[Phone] = []

    async def lines(stream: asyncio.StreamReader | None, sink: list[str]) -> None:
        assert stream is not None
        async for line in stream:
            sink.append(line.decode(errors="replace").strip())

    async def notices(into: Phone) -> None:
        while True:
            into.notices.append((await loop.sock_recv(notify, 4096)).decode())

    async def start(config: Path) -> Phone:
        env = {
            **os.environ,
            "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
            "RUNTIME_DIRECTORY": str(tmp_path / "run"),
        }
        (tmp_path / "run").mkdir(mode=0o700)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "appliance_dev.finger", "--config", str(config)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        started.append(svc := Phone(process))
        tasks.extend(
            loop.create_task(coro)
            for coro in (
                notices(svc),
                lines(process.stdout, svc.screens),
                lines(process.stderr, svc.stderr),
            )
        )
        return svc

    try:
        yield start
    finally:
        for svc in started:
            await stop_process(svc.process, grace_s=scaled(10))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        notify.close()


async def cli(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "appliance", "provision", *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def test_status_and_a_reset_confirmed_on_the_panel(
    exchange_process: Callable[..., Awaitable[ExchangeProcess]],
    phone: Callable[[Path], Awaitable[Phone]],
    tmp_path: Path,
):
    exchange = await exchange_process()
    prov = await start_provisioner(provisioner_config(tmp_path))
    try:
        database = load_provisioner_config(tmp_path / "provisioner.toml").database
        credential = PhoneStore(database).enroll("alice", "", time.time())
        credential_file = tmp_path / "phone" / "credential"
        save_credential(
            credential_file, StoredCredential(str(credential), "alice", prov.url)
        )
        config = phone_config(tmp_path, exchange.url, prov.url)
        svc = await phone(config)
        await wait_until(lambda: svc.saw("STATUS=registered as alice"), 20.0)
        await wait_until(lambda: "screen: idle" in svc.screens, 10.0)
        sock_path = tmp_path / "run" / "control.sock"
        await wait_until(sock_path.exists, 10.0)
        assert sock_path.stat().st_mode & 0o777 == 0o600
        sock = str(sock_path)

        status = await cli("status", "--config", str(config), "--socket", sock)
        out = (await status.communicate())[0].decode()
        assert status.returncode == 0, out
        assert "state: provisioned as alice" in out
        assert f"provisioner: {prov.url}" in out and "service: ready" in out
        assert "token expires: 20" in out and "(in 3" in out  # a 1 h token
        assert credential.secret not in out

        # The panel alone: hold Hangup to be asked; another button cancels.
        svc.finger("press hangup")
        await wait_until(lambda: "screen: confirm_reset" in svc.screens, 10.0)
        svc.finger("release hangup")
        svc.finger("tap ready")
        await wait_until(lambda: svc.screens[-1] == "screen: idle", 10.0)
        await wait_until(
            lambda: any("reset cancelled on the panel" in x for x in svc.stderr), 10.0
        )
        assert credential_file.exists()

        # The command line asks; only the long press on the panel confirms.
        reset = await cli("reset", "--socket", sock)
        assert reset.stdout is not None
        prompt = await asyncio.wait_for(reset.stdout.readline(), scaled(10))
        assert b"hold HANGUP for 3 seconds" in prompt
        await wait_until(lambda: "screen: confirm_reset" in svc.screens, 10.0)
        assert credential_file.exists()
        svc.finger("press hangup")  # and hold it until the reset is done
        rest = (await asyncio.wait_for(reset.communicate(), scaled(20)))[0].decode()
        svc.finger("release hangup")
        assert reset.returncode == 0, rest
        assert "credential was removed" in rest
        assert not credential_file.exists()
        await wait_until(lambda: svc.saw("STATUS=waiting for provisioning"), 10.0)
        await wait_until(lambda: "screen: provisioning" in svc.screens, 10.0)
        log = "\n".join(svc.stderr)
        assert "provisioning reset confirmed on the panel" in log
        assert credential.secret not in log

    finally:
        await prov.stop()
