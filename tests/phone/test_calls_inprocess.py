"""Two (or three) Devices in one process call each other through a real exchange.

Real parts only: the in-process :class:`ExchangeServer` on 127.0.0.1, the
signaling client on real WebSockets, aiortc media on 127.0.0.1. Audio comes
from ``tone:HZ`` sources and is recorded with ``file:`` sinks, then checked by
FFT and RMS. Every wait is on an event, bounded by a scaled timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jwt
import numpy as np
import pytest

from appliance import Device
from appliance.errors import (
    AuthenticationError,
    ConfigError,
    InvalidArgumentError,
    InvalidStateError,
    TwilioError,
)
from appliance.exchange.config import ExchangeConfig
from appliance.exchange.server import ExchangeServer
from appliance.media.frames import SAMPLE_RATE
from appliance.media.levels import rms_dbfs
from appliance.phone.connection import Connection
from appliance.phone.device import DEVICE_EVENTS
from appliance.signaling.messages import Message, MessageType
from tests.conftest import (
    ACCOUNT_SID,
    RING_TIMEOUT_S,
    local_device,
    make_token,
    new_keyring,
    scaled,
    wait_until,
)
from tests.media.helpers import dominant_frequency, read_wav

pytestmark = pytest.mark.slow  # real aiortc

WAV_HEADER_BYTES = 44  # FileRecorder writes a plain 44-byte RIFF header
CONNECTION_EVENTS: tuple[str, ...] = ("accept", "cancel", "disconnect", "dtmf")
CONNECTION_EVENTS += ("error", "mute", "reject", "ringing", "volume")


class Recorder:
    """Records events of Devices and Connections; waits for them."""

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple[Any, ...], float]] = []
        self._changed = asyncio.Event()

    def handler(self, name: str) -> Callable[..., None]:
        def record(*args: Any) -> None:
            self.events.append((name, args, time.monotonic()))
            self._changed.set()

        return record

    def names(self) -> list[str]:
        return [name for name, _args, _t in self.events if name != "volume"]

    def all(self, name: str) -> list[tuple[Any, ...]]:
        return [args for n, args, _t in self.events if n == name]

    async def wait(
        self,
        name: str,
        *,
        within: float = 5.0,
        where: Callable[..., bool] | None = None,
        count: int = 1,
        after: int = 0,
    ) -> tuple[Any, ...]:
        """Wait until ``name`` has happened ``count`` times; return the last args.

        Only occurrences from index ``after`` of :meth:`all` on count.
        """
        deadline = asyncio.get_running_loop().time() + scaled(within)
        while True:
            found = [a for a in self.all(name)[after:] if where is None or where(*a)]
            if len(found) >= count:
                return found[count - 1]
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"no {name} within {within} s; saw {self.names()}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def time_of(self, name: str) -> float:
        return next(t for n, _a, t in self.events if n == name)


@dataclass
class Phone:
    """A Device with its event recorder, its incoming calls and its recording."""

    name: str
    device: Device
    events: Recorder
    recording: Path | None
    incoming: asyncio.Queue[Connection] = field(default_factory=asyncio.Queue)
    calls: dict[str, Recorder] = field(default_factory=dict)

    def watch(self, conn: Connection) -> Recorder:
        """Record the events of ``conn`` (once per connection)."""
        key = str(id(conn))
        if key not in self.calls:
            recorder = Recorder()
            for name in CONNECTION_EVENTS:
                conn.on(name, recorder.handler(name))
            self.calls[key] = recorder
        return self.calls[key]

    async def next_incoming(self, within: float = 5.0) -> Connection:
        return await asyncio.wait_for(self.incoming.get(), scaled(within))

    async def call(self, params: dict[str, str]) -> tuple[Connection, Recorder]:
        conn = await self.device.connect(params)
        return conn, self.watch(conn)


PhoneFactory = Callable[..., Awaitable[Phone]]


@pytest.fixture
async def phones(
    exchange: ExchangeServer, tmp_path: Path
) -> AsyncIterator[PhoneFactory]:
    """``await phones(identity, tone=HZ, record=True, setup=True, **options)``."""
    made: list[Phone] = []

    async def make(
        identity: str,
        *,
        tone: int | None = None,
        record: bool = False,
        setup: bool = True,
        **options: Any,
    ) -> Phone:
        recording = tmp_path / f"{identity}-{len(made)}.wav" if record else None
        device = local_device(
            exchange.url,
            input_device=f"tone:{tone}" if tone else "null",
            output_device=f"file:{recording}" if recording else "null",
            **options,
        )
        # Local sounds (ring, outgoing, disconnect) play on the output device
        # too, as in Twilio.Device; off here so recordings hold the call only.
        for flag in (device.audio.incoming, device.audio.outgoing):
            flag(False)
        device.audio.disconnect(False)
        events = Recorder()
        phone = Phone(identity, device, events, recording)
        for name in DEVICE_EVENTS:
            device.on(name, events.handler(name))

        def on_incoming(conn: Connection) -> None:
            phone.watch(conn)
            phone.incoming.put_nowait(conn)

        device.on("incoming", on_incoming)
        made.append(phone)
        if setup:
            await device.setup(make_token(identity))
            assert device.status() == "ready"
        return phone

    yield make
    for phone in made:
        await phone.device.destroy()


async def connect_call(
    caller: Phone, callee: Phone, params: dict[str, str] | None = None
) -> tuple[Connection, Recorder, Connection, Recorder]:
    """Place a call from caller to callee and accept it; both sides open."""
    conn, events = await caller.call({"To": callee.name, **(params or {})})
    incoming = await callee.next_incoming()
    await incoming.accept()
    await events.wait("accept")
    far_events = callee.watch(incoming)
    await far_events.wait("accept")
    return conn, events, incoming, far_events


async def audio_flowing(events: Recorder, seconds: float) -> None:
    """Wait until this call has received sound for ``seconds`` (volume events).

    ``volume(input, output)`` comes every 50 ms while the call is open; its
    output level is what the far side's audio measured when it was written to
    our sink.
    """
    needed = round(seconds / 0.050)
    await events.wait(
        "volume", where=lambda _i, out: out > 0.0, count=needed, within=5 + seconds
    )


def silent(_input: float, output: float) -> bool:
    return output == 0.0


def loud(_input: float, output: float) -> bool:
    return output > 0.0


def recorded(path: Path | None) -> np.ndarray:
    assert path is not None
    samples, rate, channels = read_wav(path)
    assert (rate, channels) == (SAMPLE_RATE, 1)
    return samples


def recorded_so_far(path: Path | None) -> int:
    """Samples flushed to the recording up to now (within 200 ms)."""
    assert path is not None
    return max(0, (path.stat().st_size - WAV_HEADER_BYTES) // 2)


# ----------------------------------------------------------------- the calls


async def test_ring_accept_audio_both_ways_and_caller_hangs_up(phones: PhoneFactory):
    # Tones away from the ring (440/480 Hz) and DTMF frequencies.
    alice = await phones("alice", tone=523, record=True)
    bob = await phones("bob", tone=1100, record=True)

    conn, events = await alice.call({"To": "bob"})
    assert conn.status() == "connecting"
    assert alice.device.status() == "busy"
    incoming = await bob.next_incoming()
    assert incoming.status() == "pending"
    assert bob.device.active_connection() is incoming
    params = incoming.parameters
    assert params["CallSid"].startswith("CA") and len(params["CallSid"]) == 34
    assert (params["From"], params["To"]) == ("client:alice", "client:bob")
    assert params["AccountSid"] == ACCOUNT_SID

    await incoming.accept()
    far = bob.watch(incoming)
    await events.wait("accept")
    assert conn.status() == incoming.status() == "open"
    assert conn.call_sid.startswith("CA") and conn.call_sid != incoming.call_sid
    assert alice.device.status() == bob.device.status() == "busy"
    await alice.events.wait("connect")
    await bob.events.wait("connect")

    await audio_flowing(events, 1.0)
    await audio_flowing(far, 1.0)
    # volume(input, output) comes every 50 ms while the call is open.
    stamps = [t for n, _a, t in events.events if n == "volume"]
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    assert 14 <= rate <= 22, rate
    assert all(0.0 < i <= 1.0 for i, _o in events.all("volume")[2:])  # our tone
    await conn.disconnect()

    await events.wait("disconnect")
    await far.wait("disconnect")
    await bob.events.wait("disconnect")
    assert conn.status() == incoming.status() == "closed"
    assert alice.device.status() == bob.device.status() == "ready"
    assert alice.device.active_connection() is None
    # Each side heard the other's tone (and not its own).
    heard_by_alice = recorded(alice.recording)
    heard_by_bob = recorded(bob.recording)
    assert heard_by_alice.size >= SAMPLE_RATE * 0.8
    assert heard_by_bob.size >= SAMPLE_RATE * 0.8
    assert abs(dominant_frequency(heard_by_alice) - 1100) < 15
    assert abs(dominant_frequency(heard_by_bob) - 523) < 15
    assert rms_dbfs(heard_by_alice) > -25.0


async def test_callee_hangs_up(phones: PhoneFactory):
    alice = await phones("alice")
    bob = await phones("bob")
    conn, events, incoming, far = await connect_call(alice, bob)

    await incoming.disconnect()

    await events.wait("disconnect")
    await far.wait("disconnect")
    await alice.events.wait("disconnect")
    assert events.all("error") == []  # a normal hang-up is not an error
    assert conn.status() == "closed"
    assert alice.device.status() == bob.device.status() == "ready"


async def test_a_flooded_call_logs_a_few_lines_not_one_per_frame(
    phones: PhoneFactory, caplog: pytest.LogCaptureFixture
):
    alice = await phones("alice")
    bob = await phones("bob")
    conn, events, _, _ = await connect_call(alice, bob)
    ringing = Message(MessageType.RINGING, {"callsid": conn.parameters["CallSid"]})
    with caplog.at_level(logging.ERROR):
        # Delivered without yielding, as a burst read in one go would be: the
        # inbox fills and every further frame is dropped.
        for _ in range(500):
            conn.deliver(ringing)
    full = [r for r in caplog.records if "call inbox full" in r.getMessage()]
    assert 1 <= len(full) <= 5, len(full)
    await conn.disconnect()
    await events.wait("disconnect")  # the call still works after the flood


async def test_mute_silences_what_is_sent(phones: PhoneFactory):
    alice = await phones("alice", tone=440)
    bob = await phones("bob", record=True)
    conn, events, _incoming, far = await connect_call(alice, bob)
    await audio_flowing(far, 0.5)
    before_mute = recorded_so_far(bob.recording)

    conn.mute(True)
    assert conn.is_muted()
    assert events.all("mute") == [(True, conn)]
    # What bob receives goes silent (level 0) soon after the mute.
    muted_at = len(far.all("volume"))
    await far.wait("volume", where=silent, count=5, after=muted_at)
    start = recorded_so_far(bob.recording)
    await far.wait("volume", where=silent, count=5 + 16, after=muted_at)  # +0.8 s
    end = recorded_so_far(bob.recording)
    conn.mute(False)
    assert not conn.is_muted()
    # ...and sound comes back after unmuting.
    await far.wait("volume", where=loud, count=6, after=len(far.all("volume")))
    await conn.disconnect()
    await far.wait("disconnect")

    samples = recorded(bob.recording)
    # ``start`` is what was flushed when silence showed; up to 200 ms more of
    # tone may sit in the recorder's buffer, so the window begins after that.
    margin = int(0.25 * SAMPLE_RATE)
    muted = samples[start + margin : end]
    assert muted.size >= 0.4 * SAMPLE_RATE
    assert rms_dbfs(muted) < -60.0
    assert rms_dbfs(samples[:before_mute]) > -25.0
    assert rms_dbfs(samples[-int(0.1 * SAMPLE_RATE) :]) > -25.0  # tone is back
    assert events.all("mute") == [(True, conn), (False, conn)]


async def test_dtmf_arrives_in_order_on_the_far_connection(phones: PhoneFactory):
    alice = await phones("alice")
    bob = await phones("bob")
    conn, events, incoming, far = await connect_call(alice, bob)

    with pytest.raises(InvalidArgumentError):
        conn.send_digits("12a")
    conn.send_digits("159*#0")
    incoming.send_digits("7w3")

    await far.wait("dtmf", count=6)
    await events.wait("dtmf", count=2)
    assert [a[0] for a in far.all("dtmf")] == list("159*#0")
    assert [a[0] for a in events.all("dtmf")] == ["7", "3"]
    # The far phone replays digits with the sender's pacing (the w pause).
    times = [t for n, _a, t in events.events if n == "dtmf"]
    assert times[1] - times[0] >= 0.5
    await conn.disconnect()
    with pytest.raises(InvalidStateError):
        conn.send_digits("1")


async def test_sdk_codec_order_gives_one_codec_and_digits_in_the_media(
    phones: PhoneFactory,
):
    # The official SDK's default order on one side, ours on the other: both
    # directions run the caller's first choice, and each side reports it.
    alice = await phones("alice", tone=523, codec_preferences=["pcmu", "opus"])
    bob = await phones("bob", tone=1100)
    conn, events, incoming, far = await connect_call(alice, bob)
    await audio_flowing(events, 0.3)
    await audio_flowing(far, 0.3)
    assert conn.codec == conn.receive_codec == "PCMU"
    assert incoming.codec == incoming.receive_codec == "PCMU"

    conn.send_digits("42#")
    await far.wait("dtmf", count=3)
    assert [a[0] for a in far.all("dtmf")] == list("42#")
    # They came as RFC 4733 events (8 updates + 2 end repeats each; a digit
    # is reported on its first packet), not as signaling frames.
    media = incoming._media
    assert media is not None and media.events.packets_received >= 2 * 10 + 1
    await conn.disconnect()


async def test_digits_fall_back_to_signaling_without_telephone_event(
    phones: PhoneFactory,
):
    # A caller that does not offer telephone-event (as a far side without
    # RFC 4733): both sides send their digits as dtmf frames, as the SDK does.
    alice = await phones("alice", telephone_event=False)
    bob = await phones("bob")
    conn, events, incoming, far = await connect_call(alice, bob)
    conn.send_digits("24")
    incoming.send_digits("6#")
    await far.wait("dtmf", count=2)
    await events.wait("dtmf", count=2)
    assert [a[0] for a in far.all("dtmf")] == ["2", "4"]
    assert [a[0] for a in events.all("dtmf")] == ["6", "#"]
    for call in (conn, incoming):
        media = call._media
        assert media is not None and not media.events.can_send
        assert media.events.packets_received == 0
    await conn.disconnect()


def black_hole(conn: Connection) -> int:
    """Drop every UDP datagram this call's media receives; return sockets cut.

    The smallest real cut of a media path on 127.0.0.1 without a firewall:
    the ICE sockets of the call (one per local address; tests gather on
    127.0.0.1 only) keep sending, but read nothing, as behind a link that
    loses every packet. STUN consent checks, DTLS and RTP all cross these
    sockets, so aiortc's own consent freshness (RFC 7675) is what notices.
    """
    media = conn._media
    assert media is not None
    cut = 0
    for transceiver in media._pc.getTransceivers():
        dtls = transceiver.sender.transport
        assert dtls is not None
        for protocol in dtls.transport._connection._protocols:
            # The socket's reader, replaced on this one object: nothing read.
            protocol.datagram_received = lambda *_: None  # type: ignore[method-assign]
            cut += 1
    return cut


#: aioice declares consent lost after 6 unanswered checks 4-6 s apart
#: (CONSENT_FAILURES, CONSENT_INTERVAL): 24-39 s after the cut.
CONSENT_LOST_WITHIN_S = 45.0


async def test_media_cut_ends_the_call_with_31003_on_both_sides(
    phones: PhoneFactory, exchange: ExchangeServer
):
    # Signaling stays up; only media dies. Twilio.Device reports that as
    # 31003 (ConnectionTimeout) and hangs up; the far party hears the same
    # code through the exchange (its media is as dead).
    alice = await phones("alice", tone=523)
    bob = await phones("bob", tone=1100)
    conn, events, incoming, far = await connect_call(alice, bob)
    await audio_flowing(events, 0.5)
    await audio_flowing(far, 0.5)

    assert black_hole(conn) >= 1 and black_hole(incoming) >= 1
    cut_at = time.monotonic()
    # The cut holds: both sides hear silence while the call is still open.
    heard = len(far.all("volume"))
    await far.wait("volume", where=silent, count=10, after=heard)
    assert conn.status() == incoming.status() == "open"

    error = (await events.wait("error", within=CONSENT_LOST_WITHIN_S))[0]
    far_error = (await far.wait("error", within=CONSENT_LOST_WITHIN_S))[0]
    assert error.code == far_error.code == 31003, (error, far_error)
    await events.wait("disconnect")
    await far.wait("disconnect")
    ended = time.monotonic() - cut_at
    assert ended < scaled(CONSENT_LOST_WITHIN_S), ended
    assert conn.status() == incoming.status() == "closed"
    # Only the call ended: both phones are still registered.
    assert alice.device.status() == bob.device.status() == "ready"
    await wait_until(lambda: exchange.core.call_count == 0)


async def test_reject_gives_the_caller_31603(phones: PhoneFactory):
    alice = await phones("alice")
    bob = await phones("bob")
    conn, events = await alice.call({"To": "bob"})
    incoming = await bob.next_incoming()

    incoming.reject()

    assert incoming.status() == "closed"
    assert bob.watch(incoming).names() == ["reject"]
    (error,) = await events.wait("error")
    assert isinstance(error, TwilioError) and error.code == 31603
    assert error.connection is conn
    (device_error,) = await alice.events.wait("error")
    assert device_error.code == 31603
    await events.wait("disconnect")
    assert conn.status() == "closed"
    assert alice.device.status() == bob.device.status() == "ready"


async def test_ignore_stops_the_callee_while_the_caller_rings_until_timeout(
    phones: PhoneFactory,
):
    alice = await phones("alice")
    bob = await phones("bob")
    started = time.monotonic()
    conn, events = await alice.call({"To": "bob"})
    incoming = await bob.next_incoming()

    incoming.ignore()

    assert incoming.status() == "closed"
    assert bob.watch(incoming).names() == ["cancel"]
    assert bob.device.status() == "ready"
    assert conn.status() == "connecting"  # the caller still rings
    (error,) = await events.wait("error", within=RING_TIMEOUT_S + 5)
    assert error.code == 31480
    assert time.monotonic() - started >= RING_TIMEOUT_S * 0.9
    await events.wait("disconnect")
    assert alice.device.status() == "ready"
    assert [a[0].code for a in alice.events.all("error")] == [31480]


async def test_cancel_before_answer(phones: PhoneFactory):
    alice = await phones("alice")
    bob = await phones("bob")
    conn, events = await alice.call({"To": "bob"})
    incoming = await bob.next_incoming()
    far = bob.watch(incoming)

    await conn.disconnect()

    await far.wait("cancel")
    (cancelled,) = await bob.events.wait("cancel")
    assert cancelled is incoming
    assert incoming.status() == "closed"
    assert "accept" not in far.names() and "disconnect" not in far.names()
    await events.wait("disconnect")
    assert events.all("error") == []
    assert alice.device.status() == bob.device.status() == "ready"
    assert bob.device.active_connection() is None


async def test_cancel_while_the_callee_is_accepting(phones: PhoneFactory):
    # The callee pressed accept, but the caller's hang-up reaches the exchange
    # before the answer (building it takes aiortc some milliseconds): the
    # callee gets cancel, as Twilio.Connection does, never accept/connect.
    alice = await phones("alice")
    bob = await phones("bob")
    conn, events = await alice.call({"To": "bob"})
    incoming = await bob.next_incoming()
    far = bob.watch(incoming)

    accepting = asyncio.ensure_future(incoming.accept())
    await asyncio.sleep(0)  # accept() has started: the call is "connecting"
    assert incoming.status() == "connecting"
    await conn.disconnect()
    await accepting  # returns quietly: the call was cancelled meanwhile

    await far.wait("cancel")
    await bob.events.wait("cancel")
    assert incoming.status() == "closed"
    assert "accept" not in far.names() and "connect" not in bob.events.names()
    assert far.all("error") == []
    assert bob.device.status() == "ready"
    assert bob.device.active_connection() is None
    await events.wait("disconnect")


async def test_busy_without_incoming_while_busy_gives_31486(phones: PhoneFactory):
    alice = await phones("alice")
    bob = await phones("bob")
    carol = await phones("carol")
    await connect_call(alice, bob)

    conn, events = await carol.call({"To": "bob"})

    (error,) = await events.wait("error")
    assert error.code == 31486
    await events.wait("disconnect")
    assert carol.device.status() == "ready"
    # bob never saw it and his call goes on.
    assert bob.events.all("incoming") != [] and len(bob.events.all("incoming")) == 1
    assert bob.incoming.empty()
    assert bob.device.status() == "busy"
    assert conn.status() == "closed"


@dataclass
class WaitingCall:
    """alice talks to bob, who allows incoming calls while busy; carol calls
    bob too and her call is pending on bob's side."""

    alice: Phone
    bob: Phone
    carol: Phone
    first: Connection  # alice's side of the active call
    first_events: Recorder
    first_incoming: Connection  # bob's side of it
    second: Connection  # carol's call
    second_events: Recorder
    waiting: Connection  # bob's side of carol's call


