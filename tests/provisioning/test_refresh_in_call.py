"""A token refresh during a call: the composition root's provisioning client
with a real Device, the provisioner and the exchange in this process on
127.0.0.1. The call stays up and the Device uses the new token."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from appliance.app import provision_phone
from appliance.config import AppConfig, Secret
from appliance.exchange.server import ExchangeServer
from appliance.phone.connection import Connection
from appliance.provisioning.config import ProvisionerConfig
from appliance.provisioning.grant import hash_secret
from appliance.provisioning.server import Provisioner
from appliance.system.notify import Notifier
from tests.conftest import (
    ACCOUNT_SID,
    API_KEY,
    API_SECRET,
    APP_SID,
    local_device,
    make_token,
    scaled,
    wait_until,
)

pytestmark = pytest.mark.slow


def config(tmp_path: Path) -> ProvisionerConfig:
    return ProvisionerConfig(
        host="127.0.0.1",
        port=0,
        public_url="",
        database=tmp_path / "phones.db",
        token_ttl=3600,
        device_code_ttl=600,
        poll_interval=1,
        account_sid=ACCOUNT_SID,
        api_key_sid=API_KEY,
        api_key_secret=Secret(API_SECRET),
        outgoing_application_sid=APP_SID,
        admin_password_hash=Secret(hash_secret("unused password")),
    )


async def test_a_refresh_during_a_call_keeps_the_call(
    exchange: ExchangeServer, tmp_path: Path
):
    async with Provisioner(config(tmp_path)) as prov:
        device = local_device(exchange.url)
        caller = local_device(exchange.url)
        current: list[str] = []
        client = provision_phone(
            AppConfig(
                provisioner_url=prov.url,
                credential_file=tmp_path / "phone" / "credential",
            ),
            device,
            Notifier(),
            None,
            current,
        )
        task = asyncio.get_running_loop().create_task(client.run())
        try:
            loop = asyncio.get_running_loop()
            await wait_until(lambda: prov.grants.pending(loop.time()), 10.0)
            code = prov.grants.pending(loop.time())[0].user_code
            prov.grants.approve(code, "alice", "", "test", loop.time())
            await wait_until(lambda: device.status() == "ready", 15.0)
            first = current[0]

            incoming: asyncio.Queue[Connection] = asyncio.Queue()
            device.on("incoming", incoming.put_nowait)
            await caller.setup(make_token("caller"))
            call = await caller.connect({"To": "alice"})
            answered = await asyncio.wait_for(incoming.get(), scaled(10))
            await answered.accept()
            await wait_until(lambda: call.status() == "open", 10.0)
            dropped: list[str] = []
            answered.on("disconnect", lambda _c: dropped.append("callee"))
            call.on("disconnect", lambda _c: dropped.append("caller"))

            await asyncio.sleep(1.1)  # a new iat: the next token differs
            client.token_will_expire()  # as the Device emits it
            await wait_until(lambda: current[0] != first, 10.0)
            assert device.status() == "busy"
            # The Device holds the new token, on the same signaling session.
            await wait_until(lambda: device._token == current[0], 5.0)
            assert (call.status(), answered.status(), dropped) == ("open", "open", [])
            await call.disconnect()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await caller.destroy()
            await device.destroy()
