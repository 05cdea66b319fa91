"""Per-field caps of the exchange core, each answered with its Twilio code.

Driven synchronously (tests/exchange/test_core.py's Harness). For each field:
a value at the cap goes through, one byte over is refused with its code and
nothing is relayed. Sizes are UTF-8 bytes as the value sits in a frame, so
the over-cap values are built from multi-byte characters where that matters.
"""

from __future__ import annotations

import pytest

from appliance.signaling.limits import (
    CONTENT_MAX_BYTES,
    EXCHANGE_MAX_FRAME_BYTES,
    IDENTITY_MAX_BYTES,
    PARAMS_MAX_BYTES,
    PHONE_MAX_FRAME_BYTES,
    RELAY_MAX_FRAME_BYTES,
    SDP_MAX_BYTES,
    SHORT_MAX_BYTES,
    TOKEN_MAX_BYTES,
    check_consistency,
    json_size,
    text_size,
)
from appliance.signaling.messages import encode_params
from tests.exchange.test_core import Client, Harness

#: A 3-byte UTF-8 character: 1 character, 3 bytes on the wire.
WIDE = "語"


def sized(total: int, unit: str = WIDE) -> str:
    """A string whose JSON encoding (quotes included) is ``total`` bytes."""
    body = total - 2
    wide = unit * (body // len(unit.encode()))
    return wide + "a" * (body - len(wide.encode()))


@pytest.fixture
def h() -> Harness:
    return Harness(ring_timeout=30.0, heartbeat_interval=5.0)


def invite(caller: Client, sdp: str = "v=0", temp: str = "TJS-1", **params: str):
    caller.send(
        "invite", callsid=temp, sdp=sdp, twilio={"params": encode_params(params)}
    )


def refused_hangup(client: Client, code: int) -> None:
    payload = client.expect_one("hangup")
    assert payload["error"]["code"] == code, payload


def test_limits_are_consistent():
    check_consistency()
    assert RELAY_MAX_FRAME_BYTES <= PHONE_MAX_FRAME_BYTES
    assert (
        sum((SDP_MAX_BYTES, PARAMS_MAX_BYTES, 2 * IDENTITY_MAX_BYTES))
        < RELAY_MAX_FRAME_BYTES
    )


def test_sized_helper():
    assert json_size(sized(1000)) == 1000
    assert json_size(sized(1001)) == 1001


# ------------------------------------------------------------------ SDP


def test_invite_sdp_at_cap_is_relayed_and_fits_a_phone(h):
    alice, bob = h.login("alice"), h.login("bob")
    sdp = sized(SDP_MAX_BYTES)
    # The largest legal identities and Params ride along.
    invite(alice, sdp, To="client:bob", note=sized(PARAMS_MAX_BYTES // 4, "a"))
    alice.expect("ringing")
    frame = bob.received[-1]
    assert bob.expect_one("invite")["sdp"] == sdp
    assert text_size(frame) <= RELAY_MAX_FRAME_BYTES


def test_invite_sdp_over_cap_is_31100_and_not_relayed(h):
    alice, bob = h.login("alice"), h.login("bob")
    invite(alice, sized(SDP_MAX_BYTES + 1), To="client:bob")
    payload = alice.expect_one("hangup")
    assert payload["callsid"] == "TJS-1"
    assert payload["error"]["code"] == 31100
    assert "sdp" in payload["error"]["message"]
    bob.expect()
    assert h.exchange.call_count == 0


def test_answer_sdp_over_cap_ends_that_leg(h):
    alice, bob = h.login("alice"), h.login("bob")
    invite(alice, To="client:bob")
    alice.expect("ringing")
    child = bob.expect_one("invite")["callsid"]
    bob.send("answer", callsid=child, sdp=sized(SDP_MAX_BYTES + 1))
    assert bob.expect_one("hangup")["error"]["code"] == 31100
    # Nobody else rings: the caller hears 31480, not an answer.
    refused_hangup(alice, 31480)
    assert h.exchange.call_count == 0


# --------------------------------------------------------------- Params


def test_params_over_cap_are_31103(h):
    alice, bob = h.login("alice"), h.login("bob")
    invite(alice, To="client:bob", note="a" * PARAMS_MAX_BYTES)
    refused_hangup(alice, 31103)
    bob.expect()


def test_params_that_grow_when_relayed_are_31103(h):
    # '+' decodes to a space, which is relayed as %20: 1 byte becomes 3.
    alice, bob = h.login("alice"), h.login("bob")
    raw = "To=client%3Abob&note=" + "+" * (PARAMS_MAX_BYTES // 2)
    alice.send("invite", callsid="TJS-1", sdp="v=0", twilio={"params": raw})
    refused_hangup(alice, 31103)
    bob.expect()


# ------------------------------------------------------------ identities


def test_to_over_cap_is_31105(h):
    alice = h.login("alice")
    name = sized(IDENTITY_MAX_BYTES + 1)
    invite(alice, To=f"client:{name}")
    refused_hangup(alice, 31105)


@pytest.mark.parametrize("bad", ["bob\nINFO forged line", "bob\u202e", "bob\u2028x"])
def test_to_with_control_characters_is_31105(h, bad):
    alice, bob = h.login("alice"), h.login("bob")
    invite(alice, To=f"client:{bad}")
    refused_hangup(alice, 31105)
    bob.expect()


def test_token_identity_over_cap_is_31105_and_closed(h):
    client = h.connect()
    client.send("listen", token=h.token(sized(IDENTITY_MAX_BYTES + 1)))
    assert client.expect("error", "close")[0]["error"]["code"] == 31105
    assert client.is_closed


def test_token_identity_at_cap_is_accepted(h):
    name = sized(IDENTITY_MAX_BYTES)
    client = h.login(name)
    assert h.exchange.registered_sessions("AC" + "a" * 32, name) == [client.sid]


def test_token_over_cap_is_31204(h):
    client = h.connect()
    client.send("listen", token="eyJ" + "a" * TOKEN_MAX_BYTES)
    assert client.expect("error", "close")[0]["error"]["code"] == 31204


# ------------------------------------------------------- message content


def answered(h: Harness) -> tuple[Client, Client, str, str]:
    alice, bob = h.login("alice"), h.login("bob")
    invite(alice, To="client:bob")
    parent = alice.expect_one("ringing")["callsid"]
    child = bob.expect_one("invite")["callsid"]
    bob.send("answer", callsid=child, sdp="v=0")
    alice.expect("answer")
    return alice, bob, parent, child


def test_message_content_at_cap_is_relayed(h):
    alice, bob, parent, _ = answered(h)
    content = {"text": sized(CONTENT_MAX_BYTES - len('{"text":}'))}
    assert json_size(content) == CONTENT_MAX_BYTES
    alice.send("message", callsid=parent, content=content, voiceeventsid="KX1")
    alice.expect("ack")
    assert bob.expect_one("message")["content"] == content


def test_message_content_over_cap_is_31212_for_that_call(h):
    alice, bob, parent, _ = answered(h)
    content = {"text": sized(CONTENT_MAX_BYTES)}  # non-ASCII: bytes count
    alice.send("message", callsid=parent, content=content, voiceeventsid="KX1")
    payload = alice.expect_one("error")
    assert payload["error"]["code"] == 31212
    assert payload["callsid"] == parent and payload["voiceeventsid"] == "KX1"
    bob.expect()
    assert h.exchange.call_count == 1  # the call goes on


@pytest.mark.parametrize("key", ["voiceeventsid", "contenttype", "messagetype"])
def test_message_short_fields_over_cap_are_31100(h, key):
    alice, bob, parent, _ = answered(h)
    alice.send("message", callsid=parent, content={}, **{key: "x" * SHORT_MAX_BYTES})
    assert alice.expect_one("error")["error"]["code"] == 31100
    bob.expect()


# ----------------------------------------------------- short fields, frame


def test_callsid_over_cap_is_31100_without_echo(h):
    alice = h.login("alice")
    alice.send("hangup", callsid="CA" + "f" * SHORT_MAX_BYTES)
    payload = alice.expect_one("error")
    assert payload["error"]["code"] == 31100
    assert "callsid" not in payload


def test_dtmf_over_cap_is_31100(h):
    alice, bob, parent, _ = answered(h)
    alice.send("dtmf", callsid=parent, dtmf="1" * SHORT_MAX_BYTES)
    assert alice.expect_one("error")["error"]["code"] == 31100
    bob.expect()


def test_frame_over_the_exchange_limit_is_31100(h):
    alice = h.login("alice")
    alice.send(
        "register", media={"audio": True}, pad=WIDE * (EXCHANGE_MAX_FRAME_BYTES // 3)
    )
    payload = alice.expect_one("error")
    assert payload["error"]["code"] == 31100