async def bob_busy_with_a_waiting_call(phones: PhoneFactory) -> WaitingCall:
    alice = await phones("alice")
    bob = await phones("bob", allow_incoming_while_busy=True)
    carol = await phones("carol")
    first, first_events, first_incoming, _ = await connect_call(alice, bob)
    second, second_events = await carol.call({"To": "bob"})
    waiting = await bob.next_incoming()
    return WaitingCall(
        alice,
        bob,
        carol,
        first,
        first_events,
        first_incoming,
        second,
        second_events,
        waiting,
    )


async def test_busy_with_incoming_while_busy_rings_and_accepting_replaces(
    phones: PhoneFactory,
):
    w = await bob_busy_with_a_waiting_call(phones)
    alice, bob, carol, waiting = w.alice, w.bob, w.carol, w.waiting
    first, first_events, first_incoming = w.first, w.first_events, w.first_incoming
    second, second_events = w.second, w.second_events

    assert waiting is not first_incoming and waiting.status() == "pending"
    assert bob.device.status() == "busy"
    assert first_incoming.status() == "open"
    await waiting.accept()

    await second_events.wait("accept")
    await first_events.wait("disconnect")  # the active call was replaced
    assert first.status() == first_incoming.status() == "closed"
    assert bob.device.active_connection() is waiting
    assert waiting.status() == second.status() == "open"
    assert alice.device.status() == "ready"
    assert bob.device.status() == carol.device.status() == "busy"
    await second.disconnect()
    await bob.watch(waiting).wait("disconnect")
    assert bob.device.status() == "ready"


