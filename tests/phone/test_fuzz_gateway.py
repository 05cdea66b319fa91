"""The phone against a hostile gateway: 50 000 malformed or mutated frames.

Issue 12, item 9. A real Device (in-process, real WebSockets on 127.0.0.1)
registers with :class:`HostileGateway`, which then sends frames made from a
seeded RNG (``FUZZ_SEED`` below; a failure names it). The test asserts that:

* no exception escapes into the event loop (a loop exception handler records
  them) and no signaling event handler fails;
* every call the storm created ends once the gateway drops the session;
* the same Device then registers again, through the gateway turned into a relay
  to a real exchange, and places a call that another phone answers;
* warnings about bad frames are rate-limited (appliance/log.py LogLimiter).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from appliance.errors import ApplianceError, TwilioError
from appliance.exchange.server import ExchangeServer
from appliance.phone.connection import Connection
from tests.conftest import local_device, make_token, scaled, wait_until
from tests.phone.hostile_gateway import HostileGateway, frame

pytestmark = pytest.mark.slow  # real aiortc for the call after the storm

FUZZ_SEED = int(os.environ.get("APPLIANCE_FUZZ_SEED", "20261203"))
FUZZ_FRAMES = 50_000


class LoopErrors:
    """Records what reaches the loop's exception handler."""

    def __init__(self) -> None:
        self.contexts: list[dict[str, Any]] = []

    def __call__(self, loop: asyncio.AbstractEventLoop, ctx: dict[str, Any]) -> None:
        self.contexts.append(ctx)
        loop.default_exception_handler(ctx)

    def summary(self) -> list[str]:
        return [
            f"{ctx.get('message')}: {ctx.get('exception')!r}" for ctx in self.contexts
        ]


@pytest.fixture
async def loop_errors() -> AsyncIterator[LoopErrors]:
    loop = asyncio.get_running_loop()
    errors = LoopErrors()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(errors)
    yield errors
    loop.set_exception_handler(previous)


