"""Client cores and the exchange core wired together in memory.

No sockets, no event loop: :class:`Wire` carries the frames each side drains to
the other by hand and plays the transport's part (open, close). The exchange
runs on Unix time and the clients on monotonic time (each core's contract), so
the wire keeps one clock of each and advances them together.
"""

from __future__ import annotations

import json
import random
from typing import Any

from appliance.exchange.core import Exchange
from appliance.signaling.backoff import BackoffPolicy
from appliance.signaling.messages import (
    HEARTBEAT,
    Message,
    MessageType,
    decode_params,
    encode_params,
)
from appliance.signaling.protocol import (
    ClientProtocol,
    CloseConnection,
    Connected,
    ErrorReceived,
    Event,
    GatewayClosed,
    MessageReceived,
    OpenConnection,
    Ready,
    TransportLost,
    TransportState,
)
from tests.conftest import ACCOUNT_SID, API_SECRET, make_token, new_keyring

UNIX_T0 = 1_800_000_000.0
MONO_T0 = 5_000.0
URL = "ws://exchange.invalid/signal"  # never opened: the wire is the transport
OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
)
ANSWER = OFFER.replace("o=- 1 1", "o=- 2 2")


class Wire:
    """An exchange core and several client cores, connected by hand."""

    def __init__(self, *, idle_timeout: float | None = None) -> None:
        self.exchange = Exchange(
            new_keyring(),
            ring_timeout=30.0,
            heartbeat_interval=5.0,
            idle_timeout=idle_timeout,
            rng=random.Random(7),
        )
        self.unix = UNIX_T0
        self.mono = MONO_T0
        self.clients: dict[int, ClientProtocol] = {}
        self.events: dict[int, list[Event]] = {}
        self.opens: dict[int, int] = {}  # OpenConnection actions seen per client
        self.open_sockets: set[int] = set()
        # Clients whose frames are lost until their current socket closes.
        self.deaf: set[int] = set()
        self.to_exchange: list[tuple[int, str]] = []  # every frame a client sent
        self.to_client: list[tuple[int, str]] = []  # every frame the exchange sent

    def add(self, sid: int, token: str) -> ClientProtocol:
        proto = ClientProtocol(
            urls=[URL],
            token=token,
            backoff=BackoffPolicy(),
            random=lambda: 0.0,
            register_payload={"callWaiting": False},
        )
        self.clients[sid] = proto
        self.events[sid] = []
        self.opens[sid] = 0
        return proto

    def token(self, identity: str, **kwargs: Any) -> str:
        return make_token(identity, now=self.unix, **kwargs)

    def pump(self) -> None:
        """Move frames, actions and events until nothing is left to move."""
        moved = True
        while moved:
            moved = False
            for sid, proto in self.clients.items():
                for frame in proto.messages_to_send():
                    moved = True
                    if sid in self.open_sockets and sid not in self.deaf:
                        self.to_exchange.append((sid, frame))
                        self.exchange.receive(sid, frame, self.unix)
                for action in proto.actions():
                    moved = True
                    if isinstance(action, OpenConnection):
                        # The socket opens at once on this wire.
                        self.opens[sid] += 1
                        self.open_sockets.add(sid)
                        self.exchange.session_opened(sid, self.unix)
                        proto.connection_opened(self.mono)
                    elif isinstance(action, CloseConnection):
                        self._socket_gone(sid, by_client=True)
                self.events[sid].extend(proto.events_received())
            for sid, frame in self.exchange.frames_to_send():
                moved = True
                self.to_client.append((sid, frame))
                if sid in self.open_sockets:
                    self.clients[sid].receive_message(frame, self.mono)
            for sid in self.exchange.sessions_to_close():
                moved = True
                self._socket_gone(sid, by_client=False)

    def _socket_gone(self, sid: int, *, by_client: bool) -> None:
        if sid not in self.open_sockets:
            return
        self.open_sockets.discard(sid)
        self.deaf.discard(sid)
        self.exchange.session_closed(sid, self.unix)
        if not by_client:
            self.clients[sid].connection_closed(self.mono, "closed by the exchange")

    def advance(self, seconds: float, step: float = 0.5) -> None:
        """Let time pass, ticking every core at every step (and at the end)."""
        end = self.mono + seconds
        while self.mono < end:
            delta = min(step, end - self.mono)
            self.mono += delta
            self.unix += delta
            self.exchange.tick(self.unix)
            for proto in self.clients.values():
                proto.tick(self.mono)
            self.pump()

    def take(self, sid: int) -> list[Event]:
        events, self.events[sid] = self.events[sid], []
        return events

    def sent_by(self, sid: int) -> list[dict[str, Any]]:
        return [
            json.loads(f) for s, f in self.to_exchange if s == sid and f != HEARTBEAT
        ]

    def sent_to(self, sid: int) -> list[dict[str, Any]]:
        return [json.loads(f) for s, f in self.to_client if s == sid and f != HEARTBEAT]


