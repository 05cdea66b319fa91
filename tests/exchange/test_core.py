"""The exchange core, driven synchronously by fake clients exchanging frames."""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import pytest

from appliance.exchange.core import (
    LISTEN_DEADLINE_S,
    MAX_OUTGOING_CALLS,
    EchoHangup,
    EchoOffer,
    Exchange,
)
from appliance.signaling.messages import (
    HEARTBEAT,
    Message,
    MessageType,
    decode,
    decode_params,
    encode,
    encode_params,
)
from appliance.tokens import Keyring, create_access_token

ACCOUNT = "AC" + "a" * 32
OTHER_ACCOUNT = "AC" + "c" * 32
KEY = "SK" + "b" * 32
OTHER_KEY = "SK" + "d" * 32
SECRET = "s" * 32
APP = "AP" + "e" * 32
NOW = 1_700_000_000.0
OFFER = "v=0\r\no=offer\r\n"
ANSWER = "v=0\r\no=answer\r\n"


def make_keyring() -> Keyring:
    ring = Keyring()
    ring.add_api_key(ACCOUNT, KEY, SECRET)
    ring.add_api_key(OTHER_ACCOUNT, OTHER_KEY, "o" * 32)
    return ring


class Client:
    """One fake phone: sends frames into the core, keeps what it receives."""

    def __init__(self, harness: Harness, sid: int) -> None:
        self.h = harness
        self.sid = sid
        self.received: list[str] = []

    def send(self, kind: str, **payload: Any) -> None:
        self.send_text(encode(Message(MessageType(kind), payload)))

    def send_text(self, text: str) -> None:
        self.h.exchange.receive(self.sid, text, self.h.now, wall=self.h.wall)
        self.h.pump()

    def messages(self) -> list[Message]:
        """Drain received frames, dropping heartbeats."""
        frames, self.received = self.received, []
        return [decode(text) for text in frames if text != HEARTBEAT]

    def expect(self, *kinds: str) -> list[dict[str, Any]]:
        """Drain and assert the exact sequence of message types."""
        got = self.messages()
        assert [str(m.type) for m in got] == list(kinds), got
        assert all(m.version == "" for m in got)
        return [m.payload for m in got]

    def expect_one(self, kind: str) -> dict[str, Any]:
        return self.expect(kind)[0]

    def close(self) -> None:
        self.h.exchange.session_closed(self.sid, self.h.now)
        self.h.pump()

    @property
    def is_closed(self) -> bool:
        return self.sid in self.h.closed


class Harness:
    """An Exchange plus fake clients wired to it in memory."""

    def __init__(self, **options: Any) -> None:
        options.setdefault("rng", random.Random(7))
        self.exchange = Exchange(make_keyring(), gateway_name="gw-test", **options)
        self.now = NOW  # the monotonic clock the core's timers run on
        self.wall_offset = 0.0  # Unix time = now + wall_offset
        self.clients: dict[int, Client] = {}
        self.closed: set[int] = set()
        self.echo: list[EchoOffer | EchoHangup] = []

    def connect(self) -> Client:
        client = Client(self, len(self.clients) + 1)
        self.clients[client.sid] = client
        self.exchange.session_opened(client.sid, self.now)
        self.pump()
        return client

    def pump(self) -> None:
        for sid, text in self.exchange.frames_to_send():
            self.clients[sid].received.append(text)
        self.closed.update(self.exchange.sessions_to_close())
        self.echo.extend(self.exchange.echo_requests())

    @property
    def wall(self) -> float:
        return self.now + self.wall_offset

    def advance(self, seconds: float) -> None:
        """Move time forward, ticking at every deadline on the way."""
        end = self.now + seconds
        while True:
            deadline = self.exchange.next_deadline()
            if deadline is None or deadline > end:
                break
            self.now = max(self.now, deadline)
            self.exchange.tick(self.now)
            self.pump()
        self.now = end

    def token(self, identity: str, **overrides: Any) -> str:
        values: dict[str, Any] = {
            "account_sid": ACCOUNT,
            "api_key_sid": KEY,
            "api_secret": SECRET,
            "identity": identity,
            "now": self.wall,
            "outgoing_application_sid": APP,
        }
        values.update(overrides)
        return create_access_token(**values)

    def login(
        self,
        identity: str,
        *,
        register: bool = True,
        grace: int | None = 0,
        **options: Any,
    ) -> Client:
        """A session of ``identity``: listen (asking for ``grace`` s of resume
        grace; ``None`` leaves the key out), then register."""
        call_waiting = options.pop("call_waiting", None)
        client = self.connect()
        listen: dict[str, Any] = {"token": self.token(identity, **options)}
        if grace is not None:
            listen["reconnectTimeout"] = grace
        client.send("listen", **listen)
        client.expect("connected")
        if register:
            payload: dict[str, Any] = {"media": {"audio": True}}
            if call_waiting is not None:
                payload["callWaiting"] = call_waiting
            client.send("register", **payload)
            client.expect("ready")
        return client


