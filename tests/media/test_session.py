"""Two real aiortc peers in one process, on 127.0.0.1, SDP handed over directly."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.errors import ConfigError, NegotiationError
from appliance.media.devices import FileRecorder, ToneSource, open_sink, open_source
from appliance.media.levels import rms_dbfs
from appliance.media.loopback import LoopbackAudio
from appliance.media.session import MEDIA_CLOSED_GRACE_S, MediaConfig, MediaSession
from tests.conftest import scaled, wait_until
from tests.media.helpers import (
    LevelLogSink,
    dominant_frequency,
    read_wav,
)

pytestmark = pytest.mark.slow  # real aiortc

LOOPBACK = MediaConfig(local_addresses=("127.0.0.1",))


async def connect(offerer: MediaSession, answerer: MediaSession) -> None:
    offer = await offerer.create_offer()
    answer = await answerer.accept_offer(offer)
    await offerer.apply_answer(answer)
    await wait_until(
        lambda: offerer.connection_state == answerer.connection_state == "connected"
    )


@dataclass
class Call:
    a: MediaSession
    b: MediaSession
    a_wav: Path
    b_wav: Path
    recorders: tuple[FileRecorder, FileRecorder]
    connected_at: float


async def tone_call(
    tmp_path: Path, config_a: MediaConfig, config_b: MediaConfig
) -> Call:
    """A sends 440 Hz, B sends 1000 Hz; each records what it receives."""
    a_wav, b_wav = tmp_path / "a.wav", tmp_path / "b.wav"
    a_rec, b_rec = FileRecorder(a_wav), FileRecorder(b_wav)
    a = MediaSession(config_a, open_source("tone:440"), a_rec)
    b = MediaSession(config_b, open_source("tone:1000"), b_rec)
    await connect(a, b)
    return Call(a, b, a_wav, b_wav, (a_rec, b_rec), time.monotonic())


async def test_each_side_records_the_other_sides_tone(tmp_path):
    call = await tone_call(tmp_path, LOOPBACK, LOOPBACK)
    # A call long enough for a second of tone each way, however busy the box.
    await wait_until(
        lambda: all(r.samples_written >= 48_000 for r in call.recorders), 5.0
    )
    await call.a.close()
    await call.b.close()
    lasted = time.monotonic() - call.connected_at

    assert call.a.codec == call.b.codec == "opus"
    for path, expected in ((call.a_wav, 1000), (call.b_wav, 440)):
        samples, rate, channels = read_wav(path)
        assert (rate, channels) == (48_000, 1)
        # Played out on a 20 ms clock: never more audio than the call lasted.
        assert 1.0 <= samples.size / rate <= lasted + 0.05
        assert dominant_frequency(samples) == pytest.approx(expected, abs=5)
        # -15 dBFS sent, mono end to end (appliance.media.sending): the
        # level arrives unchanged (aiortc's stereo upmix cost 3 dB).
        assert rms_dbfs(samples[4800:]) == pytest.approx(-15, abs=1.5)


async def test_pcmu_only_offer_negotiates_pcmu_and_carries_the_tone(tmp_path):
    pcmu_only = MediaConfig(local_addresses=("127.0.0.1",), codecs=("pcmu",))
    call = await tone_call(tmp_path, pcmu_only, LOOPBACK)
    await asyncio.sleep(1.2)  # a call of 1.2 s
    stats = await call.b.stats()
    await call.a.close()
    await call.b.close()

    assert call.a.codec == call.b.codec == "PCMU"
    a_samples, _, _ = read_wav(call.a_wav)
    b_samples, _, _ = read_wav(call.b_wav)
    assert dominant_frequency(a_samples) == pytest.approx(1000, abs=5)
    assert dominant_frequency(b_samples) == pytest.approx(440, abs=5)
    assert rms_dbfs(b_samples[4800:]) == pytest.approx(-15, abs=1.0)
    # PCMU's RTP clock is 8 kHz: on loopback the jitter is well under 20 ms.
    assert 0.0 <= stats.jitter_s < 0.02


async def test_mute_makes_the_peer_receive_silence(tmp_path):
    received = LevelLogSink()
    a = MediaSession(LOOPBACK, open_source("tone:440"), open_sink("null"))
    b = MediaSession(LOOPBACK, open_source("null"), received)
    await connect(a, b)
    await asyncio.sleep(0.6)  # talk...
    muted_at = time.monotonic()
    a.set_muted(True)
    await asyncio.sleep(0.7)  # ...then muted
    level_while_muted = a.input_level
    await a.close()
    await b.close()

    before = received.levels_between(muted_at - 0.3, muted_at)
    # Allow 250 ms for frames already encoded or in the jitter buffer.
    after = received.levels_between(muted_at + 0.25, float("inf"))
    assert len(before) >= 10 and len(after) >= 10
    assert min(before) > -30
    assert max(after) < -60
    assert a.is_muted
    assert level_while_muted > 0.5  # the source is still read while muted


async def test_levels_and_stats_follow_the_call(tmp_path):
    call = await tone_call(tmp_path, LOOPBACK, LOOPBACK)
    await asyncio.sleep(1.0)  # a call of 1 s
    a_stats = await call.a.stats()
    b_stats = await call.b.stats()
    levels = (call.a.input_level, call.a.output_level, call.b.output_level)
    await call.a.close()
    await call.b.close()

    assert all(level > 0.5 for level in levels), levels
    assert await call.a.stats() == a_stats  # after close: the last figures
    # ~50 packets a second each way; on loopback nothing is lost.
    assert a_stats.packets_sent >= 35 and b_stats.packets_received >= 30
    assert b_stats.packets_sent >= 35 and a_stats.packets_received >= 30
    assert a_stats.packets_lost == b_stats.packets_lost == 0
    assert 0.0 <= a_stats.jitter_s < 0.02
    # The offerer's sender has had RTCP receiver reports from B by now
    # (aiortc sends RTCP every ~0.5-1.5 s); allow it to be missing, but if
    # present it must be a loopback-sized round trip.
    for stats in (a_stats, b_stats):
        assert stats.rtt_s is None or 0.0 <= stats.rtt_s < 0.1


async def test_echo_destination_returns_the_callers_audio(tmp_path):
    wav = tmp_path / "heard.wav"
    caller = MediaSession(LOOPBACK, open_source("tone:440"), open_sink(f"file:{wav}"))
    loop = LoopbackAudio()
    echo = MediaSession(LOOPBACK, loop.source, loop.sink)
    await connect(caller, echo)
    # A call until a second of the echo is on file (the recorder flushes
    # within 200 ms; a fixed 1.2 s call recorded too little on a busy machine).
    header = 44  # FileRecorder's plain RIFF header
    await wait_until(
        lambda: wav.exists() and (wav.stat().st_size - header) // 2 >= 48_000, 10.0
    )
    await caller.close()
    await echo.close()

    samples, _, _ = read_wav(wav)
    assert samples.size / 48_000 >= 0.8
    assert dominant_frequency(samples) == pytest.approx(440, abs=5)
    assert rms_dbfs(samples[-24_000:]) > -30  # the tone, not silence


async def test_local_candidates_are_only_the_configured_address():
    session = MediaSession(LOOPBACK, open_source("null"), open_sink("null"))
    offer = await session.create_offer()
    await session.close()

    assert session.local_candidate_addresses() == ["127.0.0.1"]
    assert "typ srflx" not in offer and "typ relay" not in offer
    assert "a=end-of-candidates" in offer  # complete: no trickle


def tos_of_local_udp_port(port: int) -> int:
    """Find this process's UDP socket bound to 127.0.0.1:port; return IP_TOS."""
    for entry in Path("/proc/self/fd").iterdir():
        try:
            sock = socket.socket(fileno=os.dup(int(entry.name)))
        except OSError:
            continue
        with sock:
            if sock.type != socket.SOCK_DGRAM or sock.family != socket.AF_INET:
                continue
            if sock.getsockname() == ("127.0.0.1", port):
                return sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS)
    raise AssertionError(f"no UDP socket on 127.0.0.1:{port}")


