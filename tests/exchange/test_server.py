"""The exchange over real sockets: the CLI as a subprocess, and in-process.

Clients are raw ``websockets`` connections speaking the wire protocol; the
echo test uses a real aiortc peer (our MediaSession) on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from appliance.exchange.config import ExchangeConfig
from appliance.exchange.server import ExchangeServer
from appliance.signaling.messages import HEARTBEAT, encode_params
from appliance.tokens import Keyring, create_access_token
from tests.conftest import scaled, wait_until

ACCOUNT = "AC" + "a" * 32
KEY = "SK" + "b" * 32
SECRET = "s" * 32
APP = "AP" + "e" * 32
CREDENTIALS = ["--account-sid", ACCOUNT, "--api-key", KEY]
#: The API secret reaches the CLI through its environment, never its argv.
SECRET_ENV = {**os.environ, "APPLIANCE_API_SECRET": SECRET}


def token(identity: str, secret: str = SECRET) -> str:
    return create_access_token(
        account_sid=ACCOUNT,
        api_key_sid=KEY,
        api_secret=secret,
        identity=identity,
        now=time.time(),
        outgoing_application_sid=APP,
    )


async def send(ws: ClientConnection, kind: str, **payload: Any) -> None:
    await ws.send(json.dumps({"type": kind, "version": "1.6", "payload": payload}))


async def receive(ws: ClientConnection, wait_s: float = 5.0) -> dict[str, Any]:
    """Next non-heartbeat frame, decoded."""
    while True:
        text = await asyncio.wait_for(ws.recv(), scaled(wait_s))
        if text != HEARTBEAT:
            frame = json.loads(text)
            assert frame["version"] == ""
            return frame


async def login(url: str, identity: str) -> ClientConnection:
    ws = await connect(url)
    # No resume grace: a dropped socket ends its calls at once (31005).
    await send(ws, "listen", token=token(identity), reconnectTimeout=0)
    frame = await receive(ws)
    assert frame["type"] == "connected"
    await send(ws, "register", media={"audio": True})
    assert (await receive(ws))["type"] == "ready"
    return ws


async def run_cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appliance",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=SECRET_ENV,
    )
    out, err = await asyncio.wait_for(process.communicate(), scaled(30))
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def exchange_url() -> AsyncIterator[str]:
    """Run ``appliance exchange`` on a free port; stop it with SIGTERM."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appliance",
        "exchange",
        "--listen",
        "127.0.0.1:0",
        *CREDENTIALS,
        "--heartbeat-interval",
        "0.5",
        "--ring-timeout",
        "10",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=SECRET_ENV,
    )
    try:
        stdout = process.stdout  # a pipe: stdout=PIPE above
        line = await asyncio.wait_for(stdout.readline(), scaled(20))  # type: ignore[union-attr]
        text = line.decode().strip()
        assert text.startswith("exchange listening on ws://127.0.0.1:"), text
        assert not text.endswith(":0/signal")
        yield text.removeprefix("exchange listening on ")
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), scaled(10))
    assert process.returncode == 0, err.decode()
    assert "Traceback" not in err.decode()
    assert SECRET not in err.decode()


# ------------------------------------------------------------- subprocess


async def test_listen_connected_register_ready(exchange_url):
    async with connect(exchange_url) as ws:
        await send(ws, "listen", token=token("alice"), browserinfo={})
        connected = await receive(ws)
        assert connected["type"] == "connected"
        assert connected["payload"]["token"]["identity"] == "alice"
        assert 3590 <= connected["payload"]["token"]["ttl"] <= 3600
        assert connected["payload"]["region"] == "LOCAL"
        await send(ws, "register", media={"audio": True})
        assert await receive(ws) == {"type": "ready", "version": "", "payload": {}}


async def test_heartbeats_arrive(exchange_url):
    async with connect(exchange_url) as ws:
        loop = asyncio.get_running_loop()
        start = loop.time()
        beats: list[float] = []
        while len(beats) < 3:
            text = await asyncio.wait_for(ws.recv(), scaled(2))
            assert text == HEARTBEAT
            beats.append(loop.time() - start)
            await ws.send(HEARTBEAT)
        # Interval 0.5 s: three beats in about 1.5 s.
        assert 1.2 <= beats[-1] <= 1.5 + scaled(0.5)


async def test_bad_signature_gets_31202_then_close(exchange_url):
    async with connect(exchange_url) as ws:
        await send(ws, "listen", token=token("alice", secret="x" * 32))
        error = await receive(ws)
        assert error["type"] == "error"
        assert error["payload"]["error"] == {
            "code": 31202,
            "message": "JWT signature validation failed",
        }
        assert (await receive(ws))["type"] == "close"
        with pytest.raises(ConnectionClosed):
            await receive(ws)
        assert ws.close_code == 1000


async def test_other_paths_are_404(exchange_url):
    with pytest.raises(InvalidStatus) as info:
        await connect(exchange_url.replace("/signal", "/other"))
    assert info.value.response.status_code == 404


