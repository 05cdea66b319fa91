"""Strict JSON and size limits on the wire, through a real exchange on 127.0.0.1.

Clients are raw ``websockets`` connections (tests/exchange/test_server.py's
helpers); every frame they receive is parsed by a strict parser, as the
browser SDK's ``JSON.parse`` would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from appliance.errors import RemoteProtocolError
from appliance.exchange.server import ExchangeServer
from appliance.signaling.messages import (
    HEARTBEAT,
    Message,
    MessageType,
    decode,
    encode,
    encode_params,
)
from tests.conftest import scaled
from tests.exchange.test_server import in_process_config, login, send


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
