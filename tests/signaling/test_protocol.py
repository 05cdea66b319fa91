"""The client protocol core, driven by hand with scripted gateway frames."""

from __future__ import annotations

import json

import pytest

from appliance.errors import AuthenticationError, RemoteProtocolError
from appliance.signaling.backoff import BackoffPolicy, is_retryable
from appliance.signaling.messages import HEARTBEAT, Message, MessageType, encode
from appliance.signaling.protocol import (
    ClientProtocol,
    CloseConnection,
    Connected,
    ErrorReceived,
    GatewayClosed,
    MessageReceived,
    OpenConnection,
    Ready,
    TokenWillExpire,
    TransportLost,
    TransportState,
    Unregistered,
)

URL = "ws://127.0.0.1:9/signal"


def gateway(kind: str, **payload: object) -> str:
    return encode(Message(MessageType(kind), dict(payload), version=""))


def sent(proto: ClientProtocol) -> list[dict]:
    return [json.loads(f) for f in proto.messages_to_send() if f != HEARTBEAT]


def make(urls: list[str] | None = None, jitter: float = 0.0) -> ClientProtocol:
    return ClientProtocol(
        urls=urls or [URL],
        token="tok",
        backoff=BackoffPolicy(),
        random=lambda: jitter,
        register_payload={"callWaiting": False},
    )


def connected(proto: ClientProtocol, now: float = 0.0, ttl: int = 3600) -> None:
    proto.start(now)
    proto.actions()
    proto.connection_opened(now)
    proto.messages_to_send()
    proto.receive_message(
        gateway("connected", region="LOCAL", token={"identity": "alice", "ttl": ttl}),
        now,
    )


def test_start_opens_the_first_url_and_sends_listen_on_open():
    proto = make()
    proto.start(0.0)
    assert proto.actions() == [OpenConnection(URL)]
    proto.connection_opened(0.1)
    frames = sent(proto)
    assert [f["type"] for f in frames] == ["listen"]
    assert frames[0]["version"] == "1.6"
    assert frames[0]["payload"]["token"] == "tok"
    assert frames[0]["payload"]["reconnectTimeout"] == 0


def test_connected_then_register_then_ready():
    proto = make()
    proto.register(0.0)
    connected(proto)
    events = proto.events_received()
    assert events == [Connected("alice", 3600.0, "LOCAL", None)]
    frames = sent(proto)
    assert frames == [
        {
            "type": "register",
            "version": "1.6",
            "payload": {"media": {"audio": True}, "callWaiting": False},
        }
    ]
    proto.receive_message(gateway("ready"), 0.2)
    assert proto.events_received() == [Ready()]
    assert proto.registered


def test_heartbeat_is_echoed_and_resets_the_idle_timer():
    proto = make()
    connected(proto)
    proto.receive_message(HEARTBEAT, 10.0)
    assert proto.messages_to_send() == [HEARTBEAT]
    proto.tick(20.0)  # 10 s after the heartbeat: still alive
    assert proto.state is TransportState.CONNECTED
    proto.tick(25.0)  # 15 s of silence
    assert CloseConnection("no frame for 15 s") in proto.actions()
    lost = [e for e in proto.events_received() if isinstance(e, TransportLost)]
    assert lost and lost[0].was_connected
    assert proto.state is TransportState.WAITING


def test_connect_timeout_is_five_seconds_and_moves_to_the_next_url():
    second = "ws://127.0.0.1:10/signal"
    proto = make([URL, second])
    proto.start(0.0)
    proto.actions()
    assert proto.next_deadline() == pytest.approx(5.0)
    proto.tick(5.0)
    assert proto.actions()[0] == CloseConnection("connect timeout")
    event = proto.events_received()[0]
    assert isinstance(event, TransportLost) and event.retry_at == pytest.approx(5.1)
    proto.tick(5.1)
    assert proto.actions() == [OpenConnection(second)]


@pytest.mark.parametrize("jitter", [0.0, 0.999])
def test_backoff_doubles_from_100_ms_and_is_capped(jitter):
    proto = ClientProtocol(
        urls=[URL],
        token="t",
        random=lambda: jitter,
        backoff=BackoffPolicy.for_option(3000),
    )
    now = 0.0
    proto.start(now)
    delays = []
    for _ in range(8):
        proto.actions()
        proto.connection_failed(now, "refused")
        event = proto.events_received()[0]
        assert isinstance(event, TransportLost) and event.retry_at is not None
        delays.append(event.retry_at - now)
        now = event.retry_at
        proto.tick(now)
    expected = [min(0.1 * 2**n * (1 + 0.4 * jitter), 3.0) for n in range(8)]
    assert delays == pytest.approx(expected)
    assert max(delays) <= 3.0