def dial(caller: Client, to: str, temp: str = "TJS-1", **params: str) -> str:
    """Send an outgoing invite; return the CA sid from ringing."""
    caller.send(
        "invite",
        callsid=temp,
        sdp=OFFER,
        twilio={"params": encode_params({"To": to, **params})},
    )
    first, *rest = caller.messages()
    assert first.type is MessageType.RINGING
    # Keep what followed (e.g. a hangup) for the test to inspect.
    caller.received = [encode(message) for message in rest]
    return str(first.payload["callsid"])


@pytest.fixture
def h() -> Harness:
    return Harness(ring_timeout=30.0, heartbeat_interval=5.0)


# ---------------------------------------------------------------- session


def test_listen_gets_connected_with_identity_and_ttl(h):
    client = h.connect()
    client.send("listen", token=h.token("alice", ttl=600), browserinfo={})
    payload = client.expect_one("connected")
    assert payload == {
        "region": "LOCAL",
        "gateway": "gw-test",
        "edge": "local",
        "home": "local",
        "token": {"identity": "alice", "ttl": 600},
    }


def test_register_gets_ready_and_audio_false_gets_offline(h):
    alice = h.login("alice")
    assert h.exchange.registered_sessions(ACCOUNT, "alice") == [alice.sid]
    alice.send("register", media={"audio": False})
    alice.expect("offline")
    assert h.exchange.registered_sessions(ACCOUNT, "alice") == []


def test_register_without_incoming_grant_is_31201(h):
    client = h.login("alice", register=False, incoming_allow=False)
    client.send("register", media={"audio": True})
    assert client.expect_one("error")["error"]["code"] == 31201
    assert h.exchange.registered_sessions(ACCOUNT, "alice") == []


def test_frames_before_listen_get_31102_and_socket_stays(h):
    client = h.connect()
    client.send("register", media={"audio": True})
    assert client.expect_one("error")["error"]["code"] == 31102
    assert not client.is_closed
    client.send_text(json.dumps({"type": "listen", "payload": {}}))
    assert client.expect_one("error")["error"]["code"] == 31102
    client.send("listen", token=h.token("alice"))
    client.expect("connected")


def test_bad_signature_gets_31202_then_close(h):
    client = h.connect()
    client.send("listen", token=h.token("alice", api_secret="x" * 32))
    error, _close = client.expect("error", "close")
    assert error["error"] == {
        "code": 31202,
        "message": "JWT signature validation failed",
    }
    assert client.is_closed
    # The session is gone: later frames produce nothing.
    client.send("listen", token=h.token("alice"))
    assert client.messages() == []


@pytest.mark.parametrize(
    ("token_options", "code"),
    [
        ({"api_key_sid": "SK" + "f" * 32}, 31202),
        ({"account_sid": OTHER_ACCOUNT}, 31203),
        ({"ttl": 0}, 31205),
        ({"ttl": 86401}, 31207),
    ],
)
def test_rejected_tokens_get_code_then_close(h, token_options, code):
    client = h.connect()
    client.send("listen", token=h.token("alice", **token_options))
    error, _close = client.expect("error", "close")
    assert error["error"]["code"] == code
    assert client.is_closed


def test_malformed_token_is_31204(h):
    client = h.connect()
    client.send("listen", token="not-a-jwt")
    error, _close = client.expect("error", "close")
    assert error["error"] == {"code": 31204, "message": "JWT is invalid"}


def test_second_listen_updates_token_and_keeps_registration(h):
    alice = h.login("alice", ttl=60)
    h.advance(30)
    alice.send("listen", token=h.token("alice", ttl=600))
    assert alice.expect_one("connected")["token"]["ttl"] == 600
    assert h.exchange.registered_sessions(ACCOUNT, "alice") == [alice.sid]
    h.advance(100)  # past the first token's expiry: nothing happens
    assert alice.messages() == []


def test_token_update_to_other_identity_unregisters(h):
    alice = h.login("alice")
    alice.send("listen", token=h.token("carol"))
    alice.expect("offline", "connected")
    assert h.exchange.registered_sessions(ACCOUNT, "alice") == []


