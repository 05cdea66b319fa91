"""A real provisioner process on 127.0.0.1 with the test exchange's API key."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from appliance.provisioning.grant import hash_secret
from appliance_dev.exchange_process import stop_process
from tests.conftest import ACCOUNT_SID, API_KEY, API_SECRET, APP_SID, scaled

ADMIN_PASSWORD = "let me in, please"
#: Computed once: scrypt is slow on purpose.
_ADMIN_HASH = hash_secret(ADMIN_PASSWORD)


def write_secret(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def provisioner_config(
    tmp_path: Path, *, token_ttl: int = 3600, poll: int = 1, tls: str = ""
) -> Path:
    """The provisioner's TOML file; ``tls`` adds lines to ``[provisioner]``."""
    write_secret(tmp_path / "api-secret", API_SECRET)
    write_secret(tmp_path / "admin-hash", _ADMIN_HASH)
    config = tmp_path / "provisioner.toml"
    config.write_text(
        f"""
[provisioner]
listen = "127.0.0.1:0"
database = "phones.db"
token_ttl = {token_ttl}
poll_interval = {poll}
{tls}

[twilio]
account_sid = "{ACCOUNT_SID}"
api_key_sid = "{API_KEY}"
api_key_secret_file = "api-secret"
outgoing_application_sid = "{APP_SID}"

[admin]
password_hash_file = "admin-hash"
"""
    )
    return config


@dataclass
class ProvisionerProcess:
    process: asyncio.subprocess.Process
    url: str
    config: Path
    stderr: list[str]
    drain: asyncio.Task[None] | None = None

    async def admin(self, session: aiohttp.ClientSession) -> str:
        """Log ``session`` in through the JSON API; return the CSRF token."""
        async with session.post(
            f"{self.url}/api/admin/login", json={"password": ADMIN_PASSWORD}
        ) as response:
            assert response.status == 200, await response.text()
            body: dict[str, Any] = await response.json()
            return str(body["csrf"])

    async def stop(self) -> None:
        await stop_process(self.process, grace_s=scaled(10))
        if self.drain is not None:
            await self.drain


async def _drain(stream: asyncio.StreamReader, sink: list[str]) -> None:
    async for line in stream:
        sink.append(line.decode(errors="replace"))


async def start_provisioner(config: Path) -> ProvisionerProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appliance",
        "provisioner",
        "serve",
        "--config",
        str(config),
        "--log-level",
        "DEBUG",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None and process.stderr is not None
    stderr: list[str] = []
    drain = asyncio.get_running_loop().create_task(_drain(process.stderr, stderr))
    line = await asyncio.wait_for(process.stdout.readline(), scaled(20))
    text = line.decode().strip()
    if "listening on http" not in text:
        await stop_process(process, grace_s=0.0)
        await drain
        raise AssertionError(f"no provisioner: {text!r} {''.join(stderr)}")
    url = text.split("listening on ", 1)[1]
    return ProvisionerProcess(process, url, config, stderr, drain)


@pytest.fixture
async def provisioner(tmp_path: Path) -> AsyncIterator[ProvisionerProcess]:
    started = await start_provisioner(provisioner_config(tmp_path))
    try:
        yield started
    finally:
        await started.stop()