@pytest.mark.parametrize(("dscp", "expected_tos"), [(True, 0xB8), (False, 0)])
async def test_media_socket_dscp_marking(dscp, expected_tos):
    config = MediaConfig(local_addresses=("127.0.0.1",), dscp=dscp)
    session = MediaSession(config, open_source("null"), open_sink("null"))
    offer = await session.create_offer()
    ports = {
        int(p)
        for p in re.findall(r"a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+)", offer)
    }
    try:
        assert len(ports) == 1
        assert tos_of_local_udp_port(ports.pop()) == expected_tos
    finally:
        await session.close()


async def test_garbage_answer_raises_53402():
    session = MediaSession(LOOPBACK, open_source("null"), open_sink("null"))
    await session.create_offer()
    with pytest.raises(NegotiationError) as info:
        await session.apply_answer("this is not SDP")
    await session.close()
    assert info.value.code == 53402


async def test_garbage_offer_raises_53402():
    session = MediaSession(LOOPBACK, open_source("null"), open_sink("null"))
    with pytest.raises(NegotiationError) as info:
        await session.accept_offer("v=0\r\nm=audio x\r\n")
    await session.close()
    assert info.value.code == 53402


async def test_offer_without_a_common_codec_raises_53402():
    offerer = MediaSession(
        MediaConfig(local_addresses=("127.0.0.1",), codecs=("PCMU",)),
        open_source("null"),
        open_sink("null"),
    )
    answerer = MediaSession(
        MediaConfig(local_addresses=("127.0.0.1",), codecs=("opus",)),
        open_source("null"),
        open_sink("null"),
    )
    offer = await offerer.create_offer()
    with pytest.raises(NegotiationError) as info:
        await answerer.accept_offer(offer)
    await offerer.close()
    await answerer.close()
    assert info.value.code == 53402
    # PCMU only, and telephone-event at PCMU's clock (RFC 4733).
    assert re.search(r"^m=audio \d+ \S+ 0 126\r?$", offer, re.MULTILINE)