def test_listen_asks_for_the_reconnect_timeout_and_retries_fast_meanwhile():
    # §4.3: while calls may still be resumed, retries come at least every 1 s.
    proto = ClientProtocol(
        urls=[URL],
        token="t",
        random=lambda: 0.999,
        backoff=BackoffPolicy.for_option(20_000),
        reconnect_timeout_s=10,
    )
    connected(proto, now=0.0)
    proto.connection_closed(5.0, "code 1006")
    now = 5.0
    delays = []
    while now < 30.0:
        lost = [e for e in proto.events_received() if isinstance(e, TransportLost)]
        assert lost and lost[-1].retry_at is not None
        delays.append((now, lost[-1].retry_at - now))
        now = lost[-1].retry_at
        proto.tick(now)
        listen = sent(proto)  # nothing is sent: the socket is not open yet
        assert listen == []
        proto.actions()
        proto.connection_failed(now, "refused")
    assert all(d <= 1.0 for t, d in delays if t < 15.0)
    assert max(d for _t, d in delays) > 1.0  # the normal backoff after 10 s
    proto.tick(now + 30)
    proto.actions()
    proto.connection_opened(now + 30)
    assert sent(proto)[0]["payload"]["reconnectTimeout"] == 10


def test_backoff_resets_after_connected():
    proto = make()
    proto.start(0.0)
    for _ in range(4):
        proto.actions()
        proto.connection_failed(0.0, "refused")
        proto.tick(100.0)
    proto.actions()
    proto.connection_opened(100.0)
    proto.receive_message(gateway("connected"), 100.0)
    proto.connection_closed(101.0, "code 1006")
    lost = [e for e in proto.events_received() if isinstance(e, TransportLost)]
    assert lost[-1].retry_at == pytest.approx(101.1)


def test_register_repeats_every_30_seconds():
    proto = make()
    proto.register(0.0)
    connected(proto)
    assert [f["type"] for f in sent(proto)] == ["register"]
    proto.receive_message(HEARTBEAT, 14.0)
    proto.receive_message(HEARTBEAT, 28.0)
    proto.tick(30.0)
    assert [f["type"] for f in sent(proto)] == ["register"]
    assert proto.next_deadline() is not None


def test_token_will_expire_ten_seconds_before_ttl():
    proto = make()
    connected(proto, ttl=60)
    proto.events_received()
    for t in (14.0, 28.0, 42.0):
        proto.receive_message(HEARTBEAT, t)
    proto.tick(49.9)
    assert TokenWillExpire() not in proto.events_received()
    proto.tick(50.0)
    assert TokenWillExpire() in proto.events_received()


def test_gateway_error_then_close_stops_reconnecting():
    proto = make()
    connected(proto)
    proto.events_received()
    proto.receive_message(
        gateway(
            "error", error={"code": 31202, "message": "JWT signature validation failed"}
        ),
        1.0,
    )
    proto.receive_message(gateway("close"), 1.0)
    events = proto.events_received()
    assert isinstance(events[0], ErrorReceived)
    assert isinstance(events[0].error, AuthenticationError)
    assert events[0].error.code == 31202
    assert events[1] == GatewayClosed()
    assert proto.state is TransportState.CLOSED
    assert proto.next_deadline() is None
    assert CloseConnection("gateway sent close") in proto.actions()


def test_set_token_after_gateway_close_restarts_the_session():
    proto = make()
    connected(proto)
    proto.receive_message(gateway("close"), 1.0)
    proto.actions()
    proto.set_token("new", 2.0)
    assert proto.actions() == [OpenConnection(URL)]
    proto.connection_opened(2.0)
    assert sent(proto)[0]["payload"]["token"] == "new"


def test_set_token_on_a_live_socket_resends_listen():
    proto = make()
    connected(proto)
    proto.set_token("fresh", 5.0)
    frames = sent(proto)
    assert [f["type"] for f in frames] == ["listen"]
    assert frames[0]["payload"]["token"] == "fresh"


def test_call_messages_are_passed_to_the_engine():
    proto = make()
    connected(proto)
    proto.events_received()
    proto.receive_message(gateway("invite", callsid="CA1", sdp="v=0"), 1.0)
    (event,) = proto.events_received()
    assert isinstance(event, MessageReceived)
    assert event.message.type is MessageType.INVITE
    assert event.message.callsid == "CA1"


def test_malformed_invite_is_a_31400_error():
    proto = make()
    connected(proto)
    proto.events_received()
    proto.receive_message(gateway("invite", callsid="CA1"), 1.0)
    (event,) = proto.events_received()
    assert isinstance(event, ErrorReceived)
    assert isinstance(event.error, RemoteProtocolError)
    assert event.error.code == 31400


