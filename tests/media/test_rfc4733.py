"""The RFC 4733 packet builder and the two state machines, on synthetic packets."""

from __future__ import annotations

import struct

from appliance.media.rfc4733 import (
    EventReceiver,
    EventSender,
    build_event_payload,
    parse_event_payload,
    parse_rtp_header,
)


def audio_packet(seq: int, ts: int, pt: int = 0) -> bytes:
    # V=2 with a one-word header extension, as aiortc sends (mid, audio level).
    head = struct.pack("!BBHII", 0x90, pt, seq, ts, 0x1234)
    return head + struct.pack("!HH", 0xBEDE, 1) + b"\x10abc" + b"\xff" * 160


def test_payload_round_trip():
    payload = build_event_payload(11, end=True, duration=1280)
    assert payload == bytes([11, 0x80 | 10]) + struct.pack("!H", 1280)
    assert parse_event_payload(payload) == (11, True, 1280)
    assert parse_event_payload(b"\x01") is None


def test_sender_replaces_audio_packets_and_keeps_the_stream():
    sender = EventSender(payload_type=126, clock_rate=8000)
    sender.queue("4w")
    sent = []
    for n in range(40):
        packet = audio_packet(100 + n, 5000 + 160 * n)
        sent.append(sender.process(packet))
    headers = [parse_rtp_header(p) for p in sent]
    assert all(h is not None for h in headers)
    pairs = zip(headers, sent, strict=True)
    events = [(h, p) for h, p in pairs if h is not None and h.payload_type == 126]
    # The first packet only teaches the packet length; then 8 updates + 2 repeats.
    assert len(events) == 10
    assert [h.sequence for h, _p in events] == list(range(101, 111))
    assert {h.timestamp for h, _p in events} == {5160}
    assert [h.marker for h, _p in events] == [True] + [False] * 9
    parsed = [
        parse_event_payload(p[h.header_length :]) or (-1, False, 0) for h, p in events
    ]
    assert [d for _c, _e, d in parsed] == [160 * k for k in range(1, 9)] + [1280] * 2
    assert [e for _c, e, _d in parsed] == [False] * 7 + [True] * 3
    assert {c for c, _e, _d in parsed} == {4}
    # The header extension is kept; the audio after the event is untouched.
    assert all(p[12:16] == b"\xbe\xde\x00\x01" for _h, p in events)
    assert sent[11] == audio_packet(111, 5000 + 160 * 11)
    assert sender.events_sent == 1


def test_receiver_reports_each_event_once():
    receiver = EventReceiver()
    digits = []
    for ts, code in ((1000, 1), (3000, 10)):
        for k in range(1, 9):
            header = parse_rtp_header(audio_packet(0, ts, pt=101))
            assert header is not None
            end = k == 8
            for _ in range(3 if end else 1):
                payload = build_event_payload(code, end=end, duration=160 * k)
                digits.append(receiver.add(header, payload))
    assert [d for d in digits if d is not None] == ["1", "*"]
    assert receiver.packets == 20