@pytest.mark.slow  # a real aiortc call
async def test_echo_call_returns_the_callers_tone(exchange_url):
    from appliance.media.devices import ToneSource
    from appliance.media.session import MediaConfig, MediaSession

    sink = RecordingSink()
    media = MediaSession(
        MediaConfig(local_addresses=("127.0.0.1",)), ToneSource((1000.0,)), sink
    )
    ws = await login(exchange_url, "alice")
    try:
        offer = await media.create_offer()
        await send(
            ws,
            "invite",
            callsid="TJS-echo",
            sdp=offer,
            twilio={"params": encode_params({"To": "echo"})},
        )
        ringing = await receive(ws)
        assert ringing["type"] == "ringing"
        call_sid = ringing["payload"]["callsid"]
        answer = await receive(ws, wait_s=10)
        assert answer["type"] == "answer", answer
        assert answer["payload"]["callsid"] == call_sid
        await media.apply_answer(answer["payload"]["sdp"])
        # Wait for 1.5 s of echoed audio that is not silence.
        await wait_until(lambda: sink.loud_samples() >= 72_000, 10.0)
        heard = sink.tail(48_000)
        assert abs(dominant_frequency(heard) - 1000.0) < 20
        await send(ws, "hangup", callsid=call_sid)
    finally:
        await media.close()
        await ws.close()


# ---------------------------------------------------------------- in-process


async def test_in_process_call_relays_sdp_between_two_clients():
    keyring = Keyring()
    keyring.add_api_key(ACCOUNT, KEY, SECRET)
    config = ExchangeConfig(host="127.0.0.1", port=0, keyring=keyring)
    async with ExchangeServer(config, rng=random.Random(3)) as server:
        assert server.port > 0
        assert server.url == f"ws://127.0.0.1:{server.port}/signal"
        alice = await login(server.url, "alice")
        bob = await login(server.url, "bob")
        await send(
            alice,
            "invite",
            callsid="TJS-1",
            sdp="offer-sdp",
            twilio={"params": "To=client%3Abob"},
        )
        ringing = await receive(alice)
        invite = await receive(bob)
        assert invite["type"] == "invite"
        assert invite["payload"]["sdp"] == "offer-sdp"
        await send(
            bob, "answer", callsid=invite["payload"]["callsid"], sdp="answer-sdp"
        )
        answer = await receive(alice)
        assert answer["payload"] == {
            "callsid": ringing["payload"]["callsid"],
            "sdp": "answer-sdp",
        }
        await bob.close()
        hangup = await receive(alice)
        assert hangup["type"] == "hangup"
        assert hangup["payload"]["error"]["code"] == 31005
        await alice.close()


def in_process_config() -> ExchangeConfig:
    keyring = Keyring()
    keyring.add_api_key(ACCOUNT, KEY, SECRET)
    return ExchangeConfig(host="127.0.0.1", port=0, keyring=keyring)


async def test_deeply_nested_frames_are_malformed_not_crashes(caplog):
    nested = "[" * 3000 + "]" * 3000  # json recursion: RecursionError
    async with ExchangeServer(in_process_config()) as server:
        ws = await connect(server.url)
        await ws.send(nested)
        assert (await receive(ws))["payload"]["error"]["code"] == 31400
        # The same socket still logs in.
        await send(ws, "listen", token=token("alice"))
        assert (await receive(ws))["type"] == "connected"
        await ws.close()
        # Nested JSON inside the token's header: a malformed token.
        ws = await connect(server.url)
        header = base64.urlsafe_b64encode(nested.encode()).decode().rstrip("=")
        await send(ws, "listen", token=f"{header}.e30.c2ln")
        error = await receive(ws)
        assert error["payload"]["error"]["code"] == 31204
        assert (await receive(ws))["type"] == "close"
        with pytest.raises(ConnectionClosed):
            await receive(ws)
        assert ws.close_code == 1000
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_core_failure_closes_only_that_session(caplog, monkeypatch):
    async with ExchangeServer(in_process_config()) as server:
        bob = await login(server.url, "bob")
        real_receive = server.core.receive
        secret_token = token("alice")

        def receive_or_fail(sid: int, text: str, now: float, **kw: Any) -> None:
            if secret_token in text:
                raise ValueError(f"cannot handle {text}")  # quotes the token
            real_receive(sid, text, now, **kw)

        monkeypatch.setattr(server.core, "receive", receive_or_fail)
        alice = await connect(server.url)
        await send(alice, "listen", token=secret_token)
        with pytest.raises(ConnectionClosed):
            await receive(alice)
        assert alice.close_code == 1000  # a clean close, not 1011
        # Bob's session is untouched.
        await send(bob, "register", media={"audio": True})
        assert (await receive(bob))["type"] == "ready"
        assert server.core.registered_sessions(ACCOUNT, "bob") != []
        await bob.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, caplog.text
    assert errors[0].exc_info is None
    assert "ValueError" in errors[0].getMessage()
    assert secret_token not in caplog.text


