"""Capacity limits: each refused with 31206 and a message naming it, logged once.

Core tests use tests/exchange/test_core.py's Harness; the last ones run the
exchange on real sockets on 127.0.0.1 with its limits from a config file.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from appliance.errors import ConfigError
from appliance.exchange.config import load_config_file
from appliance.exchange.quotas import Quotas
from appliance.exchange.server import ExchangeServer
from appliance.signaling.messages import encode_params
from tests.conftest import scaled
from tests.exchange.test_core import Client, Harness, dial
from tests.exchange.test_server import in_process_config, login, receive, send, token


def harness(**limits: int) -> Harness:
    return Harness(quotas=Quotas(**limits))


def refused_listen(h: Harness, identity: str) -> dict[str, Any]:
    client = h.connect()
    client.send("listen", token=h.token(identity))
    error, _close = client.expect("error", "close")
    assert client.is_closed
    return error


def test_sessions_per_identity(caplog):
    h = harness(max_sessions_per_identity=2)
    h.login("alice"), h.login("alice")
    with caplog.at_level(logging.WARNING, "appliance.exchange"):
        for _ in range(3):
            error = refused_listen(h, "alice")
    assert error["error"] == {
        "code": 31206,
        "message": "Rate exceeded: sessions per identity limit (2) reached",
    }
    h.login("bob")  # another identity is not affected
    logged = [r for r in caplog.records if "max_sessions_per_identity" in r.message]
    assert len(logged) == 1  # once, not once per refusal
    assert h.exchange.quota_log.hits["max_sessions_per_identity"] == 3


def test_sessions_per_account_and_a_closed_session_frees_its_place():
    h = harness(max_sessions_per_account=2)
    alice, _bob = h.login("alice"), h.login("bob")
    assert refused_listen(h, "carol")["error"]["message"].startswith(
        "Rate exceeded: sessions per account limit (2)"
    )
    alice.close()
    h.login("carol")


def test_token_update_to_the_same_identity_is_not_a_new_session():
    h = harness(max_sessions_per_identity=1)
    alice = h.login("alice")
    alice.send("listen", token=h.token("alice"))
    alice.expect("connected")


def test_calls_per_session():
    h = harness(max_calls_per_session=2)
    alice = h.login("alice")
    h.login("bob", call_waiting=True)
    dial(alice, "bob", "TJS-1")
    dial(alice, "bob", "TJS-2")
    alice.messages()
    alice.send(
        "invite",
        callsid="TJS-3",
        sdp="v=0",
        twilio={"params": encode_params({"To": "bob"})},
    )
    payload = alice.expect_one("hangup")
    assert payload["callsid"] == "TJS-3"
    assert payload["error"]["code"] == 31206
    assert "calls per session limit (2)" in payload["error"]["message"]


def test_echo_calls_in_total_and_an_ended_one_frees_its_place():
    h = harness(max_echo_calls=2)
    callers: list[Client] = [h.login(f"user{n}") for n in range(3)]
    first = dial(callers[0], "echo")
    dial(callers[1], "echo")
    callers[2].send(
        "invite",
        callsid="TJS-1",
        sdp="v=0",
        twilio={"params": encode_params({"To": "echo"})},
    )
    payload = callers[2].expect_one("hangup")
    assert payload["error"]["code"] == 31206
    assert "echo calls limit (2)" in payload["error"]["message"]
    callers[0].send("hangup", callsid=first)
    dial(callers[2], "echo", "TJS-2")
    assert h.exchange.call_count == 2


def test_pending_sockets_per_address_count_only_until_listen():
    h = Harness(quotas=Quotas(max_pending_per_address=2))
    for sid in (101, 102):
        h.clients[sid] = Client(h, sid)
        h.exchange.session_opened(sid, h.now, source="10.0.0.9")
    first = h.clients[101]
    h.clients[103] = Client(h, 103)
    h.exchange.session_opened(103, h.now, source="10.0.0.9")
    h.pump()
    error, _close = h.clients[103].expect("error", "close")
    assert error["error"]["code"] == 31206
    assert 103 in h.closed
    # A refused socket frees no place it never had.
    h.clients[106] = Client(h, 106)
    h.exchange.session_opened(106, h.now, source="10.0.0.9")
    h.pump()
    assert h.clients[106].expect("error", "close")[0]["error"]["code"] == 31206
    # Another address is not affected; a socket that logs in frees its place.
    h.clients[104] = Client(h, 104)
    h.exchange.session_opened(104, h.now, source="10.0.0.8")
    first.send("listen", token=h.token("alice"))
    first.expect("connected")
    h.clients[105] = Client(h, 105)
    h.exchange.session_opened(105, h.now, source="10.0.0.9")
    h.pump()
    assert h.clients[105].messages() == []


def test_limits_come_from_the_config_file(tmp_path: Path):
    path = tmp_path / "exchange.toml"
    path.write_text("[exchange]\nmax_echo_calls = 3\nmax_sessions_per_identity = 5\n")
    config = load_config_file(path)
    assert config.quotas == Quotas(max_echo_calls=3, max_sessions_per_identity=5)
    path.write_text("[exchange]\nmax_echo_calls = 0\nmax_calls_per_sesion = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert "exchange.max_echo_calls" in str(info.value)
    assert "max_calls_per_session" in str(info.value)  # did you mean


async def test_limit_over_real_sockets_refuses_and_closes(caplog):
    config = replace(in_process_config(), quotas=Quotas(max_sessions_per_identity=1))
    async with ExchangeServer(config) as server:
        first = await login(server.url, "alice")
        async with connect(server.url) as second:
            await send(second, "listen", token=token("alice"))
            error = await receive(second)
            assert error["payload"]["error"]["code"] == 31206
            assert (await receive(second))["type"] == "close"
            await asyncio.wait_for(second.wait_closed(), scaled(5))
        # The first session is untouched.
        await send(first, "register", media={"audio": True})
        assert (await receive(first))["type"] == "ready"
        await first.close()
    assert sum("max_sessions_per_identity" in r.message for r in caplog.records) == 1


async def test_pending_sockets_per_address_over_real_sockets():
    config = replace(in_process_config(), quotas=Quotas(max_pending_per_address=3))
    async with ExchangeServer(config) as server:
        idle = [await connect(server.url) for _ in range(3)]
        async with connect(server.url) as extra:
            frame = json.loads(await asyncio.wait_for(extra.recv(), scaled(5)))
            assert frame["payload"]["error"]["code"] == 31206
        await send(idle[0], "listen", token=token("alice"))
        assert (await receive(idle[0]))["type"] == "connected"
        late = await login(server.url, "bob")  # a place was freed
        for ws in [*idle, late]:
            await ws.close()