@pytest.mark.parametrize(
    "new_token",
    [
        {"identity": "carol"},
        {"identity": "bob", "incoming_allow": False},
        {
            "identity": "bob",
            "account_sid": OTHER_ACCOUNT,
            "api_key_sid": OTHER_KEY,
            "api_secret": "o" * 32,
        },
    ],
)
def test_token_update_to_other_grant_cancels_its_ringing_calls(h, new_token):
    alice = h.login("alice")
    bob = h.login("bob")
    parent = dial(alice, "bob")
    child = bob.expect_one("invite")["callsid"]
    identity = new_token.pop("identity")
    bob.send("listen", token=h.token(identity, **new_token))
    cancel, _offline, _connected = bob.expect("cancel", "offline", "connected")
    assert cancel == {"callsid": child}
    # bob was the only ringing session: the call fails as if he had left.
    assert alice.expect_one("hangup") == {
        "callsid": parent,
        "error": {"code": 31480, "message": "Temporarily unavailable"},
    }
    assert h.exchange.call_count == 0
    # A late answer under the new grant ends cleanly instead of connecting.
    bob.send("answer", callsid=child, sdp=ANSWER)
    assert bob.expect_one("hangup") == {"callsid": child}
    assert alice.messages() == []


def test_token_update_leaves_other_forks_ringing(h):
    alice = h.login("alice")
    bob1 = h.login("bob")
    bob2 = h.login("bob")
    dial(alice, "bob")
    child = bob1.expect_one("invite")["callsid"]
    bob2.expect("invite")
    # Unregistered first: still ringing, and still withdrawn on the update.
    bob1.send("register", media={"audio": False})
    bob1.expect("offline")
    bob1.send("listen", token=h.token("carol"))
    assert bob1.expect("cancel", "connected")[0] == {"callsid": child}
    assert alice.messages() == []
    bob2.send("answer", callsid=child, sdp=ANSWER)
    alice.expect("answer")


def test_token_update_to_same_identity_keeps_ringing(h):
    alice = h.login("alice")
    bob = h.login("bob")
    dial(alice, "bob")
    child = bob.expect_one("invite")["callsid"]
    bob.send("listen", token=h.token("bob", ttl=600))
    bob.expect("connected")
    bob.send("answer", callsid=child, sdp=ANSWER)
    alice.expect("answer")


def test_heartbeat_every_interval(h):
    client = h.login("alice", register=False)
    h.advance(4.9)
    assert client.received == []
    h.advance(0.1)
    assert client.received == [HEARTBEAT]
    h.advance(10)
    assert client.received == [HEARTBEAT] * 3
    assert h.exchange.next_deadline() == pytest.approx(h.now + 5)


def test_a_socket_that_never_sends_listen_is_closed_with_31102(h):
    silent = h.connect()
    h.advance(LISTEN_DEADLINE_S - 1)
    silent.send_text(HEARTBEAT)  # heartbeat replies do not keep it open
    assert not silent.is_closed
    h.advance(1)
    error = silent.expect_one("error")
    assert error["error"]["code"] == 31102
    assert silent.is_closed
    late = h.connect()
    late.send("listen", token=h.token("alice"))
    late.expect("connected")
    h.advance(LISTEN_DEADLINE_S * 2)
    assert not late.is_closed  # once logged in, only the idle rules apply


def test_one_session_cannot_place_calls_without_end(h):
    alice = h.login("alice")
    h.login("bob")
    for n in range(MAX_OUTGOING_CALLS):
        dial(alice, "bob", temp=f"TJS-{n}")
    alice.send(
        "invite",
        callsid="TJS-more",
        sdp=OFFER,
        twilio={"params": encode_params({"To": "echo"})},
    )
    refused = alice.expect_one("hangup")
    assert refused["callsid"] == "TJS-more"
    assert refused["error"]["code"] == 31206


def test_heartbeat_reply_is_not_an_error(h):
    client = h.connect()
    client.send_text(HEARTBEAT)
    assert client.messages() == []


