"""A fresh phone gets its identity by the device grant and keeps it fresh:
three real processes on 127.0.0.1 (provisioner, local exchange, phone
service with mock pins and the dummy OLED)."""

from __future__ import annotations

import asyncio
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from appliance.provisioning.credential import load_credential
from tests.conftest import ExchangeProcess, scaled, wait_until
from tests.provisioning.conftest import (
    ProvisionerProcess,
    provisioner_config,
    start_provisioner,
)
from tests.test_service import HW, Service, service  # noqa: F401  # the fixture

pytestmark = pytest.mark.slow


def phone_config(tmp_path: Path, exchange_url: str, provisioner_url: str) -> Path:
    config = tmp_path / "appliance.toml"
    config.write_text(
        f"""
[phone]
provisioner_url = "{provisioner_url}"
credential_file = "{tmp_path / "phone" / "credential"}"

[device]
signaling_url = "{exchange_url}"
local_addresses = ["127.0.0.1"]
input_device = "null"
output_device = "null"

[log]
level = "info"

[ui]
enabled = true
pinmap = "{HW / "pinmap-reference.toml"}"
pin_factory = "mock"
display_driver = "dummy"
state_file = "{tmp_path / "panel.json"}"
"""
    )
    return config


async def until(check: Callable[[], Awaitable[Any]], limit_s: float) -> Any:
    """Await ``check()`` until it returns something true."""
    async with asyncio.timeout(scaled(limit_s)):
        while not (result := await check()):  # noqa: ASYNC110  # polls HTTP
            await asyncio.sleep(0.1)
        return result


async def test_qr_enrollment_registration_refresh_and_revocation(
    exchange_process: Callable[..., Awaitable[ExchangeProcess]],
    service: Callable[[Path], Awaitable[Service]],  # noqa: F811  # the fixture
    tmp_path: Path,
):
    exchange = await exchange_process()
    prov: ProvisionerProcess = await start_provisioner(
        provisioner_config(tmp_path, token_ttl=15)
    )
    try:
        svc = await service(phone_config(tmp_path, exchange.url, prov.url))
        # Unprovisioned: up and saying so, not restart-looping.
        await wait_until(lambda: svc.saw("READY=1"), 15.0)
        await wait_until(
            lambda: svc.saw("STATUS=not registered: waiting for provisioning"), 5.0
        )

        async with aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True)
        ) as http:
            csrf = await prov.admin(http)

            async def pending() -> list[dict[str, str]]:
                async with http.get(f"{prov.url}/api/admin/pending") as response:
                    return list(await response.json())

            codes = await until(pending, 15.0)
            assert len(codes) == 1
            # The code the phone logs is the one it shows (and the QR holds);
            # the provisioner may list it before the phone's line is read.
            await wait_until(
                lambda: any(codes[0]["user_code"] in line for line in svc.stderr), 5.0
            )
            async with http.post(
                f"{prov.url}/api/admin/approve",
                json={"user_code": codes[0]["user_code"], "identity": "alice"},
                headers={"X-CSRF-Token": csrf},
            ) as response:
                assert response.status == 200

            await wait_until(lambda: svc.saw("STATUS=registered as alice"), 20.0)
            credential_file = tmp_path / "phone" / "credential"
            assert stat.S_IMODE(credential_file.stat().st_mode) == 0o600
            stored = load_credential(credential_file)
            assert stored is not None and stored.identity == "alice"

            # token_will_expire (10 s before the 15 s token ends) fetches anew.
            def tokens() -> int:
                return sum("new token for alice" in line for line in svc.stderr)

            await wait_until(lambda: tokens() >= 2, 20.0)
            assert not svc.saw("STATUS=offline")

            async with http.post(
                f"{prov.url}/api/admin/revoke",
                json={"sid": stored.credential.split(".")[0]},
                headers={"X-CSRF-Token": csrf},
            ) as response:
                assert response.status == 200
        await wait_until(
            lambda: svc.saw("STATUS=Phone revoked by the administrator"), 20.0
        )
        log = "".join(svc.stderr) + "".join(prov.stderr)
        # Secrets never reach the logs.
        assert stored.credential.split(".")[1] not in log
    finally:
        await prov.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_token_expires_while_the_provisioner_is_down_then_recovers(
    exchange_process: Callable[..., Awaitable[ExchangeProcess]],
    service: Callable[[Path], Awaitable[Service]],  # noqa: F811  # the fixture
    tmp_path: Path,
):
    exchange = await exchange_process()
    config = provisioner_config(tmp_path, token_ttl=15)
    port = free_port()
    config.write_text(config.read_text().replace("127.0.0.1:0", f"127.0.0.1:{port}"))
    prov = await start_provisioner(config)
    try:
        svc = await service(phone_config(tmp_path, exchange.url, prov.url))
        async with aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True)
        ) as http:
            csrf = await prov.admin(http)

            async def pending() -> list[dict[str, str]]:
                async with http.get(f"{prov.url}/api/admin/pending") as response:
                    return list(await response.json())

            code = (await until(pending, 15.0))[0]["user_code"]
            async with http.post(
                f"{prov.url}/api/admin/approve",
                json={"user_code": code, "identity": "alice"},
                headers={"X-CSRF-Token": csrf},
            ) as response:
                assert response.status == 200
        await wait_until(lambda: svc.saw("STATUS=registered as alice"), 20.0)

        # The provisioner goes away; the 15 s token runs out unrefreshed.
        await prov.stop()
        await wait_until(lambda: svc.saw("STATUS=offline: token expired"), 30.0)
        assert any("provisioner unreachable" in line for line in svc.stderr)

        # It comes back (same address, same database): the phone recovers.
        prov = await start_provisioner(config)
        seen = len(svc.notices)
        await wait_until(
            lambda: any("registered as alice" in n for n in svc.notices[seen:]),
            60.0,
        )
    finally:
        await prov.stop()