async def test_phone_survives_a_hostile_gateway(
    exchange: ExchangeServer,
    loop_errors: LoopErrors,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    incoming: list[Connection] = []
    errors: list[TwilioError] = []
    tasks: set[asyncio.Task[None]] = set()

    def on_incoming(conn: Connection) -> None:
        # Accept some, so that garbage SDP reaches the media stack.
        incoming.append(conn)
        if len(incoming) % 10 == 1:
            task = asyncio.ensure_future(_quietly(conn.accept()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async with HostileGateway(FUZZ_FRAMES, FUZZ_SEED) as gateway:
        device = local_device(gateway.url)
        device.on("incoming", on_incoming)
        device.on("error", errors.append)  # expected: reported, never raised
        try:
            await asyncio.wait_for(device.setup(make_token("alice")), scaled(10))
            t0 = time.monotonic()
            # Outgoing calls too, so mutated ringing and answer frames find one.
            placed: list[int] = []
            caller = asyncio.ensure_future(_keep_calling(device, gateway, placed))
            await asyncio.wait_for(gateway.storm_done.wait(), scaled(120))
            await caller
            storm_s = time.monotonic() - t0
            where = f"seed {FUZZ_SEED}, {gateway.sent} frames in {storm_s:.1f} s"
            # The storm reached every path: incoming and outgoing calls,
            # errors reported, frames answered.
            assert incoming and placed and errors and gateway.frames_seen, where
            # The gateway hangs up after the storm: every call must end.
            gateway.relay_to = exchange.url
            await wait_until(lambda: not device.connections(), 20)
            assert not loop_errors.contexts, (where, loop_errors.summary())
            # The hostile gateway is this test's own websockets server: its
            # records ("websockets.server") are not the phone's.
            crashes = [
                f"{r.name}: {r.getMessage()}"
                for r in caplog.records
                if (r.exc_info is not None or r.levelno >= logging.ERROR)
                and not r.name.startswith("websockets.server")
            ]
            assert not crashes, (where, crashes[:5])

            # Warnings about the gateway's bad frames: a burst per window,
            # not one per frame (thousands of them were malformed).
            # Nor one line per repeated connected frame or offline/ready flap.
            def lines(template: str) -> int:
                return sum(1 for r in caplog.records if r.msg.startswith(template))

            assert 0 < lines("! malformed frame from the gateway") <= 20, where
            assert 0 < lines("gateway error") <= 20, where
            assert lines("connected to the gateway") <= 20, where
            assert lines("registered as") <= 20, where
            # Back on a sane gateway (relayed to the exchange): registered and
            # able to place a call that is answered.
            await wait_until(lambda: device.status() == "ready", 20)
            await _call_through_exchange(device, exchange.url)
            assert not loop_errors.contexts, (where, loop_errors.summary())
        finally:
            await device.destroy()


async def _quietly(step: Awaitable[None]) -> None:
    with contextlib.suppress(ApplianceError):
        await step


async def _keep_calling(
    device: Any, gateway: HostileGateway, placed: list[int]
) -> None:
    """Place a call whenever the line is free, until the storm ends."""
    while not gateway.storm_done.is_set():
        if device.status() != "busy":
            with contextlib.suppress(ApplianceError):
                await device.connect({"To": "bob"})
                placed.append(1)
        await asyncio.sleep(0.05)


async def _call_through_exchange(alice: Any, url: str) -> None:
    bob = local_device(url)
    answered = asyncio.Event()

    async def answer(conn: Connection) -> None:
        await conn.accept()
        answered.set()

    bob.on("incoming", lambda conn: asyncio.ensure_future(answer(conn)))
    try:
        await asyncio.wait_for(bob.setup(make_token("bob")), scaled(10))
        accepted = asyncio.Event()
        conn = await alice.connect({"To": "bob"})
        conn.on("accept", lambda _c: accepted.set())
        await asyncio.wait_for(accepted.wait(), scaled(10))
        await asyncio.wait_for(answered.wait(), scaled(10))
        await conn.disconnect()
        await wait_until(lambda: not alice.connections() and not bob.connections())
    finally:
        await bob.destroy()


async def test_gateway_text_in_phone_logs_is_escaped_and_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Regressions found by the storm: every "error", and every offline/ready
    # flap, logged a line; CallSid, From and identity went to the log raw.
    caplog.set_level(logging.INFO)
    forged = "x\n2026-01-01 INFO forged line"
    script: list[str | bytes] = [
        frame("connected", {"token": {"identity": forged, "ttl": 60}}),
        frame(
            "invite",
            {"callsid": forged, "sdp": "v=0", "parameters": {"From": forged}},
        ),
    ]
    for _ in range(200):
        script += [frame("offline", {}), frame("ready", {})]
        script.append(frame("error", {"error": {"code": 31000, "message": forged}}))
    incoming: list[Connection] = []
    async with HostileGateway(0, 0, script=script) as gateway:
        device = local_device(gateway.url)
        device.on("incoming", incoming.append)
        device.on("error", lambda _e: None)
        try:
            await asyncio.wait_for(device.setup(make_token("alice")), scaled(10))
            await asyncio.wait_for(gateway.storm_done.wait(), scaled(20))
            await wait_until(lambda: not device.connections(), 10)
        finally:
            await device.destroy()
    ours = [r for r in caplog.records if r.name.startswith("appliance.")]
    assert not [r.getMessage() for r in ours if "\n" in r.getMessage()]
    assert any("incoming call" in r.getMessage() for r in ours)
    for template in ("gateway error", "registered as"):
        count = sum(1 for r in ours if r.msg.startswith(template))
        assert 0 < count <= 10, (template, count)


async def test_phone_process_survives_a_hostile_gateway(
    exchange: ExchangeServer, phone_process: Any
) -> None:
    # The same storm, smaller, at an ``appliance phone`` process: a crash
    # there would show as a traceback on stderr or a process that exits.
    async with HostileGateway(10_000, FUZZ_SEED + 1) as gateway:
        phone = await phone_process("alice", gateway.url, make_token("alice"))
        await phone.expect("ready", within=10)
        await asyncio.wait_for(gateway.storm_done.wait(), scaled(60))
        gateway.relay_to = exchange.url
        reply = await phone.send("status")
        assert phone.process.returncode is None
        # The gateway hung up after the storm; the relay gets it registered.
        await wait_until(lambda: gateway.connections >= 2, 20)
        for _ in range(200):
            if (await phone.send("status"))["status"] == "ready":
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the phone did not register again after the storm")
        await phone.send("connect", params={"To": "echo"})
        await phone.expect("connect", within=10)
        assert (await phone.send("hangup"))["ok"]
        await phone.expect("disconnect", within=10)
        stderr = "".join(phone.stderr)
        where = f"seed {FUZZ_SEED + 1}: {reply}"
        assert "Traceback" not in stderr, (where, stderr[-3000:])
        # WARNING and up only: a burst per kind of complaint, not per frame.
        assert len(phone.stderr) < 100, (where, stderr[-3000:])


async def test_a_gateway_that_stops_reading_is_replaced_at_once(
    loop_errors: LoopErrors, caplog: pytest.LogCaptureFixture
) -> None:
    # A gateway that stops reading but keeps sending heartbeats: each echo
    # fills the phone's write queue. Found by reading the client after the
    # storm: a full queue logged an ERROR per frame, the idle timeout never
    # fired (frames kept arriving), and the reader raised QueueFull into the
    # loop when the socket finally closed.
    caplog.set_level(logging.INFO)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A small receive buffer (inherited by accepted sockets) fills soon.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    sessions: list[ServerConnection] = []

    async def handler(ws: ServerConnection) -> None:
        sessions.append(ws)
        await ws.recv()  # listen
        await ws.send(frame("connected", {"token": {"identity": "alice"}}))
        await ws.recv()  # register
        await ws.send(frame("ready", {}))
        if len(sessions) > 1:
            await ws.wait_closed()  # the replacement socket behaves
            return
        ws.transport.pause_reading()
        with contextlib.suppress(ConnectionClosed):
            while True:
                for _ in range(500):
                    await ws.send("\n")
                await asyncio.sleep(0)

    async with serve(handler, sock=listener) as server:
        port = listener.getsockname()[1]
        device = local_device(f"ws://127.0.0.1:{port}/signal")
        try:
            await asyncio.wait_for(device.setup(make_token("alice")), scaled(10))
            # Well within the 15 s heartbeat timeout: the full queue did it.
            await wait_until(lambda: len(sessions) >= 2, 10)
            await wait_until(lambda: device.status() == "ready", 5)
        finally:
            # The stuck socket is dropped, not closed politely: a close frame
            # to a peer that reads nothing would wait 10 s.
            await asyncio.wait_for(device.destroy(), scaled(6))
            server.close()
    assert not loop_errors.contexts, loop_errors.summary()
    full = [r for r in caplog.records if r.msg.startswith("signaling write queue")]
    assert len(full) == 1, [r.getMessage() for r in full]