def test_token_expiry_sends_31205_and_offline_but_call_continues(h):
    alice = h.login("alice", ttl=100)
    bob = h.login("bob")
    dial(alice, "bob")
    invite = bob.expect_one("invite")
    bob.send("answer", callsid=invite["callsid"], sdp=ANSWER)
    alice.expect("answer")
    h.advance(100)
    error, _offline = alice.expect("error", "offline")
    assert error["error"]["code"] == 31205
    assert h.exchange.registered_sessions(ACCOUNT, "alice") == []
    assert not alice.is_closed
    bob.send("dtmf", callsid=invite["callsid"], dtmf="1")
    assert alice.expect_one("dtmf")["dtmf"] == "1"
    # Registering again with the expired token is refused.
    alice.send("register", media={"audio": True})
    assert alice.expect_one("error")["error"]["code"] == 31205


def test_timers_run_on_the_monotonic_clock_not_wall_time():
    # Monotonic time starts near zero (boot); Unix time is NOW.
    h = Harness(idle_timeout=20.0)
    h.now, h.wall_offset = 100.0, NOW - 100.0
    alice = h.login("alice", ttl=60)
    bob = h.login("bob")
    assert h.exchange.next_deadline() == pytest.approx(105.0)  # heartbeat
    dial(alice, "bob")
    bob.expect("invite")
    # NTP steps the wall clock an hour forward, then back: nothing fires.
    h.wall_offset += 3600
    for client in (alice, bob):
        client.send_text(HEARTBEAT)
    h.wall_offset -= 7200
    h.advance(19)
    for client in (alice, bob):
        assert client.received.count(HEARTBEAT) == 3  # at 105, 110, 115
        client.received.clear()
        client.send_text(HEARTBEAT)
    assert not alice.is_closed and not bob.is_closed
    assert h.exchange.call_count == 1
    # The ring timeout and the token's exp run on the monotonic clock too.
    h.advance(11)
    assert alice.expect_one("hangup")["error"]["code"] == 31480
    for step in (10, 10, 9.9):  # to 159.9, answering heartbeats (idle timeout)
        for client in (alice, bob):
            client.send_text(HEARTBEAT)
        h.advance(step)
    assert alice.messages() == []
    assert not alice.is_closed
    h.advance(0.1)  # 60 s after listen, whatever the wall clock says
    error, _offline = alice.expect("error", "offline")
    assert error["error"]["code"] == 31205


def test_connected_ttl_and_token_checks_use_wall_time():
    h = Harness()
    h.now, h.wall_offset = 100.0, NOW - 100.0
    client = h.connect()
    client.send("listen", token=h.token("alice", ttl=600))
    assert client.expect_one("connected")["token"]["ttl"] == 600
    # A token minted at wall time NOW is not yet valid an hour earlier.
    h.wall_offset -= 3600
    client.send("listen", token=h.token("alice", now=NOW))
    assert client.expect("error", "close")[0]["error"]["code"] == 31204


def test_without_wall_the_core_runs_on_one_clock(h):
    client = h.connect()
    h.exchange.receive(
        client.sid,
        encode(Message(MessageType.LISTEN, {"token": h.token("alice", ttl=600)})),
        h.now,
    )
    h.pump()
    assert client.expect_one("connected")["token"]["ttl"] == 600
    assert h.exchange.next_deadline() == pytest.approx(h.now + 5)


# ------------------------------------------------------------------- calls


def test_call_rings_and_answer_relays_sdp(h):
    alice = h.login("alice")
    bob = h.login("bob")
    parent = dial(alice, "client:bob", greeting="hi there")
    assert parent.startswith("CA")
    assert len(parent) == 34
    invite = bob.expect_one("invite")
    child = invite["callsid"]
    assert child.startswith("CA")
    assert child != parent
    assert invite["sdp"] == OFFER
    assert invite["parameters"] == {
        "CallSid": child,
        "AccountSid": ACCOUNT,
        "From": "client:alice",
        "To": "client:bob",
        "ApiVersion": "2010-04-01",
        "Params": "greeting=hi%20there",
    }
    assert decode_params(invite["parameters"]["Params"]) == {"greeting": "hi there"}
    bob.send("answer", callsid=child, sdp=ANSWER)
    assert alice.expect_one("answer") == {"callsid": parent, "sdp": ANSWER}
    assert bob.messages() == []


def test_call_sids_come_from_the_injected_rng():
    first, second = Harness(), Harness()
    sids = []
    for harness in (first, second):
        alice = harness.login("alice")
        harness.login("bob")
        sids.append(dial(alice, "bob"))
    assert sids[0] == sids[1]


def test_invite_without_custom_params_has_no_params_key(h):
    alice = h.login("alice")
    bob = h.login("bob")
    dial(alice, "bob")
    assert "Params" not in bob.expect_one("invite")["parameters"]