@pytest.mark.parametrize("ringing_state", [False, True])
async def test_enable_ringing_state(phones: PhoneFactory, ringing_state: bool):
    alice = await phones("alice", enable_ringing_state=ringing_state)
    bob = await phones("bob")
    conn, events = await alice.call({"To": "bob"})
    statuses: list[str] = []
    incoming = await bob.next_incoming()
    if ringing_state:
        (has_early_media,) = await events.wait("ringing")
        assert has_early_media is False  # the exchange sends no early media
    statuses.append(conn.status())

    await incoming.accept()
    await events.wait("accept")

    if ringing_state:
        assert statuses == ["ringing"]
        assert events.names()[:2] == ["ringing", "accept"]
    else:
        # The gateway's ringing came before its answer on the same socket, so
        # it has been handled: the ringing state was never entered.
        assert statuses == ["connecting"]
        assert "ringing" not in events.names()
    assert conn.status() == "open"
    await conn.disconnect()


async def test_custom_parameters_reach_the_callee(phones: PhoneFactory):
    alice = await phones("alice")
    bob = await phones("bob")
    custom = {"agent": "Smith", "note": "a b&c=d/é"}
    conn, _events = await alice.call({"To": "client:bob", **custom})
    incoming = await bob.next_incoming()

    assert incoming.custom_parameters == custom
    assert incoming.parameters["To"] == "client:bob"
    assert conn.custom_parameters == {"To": "client:bob", **custom}
    await conn.disconnect()