async def test_wall_clock_step_moves_no_timer():
    offset = 0.0
    config = replace(in_process_config(), heartbeat_interval=0.3, idle_timeout=10)
    server = ExchangeServer(config, wall_clock=lambda: time.time() + offset)
    async with server:
        alice = await login(server.url, "alice")
        offset = -3600.0  # NTP steps the wall clock an hour back
        for _ in range(3):  # heartbeats keep coming (timers are monotonic)
            text = await asyncio.wait_for(alice.recv(), scaled(5))
            assert text == HEARTBEAT
        assert len(server.core.registered_sessions(ACCOUNT, "alice")) == 1
        # Tokens are checked on the wall clock: this one is not valid yet.
        await send(alice, "listen", token=token("alice"))
        assert (await receive(alice))["payload"]["error"]["code"] == 31204
        await alice.close()


# ------------------------------------------------------------------- CLI


async def test_cli_token_prints_a_verifiable_token():
    code, out, err = await run_cli(
        "token", *CREDENTIALS, "--identity", "alice", "--ttl", "60", "--no-incoming"
    )
    assert (code, err) == (0, "")
    from appliance.tokens import verify_token

    keyring = Keyring()
    keyring.add_api_key(ACCOUNT, KEY, SECRET)
    claims = verify_token(out.strip(), keyring, time.time())
    assert claims.identity == "alice"
    assert not claims.incoming_allowed


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (
            [
                "token",
                "--account-sid",
                "AC123",
                "--api-key",
                KEY,
                "--identity",
                "a",
            ],
            "--account-sid",
        ),
        (
            ["token", *CREDENTIALS, "--identity", "a", "--outgoing-app", "APx"],
            "--outgoing-app",
        ),
        (["token", *CREDENTIALS, "--identity", "a", "--ttl", "90000"], "--ttl"),
        (
            [
                "exchange",
                "--account-sid",
                ACCOUNT,
                "--api-key",
                "SK1",
            ],
            "api_key",
        ),
        (["exchange", "--listen", "nowhere", *CREDENTIALS], "listen"),
        (["exchange"], "account_sid"),
        (["exchange", *CREDENTIALS, "--media-address", "eth0"], "media_addresses"),
        (["exchange", *CREDENTIALS, "--heartbeat-interval", "15"], "heartbeat"),
    ],
)
async def test_cli_rejects_bad_input_with_exit_2(args, complaint):
    code, out, err = await run_cli(*args)
    assert code == 2
    assert complaint in err
    assert "Traceback" not in err
    assert out == ""


# ---------------------------------------------------------------- helpers


class RecordingSink:
    """An AudioSink that keeps everything it is given."""

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []
        self.closed = False

    async def write_frame(self, samples: np.ndarray) -> None:
        self.frames.append(np.array(samples, dtype=np.int16))

    def close(self) -> None:
        self.closed = True

    def loud_samples(self) -> int:
        return sum(f.size for f in self.frames if np.abs(f).max() > 1000)

    def tail(self, count: int) -> np.ndarray:
        return np.concatenate(self.frames)[-count:]


def dominant_frequency(samples: np.ndarray, rate: int = 48_000) -> float:
    values = samples.astype(np.float64) * np.hanning(samples.size)
    spectrum = np.abs(np.fft.rfft(values))
    spectrum[0] = 0.0
    return float(np.argmax(spectrum)) * rate / samples.size


async def test_a_client_that_does_not_ask_gets_the_default_resume_grace():
    # A listen without reconnectTimeout: the exchange holds that party's
    # answered calls for 30 s (ExchangeConfig.resume_grace), so it gets a
    # reconnect token; the other party said 0 and gets none.
    async with ExchangeServer(in_process_config()) as server:
        alice = await connect(server.url)
        await send(alice, "listen", token=token("alice"))
        assert (await receive(alice))["type"] == "connected"
        await send(alice, "register", media={"audio": True})
        assert (await receive(alice))["type"] == "ready"
        bob = await login(server.url, "bob")
        await send(
            alice,
            "invite",
            callsid="TJS-1",
            sdp="offer-sdp",
            twilio={"params": "To=client%3Abob"},
        )
        parent = (await receive(alice))["payload"]["callsid"]
        invite = await receive(bob)
        assert "reconnect" not in invite["payload"]
        await send(bob, "answer", callsid=invite["payload"]["callsid"], sdp="a")
        answer = await receive(alice)
        assert answer["payload"]["callsid"] == parent
        assert answer["payload"]["reconnect"].startswith("RT")
        await alice.close()
        # Held: once the exchange has dropped alice's session, the call stays
        # and bob hears nothing (without the grace: hangup 31005 at once).
        await wait_until(
            lambda: server.core.registered_sessions(ACCOUNT, "alice") == []
        )
        with pytest.raises(TimeoutError):
            await receive(bob, wait_s=0.5)
        assert server.core.call_count == 1
        await bob.close()