def test_caller_hangup_before_answer_cancels_callee(h):
    alice = h.login("alice")
    bob = h.login("bob")
    dial(alice, "bob", temp="TJS-x")
    child = bob.expect_one("invite")["callsid"]
    alice.send("hangup", callsid="TJS-x")  # the temp id works too (§2.2)
    assert bob.expect_one("cancel") == {"callsid": child}
    assert alice.messages() == []
    assert h.exchange.call_count == 0


def test_hangups_after_answer_reach_the_other_leg(h):
    alice = h.login("alice")
    bob = h.login("bob")
    parent = dial(alice, "bob")
    child = bob.expect_one("invite")["callsid"]
    bob.send("answer", callsid=child, sdp=ANSWER)
    alice.expect("answer")
    alice.send("hangup", callsid=parent)
    assert bob.expect_one("hangup") == {"callsid": child}

    parent = dial(alice, "bob", temp="TJS-2")
    child = bob.expect_one("invite")["callsid"]
    bob.send("answer", callsid=child, sdp=ANSWER)
    alice.expect("answer")
    bob.send("hangup", callsid=child)
    assert alice.expect_one("hangup") == {"callsid": parent}
    assert h.exchange.call_count == 0


def test_reject_is_31603(h):
    alice = h.login("alice")
    bob = h.login("bob")
    parent = dial(alice, "bob")
    bob.send("reject", callsid=bob.expect_one("invite")["callsid"])
    assert alice.expect_one("hangup") == {
        "callsid": parent,
        "error": {"code": 31603, "message": "Call declined"},
    }
    assert h.exchange.call_count == 0


def test_busy_callee_gets_no_invite_and_caller_gets_31486(h):
    alice = h.login("alice")
    bob = h.login("bob")
    carol = h.login("carol")
    dial(alice, "bob")
    bob.send("answer", callsid=bob.expect_one("invite")["callsid"], sdp=ANSWER)
    alice.expect("answer")
    parent = dial(carol, "bob", temp="TJS-c")
    assert carol.expect_one("hangup") == {
        "callsid": parent,
        "error": {"code": 31486, "message": "Busy here"},
    }
    assert bob.messages() == []


def test_call_waiting_session_is_invited_while_busy(h):
    alice = h.login("alice")
    bob = h.login("bob", call_waiting=True)
    carol = h.login("carol")
    dial(alice, "bob")
    bob.send("answer", callsid=bob.expect_one("invite")["callsid"], sdp=ANSWER)
    alice.expect("answer")
    dial(carol, "bob", temp="TJS-c")
    assert bob.expect_one("invite")["parameters"]["From"] == "client:carol"
    assert carol.messages() == []


def test_caller_placing_a_call_is_busy(h):
    alice = h.login("alice")
    bob = h.login("bob")
    h.login("carol")
    dial(alice, "carol")
    parent = dial(bob, "alice", temp="TJS-b")
    assert bob.expect_one("hangup")["error"]["code"] == 31486
    assert parent


def test_ring_timeout_is_31480_and_cancels(h):
    alice = h.login("alice")
    bob = h.login("bob")
    parent = dial(alice, "bob")
    child = bob.expect_one("invite")["callsid"]
    h.advance(29.9)
    assert alice.messages() == []
    h.advance(0.1)
    assert alice.expect_one("hangup") == {
        "callsid": parent,
        "error": {"code": 31480, "message": "Temporarily unavailable"},
    }
    assert bob.expect_one("cancel") == {"callsid": child}
    # A late answer ends the callee's call cleanly.
    bob.send("answer", callsid=child, sdp=ANSWER)
    assert bob.expect_one("hangup") == {"callsid": child}


def test_unregistered_identity_is_31480(h):
    alice = h.login("alice")
    h.login("bob", register=False)  # connected but not registered
    parent = dial(alice, "bob")
    assert alice.expect_one("hangup") == {
        "callsid": parent,
        "error": {"code": 31480, "message": "Temporarily unavailable"},
    }


def test_identities_are_per_account(h):
    alice = h.login("alice")
    other = h.login(
        "bob", account_sid=OTHER_ACCOUNT, api_key_sid=OTHER_KEY, api_secret="o" * 32
    )
    dial(alice, "bob")
    assert alice.expect_one("hangup")["error"]["code"] == 31480
    assert other.messages() == []


