"""Calls that survive a signaling drop, with real parts (signaling-protocol.md §4.4).

Two Devices call each other through the in-process exchange on 127.0.0.1 with
real aiortc media (``tone:`` sources). Alice's signaling goes through a small
TCP proxy in this file; cutting it resets both of its TCP connections (the
phone's and the exchange's) and refuses new ones until it is restored, so
only signaling is cut: the media flows peer to peer beside it. Every wait is
on an event, bounded by a scaled timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from appliance.exchange.server import ExchangeServer
from appliance.phone.connection import Connection
from appliance.phone.device import DEVICE_EVENTS
from tests.conftest import local_device, make_token, wait_until
from tests.phone.test_calls_inprocess import Phone, Recorder

pytestmark = pytest.mark.slow  # real aiortc

CALL_EVENTS = ("accept", "disconnect", "error", "reconnecting", "reconnected", "volume")


class SignalingProxy:
    """A TCP proxy on 127.0.0.1 that can cut every connection through it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.accepted = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/signal"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Reset every connection and refuse new ones (until :meth:`start`)."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def close(self) -> None:
        if self._server is not None:
            await self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()
            self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()  # one side gone: so is the other


PhoneFactory = Callable[..., Awaitable[Phone]]


@pytest.fixture
async def proxy(exchange: ExchangeServer) -> AsyncIterator[SignalingProxy]:
    cut = SignalingProxy(exchange.port)
    await cut.start()
    yield cut
    await cut.close()


@pytest.fixture
async def phones(exchange: ExchangeServer) -> AsyncIterator[PhoneFactory]:
    """``await phones(identity, url, tone=HZ, **options)``: a registered Device."""
    made: list[Phone] = []

    async def make(identity: str, url: str, *, tone: int, **options: Any) -> Phone:
        device = local_device(
            url, input_device=f"tone:{tone}", output_device="null", **options
        )
        for flag in (device.audio.incoming, device.audio.outgoing):
            flag(False)
        device.audio.disconnect(False)
        phone = Phone(identity, device, Recorder(), None)
        for name in DEVICE_EVENTS:
            device.on(name, phone.events.handler(name))

        def on_incoming(conn: Connection) -> None:
            watch(phone, conn)
            phone.incoming.put_nowait(conn)

        device.on("incoming", on_incoming)
        made.append(phone)
        await device.setup(make_token(identity))
        assert device.status() == "ready"
        return phone

    yield make
    for phone in made:
        await phone.device.destroy()


def watch(phone: Phone, conn: Connection) -> Recorder:
    """Record ``conn``'s events, the reconnect ones included."""
    key = str(id(conn))
    if key not in phone.calls:
        recorder = Recorder()
        for name in CALL_EVENTS:
            conn.on(name, recorder.handler(name))
        phone.calls[key] = recorder
    return phone.calls[key]


async def answered_call(
    phones: PhoneFactory, proxy: SignalingProxy, grace_ms: int
) -> tuple[Phone, Connection, Recorder, Phone, Connection, Recorder]:
    """Alice (through the proxy) calls bob (direct); both open, sound flowing."""
    exchange_url = f"ws://127.0.0.1:{proxy.target_port}/signal"
    alice = await phones(
        "alice", proxy.url, tone=523, max_call_signaling_timeout_ms=grace_ms
    )
    bob = await phones(
        "bob", exchange_url, tone=1100, max_call_signaling_timeout_ms=grace_ms
    )
    conn = await alice.device.connect({"To": "bob"})
    events = watch(alice, conn)
    incoming = await bob.next_incoming()
    await incoming.accept()
    far = watch(bob, incoming)
    await events.wait("accept")
    await far.wait("accept")
    for recorder in (events, far):
        await loud_volumes(recorder, after=0)
    return alice, conn, events, bob, incoming, far


async def loud_volumes(recorder: Recorder, *, after: int, count: int = 20) -> None:
    """``count`` volume events (50 ms apart) with received sound, from ``after``."""
    await recorder.wait(
        "volume", where=lambda _i, out: out > 0.0, count=count, after=after, within=10
    )


async def test_call_survives_a_signaling_cut_with_media_flowing(
    phones: PhoneFactory, proxy: SignalingProxy
):
    alice, conn, events, _bob, incoming, far = await answered_call(
        phones, proxy, grace_ms=30_000
    )
    accepted = proxy.accepted
    far_volumes = len(far.all("volume"))
    await proxy.cut()

    (error,) = await events.wait("reconnecting")
    assert error.code == 53001
    assert conn.status() == "reconnecting"
    assert alice.device.status() == "busy"
    # Signaling is down (the proxy refuses), yet sound arrives on both sides.
    await loud_volumes(events, after=len(events.all("volume")))
    await loud_volumes(far, after=far_volumes)
    assert conn.status() == "reconnecting"
    await alice.events.wait("offline")

    await proxy.start()
    await events.wait("reconnected", within=10)
    assert conn.status() == incoming.status() == "open"
    assert proxy.accepted > accepted  # a new socket carried the reconnect invite
    await alice.events.wait("ready", count=2)
    # The other party saw nothing of it.
    assert [n for n in far.names() if n != "accept"] == []
    assert "error" not in events.names()

    # Signaling works on the resumed session: bob's hangup reaches alice.
    await incoming.disconnect()
    await events.wait("disconnect")
    assert "error" not in events.names()


async def test_grace_running_out_ends_the_call_with_31003_on_both_sides(
    phones: PhoneFactory, proxy: SignalingProxy
):
    _alice, conn, events, _bob, _incoming, far = await answered_call(
        phones, proxy, grace_ms=1_000
    )
    await proxy.cut()
    await events.wait("reconnecting")
    (error,) = await events.wait("error", within=10)
    assert error.code == 31003
    await events.wait("disconnect")
    assert conn.status() == "closed"
    # The exchange held alice's leg for her reconnectTimeout (1 s), then
    # ended the call for bob with the same code.
    (far_error,) = await far.wait("error", within=10)
    assert far_error.code == 31003
    await far.wait("disconnect")
    assert "reconnected" not in events.names()


async def test_hanging_up_while_reconnecting_reaches_the_far_party_on_reconnect(
    phones: PhoneFactory, proxy: SignalingProxy
):
    alice, conn, events, _bob, _incoming, far = await answered_call(
        phones, proxy, grace_ms=30_000
    )
    await proxy.cut()
    await events.wait("reconnecting")
    await conn.disconnect()
    await events.wait("disconnect")
    # Let an attempt fail first: the queued hangup must outlive it.
    first = alice.device.reconnect_at
    await wait_until(lambda: alice.device.reconnect_at not in (None, first))
    await proxy.start()
    await far.wait("disconnect", within=10)
    # A plain hangup, not the exchange's 31003 at the end of the grace.
    assert "error" not in far.names()


async def test_without_the_option_a_cut_ends_the_call_as_before(
    phones: PhoneFactory, proxy: SignalingProxy
):
    _alice, _conn, events, _bob, _incoming, far = await answered_call(
        phones, proxy, grace_ms=0
    )
    await proxy.cut()
    (error,) = await events.wait("error")
    assert error.code == 31005
    await events.wait("disconnect")
    (far_error,) = await far.wait("error")
    assert far_error.code == 31005
    assert "reconnecting" not in events.names()