async def test_answer_before_offer_raises_53402():
    a = MediaSession(LOOPBACK, open_source("null"), open_sink("null"))
    b = MediaSession(LOOPBACK, open_source("null"), open_sink("null"))
    offer = await a.create_offer()
    with pytest.raises(NegotiationError) as info:
        await b.apply_answer(offer)  # b made no offer
    await a.close()
    await b.close()
    assert info.value.code == 53402


async def test_close_is_idempotent_and_closes_source_and_sink(tmp_path):
    source = open_source("tone:440")
    sink = open_sink(f"file:{tmp_path / 'x.wav'}")
    session = MediaSession(LOOPBACK, source, sink)
    await session.create_offer()
    await asyncio.gather(session.close(), session.close())
    await session.close()

    assert isinstance(sink, FileRecorder) and sink.closed
    assert isinstance(source, ToneSource) and source.closed
    read_wav(tmp_path / "x.wav")  # a valid (empty) WAV: header finalised
    with pytest.raises(NegotiationError):
        await session.create_offer()


def test_unknown_codec_is_a_config_error():
    with pytest.raises(ConfigError, match="unsupported codec 'speex'"):
        MediaConfig(codecs=("opus", "speex"))
    with pytest.raises(ConfigError, match="not an IP address"):
        MediaConfig(local_addresses=("localhost",))


async def test_failed_connection_calls_on_failed_once():
    failures = []
    failed = asyncio.Event()

    def on_failed():
        failures.append(time.monotonic())
        failed.set()

    a = MediaSession(
        LOOPBACK, open_source("null"), open_sink("null"), on_failed=on_failed
    )
    b = MediaSession(LOOPBACK, open_source("null"), open_sink("null"))
    answer = await b.accept_offer(await a.create_offer())
    # A wrong DTLS fingerprint: ICE connects, then A rejects B's certificate
    # (RFC 8122 §5), which fails the connection within milliseconds.
    found = re.search(r"a=fingerprint:sha-256 ([0-9A-F:]+)", answer)
    assert found is not None, answer  # the answer must carry its fingerprint
    fingerprint = found.group(1)
    forged = ("00" if not fingerprint.startswith("00") else "11") + fingerprint[2:]
    await a.apply_answer(answer.replace(fingerprint, forged))
    await asyncio.wait_for(failed.wait(), scaled(5))
    # Nothing to wait for: a second call may not come. A second failure would
    # follow the first within milliseconds, as the first followed the answer.
    await asyncio.sleep(scaled(0.1))
    await a.close()
    await b.close()
    assert len(failures) == 1
    assert a.connection_state == "closed"


@pytest.mark.parametrize("hung_up", [False, True])
async def test_a_connection_closed_under_us_fails_unless_the_call_ends(hung_up):
    # aiortc reports consent expiry, and a far end that closed its connection,
    # as "closed", never "failed". With no hang-up (our close()) within the
    # grace that is a failed call; with one, it is an ordinary end.
    failed = asyncio.Event()
    a = MediaSession(
        LOOPBACK, open_source("null"), open_sink("null"), on_failed=failed.set
    )
    b = MediaSession(LOOPBACK, open_source("null"), open_sink("null"))
    await connect(a, b)
    await b.close()  # DTLS close_notify: a's connection closes by itself
    await wait_until(lambda: a.connection_state == "closed")
    closed_at = time.monotonic()
    if hung_up:
        await a.close()  # the hang-up arrived: the session is closed in time
        await asyncio.sleep(MEDIA_CLOSED_GRACE_S + 0.5)  # must NOT fire
        assert not failed.is_set()
    else:
        await asyncio.wait_for(failed.wait(), scaled(MEDIA_CLOSED_GRACE_S + 5))
        assert time.monotonic() - closed_at >= MEDIA_CLOSED_GRACE_S - 0.1
        await a.close()


async def test_failed_source_keeps_the_call_up_with_silence():
    source = open_source("tone:440")
    received = LevelLogSink()
    a = MediaSession(LOOPBACK, source, open_sink("null"))
    b = MediaSession(LOOPBACK, open_source("null"), received)
    await connect(a, b)
    await asyncio.sleep(0.4)  # talk...
    failed_at = time.monotonic()
    source.close()  # the next read raises AudioDeviceError, like an unplugged mic
    await asyncio.sleep(0.8)  # ...then the call goes on without a microphone
    state = a.connection_state
    await a.close()
    await b.close()

    before = received.levels_between(failed_at - 0.2, failed_at)
    after = received.levels_between(failed_at + 0.25, float("inf"))
    assert state == "connected"
    assert min(before) > -30
    # Silence keeps flowing at the frame rate (about 27 frames in 0.55 s).
    assert len(after) >= 20
    assert max(after) < -60