def online(wire: Wire, sid: int, identity: str) -> ClientProtocol:
    proto = wire.add(sid, wire.token(identity))
    proto.register(wire.mono)
    proto.start(wire.mono)
    wire.pump()
    return proto


def messages(events: list[Event]) -> list[Message]:
    return [e.message for e in events if isinstance(e, MessageReceived)]


def test_listen_connected_register_ready():
    wire = Wire()
    alice = wire.add(1, wire.token("alice"))
    alice.register(wire.mono)
    alice.start(wire.mono)
    wire.pump()

    assert [f["type"] for f in wire.sent_by(1)] == ["listen", "register"]
    assert [f["type"] for f in wire.sent_to(1)] == ["connected", "ready"]
    events = wire.take(1)
    connected = [e for e in events if isinstance(e, Connected)]
    assert connected and connected[0].identity == "alice"
    assert connected[0].ttl_s == 3600
    assert any(isinstance(e, Ready) for e in events)
    assert alice.state is TransportState.CONNECTED and alice.registered
    assert wire.exchange.registered_sessions(ACCOUNT_SID, "alice") == [1]


def test_invite_reaches_the_callee_and_the_answer_comes_back_then_hangup():
    wire = Wire()
    alice = online(wire, 1, "alice")
    bob = online(wire, 2, "bob")
    wire.take(1), wire.take(2)

    params = encode_params({"To": "client:bob", "agent": "Smith & Co"})
    invite = {"callsid": "TJSabc", "sdp": OFFER, "twilio": {"params": params}}
    assert alice.send(Message(MessageType.INVITE, invite), wire.mono)
    wire.pump()

    ringing = messages(wire.take(1))
    assert [m.type for m in ringing] == [MessageType.RINGING]
    parent = ringing[0].callsid
    assert parent is not None and parent.startswith("CA") and len(parent) == 34

    incoming = messages(wire.take(2))
    assert [m.type for m in incoming] == [MessageType.INVITE]
    child = incoming[0].callsid
    assert child is not None and child.startswith("CA") and child != parent
    assert incoming[0].payload["sdp"] == OFFER  # relayed unchanged
    parameters = incoming[0].payload["parameters"]
    assert parameters["From"] == "client:alice"
    assert parameters["To"] == "client:bob"
    assert decode_params(parameters["Params"]) == {"agent": "Smith & Co"}

    bob.send(Message(MessageType.ANSWER, {"callsid": child, "sdp": ANSWER}), wire.mono)
    wire.pump()
    answered = messages(wire.take(1))
    assert [(m.type, m.callsid) for m in answered] == [(MessageType.ANSWER, parent)]
    assert answered[0].payload["sdp"] == ANSWER

    # DTMF is relayed to the other leg under that leg's own callsid.
    bob.send(Message(MessageType.DTMF, {"callsid": child, "dtmf": "1#"}), wire.mono)
    wire.pump()
    dtmf = messages(wire.take(1))
    assert [(m.type, m.callsid, m.payload["dtmf"]) for m in dtmf] == [
        (MessageType.DTMF, parent, "1#")
    ]

    alice.send(Message(MessageType.HANGUP, {"callsid": parent}), wire.mono)
    wire.pump()
    hangup = messages(wire.take(2))
    assert [(m.type, m.callsid) for m in hangup] == [(MessageType.HANGUP, child)]
    assert "error" not in hangup[0].payload  # a normal hang-up, not a failure
    assert wire.exchange.call_count == 0