def test_forked_sessions_first_answer_wins_others_cancel(h):
    alice = h.login("alice")
    desk = h.login("bob")
    mobile = h.login("bob")
    parent = dial(alice, "bob")
    child = desk.expect_one("invite")["callsid"]
    assert mobile.expect_one("invite")["callsid"] == child
    mobile.send("answer", callsid=child, sdp=ANSWER)
    assert alice.expect_one("answer") == {"callsid": parent, "sdp": ANSWER}
    assert desk.expect_one("cancel") == {"callsid": child}
    desk.send("answer", callsid=child, sdp="late")
    assert desk.expect_one("hangup") == {"callsid": child}
    assert alice.messages() == []
    alice.send("hangup", callsid=parent)
    assert mobile.expect_one("hangup") == {"callsid": child}
    assert desk.messages() == []


def test_reject_on_one_fork_declines_for_all(h):
    alice = h.login("alice")
    desk = h.login("bob")
    mobile = h.login("bob")
    dial(alice, "bob")
    child = desk.expect_one("invite")["callsid"]
    mobile.expect("invite")
    desk.send("reject", callsid=child)
    assert alice.expect_one("hangup")["error"]["code"] == 31603
    assert mobile.expect_one("cancel") == {"callsid": child}


def test_busy_reject_is_31486(h):
    alice = h.login("alice")
    bob = h.login("bob")
    parent = dial(alice, "bob")
    bob.send("reject", callsid=bob.expect_one("invite")["callsid"], reason="busy")
    assert alice.expect_one("hangup") == {
        "callsid": parent,
        "error": {"code": 31486, "message": "Busy here"},
    }
    assert bob.messages() == []
    assert h.exchange.call_count == 0


def test_unknown_reject_reason_is_a_plain_decline(h):
    alice = h.login("alice")
    bob = h.login("bob")
    dial(alice, "bob")
    bob.send("reject", callsid=bob.expect_one("invite")["callsid"], reason=["busy"])
    assert alice.expect_one("hangup")["error"]["code"] == 31603


def test_busy_reject_on_one_fork_leaves_the_others_ringing(h):
    alice = h.login("alice")
    desk = h.login("bob")
    mobile = h.login("bob")
    parent = dial(alice, "bob")
    child = desk.expect_one("invite")["callsid"]
    mobile.expect("invite")
    desk.send("reject", callsid=child, reason="busy")
    assert alice.messages() == []
    assert mobile.messages() == []
    assert desk.messages() == []
    assert h.exchange.call_count == 1
    mobile.send("reject", callsid=child, reason="busy")
    assert alice.expect_one("hangup") == {
        "callsid": parent,
        "error": {"code": 31486, "message": "Busy here"},
    }
    assert h.exchange.call_count == 0


def test_busy_fork_then_answer_elsewhere(h):
    alice = h.login("alice")
    desk = h.login("bob")
    mobile = h.login("bob")
    parent = dial(alice, "bob")
    child = desk.expect_one("invite")["callsid"]
    mobile.expect("invite")
    desk.send("reject", callsid=child, reason="busy")
    mobile.send("answer", callsid=child, sdp=ANSWER)
    assert alice.expect_one("answer") == {"callsid": parent, "sdp": ANSWER}
    assert desk.messages() == []  # it left the call: no cancel


def test_no_outgoing_grant_hangs_up_the_temp_id_31201(h):
    alice = h.login("alice", outgoing_application_sid=None)
    h.login("bob")
    alice.send("invite", callsid="TJS-9", sdp=OFFER, twilio={"params": "To=bob"})
    payload = alice.expect_one("hangup")
    assert payload["callsid"] == "TJS-9"
    assert payload["error"]["code"] == 31201


def test_invite_without_to_is_31100(h):
    alice = h.login("alice")
    alice.send("invite", callsid="TJS-9", sdp=OFFER, twilio={})
    payload = alice.expect_one("hangup")
    assert (payload["callsid"], payload["error"]["code"]) == ("TJS-9", 31100)


def test_dtmf_is_relayed_with_each_legs_callsid(h):
    alice = h.login("alice")
    bob = h.login("bob")
    parent = dial(alice, "bob")
    child = bob.expect_one("invite")["callsid"]
    bob.send("answer", callsid=child, sdp=ANSWER)
    alice.expect("answer")
    alice.send("dtmf", callsid=parent, dtmf="12#")
    assert bob.expect_one("dtmf") == {"callsid": child, "dtmf": "12#"}
    bob.send("dtmf", callsid=child, dtmf="*")
    assert alice.expect_one("dtmf") == {"callsid": parent, "dtmf": "*"}


