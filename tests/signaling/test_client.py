"""SignalingClient against a real websockets server on 127.0.0.1.

The server is scripted by each test: it records what the client sends on
each connection and sends frames back when told, as websockets tests its own
client against a local server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from websockets.asyncio.server import ServerConnection, serve

from appliance.signaling.backoff import BackoffPolicy
from appliance.signaling.client import SignalingClient
from appliance.signaling.messages import HEARTBEAT, Message, MessageType, encode
from appliance.signaling.protocol import (
    ClientProtocol,
    Connected,
    Event,
    MessageReceived,
    Ready,
    TransportLost,
    TransportState,
)
from tests.conftest import scaled

E = TypeVar("E")


@dataclass
class Peer:
    """One connection accepted by the gateway."""

    ws: ServerConnection
    frames: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def receive(self) -> str:
        """The next frame the client sent on this connection."""
        return await asyncio.wait_for(self.frames.get(), scaled(5))

    async def receive_json(self) -> dict[str, Any]:
        frame = await self.receive()
        assert frame != HEARTBEAT
        message = json.loads(frame)
        assert isinstance(message, dict)
        return message

    async def send(self, kind: str, **payload: Any) -> None:
        message = Message(MessageType(kind), payload, version="")
        await self.ws.send(encode(message))


@dataclass
class Gateway:
    """A scripted signaling gateway: records connections and their frames."""

    url: str = ""
    peers: asyncio.Queue[Peer] = field(default_factory=asyncio.Queue)

    async def handler(self, ws: ServerConnection) -> None:
        peer = Peer(ws)
        self.peers.put_nowait(peer)
        try:
            async for frame in ws:
                assert isinstance(frame, str)
                peer.frames.put_nowait(frame)
        finally:
            peer.ended.set()

    async def accept(self) -> Peer:
        """The next connection the client opens."""
        return await asyncio.wait_for(self.peers.get(), scaled(5))


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    gw = Gateway()
    async with serve(gw.handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        gw.url = f"ws://127.0.0.1:{port}/signal"
        yield gw


@dataclass
class Client:
    """A SignalingClient and the events it has reported, in order."""

    client: SignalingClient
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)

    @property
    def protocol(self) -> ClientProtocol:
        return self.client.protocol

    async def next_event(self, kind: type[E]) -> E:
        """The next event reported; it must be of ``kind``."""
        event = await asyncio.wait_for(self.events.get(), scaled(5))
        assert isinstance(event, kind), event
        return event


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[Client]:
    events: asyncio.Queue[Event] = asyncio.Queue()
    protocol = ClientProtocol(
        urls=[gateway.url],
        token="tok",
        backoff=BackoffPolicy(),
        random=lambda: 0.0,  # no jitter: the first retry comes after 100 ms
    )
    signaling = SignalingClient(protocol, on_event=events.put_nowait)
    try:
        yield Client(signaling, events)
    finally:
        await signaling.close()


async def connect(gateway: Gateway, client: Client) -> Peer:
    """Start the client and let the gateway accept its token."""
    client.client.start()
    peer = await gateway.accept()
    listen = await peer.receive_json()
    assert listen["type"] == "listen"
    assert listen["payload"]["token"] == "tok"
    await peer.send("connected", token={"identity": "alice", "ttl": 3600})
    connected = await client.next_event(Connected)
    assert connected.identity == "alice"
    return peer


async def test_start_connects_and_sends_listen_first(
    gateway: Gateway, client: Client
) -> None:
    await connect(gateway, client)
    assert client.protocol.state is TransportState.CONNECTED


async def test_frames_go_both_ways(gateway: Gateway, client: Client) -> None:
    peer = await connect(gateway, client)
    client.client.register()
    register = await peer.receive_json()
    assert register["type"] == "register"
    assert register["payload"]["media"] == {"audio": True}
    await peer.send("ready")
    await client.next_event(Ready)

    assert client.client.send(Message(MessageType.HANGUP, {"callsid": "CA1"}))
    hangup = await peer.receive_json()
    assert (hangup["type"], hangup["payload"]) == ("hangup", {"callsid": "CA1"})

    await peer.send("cancel", callsid="CA2")
    received = await client.next_event(MessageReceived)
    assert received.message.type is MessageType.CANCEL
    assert received.message.callsid == "CA2"


async def test_heartbeats_are_echoed(gateway: Gateway, client: Client) -> None:
    peer = await connect(gateway, client)
    await peer.ws.send(HEARTBEAT)
    assert await peer.receive() == HEARTBEAT


async def test_reconnects_after_the_server_closes(
    gateway: Gateway, client: Client
) -> None:
    first = await connect(gateway, client)
    await first.ws.close()
    lost = await client.next_event(TransportLost)
    assert lost.was_connected
    assert lost.error.code == 31005
    assert lost.retry_at is not None
    # The backoff's first step, then a new socket and a new listen.
    second = await gateway.accept()
    assert second.ws is not first.ws
    listen = await second.receive_json()
    assert listen["type"] == "listen"
    await second.send("connected", token={"identity": "alice", "ttl": 3600})
    await client.next_event(Connected)
    assert client.protocol.state is TransportState.CONNECTED


async def test_close_unregisters_then_closes_the_socket_for_good(
    gateway: Gateway, client: Client
) -> None:
    peer = await connect(gateway, client)
    client.client.register()
    assert (await peer.receive_json())["type"] == "register"
    await client.client.close()
    unregister = await peer.receive_json()
    assert unregister["type"] == "register"
    assert unregister["payload"]["media"] == {"audio": False}
    await asyncio.wait_for(peer.ended.wait(), scaled(5))
    assert client.protocol.state is TransportState.CLOSED
    # Nothing to wait for: no reconnect may come. Ten times the first retry.
    await asyncio.sleep(scaled(1.0))
    assert gateway.peers.empty()
    assert client.events.empty()


async def test_a_refused_connection_is_reported_and_retried(
    gateway: Gateway, client: Client
) -> None:
    # A second client whose first URL has no listener (the port of a socket
    # that was just closed), then the gateway's.
    async with serve(lambda ws: ws.close(), "127.0.0.1", 0) as closed_server:
        port = next(iter(closed_server.sockets)).getsockname()[1]
    events: asyncio.Queue[Event] = asyncio.Queue()
    protocol = ClientProtocol(
        urls=[f"ws://127.0.0.1:{port}/signal", gateway.url],
        token="tok",
        backoff=BackoffPolicy(),
        random=lambda: 0.0,
    )
    other = Client(SignalingClient(protocol, on_event=events.put_nowait), events)
    try:
        other.client.start()
        lost = await other.next_event(TransportLost)
        assert not lost.was_connected
        assert lost.error.code == 31005
        peer = await gateway.accept()  # the next URL, after the backoff
        assert (await peer.receive_json())["type"] == "listen"
    finally:
        await other.client.close()