async def test_echo_returns_the_callers_tone(phones: PhoneFactory):
    alice = await phones("alice", tone=697, record=True)
    conn, events = await alice.call({"To": "echo"})
    await events.wait("accept")
    await audio_flowing(events, 1.0)
    await conn.disconnect()
    await events.wait("disconnect")
    heard = recorded(alice.recording)
    assert heard.size >= 0.8 * SAMPLE_RATE
    assert abs(dominant_frequency(heard) - 697) < 15
    assert rms_dbfs(heard) > -30.0


# ------------------------------------------------------------------- tokens


def _garbage_token() -> str:
    return "not.a.jwt"


def _expired_token() -> str:
    return make_token("alice", ttl=60, now=time.time() - 7200)


def _wrong_key_token() -> str:
    return make_token("alice", secret="w" * 32)


@pytest.mark.parametrize(
    ("make_bad_token", "code"),
    [(_garbage_token, 31204), (_expired_token, 31205), (_wrong_key_token, 31202)],
    ids=["invalid", "expired", "wrong-key"],
)
async def test_token_errors(
    phones: PhoneFactory, make_bad_token: Callable[[], str], code: int
):
    alice = await phones("alice", setup=False, backoff_max_ms=3000)

    with pytest.raises(AuthenticationError) as raised:
        await alice.device.setup(make_bad_token())

    assert raised.value.code == code
    (error,) = await alice.events.wait("error")
    assert isinstance(error, AuthenticationError) and error.code == code
    assert alice.device.status() == "offline"
    # No reconnect: a retry would send the same token and report the error
    # again. The first two backoff steps (100 + 200 ms, +40 %) fit in 0.6 s.
    await asyncio.sleep(scaled(0.6))
    assert [a[0].code for a in alice.events.all("error")] == [code]
    assert "ready" not in alice.events.names()
    assert alice.device.status() == "offline"

    # A good token brings the same device back (setup restarts the session).
    await alice.device.setup(make_token("alice"))
    assert alice.device.status() == "ready"


