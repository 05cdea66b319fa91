"""Two phones and the exchange, each its own process, as on a real network.

The exchange is ``python -m appliance exchange`` and each phone is
``python -m appliance phone`` (JSON commands on stdin, JSON events on stdout),
all on 127.0.0.1. The test reads each phone's event stream in order.

What each side hears is checked in test_calls_inprocess.py, where the local
sounds can be switched off: an agent plays its ring, DTMF feedback and
disconnect sound on the same ``file:`` output, and the output re-opens (so
rewrites) the file for each of them.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from appliance.errors import TwilioError
from appliance.exchange.server import ExchangeServer
from tests.conftest import (
    ExchangeProcess,
    PhoneProcess,
    local_device,
    make_token,
    scaled,
)

pytestmark = pytest.mark.slow  # real aiortc

PHONE_ARGS = ("--backoff-max-ms", "3000")


async def test_call_then_exchange_killed_and_restarted(
    exchange_process: Callable[..., Awaitable[ExchangeProcess]],
    phone_process: Callable[..., Awaitable[PhoneProcess]],
    tmp_path: Path,
):
    exchange = await exchange_process()
    token_file = tmp_path / "bob.jwt"
    token_file.write_text(make_token("bob") + "\n")
    token_file.chmod(0o600)  # a token file others can read is refused
    alice, bob = await asyncio.gather(
        phone_process(
            "alice",
            exchange.url,
            make_token("alice"),
            "--input",
            "tone:523",
            *PHONE_ARGS,
        ),
        phone_process(
            "bob",
            exchange.url,
            None,
            "--token-file",
            str(token_file),
            "--input",
            "tone:1100",
            *PHONE_ARGS,
        ),
    )
    # Process start includes importing aiortc: allow for a slow machine.
    await alice.expect("ready", within=20, status="ready", identity="alice")
    await bob.expect("ready", within=20, status="ready", identity="bob")

    # ---- a call: ring, accept, DTMF, audio, hang up
    reply = await alice.send("connect", params={"To": "bob", "ticket": "42 b"})
    assert reply["ok"], reply
    incoming = await bob.expect("incoming")
    assert incoming["custom"] == {"ticket": "42 b"}
    assert incoming["parameters"]["From"] == "client:alice"
    assert (await bob.send("status"))["call"] == "pending"
    assert (await bob.send("accept"))["ok"]
    await bob.expect("connect", call_sid=incoming["call_sid"])
    connected = await alice.expect("connect")
    assert connected["call_sid"].startswith("CA")
    assert (await alice.send("status"))["status"] == "busy"

    assert (await alice.send("digits", digits="12#"))["ok"]
    for digit in "12#":
        await bob.expect("dtmf", digit=digit)
    assert (await bob.send("digits", digits="9"))["ok"]
    await alice.expect("dtmf", digit="9")

    assert (await alice.send("hangup"))["ok"]
    await alice.expect("disconnect", call_sid=connected["call_sid"])
    await bob.expect("disconnect", call_sid=incoming["call_sid"])
    assert (await alice.send("status"))["status"] == "ready"
    assert (await bob.send("status"))["status"] == "ready"
    # ---- the exchange dies: both phones go offline
    await exchange.kill()
    await alice.expect("offline", status="offline")
    await bob.expect("offline", status="offline")

    # ---- ...and comes back on the same port: both ready within the backoff cap
    restarted = await exchange_process(exchange.port)
    back_at = time.monotonic()
    assert restarted.port == exchange.port
    await alice.expect("ready", within=10, status="ready")
    await bob.expect("ready", within=10, status="ready")
    # backoff_max_ms 3000 caps every retry delay (jitter included), so the
    # next attempt starts within 3 s of the restart; connecting takes ms.
    assert time.monotonic() - back_at < 5.0 * scaled(1)

    # They are really registered again: a third phone (in this process, no
    # recording, so that the two recordings stay as they are) calls each of
    # them, and they decline.
    carol = local_device(restarted.url)
    try:
        await carol.setup(make_token("carol"))
        for phone in (alice, bob):
            errors: asyncio.Queue[TwilioError] = asyncio.Queue()
            conn = await carol.connect({"To": phone.name})
            conn.on("error", errors.put_nowait)
            await phone.expect("incoming")
            assert (await phone.send("reject"))["ok"]
            error = await asyncio.wait_for(errors.get(), scaled(5))
            assert error.code == 31603
    finally:
        await carol.destroy()

    assert await alice.quit() == 0
    assert await bob.quit() == 0
    # stdout was nothing but JSON.
    for phone in (alice, bob):
        assert not phone.events("<not json>"), phone.events("<not json>")


async def test_phone_cli_reports_a_bad_token_and_keeps_running(
    exchange: ExchangeServer,
    phone_process: Callable[..., Awaitable[PhoneProcess]],
):
    carol = await phone_process(
        "carol", exchange.url, make_token("carol", secret="z" * 32)
    )
    error = await carol.expect("error", within=20)
    assert error["code"] == 31202
    await carol.expect("offline", status="offline")
    assert (await carol.send("status"))["status"] == "offline"
    reply = await carol.send("update_token", token=make_token("carol"))
    assert reply["ok"]
    await carol.expect("ready", status="ready", identity="carol")
    assert await carol.quit() == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--backoff-max-ms", "100"],
        ["--signaling-url", "http://127.0.0.1:1/signal"],
        ["--local-address", "not-an-ip"],
    ],
)
async def test_phone_cli_rejects_bad_options(args: list[str]):
    base = {"--signaling-url": "ws://127.0.0.1:1/signal"}
    for key, value in zip(args[::2], args[1::2], strict=True):
        base[key] = value
    argv = [item for pair in base.items() for item in pair]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appliance",
        "phone",
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "APPLIANCE_TOKEN": "t"},
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), scaled(20))
    assert process.returncode == 2
    assert stdout == b""
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("appliance: error:"), lines
