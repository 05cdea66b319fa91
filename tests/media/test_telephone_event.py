"""RFC 4733 digits and codec symmetry on real aiortc calls (127.0.0.1).

Packets are observed where aiortc hands the decrypted RTP of the receiving
side to its router, i.e. exactly what went over the wire.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
from dataclasses import dataclass, field
from typing import Any

import pytest

from appliance.media.devices import open_sink, open_source
from appliance.media.frames import Samples
from appliance.media.session import MediaConfig, MediaSession
from tests.conftest import wait_until
from tests.media.test_session import connect

pytestmark = pytest.mark.slow  # real aiortc


@dataclass
class Wire:
    """The RTP packets one session received: (pt, marker, seq, ts, payload)."""

    packets: list[tuple[int, bool, int, int, bytes]] = field(default_factory=list)

    def events(self, pt: int) -> list[tuple[bool, int, int, bool, int]]:
        """(marker, seq, ts, end, duration) of the event packets of type ``pt``."""
        found = []
        for ptype, marker, seq, ts, payload in self.packets:
            if ptype == pt:
                _code, flags, duration = struct.unpack("!BBH", payload[:4])
                found.append((marker, seq, ts, bool(flags & 0x80), duration))
        return found


def observe(session: MediaSession) -> Wire:
    """Record every RTP packet ``session`` receives, before anything else."""
    wire = Wire()
    transport: Any = session._transceiver.sender.transport
    inner = transport._handle_rtp_data

    async def handle(data: bytes, arrival_time_ms: int) -> None:
        if not 192 <= data[1] <= 223:
            seq, ts = struct.unpack_from("!HI", data, 2)
            head = 12 + 4 * (data[0] & 0x0F)
            if data[0] & 0x10:
                head += 4 + 4 * struct.unpack_from("!H", data, head + 2)[0]
            wire.packets.append(
                (data[1] & 0x7F, bool(data[1] & 0x80), seq, ts, data[head:])
            )
        await inner(data, arrival_time_ms=arrival_time_ms)

    transport._handle_rtp_data = handle
    return wire


def session(codecs: tuple[str, ...] = ("opus", "pcmu"), **kw: Any) -> MediaSession:
    config = MediaConfig(local_addresses=("127.0.0.1",), codecs=codecs, **kw)
    return MediaSession(config, open_source("tone:700"), open_sink("null"))


async def test_digits_go_as_rfc4733_events_and_arrive_in_order():
    a, b = session(), session()
    wire = observe(b)
    heard: list[str] = []
    b.events.on_digit = heard.append
    try:
        await connect(a, b)
        assert a.events.can_send and b.events.can_send
        a.events.send("1*9#")
        await wait_until(lambda: len(heard) == 4, 10)
        await wait_until(lambda: a.events.events_sent == 4)
        stats = await b.stats()
    finally:
        await a.close()
        await b.close()

    assert heard == list("1*9#")
    assert a.codec == "opus"
    events = wire.events(110)  # telephone-event/48000, the Opus clock
    starts = sorted({ts for _m, _s, ts, _e, _d in events})
    assert len(starts) == 4
    for start in starts:
        digit = [p for p in events if p[2] == start]
        # RFC 4733 §2.5.1: marker on the first packet only; the duration grows
        # by one 20 ms packet (960 units) up to 160 ms; the end packet three
        # times with the final duration.
        assert [m for m, *_ in digit] == [True] + [False] * (len(digit) - 1)
        durations = [d for *_, d in digit]
        assert durations == [960 * k for k in range(1, 9)] + [7680, 7680]
        assert [e for *_, e, _d in digit] == [False] * 7 + [True] * 3
    # Twilio's pace: 160 ms tone, then 70 ms gap (rounded up to the next
    # 20 ms packet), the repeated end packets within the gap.
    for first, second in itertools.pairwise(starts):
        assert 7680 + 3360 <= second - first <= 7680 + 3360 + 960
    # Events replace audio packets: one unbroken sequence, nothing lost.
    seqs = [seq for _pt, _m, seq, _ts, _p in wire.packets]
    assert all((y - x) & 0xFFFF == 1 for x, y in itertools.pairwise(seqs))
    assert stats.packets_lost == 0


class CountingSink:
    """An AudioSink that counts the samples it is given."""

    def __init__(self) -> None:
        self.samples = 0

    async def write_frame(self, samples: Samples) -> None:
        self.samples += samples.size

    def close(self) -> None:
        pass


@pytest.mark.parametrize("codecs", [("opus",), ("pcmu",)])
async def test_received_digits_add_no_delay(codecs: tuple[str, ...]):
    # Each received event packet is replaced by a silent audio packet, so
    # the jitter buffer sees no hole (aiortc's held back about six frames
    # per digit for the rest of the call).
    a = session(codecs)
    sink = CountingSink()
    config = MediaConfig(local_addresses=("127.0.0.1",), codecs=codecs)
    b = MediaSession(config, open_source("tone:700"), sink)
    try:
        await connect(a, b)
        a.events.send("123456")
        await wait_until(lambda: a.events.events_sent == 6, 10)
        sent_at = (await b.stats()).packets_received
        await wait_until(lambda: sink.samples >= (sent_at + 10) * 960)
        stats = await b.stats()
    finally:
        await a.close()
        await b.close()
    frames = sink.samples / 960  # 20 ms at 48 kHz
    assert stats.packets_received - frames <= 3
    assert stats.packets_lost == 0


async def test_pcmu_calls_use_the_8_khz_event_clock():
    a, b = session(("pcmu",)), session()
    wire = observe(a)
    heard: list[str] = []
    a.events.on_digit = heard.append
    try:
        await connect(a, b)
        b.events.send("05")
        await wait_until(lambda: len(heard) == 2, 10)
    finally:
        await a.close()
        await b.close()
    assert heard == ["0", "5"]
    durations = [d for *_, d in wire.events(126)]
    assert durations[:8] == [160 * k for k in range(1, 9)]


async def test_without_telephone_event_at_the_far_side_there_is_none_to_send():
    a, b = session(), session(telephone_event=False)
    wire = observe(b)
    try:
        offer = await a.create_offer()
        assert "telephone-event/48000" in offer and "telephone-event/8000" in offer
        answer = await b.accept_offer(offer)
        assert "telephone-event" not in answer
        await a.apply_answer(answer)
        await wait_until(lambda: a.connection_state == "connected")
        # The caller falls back to signaling (Connection.send_digits).
        assert not a.events.can_send and not b.events.can_send
        with pytest.raises(RuntimeError):
            a.events.send("1")
        await wait_until(lambda: len(wire.packets) >= 10)
    finally:
        await a.close()
        await b.close()
    assert {pt for pt, *_ in wire.packets} == {96}


@pytest.mark.parametrize(
    ("offer_order", "answer_order", "expected"),
    [
        # The caller's preference wins, and both directions follow it.
        (("pcmu", "opus"), ("opus", "pcmu"), "PCMU"),  # the SDK's default offer
        (("opus", "pcmu"), ("pcmu", "opus"), "opus"),
        (("pcmu", "opus"), ("pcmu", "opus"), "PCMU"),
        (("opus", "pcmu"), ("pcmu",), "PCMU"),
    ],
)
async def test_both_directions_use_one_codec_and_report_it(
    offer_order: tuple[str, ...], answer_order: tuple[str, ...], expected: str
):
    a, b = session(offer_order), session(answer_order)
    try:
        await connect(a, b)
        await wait_until(lambda: a.receive_codec is not None)
        await wait_until(lambda: b.receive_codec is not None)
        await asyncio.sleep(0)
    finally:
        await a.close()
        await b.close()
    assert a.codec == a.receive_codec == b.codec == b.receive_codec == expected