async def test_a_call_placed_after_a_token_rejection_fails_with_31009(
    phones: PhoneFactory,
):
    # The gateway closed the session: nothing can be sent until a new token is
    # set, so the call must end (not stay "connecting" and the device "busy").
    alice = await phones("alice", setup=False)
    with pytest.raises(AuthenticationError):
        await alice.device.setup(_wrong_key_token())

    conn, events = await alice.call({"To": "bob"})

    (error,) = await events.wait("error")
    assert error.code == 31009
    await events.wait("disconnect")
    assert conn.status() == "closed"
    assert alice.device.status() == "offline"
    await alice.device.setup(make_token("alice"))
    assert alice.device.status() == "ready"


async def test_update_token_registers_the_new_identity(phones: PhoneFactory):
    alice = await phones("alice")
    bob = await phones("bob")

    await bob.device.update_token(make_token("robert"))
    await bob.events.wait("ready")  # the gateway re-registers under the new name
    await wait_until(lambda: bob.device.identity == "robert")

    conn, events = await alice.call({"To": "robert"})
    incoming = await bob.next_incoming()
    assert incoming.parameters["To"] == "client:robert"
    await incoming.accept()
    await events.wait("accept")
    await conn.disconnect()
    # The old identity is no longer registered.
    conn, events = await alice.call({"To": "bob"})
    (error,) = await events.wait("error")
    assert error.code == 31480


