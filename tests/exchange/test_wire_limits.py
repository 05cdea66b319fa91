"""Strict JSON and size limits on the wire, through a real exchange on 127.0.0.1.

Clients are raw ``websockets`` connections (tests/exchange/test_server.py's
helpers); every frame they receive is parsed by a strict parser, as the
browser SDK's ``JSON.parse`` would.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from appliance.errors import RemoteProtocolError
from appliance.exchange.server import ExchangeServer
from appliance.signaling.backoff import BackoffPolicy
from appliance.signaling.client import SignalingClient
from appliance.signaling.limits import (
    EXCHANGE_MAX_FRAME_BYTES,
    PARAMS_MAX_BYTES,
    SDP_MAX_BYTES,
)
from appliance.signaling.messages import (
    HEARTBEAT,
    Message,
    MessageType,
    decode,
    encode,
    encode_params,
)
from appliance.signaling.protocol import (
    ClientProtocol,
    Connected,
    ErrorReceived,
    Event,
    MessageReceived,
    Ready,
    TransportLost,
    TransportState,
)
from tests.conftest import scaled
from tests.exchange.test_server import in_process_config, login, token


async def send(ws: ClientConnection, kind: str, **payload: Any) -> None:
    """Send as a phone does: UTF-8, not ASCII escapes."""
    await ws.send(encode(Message(MessageType(kind), payload)))


def strict(text: str) -> dict[str, Any]:
    """Parse like JSON.parse: NaN and Infinity are errors."""

    def refuse(name: str) -> None:
        raise AssertionError(f"the exchange sent {name}")

    frame = json.loads(text, parse_constant=refuse)
    assert isinstance(frame, dict)
    return frame


async def next_frame(ws: ClientConnection) -> dict[str, Any]:
    while True:
        text = await asyncio.wait_for(ws.recv(), scaled(5))
        assert isinstance(text, str)
        if text != HEARTBEAT:
            return strict(text)


@pytest.fixture
async def server() -> AsyncIterator[ExchangeServer]:
    async with ExchangeServer(in_process_config()) as running:
        yield running


async def answered_call(
    url: str,
) -> tuple[ClientConnection, ClientConnection, str, str]:
    """alice calls bob, bob answers: (alice, bob, alice's sid, bob's sid)."""
    alice = await login(url, "alice")
    bob = await login(url, "bob")
    await send(
        alice,
        "invite",
        callsid="TJS-1",
        sdp="offer",
        twilio={"params": encode_params({"To": "client:bob"})},
    )
    parent = (await next_frame(alice))["payload"]["callsid"]
    child = (await next_frame(bob))["payload"]["callsid"]
    await send(bob, "answer", callsid=child, sdp="answer")
    assert (await next_frame(alice))["type"] == "answer"
    return alice, bob, parent, child


# ------------------------------------------------------------- strict JSON


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_decode_refuses_non_json_numbers(literal):
    text = f'{{"type":"message","payload":{{"callsid":"CA1","content":{literal}}}}}'
    with pytest.raises(RemoteProtocolError) as caught:
        decode(text)
    assert caught.value.code == 31400
    assert f"{literal.lstrip('-')}" in caught.value.message
    assert "strict JSON" in caught.value.message


def test_encode_never_produces_nan_and_keeps_utf8():
    with pytest.raises(ValueError):
        encode(
            Message(MessageType.MESSAGE, {"callsid": "CA1", "content": float("nan")})
        )
    text = encode(Message(MessageType.MESSAGE, {"callsid": "CA1", "content": "日本"}))
    assert "日本" in text and "\\u" not in text


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
async def test_exchange_refuses_nan_and_relays_nothing(server, literal):
    alice, bob, parent, _child = await answered_call(server.url)
    payload = f'{{"callsid":"{parent}","content":{{"level":{literal}}}}}'
    await alice.send(f'{{"type":"message","version":"1.6","payload":{payload}}}')
    error = await next_frame(alice)
    assert error["type"] == "error"
    assert error["payload"]["error"]["code"] == 31400
    assert "not strict JSON" in error["payload"]["error"]["message"]
    # The same session goes on; bob got nothing but what follows.
    await send(
        alice, "message", callsid=parent, content={"n": 1.5}, voiceeventsid="KX2"
    )
    ack = await next_frame(alice)
    assert ack["type"] == "ack" and ack["payload"]["voiceeventsid"] == "KX2"
    relayed = await next_frame(bob)
    assert relayed["type"] == "message" and relayed["payload"]["content"] == {"n": 1.5}
    await alice.close()
    await bob.close()


@pytest.mark.parametrize(
    ("field", "literal"),
    [("content", "1e999"), ("voiceeventsid", "-1e999"), ("callsid", "1E400")],
)
async def test_an_overflowing_number_is_31400_and_the_call_goes_on(
    server, caplog, field, literal
):
    # Valid JSON, but Python reads it as infinity, which no size check or
    # encoder accepts: it must be refused where it is read, not later.
    alice, bob, parent, _child = await answered_call(server.url)
    fields = {"callsid": f'"{parent}"', "content": '"hi"', "voiceeventsid": '"KX1"'}
    fields[field] = literal
    payload = ",".join(f'"{key}":{value}' for key, value in fields.items())
    await alice.send(f'{{"type":"message","version":"1.6","payload":{{{payload}}}}}')
    error = await next_frame(alice)
    assert error["type"] == "error"
    assert error["payload"]["error"]["code"] == 31400
    assert "overflows" in error["payload"]["error"]["message"]
    # The session and its call go on: the next message is acked and relayed.
    await send(alice, "message", callsid=parent, content="ok", voiceeventsid="KX2")
    ack = await next_frame(alice)
    assert ack["type"] == "ack" and ack["payload"]["voiceeventsid"] == "KX2"
    assert (await next_frame(bob))["payload"]["content"] == "ok"
    assert server.core.call_count == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    await alice.close()
    await bob.close()


# ------------------------------------------------------------- size limits


def wide(total_bytes: int) -> str:
    """Non-ASCII text of ``total_bytes`` UTF-8 bytes (3-byte characters)."""
    return "語" * (total_bytes // 3)


async def still_connected(url: str, caller: ClientConnection, temp: str) -> None:
    """``caller`` can still place a call: its session is alive."""
    await send(
        caller,
        "invite",
        callsid=temp,
        sdp="offer",
        twilio={"params": encode_params({"To": "client:nobody"})},
    )
    assert (await next_frame(caller))["type"] == "ringing"
    assert (await next_frame(caller))["payload"]["error"]["code"] == 31480


async def test_large_non_ascii_invite_sdp_is_refused_and_nobody_drops(server):
    alice = await login(server.url, "alice")
    bob = await login(server.url, "bob")
    await send(
        alice,
        "invite",
        callsid="TJS-big",
        sdp=wide(900_000),
        twilio={"params": encode_params({"To": "client:bob"})},
    )
    hangup = await next_frame(alice)
    assert hangup["type"] == "hangup"
    assert hangup["payload"]["error"]["code"] == 31100
    await still_connected(server.url, alice, "TJS-2")
    await still_connected(server.url, bob, "TJS-3")  # bob got nothing before
    await alice.close()
    await bob.close()


async def test_large_non_ascii_message_is_31212_and_the_call_goes_on(server):
    alice, bob, parent, child = await answered_call(server.url)
    await send(
        alice, "message", callsid=parent, content=wide(680_000), voiceeventsid="KX1"
    )
    error = await next_frame(alice)
    assert error["payload"]["error"]["code"] == 31212
    assert error["payload"]["voiceeventsid"] == "KX1"
    await send(bob, "message", callsid=child, content="日本", voiceeventsid="KX2")
    assert (await next_frame(bob))["type"] == "ack"
    relayed = await next_frame(alice)
    assert relayed["payload"]["content"] == "日本"
    assert server.core.call_count == 1
    await alice.close()
    await bob.close()


async def test_phone_keeps_signaling_through_the_largest_relayed_frame(server):
    events: asyncio.Queue[Event] = asyncio.Queue()
    protocol = ClientProtocol(
        urls=[server.url],
        token=token("bob"),
        backoff=BackoffPolicy(),
        random=lambda: 0.0,
    )
    phone = SignalingClient(protocol, on_event=events.put_nowait)
    phone.start()

    async def next_of(kind: type[Any]) -> Any:
        while True:
            event = await asyncio.wait_for(events.get(), scaled(5))
            assert not isinstance(event, TransportLost), event
            if isinstance(event, kind):
                return event

    try:
        await next_of(Connected)
        phone.register()
        await next_of(Ready)
        alice = await login(server.url, "alice")
        sdp = wide(SDP_MAX_BYTES - 2)
        params = {"To": "client:bob", "note": "x" * (PARAMS_MAX_BYTES // 2)}
        await send(
            alice,
            "invite",
            callsid="TJS-1",
            sdp=sdp,
            twilio={"params": encode_params(params)},
        )
        invite = (await next_of(MessageReceived)).message
        assert invite.type is MessageType.INVITE and invite.payload["sdp"] == sdp
        # A message too large for the exchange is refused by the phone itself
        # instead of getting its socket closed.
        oversize = Message(
            MessageType.MESSAGE,
            {"callsid": invite.callsid, "content": wide(EXCHANGE_MAX_FRAME_BYTES)},
        )
        assert phone.send(oversize) is False
        refused = await next_of(ErrorReceived)
        assert refused.error.code == 31212
        phone.send(Message(MessageType.REJECT, {"callsid": invite.callsid}))
        assert (await next_frame(alice))["type"] == "ringing"
        hangup = await next_frame(alice)
        assert hangup["payload"]["error"]["code"] == 31603
        assert protocol.state is TransportState.CONNECTED
        await alice.close()
    finally:
        await phone.close()