def test_dtmf_before_answer_is_an_error(h):
    alice = h.login("alice")
    h.login("bob")
    parent = dial(alice, "bob")
    alice.send("dtmf", callsid=parent, dtmf="1")
    assert alice.expect_one("error")["error"]["code"] == 31400


def test_message_is_relayed_and_acked(h):
    alice = h.login("alice")
    bob = h.login("bob")
    parent = dial(alice, "bob")
    child = bob.expect_one("invite")["callsid"]
    bob.send("answer", callsid=child, sdp=ANSWER)
    alice.expect("answer")
    event = "KX" + "1" * 32
    alice.send(
        "message",
        callsid=parent,
        content='{"a":1}',
        contenttype="application/json",
        messagetype="user-defined-message",
        voiceeventsid=event,
    )
    assert bob.expect_one("message") == {
        "callsid": child,
        "content": '{"a":1}',
        "contenttype": "application/json",
        "messagetype": "user-defined-message",
        "voiceeventsid": event,
    }
    assert alice.expect_one("ack") == {
        "acktype": "message",
        "callsid": parent,
        "voiceeventsid": event,
    }


def test_session_closed_mid_call_hangs_up_other_leg_31005(h):
    alice = h.login("alice")
    bob = h.login("bob")
    parent = dial(alice, "bob")
    bob.send("answer", callsid=bob.expect_one("invite")["callsid"], sdp=ANSWER)
    alice.expect("answer")
    bob.close()
    assert alice.expect_one("hangup") == {
        "callsid": parent,
        "error": {"code": 31005, "message": "Connection lost"},
    }
    assert h.exchange.registered_sessions(ACCOUNT, "bob") == []


def test_caller_closing_while_ringing_cancels(h):
    alice = h.login("alice")
    bob = h.login("bob")
    dial(alice, "bob")
    child = bob.expect_one("invite")["callsid"]
    alice.close()
    assert bob.expect_one("cancel") == {"callsid": child}
    assert h.exchange.call_count == 0


def test_last_ringing_session_closing_fails_call_31480(h):
    alice = h.login("alice")
    bob = h.login("bob")
    parent = dial(alice, "bob")
    bob.expect("invite")
    bob.close()
    assert alice.expect_one("hangup") == {
        "callsid": parent,
        "error": {"code": 31480, "message": "Temporarily unavailable"},
    }


# -------------------------------------------------------------------- echo


def test_echo_call(h):
    alice = h.login("alice")
    parent = dial(alice, "echo")
    assert h.echo == [EchoOffer(parent, OFFER)]
    h.exchange.echo_answered(parent, ANSWER)
    h.pump()
    assert alice.expect_one("answer") == {"callsid": parent, "sdp": ANSWER}
    alice.send("dtmf", callsid=parent, dtmf="5")  # ignored
    assert alice.messages() == []
    alice.send("message", callsid=parent, content="ping", voiceeventsid="KX1")
    echoed, ack = alice.expect("message", "ack")
    assert echoed == {"callsid": parent, "content": "ping", "voiceeventsid": "KX1"}
    assert ack["voiceeventsid"] == "KX1"
    alice.send("hangup", callsid=parent)
    assert h.echo[-1] == EchoHangup(parent)
    assert h.exchange.call_count == 0


def test_echo_failure_is_31000(h):
    alice = h.login("alice")
    parent = dial(alice, "echo")
    h.exchange.echo_failed(parent)
    h.pump()
    assert alice.expect_one("hangup")["error"]["code"] == 31000


# ---------------------------------------------------------- bad frames


def test_reinvite_is_31100(h):
    alice = h.login("alice")
    alice.send("reinvite", callsid="CA1", sdp=OFFER)
    payload = alice.expect_one("error")
    assert payload["error"] == {"code": 31100, "message": "reinvite is not supported"}
    assert payload["callsid"] == "CA1"


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        json.dumps({"type": "bogus", "payload": {}}),
        json.dumps({"type": "invite", "payload": {"callsid": "TJS"}}),
        json.dumps({"type": "ringing", "payload": {"callsid": "CA1"}}),
        json.dumps({"type": "register", "payload": {"media": "yes"}}),
    ],
)
def test_malformed_or_unexpected_frames_are_31400_and_socket_stays(h, text):
    alice = h.login("alice")
    alice.send_text(text)
    assert alice.expect_one("error")["error"]["code"] == 31400
    assert not alice.is_closed