async def test_token_will_expire_fires_ten_seconds_before_expiry(
    phones: PhoneFactory,
):
    alice = await phones("alice", setup=False)
    token = make_token("alice", ttl=12)
    expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]

    await alice.device.setup(token)
    (device,) = await alice.events.wait("token_will_expire", within=5)

    fired_at = time.time()
    assert device is alice.device
    assert abs(fired_at - (expires_at - 10)) < 1.5
    await alice.device.update_token(make_token("alice"))
    assert alice.device.status() == "ready"


async def test_expired_token_goes_offline_and_update_token_restores(
    phones: PhoneFactory,
):
    # Issued 10 s ago with a 12 s lifetime: it expires 2 s after setup.
    alice = await phones("alice", setup=False)
    await alice.device.setup(make_token("alice", ttl=12, now=time.time() - 10))
    assert alice.device.status() == "ready"
    await alice.events.wait("token_will_expire")  # already due: fires at once

    (error,) = await alice.events.wait("error", within=5)
    assert error.code == 31205
    await alice.events.wait("offline")
    assert alice.device.status() == "offline"

    await alice.device.update_token(make_token("alice"))
    await alice.events.wait("ready", count=2)
    assert alice.device.status() == "ready"
    bob = await phones("bob")
    conn, events = await bob.call({"To": "alice"})
    incoming = await alice.next_incoming()
    await incoming.accept()
    await events.wait("accept")
    await conn.disconnect()


async def test_every_registration_rings_and_the_others_are_cancelled(
    phones: PhoneFactory,
):
    alice = await phones("alice")
    desk = await phones("bob")
    mobile = await phones("bob")
    conn, events = await alice.call({"To": "bob"})
    at_desk = await desk.next_incoming()
    on_mobile = await mobile.next_incoming()
    assert at_desk.call_sid == on_mobile.call_sid

    await at_desk.accept()

    await events.wait("accept")
    (cancelled,) = await mobile.events.wait("cancel")
    assert cancelled is on_mobile and on_mobile.status() == "closed"
    assert mobile.device.status() == "ready"
    assert desk.device.status() == "busy"
    await conn.disconnect()
    await desk.watch(at_desk).wait("disconnect")


async def test_calling_nobody_gives_31480_at_once(phones: PhoneFactory):
    alice = await phones("alice")
    conn, events = await alice.call({"To": "nobody"})
    (error,) = await events.wait("error", within=1)
    assert error.code == 31480
    await events.wait("disconnect")
    assert conn.status() == "closed" and alice.device.status() == "ready"


async def test_exchange_lost_mid_call_ends_it_and_comes_back(tmp_path: Path):
    # Its own exchange: this test closes it and opens another on the same port.
    config = ExchangeConfig(keyring=new_keyring(), ring_timeout=RING_TIMEOUT_S)
    server = ExchangeServer(config)
    await server.start()
    devices: list[Device] = []
    try:
        recorders = []
        for identity in ("alice", "bob"):
            device = local_device(
                server.url,
                backoff_max_ms=3000,
            )
            recorder = Recorder()
            for name in DEVICE_EVENTS:
                device.on(name, recorder.handler(name))
            device.on("incoming", lambda c: asyncio.ensure_future(c.accept()))
            await device.setup(make_token(identity))
            devices.append(device)
            recorders.append(recorder)
        alice, bob = devices
        conn = await alice.connect({"To": "bob"})
        await recorders[1].wait("connect")
        await recorders[0].wait("connect")

        await server.close()

        for recorder in recorders:
            (error,) = await recorder.wait("error")
            assert error.code == 31005
            await recorder.wait("disconnect")
            await recorder.wait("offline")
        assert conn.status() == "closed"
        assert alice.status() == bob.status() == "offline"

        port = server.port
        server = ExchangeServer(replace(config, port=port))
        await server.start()
        for recorder in recorders:
            await recorder.wait("ready", count=2, within=5)
        assert alice.status() == bob.status() == "ready"
    finally:
        for device in devices:
            await device.destroy()
        await server.close()


# ------------------------------------------------------------------ destroy


async def test_destroy_ends_the_call_on_both_sides(phones: PhoneFactory):
    alice = await phones("alice")
    bob = await phones("bob")
    conn, events, incoming, far = await connect_call(alice, bob)

    await alice.device.destroy()

    # destroy() returns once everything is over and removes every handler, so
    # alice's own events were recorded before it returned.
    assert "disconnect" in events.names()
    assert alice.events.names()[-2:] == ["disconnect", "offline"]
    assert conn.status() == "closed"
    assert alice.device.status() == "offline"
    await far.wait("disconnect")
    assert incoming.status() == "closed"
    assert bob.device.status() == "ready"
    with pytest.raises(TwilioError):
        await alice.device.connect({"To": "bob"})


