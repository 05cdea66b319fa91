"""Calls held across a dropped socket and resumed by a reconnect invite (pure core).

signaling-protocol.md §4.4: a party that sent ``listen.reconnectTimeout`` gets
a reconnect token with its answered call; its socket closing holds the call
for that long; ``invite{callsid, reconnect, sdp}`` from a new session of the
same identity resumes it.
"""

from __future__ import annotations

from typing import Any

import pytest

from appliance.exchange.resume import DEFAULT_RECONNECT_TIMEOUT_S, reconnect_timeout
from tests.exchange.test_core import ANSWER, OFFER, Client, Harness, dial


def login(h: Harness, identity: str, grace: object = 10, **options: Any) -> Client:
    client = h.connect()
    client.send("listen", token=h.token(identity, **options), reconnectTimeout=grace)
    client.expect("connected")
    client.send("register", media={"audio": True})
    client.expect("ready")
    return client


def answered(
    h: Harness, alice: Client, bob: Client
) -> tuple[str, str, str | None, str | None]:
    """Alice calls bob, bob answers: (parent, child, alice's token, bob's token)."""
    parent = dial(alice, "client:bob")
    invite = bob.expect_one("invite")
    bob.send("answer", callsid=invite["callsid"], sdp=ANSWER)
    answer = alice.expect_one("answer")
    return parent, invite["callsid"], answer.get("reconnect"), invite.get("reconnect")


def reconnect(client: Client, callsid: str, token: object) -> dict[str, Any]:
    client.send("invite", callsid=callsid, reconnect=token, sdp=OFFER, twilio={})
    return client.expect_one("answer")


@pytest.fixture
def h() -> Harness:
    return Harness(ring_timeout=30.0, heartbeat_interval=5.0)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(0, 0), (10, 10), (2.1, 3), (30, 30), (45, 30), (-1, 0), ("10", 0), (None, 30)],
)
def test_reconnect_timeout_is_whole_seconds_capped_at_30(value, seconds):
    assert reconnect_timeout(value) == seconds
    if value is None:  # absent: the exchange's own grace
        assert reconnect_timeout(None, 7) == 7
        assert DEFAULT_RECONNECT_TIMEOUT_S == 30


def test_a_listen_without_reconnect_timeout_gets_30_s_of_grace(h):
    alice, bob = h.login("alice", grace=None), h.login("bob", grace=0)
    _parent, _child, token, bob_token = answered(h, alice, bob)
    assert token is not None and bob_token is None  # bob said 0: no token
    alice.close()
    h.advance(29.9)
    assert bob.messages() == []  # held, as if alice had asked for 30 s
    assert h.exchange.call_count == 1
    h.advance(0.2)
    assert bob.expect_one("hangup")["error"]["code"] == 31003
    assert h.exchange.call_count == 0


def test_the_default_grace_is_configurable_and_0_ends_the_call_at_once():
    h = Harness(ring_timeout=30.0, heartbeat_interval=5.0, resume_grace=0)
    alice, bob = h.login("alice", grace=None), h.login("bob", grace=None)
    _parent, _child, token, bob_token = answered(h, alice, bob)
    assert token is None and bob_token is None
    alice.close()
    assert bob.expect_one("hangup")["error"]["code"] == 31005


def test_tokens_only_for_parties_that_asked(h):
    alice, bob = login(h, "alice", grace=0), login(h, "bob", grace=10)
    _parent, _child, alice_token, bob_token = answered(h, alice, bob)
    assert alice_token is None
    assert isinstance(bob_token, str) and bob_token.startswith("RT")


def test_caller_drop_holds_the_call_and_a_new_session_resumes_it(h):
    alice, bob = login(h, "alice"), login(h, "bob")
    parent, child, token, _ = answered(h, alice, bob)
    assert token is not None
    alice.close()
    h.advance(9.0)
    assert bob.messages() == []  # the other party sees nothing
    assert h.exchange.call_count == 1
    again = login(h, "alice")
    payload = reconnect(again, parent, token)
    assert payload["callsid"] == parent and payload["sdp"] == ANSWER
    assert payload["reconnect"] not in (None, token)  # a fresh token each time
    h.advance(30.0)
    assert h.exchange.call_count == 1  # the grace timer is gone
    # The resumed session is the caller now: its frames reach bob.
    again.send("dtmf", callsid=parent, dtmf="5")
    assert bob.expect_one("dtmf") == {"callsid": child, "dtmf": "5"}
    again.send("hangup", callsid=parent)
    assert bob.expect_one("hangup") == {"callsid": child}
    assert h.exchange.call_count == 0
    again.send("invite", callsid=parent, reconnect=token, sdp=OFFER, twilio={})
    assert again.expect_one("hangup")["error"]["code"] == 31107