def test_deeply_nested_frame_is_31400_before_and_after_listen(h):
    nested = "[" * 3000 + "]" * 3000  # json recursion: RecursionError
    client = h.connect()
    client.send_text(nested)
    assert client.expect_one("error")["error"]["code"] == 31400
    client.send_text('{"type": "listen", "payload": ' + nested + "}")
    assert client.expect_one("error")["error"]["code"] == 31400
    assert not client.is_closed
    client.send("listen", token=h.token("alice"))
    client.expect("connected")
    client.send_text(nested)
    assert client.expect_one("error")["error"]["code"] == 31400


def test_deeply_nested_token_is_31204_then_close(h):
    header = base64.urlsafe_b64encode(b"[" * 3000 + b"]" * 3000).decode()
    client = h.connect()
    client.send("listen", token=header.rstrip("=") + ".e30.c2ln")
    error, _close = client.expect("error", "close")
    assert error["error"]["code"] == 31204
    assert client.is_closed


def test_dtmf_for_unknown_call_is_31400(h):
    alice = h.login("alice")
    alice.send("dtmf", callsid="CA" + "0" * 32, dtmf="1")
    assert alice.expect_one("error")["error"]["code"] == 31400


def test_idle_timeout_closes_silent_sessions():
    h = Harness(idle_timeout=20.0)
    quiet = h.login("quiet", register=False)
    chatty = h.login("chatty", register=False)
    for _ in range(5):
        h.advance(5)
        chatty.send_text(HEARTBEAT)
    assert quiet.is_closed
    assert not chatty.is_closed


def test_caller_closing_after_answer_hangs_up_callee_31005(h):
    alice = h.login("alice")
    bob = h.login("bob")
    dial(alice, "bob")
    child = bob.expect_one("invite")["callsid"]
    bob.send("answer", callsid=child, sdp=ANSWER)
    alice.close()
    assert bob.expect_one("hangup") == {
        "callsid": child,
        "error": {"code": 31005, "message": "Connection lost"},
    }


def test_ringing_callee_hangup_declines_the_call(h):
    alice = h.login("alice")
    bob = h.login("bob")
    dial(alice, "bob")
    bob.send("hangup", callsid=bob.expect_one("invite")["callsid"])
    assert alice.expect_one("hangup")["error"]["code"] == 31603


def test_invite_with_expired_token_is_31205_on_the_temp_id(h):
    alice = h.login("alice", ttl=10)
    h.advance(10)
    alice.expect("error", "offline")
    alice.send("invite", callsid="TJS-e", sdp=OFFER, twilio={"params": "To=echo"})
    payload = alice.expect_one("hangup")
    assert (payload["callsid"], payload["error"]["code"]) == ("TJS-e", 31205)


def test_reconnect_invite_is_refused(h):
    alice = h.login("alice")
    alice.send("invite", callsid="CA1", sdp=OFFER, reconnect="tok", twilio={})
    assert alice.expect_one("hangup")["error"]["code"] == 31107


def test_echo_media_stops_when_caller_leaves_or_nobody_answers(h):
    alice = h.login("alice")
    parent = dial(alice, "echo")
    alice.close()
    assert h.echo == [EchoOffer(parent, OFFER), EchoHangup(parent)]
    bob = h.login("bob")
    parent = dial(bob, "echo", temp="TJS-2")
    h.advance(30)
    assert bob.expect_one("hangup")["error"]["code"] == 31480
    assert h.echo[-1] == EchoHangup(parent)
    # A late answer from the echo media is ignored.
    h.exchange.echo_answered(parent, ANSWER)
    h.pump()
    assert bob.messages() == []


@pytest.mark.parametrize(
    ("error", "relayed"),
    [
        ({"code": 31003, "message": "ice"}, 31003),  # media failed: passed on
        ({"code": 31603, "message": "forged"}, None),  # any other: plain hangup
        ("31003", None),
    ],
)
@pytest.mark.parametrize("who", ["caller", "callee"])
def test_hangup_after_media_failure_tells_the_far_party_31003(h, error, relayed, who):
    alice = h.login("alice")
    bob = h.login("bob")
    parent = dial(alice, "bob")
    child = bob.expect_one("invite")["callsid"]
    bob.send("answer", callsid=child, sdp=ANSWER)
    alice.expect_one("answer")
    if who == "caller":
        alice.send("hangup", callsid=parent, error=error)
        far, sid = bob, child
    else:
        bob.send("hangup", callsid=child, error=error)
        far, sid = alice, parent
    expected: dict[str, Any] = {"callsid": sid}
    if relayed is not None:
        expected["error"] = {
            "code": relayed,
            "message": "Connection with Twilio was interrupted.",
        }
    assert far.expect_one("hangup") == expected