async def test_destroy_while_ringing_declines_the_incoming_call(
    phones: PhoneFactory,
):
    alice = await phones("alice")
    bob = await phones("bob")
    _conn, events = await alice.call({"To": "bob"})
    await bob.next_incoming()

    await bob.device.destroy()

    (error,) = await events.wait("error")
    assert error.code == 31603
    await events.wait("disconnect")
    assert alice.device.status() == "ready"


async def test_a_token_given_to_the_constructor_sets_up_the_device(
    exchange: ExchangeServer,
):
    device = Device(
        make_token("alice"), signaling_url=exchange.url, local_addresses=["127.0.0.1"]
    )
    events = Recorder()
    device.on("ready", events.handler("ready"))
    try:
        await events.wait("ready")
        assert device.status() == "ready" and device.identity == "alice"
    finally:
        await device.destroy()


async def test_connect_needs_setup_and_a_free_line(phones: PhoneFactory):
    alice = await phones("alice", setup=False)
    with pytest.raises(InvalidStateError):
        await alice.device.connect({"To": "bob"})
    await alice.device.setup(make_token("alice"))
    bob = await phones("bob")
    conn, _events, incoming, _far = await connect_call(alice, bob)
    with pytest.raises(InvalidStateError):
        await alice.device.connect({"To": "bob"})
    with pytest.raises(InvalidStateError):
        await incoming.accept()  # already accepted
    await conn.disconnect()


# ------------------------------------------------------------------ options


@pytest.mark.parametrize(
    "options",
    [
        {"no_such_option": True},
        {"backoff_max_ms": 2999},
        {"backoff_max_ms": "3000"},
        {"signaling_url": "http://127.0.0.1:1/signal"},
        {"signaling_url": "not a url"},
        {"enable_ringing_state": "yes"},
        {"local_addresses": ["localhost"]},
    ],
)
def test_invalid_options_are_config_errors(options: dict[str, Any]):
    with pytest.raises(ConfigError) as raised:
        Device(**options)
    assert next(iter(options)) in str(raised.value)


def test_valid_options_are_kept():
    device = Device(
        backoff_max_ms=3000,
        signaling_url="ws://127.0.0.1:1/signal",
        allow_incoming_while_busy=True,
    )
    assert device.options.backoff_max_ms == 3000
    assert device.options.allow_incoming_while_busy is True
    assert device.status() == "offline"


async def test_setup_validates_new_options(exchange: ExchangeServer):
    device = local_device(exchange.url)
    try:
        with pytest.raises(ConfigError):
            await device.setup(make_token("alice"), backoff_max_ms=100)
        assert device.status() == "offline"  # nothing was started
    finally:
        await device.destroy()


async def test_setup_again_with_the_same_token_returns_at_once(
    exchange: ExchangeServer,
):
    device = local_device(exchange.url)
    try:
        token = make_token("alice")
        await device.setup(token)
        assert device.status() == "ready"
        started = time.monotonic()
        await device.setup(token)
        assert time.monotonic() - started < 1.0
        assert device.status() == "ready"
    finally:
        await device.destroy()


# -------------------------------------------------------------------- races


async def test_a_waiting_call_given_up_while_it_replaces_the_active_one(
    phones: PhoneFactory, monkeypatch: pytest.MonkeyPatch
):
    # allow_incoming_while_busy: accepting the waiting call first hangs up the
    # active one, and carol gives up while that hang-up is under way. The
    # closed call must not become bob's active call.
    w = await bob_busy_with_a_waiting_call(phones)
    bob, carol, waiting, second = w.bob, w.carol, w.waiting, w.second
    first_events, first_incoming = w.first_events, w.first_incoming
    waiting_events = bob.watch(waiting)
    hang_up_first = first_incoming.disconnect

    async def hang_up_first_then_wait_for_carol() -> None:
        await hang_up_first()
        # The race made certain: carol's cancel lands before accept() goes on.
        await waiting_events.wait("cancel")

    monkeypatch.setattr(first_incoming, "disconnect", hang_up_first_then_wait_for_carol)
    accepting = asyncio.ensure_future(waiting.accept())
    await asyncio.sleep(0)  # accept() has started: the call is "connecting"
    assert waiting.status() == "connecting"
    await second.disconnect()
    await accepting  # returns quietly: the call was cancelled meanwhile

    await first_events.wait("disconnect")
    assert waiting.status() == "closed"
    assert "accept" not in waiting_events.names()
    assert bob.device.active_connection() is None
    assert bob.device.status() == "ready"
    # The next call is the one bob sees as pending.
    third, third_events = await carol.call({"To": "bob"})
    pending = await bob.next_incoming()
    assert bob.device.active_connection() is pending
    await pending.accept()
    await third_events.wait("accept")
    assert bob.device.active_connection() is pending
    await third.disconnect()


async def test_cancelling_an_accept_that_replaces_the_active_call(
    phones: PhoneFactory,
):
    # The accept is cancelled while it hangs up the active call: that hang-up
    # still completes, and the waiting call ends as if hung up.
    w = await bob_busy_with_a_waiting_call(phones)
    bob, waiting, second_events = w.bob, w.waiting, w.second_events
    first_events, first_incoming = w.first_events, w.first_incoming
    accepting = asyncio.ensure_future(waiting.accept())
    await asyncio.sleep(0)  # accept() is hanging up the active call
    assert not accepting.done() and waiting.status() == "connecting"

    accepting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await accepting

    assert waiting.status() == "closed"
    await first_events.wait("disconnect")
    await bob.watch(first_incoming).wait("disconnect")
    assert bob.device.connections() == []
    assert bob.device.active_connection() is None
    assert bob.device.status() == "ready"
    (error,) = await second_events.wait("error")
    assert error.code == 31603