def test_callee_drop_is_resumed_with_the_offer(h):
    alice, bob = login(h, "alice"), login(h, "bob")
    parent, child, _, token = answered(h, alice, bob)
    bob.close()
    again = login(h, "bob")
    payload = reconnect(again, child, token)
    assert (payload["callsid"], payload["sdp"]) == (child, OFFER)
    alice.send("hangup", callsid=parent)
    assert again.expect_one("hangup") == {"callsid": child}


def test_grace_expiry_ends_the_call_for_the_other_party_with_31003(h):
    alice, bob = login(h, "alice", grace=10), login(h, "bob")
    parent, _child, token, _ = answered(h, alice, bob)
    alice.close()
    h.advance(9.9)
    assert bob.messages() == []
    h.advance(0.2)
    hangup = bob.expect_one("hangup")
    assert hangup["error"]["code"] == 31003
    assert h.exchange.call_count == 0
    late = login(h, "alice")
    late.send("invite", callsid=parent, reconnect=token, sdp=OFFER, twilio={})
    assert late.expect_one("hangup")["error"]["code"] == 31107


def test_used_wrong_and_foreign_tokens_are_refused(h):
    alice, bob = login(h, "alice"), login(h, "bob")
    parent, _child, token, _ = answered(h, alice, bob)
    alice.close()
    mallory = login(h, "mallory")
    mallory.send("invite", callsid=parent, reconnect=token, sdp=OFFER, twilio={})
    assert mallory.expect_one("hangup") == {
        "callsid": parent,
        "error": {"code": 31209, "message": "Reconnect attempt not authorized"},
    }
    other_account = h.connect()
    other_account.send(
        "listen",
        token=h.token(
            "alice",
            account_sid="AC" + "c" * 32,
            api_key_sid="SK" + "d" * 32,
            api_secret="o" * 32,
        ),
        reconnectTimeout=10,
    )
    other_account.expect("connected")
    other_account.send("invite", callsid=parent, reconnect=token, sdp=OFFER, twilio={})
    assert other_account.expect_one("hangup")["error"]["code"] == 31209
    again = login(h, "alice")
    for callsid, bad in ((parent, "RT" + "0" * 32), ("CA" + "1" * 32, token)):
        again.send("invite", callsid=callsid, reconnect=bad, sdp=OFFER, twilio={})
        assert again.expect_one("hangup")["error"]["code"] == 31107
    assert bob.messages() == []  # refusals leave the held call alone
    assert reconnect(again, parent, token)["callsid"] == parent
    third = login(h, "alice")
    third.send("invite", callsid=parent, reconnect=token, sdp=OFFER, twilio={})
    assert third.expect_one("hangup")["error"]["code"] == 31107  # used once


def test_without_a_token_the_drop_still_ends_the_call_31005(h):
    alice, bob = login(h, "alice", grace=0), login(h, "bob")
    answered(h, alice, bob)
    alice.close()
    assert bob.expect_one("hangup")["error"]["code"] == 31005


def test_ringing_calls_are_not_held(h):
    alice, bob = login(h, "alice"), login(h, "bob")
    dial(alice, "client:bob")
    bob.expect_one("invite")
    alice.close()
    bob.expect("cancel")
    assert h.exchange.call_count == 0


def test_only_the_answering_forks_token_stays_good(h):
    alice = login(h, "alice")
    desk, mobile = login(h, "bob"), login(h, "bob")
    dial(alice, "client:bob")
    desk_invite, mobile_invite = desk.expect_one("invite"), mobile.expect_one("invite")
    assert desk_invite["reconnect"] != mobile_invite["reconnect"]
    desk.send("answer", callsid=desk_invite["callsid"], sdp=ANSWER)
    mobile.expect("cancel")
    desk.close()
    again = login(h, "bob")
    child = desk_invite["callsid"]
    again.send("invite", callsid=child, reconnect=mobile_invite["reconnect"], sdp=OFFER)
    assert again.expect_one("hangup")["error"]["code"] == 31107
    assert reconnect(again, child, desk_invite["reconnect"])["callsid"] == child


def test_a_live_leg_can_be_taken_over_before_its_socket_closes(h):
    # The phone saw its socket die (15 s of silence) before the exchange did.
    alice, bob = login(h, "alice"), login(h, "bob")
    parent, child, token, _ = answered(h, alice, bob)
    again = login(h, "alice")
    assert reconnect(again, parent, token)["callsid"] == parent
    alice.close()  # the old socket ends at last: the call is not its own now
    assert bob.messages() == []
    bob.send("dtmf", callsid=child, dtmf="7")
    assert again.expect_one("dtmf") == {"callsid": parent, "dtmf": "7"}


def test_echo_call_is_held_and_resumed(h):
    alice = login(h, "alice")
    parent = dial(alice, "echo")
    h.exchange.echo_answered(parent, ANSWER)
    h.pump()
    token = alice.expect_one("answer")["reconnect"]
    alice.close()
    assert not any(type(r).__name__ == "EchoHangup" for r in h.echo)
    again = login(h, "alice")
    assert reconnect(again, parent, token)["sdp"] == ANSWER
