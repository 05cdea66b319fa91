"""Values from the wire in the exchange's log: escaped, cut short, rate-limited.

The log is the real one: ``appliance exchange --log-level INFO`` as a child
process, its stderr read line by line; clients are raw sockets on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json

from websockets.asyncio.client import connect

from appliance.log import WIRE_LIMIT, LogLimiter, wire
from appliance.signaling.messages import encode_params
from tests.conftest import make_token, scaled, wait_until


def listen(token: str) -> str:
    return json.dumps({"type": "listen", "payload": {"token": token}})


def test_wire_escapes_controls_and_cuts_long_values():
    assert wire("bob\nINFO forged") == "bob\\nINFO forged"
    assert wire("a\\b") == "a\\\\b"
    assert wire("日本\u202e\u2028") == "日本\\u202e\\u2028"
    assert wire(None) == "None"
    long = wire("x" * 10_000)
    assert long == "x" * WIRE_LIMIT + f"...(+{10_000 - WIRE_LIMIT} chars)"


def test_log_limiter_allows_a_burst_per_window_then_counts():
    limiter = LogLimiter(burst=3, window=10.0)
    allowed = [limiter.allow("s", 0.0) for _ in range(10)]
    assert allowed == [0, 0, 0] + [None] * 7
    assert limiter.allow("other", 0.0) == 0  # per key
    assert limiter.allow("s", 10.0) == 7  # next window reports the count
    assert limiter.allow("s", 10.5) == 0
    for _ in range(4):
        limiter.allow("s", 11.0)
    assert limiter.forget("s") == 3
    assert limiter.forget("s") == 0


async def test_wire_values_cannot_forge_or_flood_the_log(exchange_process):
    exchange = await exchange_process(0, "--log-level", "INFO")
    forged = "INFO appliance.exchange.core: session 9: registered as root"
    async with connect(exchange.url) as ws:
        # A token whose identity carries a newline: refused, logged escaped.
        await ws.send(listen(make_token(f"eve\n{forged}")))
        assert json.loads(await ws.recv())["payload"]["error"]["code"] == 31105
    async with connect(exchange.url) as ws:
        await ws.send(listen(make_token("alice")))
        assert json.loads(await ws.recv())["type"] == "connected"
        for temp, to in (
            ("TJS-1", f"client:bob\n{forged}"),
            ("TJS-2", "client:" + "b" * 900_000),
            ("TJS-3", "client:" + "語" * 50),  # legal: logged, unescaped
        ):
            params = encode_params({"To": to})
            payload = {"callsid": temp, "sdp": "v=0", "twilio": {"params": params}}
            await ws.send(json.dumps({"type": "invite", "payload": payload}))
            while json.loads(await ws.recv())["type"] != "hangup":
                pass
    await wait_until(lambda: any("語語" in line for line in exchange.stderr))
    await exchange.stop()
    log = "".join(exchange.stderr)
    assert not any(line.startswith(forged) for line in exchange.stderr), log
    assert "eve\\nINFO" in log  # the identity, escaped on its line
    assert "refused (31105)" in log and "refused (31103)" in log
    assert len(log) < 20_000, len(log)
    assert max(len(line) for line in exchange.stderr) < 400


async def test_a_flood_of_bad_frames_writes_a_few_lines(exchange_process):
    exchange = await exchange_process(0, "--log-level", "INFO")
    async with connect(exchange.url) as ws:
        await ws.send(
            json.dumps({"type": "listen", "payload": {"token": make_token("alice")}})
        )
        assert json.loads(await ws.recv())["type"] == "connected"
        for n in range(1000):
            await ws.send("{not json" + "\n" * (n % 3))
        answered = 0
        while answered < 1000:
            frame = json.loads(await ws.recv())
            answered += frame["type"] == "error"  # each one is still answered
    await wait_until(lambda: any("were not logged" in line for line in exchange.stderr))
    refused = [line for line in exchange.stderr if "refused (31400)" in line]
    assert 1 <= len(refused) <= 5 + 1, refused
    count = next(line for line in exchange.stderr if "were not logged" in line)
    assert f"{1000 - len(refused)} refusals" in count


async def test_a_huge_type_before_listen_gets_a_short_answer(exchange_process):
    # The type was quoted whole in the 31400 message: the error frame then
    # exceeded the relay limit, so the client got no answer and each such
    # frame wrote an ERROR line.
    exchange = await exchange_process(0, "--log-level", "INFO")
    frames = 40
    async with connect(exchange.url) as ws:
        huge = json.dumps({"type": "t" * 300_000, "payload": {}})
        for _ in range(frames):
            await ws.send(huge)
            text = await asyncio.wait_for(ws.recv(), scaled(5))
            assert isinstance(text, str) and len(text) < 2_000, len(text)
            error = json.loads(text)
            assert error["type"] == "error"
            assert error["payload"]["error"]["code"] == 31400
            assert "unknown message type ttt" in error["payload"]["error"]["message"]
    await wait_until(lambda: any("were not logged" in line for line in exchange.stderr))
    session = [line for line in exchange.stderr if "session 1" in line]
    assert 2 <= len(session) <= 5 + 2, session
    assert not any("too large to send" in line for line in exchange.stderr)
    assert max(len(line) for line in exchange.stderr) < 400


def test_the_last_guard_on_frame_size_logs_a_few_lines(caplog):
    # Every path caps its fields; were one to forget, a client could make the
    # exchange build one oversized frame per frame it sends.
    from appliance.exchange.outbox import Outbox
    from appliance.signaling.limits import RELAY_MAX_FRAME_BYTES
    from appliance.signaling.messages import MessageType

    outbox = Outbox({1})
    for n in range(100):
        outbox.now = n * 0.01
        outbox.send(1, MessageType.MESSAGE, {"content": "x" * RELAY_MAX_FRAME_BYTES})
    assert outbox.frames_to_send() == []
    dropped = [r for r in caplog.records if "too large to send" in r.getMessage()]
    assert len(dropped) == 5, len(dropped)
    outbox.now = 61.0
    outbox.send(1, MessageType.MESSAGE, {"content": "x" * RELAY_MAX_FRAME_BYTES})
    assert "(95 similar not logged)" in caplog.records[-1].getMessage()


async def test_a_join_writes_one_info_line_and_a_leave_one(exchange_process):
    # Joins are the exchange's hot path at start of day (exchange-benchmarks.md):
    # one line saying who registered from where, one when the socket goes.
    exchange = await exchange_process(0, "--log-level", "INFO")
    async with connect(exchange.url) as ws:
        await ws.send(listen(make_token("alice")))
        assert json.loads(await ws.recv())["type"] == "connected"
        register = {"type": "register", "payload": {"media": {"audio": True}}}
        await ws.send(json.dumps(register))
        assert json.loads(await ws.recv())["type"] == "ready"
    await wait_until(lambda: any("disconnected" in line for line in exchange.stderr))
    joined = [line for line in exchange.stderr if "session 1" in line]
    assert len(joined) == 2, joined
    assert "registered as alice from 127.0.0.1" in joined[0]
    assert "disconnected" in joined[1]
    assert not any("connection open" in line for line in exchange.stderr)
    assert not any("connection closed" in line for line in exchange.stderr)