async def _call_nobody(phone: Phone) -> None:
    """A call that the exchange fails at once (31480): a round trip."""
    _conn, events = await phone.call({"To": "nobody"})
    await events.wait("error")
    await events.wait("disconnect")


@pytest.mark.parametrize("how", ["setup", "update_token"])
async def test_a_token_without_the_incoming_grant_unregisters(
    phones: PhoneFactory, how: str
):
    alice = await phones("alice")
    token = make_token("alice", incoming=False, ttl=3000)  # not the setup token

    if how == "setup":
        await alice.device.setup(token)
    else:
        await alice.device.update_token(token)

    # The gateway answers listen with connected, on which the session would
    # register again if it were still on (31201, then every 30 s). Two round
    # trips in a row: the second invite leaves after that connected arrived,
    # so an answer to such a register would come before its 31480.
    await _call_nobody(alice)
    await _call_nobody(alice)
    assert [a[0].code for a in alice.events.all("error")] == [31480, 31480]
    assert alice.device.status() == "ready"  # for outgoing calls
    caller = await phones("bob")
    _conn, events = await caller.call({"To": "alice"})
    (error,) = await events.wait("error")
    assert error.code == 31480  # alice is no longer registered


async def test_an_invite_during_destroy_is_declined_and_leaves_no_call(
    phones: PhoneFactory, monkeypatch: pytest.MonkeyPatch
):
    alice = await phones("alice")
    bob = await phones("bob", allow_incoming_while_busy=True)
    carol = await phones("carol")
    _conn, _events, incoming, _far = await connect_call(alice, bob)
    hang_up = incoming.disconnect
    placed: list[Recorder] = []

    async def hang_up_then_get_a_call() -> None:
        await hang_up()
        # While destroy() ends bob's calls, carol's invite reaches him; wait
        # until bob has dealt with it (declined it, or made it a call).
        _conn, events = await carol.call({"To": "bob"})
        placed.append(events)
        await wait_until(
            lambda: (
                events.all("error")
                or any(c is not incoming for c in bob.device.connections())
            )
        )

    monkeypatch.setattr(incoming, "disconnect", hang_up_then_get_a_call)
    await bob.device.destroy()

    assert bob.device.connections() == []
    (error,) = await placed[0].wait("error")
    assert error.code == 31603  # declined at once, as destroy() declines
    await placed[0].wait("disconnect")
    await bob.device.setup(make_token("bob"))
    assert bob.device.active_connection() is None
    assert bob.device.status() == "ready"


async def test_cancelling_connect_while_the_offer_is_built_frees_the_line(
    phones: PhoneFactory,
):
    alice = await phones("alice")
    bob = await phones("bob")
    placing = asyncio.ensure_future(alice.device.connect({"To": "bob"}))
    await asyncio.sleep(0)  # connect() runs until it awaits the offer
    assert not placing.done() and alice.device.status() == "busy"

    placing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await placing

    (ended,) = await alice.events.wait("disconnect")
    assert ended.status() == "closed"
    assert alice.device.status() == "ready"
    assert alice.device.connections() == []
    assert alice.device.active_connection() is None
    # The line is free: the next call goes through.
    conn, _events, _incoming, far = await connect_call(alice, bob)
    await conn.disconnect()
    await far.wait("disconnect")


async def test_cancelling_accept_while_the_answer_is_built_ends_the_call(
    phones: PhoneFactory,
):
    alice = await phones("alice")
    bob = await phones("bob")
    conn, events = await alice.call({"To": "bob"})
    incoming = await bob.next_incoming()
    far = bob.watch(incoming)
    accepting = asyncio.ensure_future(incoming.accept())
    await asyncio.sleep(0)  # accept() runs until it awaits the answer
    assert not accepting.done() and incoming.status() == "connecting"

    accepting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await accepting

    assert incoming.status() == "closed"
    assert far.names() == ["disconnect"]
    assert bob.device.status() == "ready"
    assert bob.device.active_connection() is None
    # The hang-up told the exchange: the caller hears "declined" at once.
    (error,) = await events.wait("error")
    assert error.code == 31603
    await events.wait("disconnect")
    assert conn.status() == "closed"
    again, _events, _incoming, far_again = await connect_call(alice, bob)
    await again.disconnect()
    await far_again.wait("disconnect")


async def test_setup_with_new_signaling_options_ends_the_old_sessions_calls(
    phones: PhoneFactory,
):
    alice = await phones("alice", setup=False)
    token = make_token("alice")
    await alice.device.setup(token)
    bob = await phones("bob")
    conn, events, _incoming, far = await connect_call(alice, bob)

    # Same token, ready: only the changed option (a new session) is news.
    await alice.device.setup(token, backoff_max_ms=3000)

    (error,) = await events.wait("error")
    assert error.code == 31005
    await events.wait("disconnect")
    assert conn.status() == "closed"
    await far.wait("disconnect")  # the exchange ended the old session's call
    assert alice.device.status() == "ready"
    statuses = [n for n in alice.events.names() if n in ("ready", "offline")]
    assert statuses == ["ready", "offline", "ready"]
    # The new session is registered: alice can be called.
    back, back_events = await bob.call({"To": "alice"})
    await (await alice.next_incoming()).accept()
    await back_events.wait("accept")
    await back.disconnect()
