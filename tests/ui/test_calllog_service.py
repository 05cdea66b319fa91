"""The call log and do-not-disturb in the phone service as a real process,
pressed through the finger on its mock pins (``appliance_dev.finger``).

Do-not-disturb end to end (exchange, caller and callee each a process): in
``busy`` mode the caller hears 31486 at once; in ``ignore`` mode it rings on
until the exchange gives up (31480). Either way the ringer LED stays dark and
the call is logged as missed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from appliance.calllog.core import Direction
from appliance.calllog.store import CallLogStore
from appliance.exchange.server import ExchangeServer
from appliance_dev.exchange_process import stop_process
from tests.conftest import (
    ExchangeProcess,
    PhoneProcess,
    local_device,
    make_token,
    scaled,
    wait_until,
)

HW = Path(__file__).resolve().parents[2] / "hw"


class Finger:
    """The service process; ``lines`` is what it printed (stdout and stderr)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    def say(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")

    def screens(self) -> list[str]:
        return [line for line in self.lines if line.startswith("screen: ")]

    def saw(self, needle: str) -> bool:
        return any(needle in line for line in self.lines)


@contextlib.asynccontextmanager
async def started_service(
    tmp_path: Path, signaling_url: str, dnd_mode: str = "busy"
) -> AsyncIterator[Finger]:
    """The phone service as desk-1 on ``signaling_url``, with the finger."""
    (tmp_path / "token").write_text(make_token("desk-1"))
    (tmp_path / "token").chmod(0o600)
    config = tmp_path / "appliance.toml"
    config.write_text(
        f"""
[phone]
token_file = "{tmp_path / "token"}"

[device]
signaling_url = "{signaling_url}"
local_addresses = ["127.0.0.1"]
input_device = "null"
output_device = "null"

[ui]
enabled = true
pinmap = "{HW / "pinmap-reference.toml"}"
pin_factory = "mock"
display_driver = "dummy"
state_file = "{tmp_path / "panel.json"}"
screen_file = "{tmp_path / "screen.png"}"
call_log_file = "{tmp_path / "calls.db"}"
clock_sync_file = ""
dnd_mode = "{dnd_mode}"
"""
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "appliance_dev.finger", "--config", str(config)),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    finger = Finger(process)

    async def read(stream: asyncio.StreamReader | None) -> None:
        assert stream is not None
        async for line in stream:
            finger.lines.append(line.decode(errors="replace").strip())

    readers = [
        asyncio.get_running_loop().create_task(read(s))
        for s in (process.stdout, process.stderr)
    ]
    try:
        yield finger
    finally:
        await stop_process(process, grace_s=scaled(10))
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


@pytest.fixture
async def service(tmp_path: Path, exchange: ExchangeServer) -> AsyncIterator[Finger]:
    async with started_service(tmp_path, exchange.url) as finger:
        yield finger


async def test_missed_call_log_and_dnd_in_the_service(
    service: Finger, exchange: ExchangeServer, tmp_path: Path
) -> None:
    await wait_until(lambda: service.saw("screen: idle"), 30.0)
    carol = local_device(exchange.url, input_device="null")
    errors: list[int] = []
    carol.on("error", lambda e: errors.append(e.code))
    try:
        await carol.setup(make_token("carol"))
        call = await carol.connect({"To": "client:desk-1"})
        await wait_until(lambda: service.saw("screen: ringing"), 10.0)
        await ringer_flashes(service)  # what the do-not-disturb tests rule out
        await call.disconnect()
        await wait_until(lambda: service.saw("call log: missed client:carol"), 10.0)

        def logged() -> list[Direction]:
            return [e.direction for e in CallLogStore(tmp_path / "calls.db").recent()]

        await wait_until(lambda: logged() == [Direction.MISSED], 10.0)
        assert (tmp_path / "screen.png").exists()

        # Hold # (the reference build's hold time is 1 s): do-not-disturb.
        service.say("press #")
        await wait_until(lambda: service.saw("do-not-disturb on"), 10.0)
        service.say("release #")
        await carol.connect({"To": "client:desk-1"})
        await wait_until(lambda: 31486 in errors, 10.0)
        assert service.saw("do-not-disturb: call from client:carol declined")
        await wait_until(lambda: logged() == [Direction.MISSED] * 2, 10.0)

        # Mute shows the log on the OLED.
        service.say("tap mute")
        await wait_until(lambda: service.saw("screen: call_log"), 10.0)
        service.say("tap hangup")
        await wait_until(lambda: service.screens()[-1] == "screen: idle", 10.0)
    finally:
        await carol.destroy()
    saved = tmp_path / "panel.json"
    await wait_until(
        lambda: saved.exists() and json.loads(saved.read_text()).get("dnd") is True,
        10.0,
    )
    await stop_process(service.process, grace_s=scaled(10))
    assert all(e.seen for e in CallLogStore(tmp_path / "calls.db").recent())


async def look(service: Finger, led: str) -> tuple[bool, bool]:
    """(lit now, lit at any moment since the last look) for ``led``."""
    before = len(service.lines)
    service.say(f"look {led}")
    prefix = f"led {led}: "
    await wait_until(
        lambda: any(line.startswith(prefix) for line in service.lines[before:]), 10.0
    )
    line = next(x for x in service.lines[before:] if x.startswith(prefix))
    fields = dict(part.split("=") for part in line[len(prefix) :].split())
    return fields["lit"] == "1", fields["since"] == "1"


async def ringer_flashes(service: Finger) -> None:
    """Return once the ringer LED is seen lit (its cadence has dark phases)."""
    limit = asyncio.get_running_loop().time() + scaled(10.0)
    while not (await look(service, "ringer"))[1]:
        assert asyncio.get_running_loop().time() < limit, "the ringer never lit"


@pytest.mark.parametrize("mode", ["busy", "ignore"])
async def test_dnd_between_processes(
    mode: str,
    tmp_path: Path,
    exchange_process: Callable[..., Awaitable[ExchangeProcess]],
    phone_process: Callable[..., Awaitable[PhoneProcess]],
) -> None:
    # A ring timeout long enough to see the ignored call still ringing.
    ring_timeout = scaled(8.0)
    exchange = await exchange_process(0, "--ring-timeout", str(ring_timeout))
    async with started_service(tmp_path, exchange.url, dnd_mode=mode) as desk:
        alice = await phone_process("alice", exchange.url, make_token("alice"))
        await alice.expect("ready", within=20, status="ready")
        await wait_until(lambda: desk.saw("screen: idle"), 30.0)
        desk.say("press #")
        await wait_until(lambda: desk.saw("do-not-disturb on"), 10.0)
        desk.say("release #")
        assert await look(desk, "ringer") == (False, False)

        reply = await alice.send("connect", params={"To": "desk-1"})
        assert reply["ok"], reply
        if mode == "busy":
            await alice.expect("error", within=10, code=31486)
            await alice.expect("disconnect", within=10)
            verb = "declined"
        else:
            await wait_until(
                lambda: desk.saw("do-not-disturb: call from client:alice ignored"),
                10.0,
            )
            # Ignored here, the call still rings for the caller ...
            assert (await alice.send("status"))["call"] in ("connecting", "ringing")
            assert not alice.events("error")
            # ... until the exchange's ring timeout ends it.
            await alice.expect("error", within=ring_timeout + 15, code=31480)
            verb = "ignored"
        assert desk.saw(f"do-not-disturb: call from client:alice {verb}")
        store = CallLogStore(tmp_path / "calls.db")
        await wait_until(
            lambda: [e.direction for e in store.recent()] == [Direction.MISSED], 10.0
        )
        assert not alice.events("accept") and not alice.events("connect")
        # The ringer never lit, and the screen never showed a ringing call.
        assert await look(desk, "ringer") == (False, False)
        assert "screen: ringing" not in desk.screens()