def test_callee_hangup_reaches_the_caller():
    wire = Wire()
    alice = online(wire, 1, "alice")
    bob = online(wire, 2, "bob")
    params = encode_params({"To": "bob"})
    invite = {"callsid": "TJS1", "sdp": OFFER, "twilio": {"params": params}}
    alice.send(Message(MessageType.INVITE, invite), wire.mono)
    wire.pump()
    parent = messages(wire.take(1))[0].callsid
    child = messages(wire.take(2))[0].callsid
    bob.send(Message(MessageType.ANSWER, {"callsid": child, "sdp": ANSWER}), wire.mono)
    wire.pump()
    wire.take(1)

    bob.send(Message(MessageType.HANGUP, {"callsid": child}), wire.mono)
    wire.pump()
    assert [(m.type, m.callsid) for m in messages(wire.take(1))] == [
        (MessageType.HANGUP, parent)
    ]
    assert wire.exchange.call_count == 0


def test_bad_signature_gives_31202_then_close_and_no_reconnect():
    wire = Wire()
    mallory = wire.add(1, wire.token("mallory", secret="y" * len(API_SECRET)))
    mallory.register(wire.mono)
    mallory.start(wire.mono)
    wire.pump()

    assert [f["type"] for f in wire.sent_to(1)] == ["error", "close"]
    events = wire.take(1)
    errors = [e.error for e in events if isinstance(e, ErrorReceived)]
    assert [e.code for e in errors] == [31202]
    assert any(isinstance(e, GatewayClosed) for e in events)
    assert not any(isinstance(e, Connected) for e in events)
    assert 1 not in wire.open_sockets
    assert mallory.state is TransportState.CLOSED
    assert mallory.next_deadline() is None

    # Well past the longest backoff: the client never opens a socket again.
    wire.advance(60.0, step=5.0)
    assert wire.opens[1] == 1
    assert wire.take(1) == []


def test_expired_token_gives_31205():
    wire = Wire()
    old = make_token("alice", ttl=60, now=wire.unix - 3600)
    proto = wire.add(1, old)
    proto.start(wire.mono)
    wire.pump()
    errors = [e.error.code for e in wire.take(1) if isinstance(e, ErrorReceived)]
    assert errors == [31205]
    assert proto.state is TransportState.CLOSED


def test_heartbeats_are_echoed_and_keep_both_sides_alive():
    # The exchange closes sessions silent for 12 s; 60 s pass with heartbeats
    # every 5 s, each echoed by the client, so neither side times out.
    wire = Wire(idle_timeout=12.0)
    alice = online(wire, 1, "alice")
    wire.take(1)
    sent_before = len(wire.to_exchange)

    wire.advance(60.0, step=1.0)

    heartbeats_out = [f for s, f in wire.to_client if s == 1 and f == HEARTBEAT]
    echoes = [f for s, f in wire.to_exchange[sent_before:] if s == 1]
    assert len(heartbeats_out) >= 11
    assert HEARTBEAT in echoes
    assert echoes.count(HEARTBEAT) == len(heartbeats_out)
    assert alice.state is TransportState.CONNECTED
    assert 1 in wire.open_sockets
    assert not any(isinstance(e, TransportLost) for e in wire.take(1))


def test_a_client_that_stops_echoing_is_dropped_and_reconnects():
    # Counter-check of the test above: when the client's frames (heartbeat
    # echoes included) stop arriving, the exchange closes the session after its
    # idle timeout; the client was not sent "close", so it reconnects at once
    # (first backoff step: 100 ms + up to 40 %) and registers again.
    wire = Wire(idle_timeout=12.0)
    alice = online(wire, 1, "alice")
    wire.take(1)
    wire.deaf.add(1)

    wire.advance(11.0, step=1.0)
    assert 1 in wire.open_sockets and wire.opens[1] == 1
    wire.advance(1.0, step=1.0)
    lost = [e for e in wire.take(1) if isinstance(e, TransportLost)]
    assert len(lost) == 1 and lost[0].retry_at is not None
    assert lost[0].retry_at - wire.mono <= 0.1 * 1.4 + 1e-9

    wire.advance(0.2, step=0.05)
    assert wire.opens[1] == 2
    assert any(isinstance(e, Ready) for e in wire.take(1))
    assert alice.registered
    assert wire.exchange.registered_sessions(ACCOUNT_SID, "alice") == [1]