def test_not_json_is_an_error_not_a_crash():
    proto = make()
    connected(proto)
    proto.events_received()
    proto.receive_message("{nope", 1.0)
    (event,) = proto.events_received()
    assert isinstance(event, ErrorReceived)
    assert proto.state is TransportState.CONNECTED


def test_send_while_down_queues_and_reports_31009():
    proto = make()
    proto.start(0.0)
    proto.actions()
    hangup = Message(MessageType.HANGUP, {"callsid": "CA1"})
    assert not proto.send(hangup, 0.0)
    (event,) = proto.events_received()
    assert isinstance(event, ErrorReceived) and event.error.code == 31009
    proto.connection_opened(0.1)
    assert [f["type"] for f in sent(proto)] == ["listen", "hangup"]


def test_offline_from_gateway_unregisters():
    proto = make()
    proto.register(0.0)
    connected(proto)
    proto.receive_message(gateway("ready"), 0.1)
    proto.receive_message(gateway("offline"), 0.2)
    assert proto.events_received()[-1] == Unregistered()
    assert not proto.registered


def test_close_sends_unregister_and_never_reconnects():
    proto = make()
    proto.register(0.0)
    connected(proto)
    proto.messages_to_send()
    proto.events_received()
    proto.close(1.0)
    assert sent(proto) == [
        {"type": "register", "version": "1.6", "payload": {"media": {"audio": False}}}
    ]
    assert proto.actions() == [CloseConnection("closed by the application")]
    proto.connection_closed(1.1, "code 1000")
    assert proto.events_received() == []
    assert proto.next_deadline() is None


def test_token_errors_are_not_retryable_and_transport_errors_are():
    assert not is_retryable(AuthenticationError(31205))
    from appliance.errors import ConnectionLostError

    assert is_retryable(ConnectionLostError(31005))


def test_redact_hides_tokens_in_logged_frames():
    from appliance.signaling.messages import redact

    frame = encode(Message(MessageType.LISTEN, {"token": "eyJsecret", "x": 1}))
    cleaned = redact(frame)
    assert "eyJsecret" not in cleaned
    assert json.loads(cleaned)["payload"] == {"token": "********", "x": 1}
    assert redact(HEARTBEAT) == HEARTBEAT
    hangup = encode(Message(MessageType.HANGUP, {"callsid": "CA1"}))
    assert redact(hangup) == hangup


@pytest.mark.parametrize("ttl", ["1" + "0" * 400, "true", '"60"'])
def test_connected_with_an_unusable_ttl_sets_no_token_timer(ttl):
    # Found by the hostile-gateway fuzz: float(10**400) raised OverflowError
    # out of receive_message and killed the socket's reader task.
    proto = make()
    proto.start(0.0)
    proto.actions()
    proto.connection_opened(0.0)
    proto.receive_message(
        '{"type":"connected","payload":{"token":{"identity":"a","ttl":' + ttl + "}}}",
        0.0,
    )
    events = proto.events_received()
    assert Connected("a", None, None, None) in events
    assert proto.state is TransportState.CONNECTED
    proto.tick(10**9)
    assert TokenWillExpire() not in proto.events_received()


@pytest.mark.parametrize("ttl", ["1e999", "-1e999"])
def test_connected_with_an_overflowing_ttl_is_refused_as_not_strict_json(ttl):
    # Python reads 1e999 as infinity; the frame is refused where it is read.
    proto = make()
    proto.start(0.0)
    proto.actions()
    proto.connection_opened(0.0)
    proto.receive_message(
        '{"type":"connected","payload":{"token":{"identity":"a","ttl":' + ttl + "}}}",
        0.0,
    )
    events = proto.events_received()
    errors = [e for e in events if isinstance(e, ErrorReceived)]
    assert len(errors) == 1 and errors[0].error.code == 31400, events
    assert proto.state is TransportState.OPEN
    proto.tick(10**9)
    assert TokenWillExpire() not in proto.events_received()


def test_a_frame_that_is_not_utf8_is_never_sent():
    # A gateway may name a call "\ud800" (valid JSON, a lone surrogate): a
    # hangup echoing it back cannot be encoded and would kill the writer.
    proto = make()
    connected(proto)
    proto.events_received()
    hangup = Message(MessageType.HANGUP, {"callsid": "CA\ud800"})
    assert proto.send(hangup, 1.0) is False
    assert proto.messages_to_send() == []
    (event,) = proto.events_received()
    assert isinstance(event, ErrorReceived) and event.error.code == 31100
    assert proto.send(Message(MessageType.HANGUP, {"callsid": "CA📞"}), 1.0)
