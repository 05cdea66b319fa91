"""The send path: our Opus encoder, its SDP parameters, and real calls with it."""

from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc.codecs import CODECS

from appliance.errors import ConfigError
from appliance.media import codecs as sdp_codecs
from appliance.media.devices import open_sink, open_source
from appliance.media.frames import FRAME_SAMPLES, SAMPLE_RATE, Samples
from appliance.media.levels import rms_dbfs
from appliance.media.opus import (
    MAX_BITRATE,
    MIN_BITRATE,
    OPUS_SILENCE,
    OpusDecoder,
    OpusEncoder,
)
from appliance.media.rfc4733 import parse_rtp_header
from appliance.media.sending import (
    AUDIO_BAND_HZ,
    COMPLEXITY,
    DEFAULT_BITRATE,
    EXPECTED_LOSS_PERCENT,
    OPUS_FMTP,
    Meters,
    SourceTrack,
    register_opus_fmtp,
    send_bitrate,
)
from appliance.media.session import MediaConfig, MediaSession
from appliance.phone.options import OPUS_BITRATE_RANGE, DeviceOptions, parse_options
from appliance_dev.analysis import align, pesq_wb, speech
from tests.conftest import wait_until
from tests.media.helpers import read_wav
from tests.media.test_session import connect

LOOPBACK = MediaConfig(local_addresses=("127.0.0.1",))
#: Lowest accepted PESQ-WB of the speech a call carried, decoded as it
#: crossed the wire: 3.43 on this sentence every time (the encoder is
#: deterministic), 3.75 on two sentences in docs/benchmarks.md. aiortc's
#: 96 kb/s stereo scored higher; the voice rate with FEC is the choice
#: (appliance.media.sending).
MIN_PESQ_WB = 3.2


def speech_like(seconds: float) -> Samples:
    """A voiced, syllable-modulated signal with a gliding pitch (no pauses)."""
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    pitch = 2 * np.pi * np.cumsum(140 + 40 * np.sin(2 * np.pi * 0.7 * t)) / SAMPLE_RATE
    voiced = sum(np.sin(k * pitch) / k for k in range(1, 12))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)
    return np.asarray(6000 * voiced * envelope, dtype=np.int16)


def encode_all(encoder: OpusEncoder, samples: Samples) -> list[bytes]:
    whole = samples.size // FRAME_SAMPLES * FRAME_SAMPLES
    return [encoder.encode(f) for f in samples[:whole].reshape(-1, FRAME_SAMPLES)]


# -- the encoder -----------------------------------------------------------------


def test_the_encoder_takes_its_settings():
    encoder = OpusEncoder(
        28000, COMPLEXITY, EXPECTED_LOSS_PERCENT, max_audio_hz=AUDIO_BAND_HZ
    )
    assert encoder.bitrate == 28000
    assert encoder.max_audio_hz == AUDIO_BAND_HZ
    assert encoder.complexity == COMPLEXITY
    assert encoder.fec is True
    assert encoder.expected_loss_percent == EXPECTED_LOSS_PERCENT
    encoder.set_bitrate(16000)
    assert encoder.bitrate == 16000
    encoder.close()
    with pytest.raises(RuntimeError):
        encoder.encode(np.zeros(FRAME_SAMPLES, np.int16))


@pytest.mark.parametrize("bitrate", [24000, 32000])
def test_round_trip_is_mono_near_the_target_rate_and_keeps_the_level(bitrate):
    signal = speech_like(4.0)
    packets = encode_all(
        OpusEncoder(bitrate, COMPLEXITY, EXPECTED_LOSS_PERCENT), signal
    )
    # RFC 6716 §3.1: bit 2 of the TOC byte is the stereo flag.
    assert all(p[0] & 0x04 == 0 for p in packets)
    # Variable bit rate around the target (the FEC copy included); the
    # first second settles.
    settled = packets[50:]
    rate = 8 * sum(len(p) for p in settled) / (len(settled) * 0.020)
    assert 0.7 * bitrate <= rate <= 1.1 * bitrate
    decoder = OpusDecoder()
    decoded = np.concatenate([decoder.decode(p) for p in packets])
    assert decoded.size == len(packets) * FRAME_SAMPLES
    assert rms_dbfs(decoded[SAMPLE_RATE:]) == pytest.approx(
        rms_dbfs(signal[SAMPLE_RATE:]), abs=1.0
    )
    # SILK keeps the spectrum, not the waveform: a moderate correlation, at
    # the encoder's 6.5 ms look-ahead (RFC 6716 §2.1.8, 312 samples).
    found = align(signal[SAMPLE_RATE:], decoded, max_lag=2 * SAMPLE_RATE)
    assert found.lag - SAMPLE_RATE == pytest.approx(312, abs=24)
    assert found.correlation > 0.6


def test_a_lost_frame_comes_back_from_the_next_packets_fec():
    signal = speech_like(2.0)
    with_fec = encode_all(
        OpusEncoder(DEFAULT_BITRATE, COMPLEXITY, 5, max_audio_hz=AUDIO_BAND_HZ), signal
    )
    without = encode_all(
        OpusEncoder(DEFAULT_BITRATE, COMPLEXITY, 0, max_audio_hz=AUDIO_BAND_HZ), signal
    )

    def errors(packets: list[bytes]) -> tuple[float, float]:
        reference, plc, fec = OpusDecoder(), OpusDecoder(), OpusDecoder()
        plc_error = fec_error = 0.0
        for i, packet in enumerate(packets[:-1]):
            clean = reference.decode(packet).astype(np.float64)
            if i % 5 == 2:
                plc_error += float(np.sum((plc.conceal() - clean) ** 2))
                recovered = fec.recover(packets[i + 1])
                fec_error += float(np.sum((recovered - clean) ** 2))
            else:
                plc.decode(packet)
                fec.decode(packet)
        return plc_error, fec_error

    plc_error, fec_error = errors(with_fec)
    assert fec_error < 0.5 * plc_error
    plain_plc, plain_fec = errors(without)
    assert plain_fec == pytest.approx(plain_plc, rel=0.01)  # nothing to recover


def test_the_encoder_refuses_bad_settings_and_frames():
    with pytest.raises(ValueError):
        OpusEncoder(MIN_BITRATE - 1, COMPLEXITY, 5)
    with pytest.raises(ValueError):
        OpusEncoder(DEFAULT_BITRATE, 11, 5)
    with pytest.raises(ValueError):
        OpusEncoder(DEFAULT_BITRATE, COMPLEXITY, 5, max_audio_hz=16000)
    encoder = OpusEncoder(DEFAULT_BITRATE, COMPLEXITY, 5)
    with pytest.raises(ValueError):
        encoder.encode(np.zeros(FRAME_SAMPLES // 2, np.int16))
    with pytest.raises(ValueError):
        encoder.encode(np.zeros(FRAME_SAMPLES, np.float32))


# -- the send track --------------------------------------------------------------


async def next_packet(track: SourceTrack) -> bytes:
    packet = await track.recv()
    assert isinstance(packet, av.Packet)
    assert packet.time_base == fractions.Fraction(1, SAMPLE_RATE)
    return bytes(packet)


async def test_the_track_hands_aiortc_packets_and_mute_is_digital_silence():
    meters = Meters()
    track = SourceTrack(open_source("tone:440"), meters)
    try:
        frame = await track.recv()
        assert isinstance(frame, av.AudioFrame)  # aiortc's encoders until told
        assert track.send_opus(DEFAULT_BITRATE)
        first = await track.recv()
        assert isinstance(first, av.Packet) and first.pts == 960
        packets = [bytes(first)] + [await next_packet(track) for _ in range(2)]
        assert all(len(p) > len(OPUS_SILENCE) for p in packets)
        meters.muted = True
        muted = await next_packet(track)
        assert muted == OPUS_SILENCE
        decoder = OpusDecoder()
        for packet in packets:
            decoder.decode(packet)
        decoder.decode(muted)  # the fade out of the tone
        assert not decoder.decode(muted).any()  # then exact zeros
        meters.muted = False
        track.send_frames()
        assert isinstance(await track.recv(), av.AudioFrame)
    finally:
        track.stop()


# -- SDP -------------------------------------------------------------------------


def opus_fmtp(sdp: str) -> dict[str, str]:
    opus = [c for c in sdp_codecs.audio_codecs(sdp) if c.name.lower() == "opus"]
    assert len(opus) == 1, sdp
    return sdp_codecs.fmtp(sdp, opus[0].payload_type)


EXPECTED_FMTP = {"stereo": "0", "sprop-stereo": "0", "useinbandfec": "1"}


async def test_offer_and_answer_say_mono_and_ask_for_fec():
    a = MediaSession(LOOPBACK, open_source("null"), open_sink("null"))
    b = MediaSession(LOOPBACK, open_source("null"), open_sink("null"))
    try:
        offer = await a.create_offer()
        assert opus_fmtp(offer) == EXPECTED_FMTP
        assert "a=rtpmap:96 opus/48000/2" in offer  # RFC 7587 §7: always /2
        answer = await b.accept_offer(offer)
        assert opus_fmtp(answer) == EXPECTED_FMTP
        assert b.send_bitrate == DEFAULT_BITRATE
        assert a.send_bitrate is None  # nothing negotiated yet
    finally:
        await a.close()
        await b.close()


CHROME_LIKE_OFFER_FMTP = "a=fmtp:111 minptime=10;useinbandfec=1;maxaveragebitrate=20000"


async def test_the_far_sides_maxaveragebitrate_caps_ours():
    a = MediaSession(LOOPBACK, open_source("null"), open_sink("null"))
    b = MediaSession(LOOPBACK, open_source("null"), open_sink("null"))
    try:
        offer = await a.create_offer()
        # The offer as a browser would write it: its own payload type and
        # parameters.
        line = next(x for x in offer.splitlines() if x.startswith("a=fmtp:96 "))
        offer = offer.replace(line, CHROME_LIKE_OFFER_FMTP)
        offer = offer.replace("a=rtpmap:96 ", "a=rtpmap:111 ")
        offer = offer.replace("RTP/SAVPF 96 ", "RTP/SAVPF 111 ")
        answer = await b.accept_offer(offer)
        assert "a=rtpmap:111 opus/48000/2" in answer
        assert sdp_codecs.fmtp(answer, 111) == EXPECTED_FMTP
        assert b.codec == "opus"
        assert b.send_bitrate == 20000
    finally:
        await a.close()
        await b.close()


def test_fmtp_parsing_and_the_bitrate_rule():
    sdp = "v=0\r\na=fmtp:111 minptime=10; useinbandfec=1;Stereo\r\na=fmtp:9 x=1\r\n"
    assert sdp_codecs.fmtp(sdp, 111) == {
        "minptime": "10",
        "useinbandfec": "1",
        "stereo": "",
    }
    assert sdp_codecs.fmtp(sdp, 8) == {}
    assert send_bitrate(32000, {}) == 32000
    assert send_bitrate(32000, {"maxaveragebitrate": "64000"}) == 32000
    assert send_bitrate(32000, {"maxaveragebitrate": "12000"}) == 12000
    assert send_bitrate(32000, {"maxaveragebitrate": "100"}) == MIN_BITRATE
    assert send_bitrate(32000, {"maxaveragebitrate": "lots"}) == 32000


def test_aiortcs_codec_table_still_has_the_opus_entry_we_extend():
    # The one thing the send path needs from aiortc's layout: fails loudly
    # if a new aiortc renames or drops its Opus entry.
    register_opus_fmtp()
    opus = [c for c in CODECS["audio"] if c.mimeType.lower() == "audio/opus"]
    assert len(opus) == 1
    assert opus[0].clockRate == 48000 and opus[0].channels == 2
    assert {k: opus[0].parameters[k] for k in OPUS_FMTP} == OPUS_FMTP


# -- configuration ---------------------------------------------------------------


def test_the_option_matches_the_encoder():
    assert DeviceOptions().opus_bitrate_bps == DEFAULT_BITRATE
    assert OPUS_BITRATE_RANGE == (MIN_BITRATE, MAX_BITRATE)
    assert parse_options({"opus_bitrate_bps": 24000}).opus_bitrate_bps == 24000


@pytest.mark.parametrize("value", [5999, 510_001, "32000", 32000.0, True])
def test_a_bad_bitrate_names_its_key(tmp_path, value):
    from appliance.config import load_config

    path = tmp_path / "appliance.toml"
    text = f'"{value}"' if isinstance(value, str) else str(value).lower()
    path.write_text(f"[device]\nopus_bitrate_bps = {text}\n")
    with pytest.raises(ConfigError) as info:
        load_config([path])
    assert [key for key, _ in info.value.problems] == ["device.opus_bitrate_bps"]


def test_media_config_checks_the_bitrate():
    with pytest.raises(ConfigError) as info:
        MediaConfig(opus_bitrate=1000)
    assert info.value.key == "opus_bitrate"


# -- real calls ------------------------------------------------------------------


def decode_in_order(packets: list[bytes]) -> Samples:
    """Decode received RTP packets by sequence number, concealing any hole."""
    headers = [parse_rtp_header(p) for p in packets]
    first = headers[0]
    assert first is not None
    by_index = {}
    for packet, header in zip(packets, headers, strict=True):
        assert header is not None and header.payload_type == first.payload_type
        index = (header.sequence - first.sequence) & 0xFFFF
        by_index[index] = packet[header.header_length :]
    decoder, out = OpusDecoder(), []
    for index in range(max(by_index) + 1):
        payload = by_index.get(index)
        out.append(decoder.decode(payload) if payload else decoder.conceal())
    return np.concatenate(out)


async def test_speech_over_a_real_call_scores_well(tmp_path: Path):
    said = speech(
        "Please call Stella and ask her to bring these things from the store.",
        tmp_path / "said.wav",
        voice="en-gb+f3",
        lead_s=0.5,
        tail_s=0.5,
    )
    heard = tmp_path / "heard.wav"
    source = open_source(f"file:{tmp_path / 'said.wav'}")
    a = MediaSession(LOOPBACK, source, open_sink("null"))
    b = MediaSession(LOOPBACK, open_source("null"), open_sink(f"file:{heard}"))
    # Every decrypted audio packet b receives, before its jitter buffer.
    received: list[bytes] = []
    feed = b.events.on_audio
    assert feed is not None

    def tap(data: bytes) -> None:
        received.append(data)
        feed(data)

    b.events.on_audio = tap
    try:
        await connect(a, b)
        assert a.codec == b.codec == "opus"
        assert a.send_bitrate == b.send_bitrate == DEFAULT_BITRATE
        frames = said.size // FRAME_SAMPLES
        # Played frames include the ones before the speech reached b.
        await wait_until(lambda: b.playout.stats().played >= frames + 25, 30.0)
    finally:
        await a.close()
        await b.close()
    # What went over the wire, decoded as sent: the codec's quality, whatever
    # the loop's timing did to the playout on a busy machine.
    wire = decode_in_order(received)
    found = align(said, wire, max_lag=wire.size - said.size)
    score = pesq_wb(said, wire[found.lag : found.lag + said.size])
    assert score is not None, "the pesq package is a dev dependency"
    assert score >= MIN_PESQ_WB, score
    # What b played: the speech's energy, not silence. A late packet on a
    # busy machine is concealed (and SILK's concealment fades fast) and the
    # buffer stretches or drops frames, shifting what follows by more than
    # any alignment window holds: measured down to -4.4 dB with two CPU
    # burners, so no finer or waveform measure is reliable here (the rig's
    # speech test measures the playout).
    recording, rate, channels = read_wav(heard)
    assert (rate, channels) == (SAMPLE_RATE, 1)
    energy = float(np.sum(np.square(recording, dtype=np.float64)))
    ratio_db = 10 * np.log10(energy / float(np.sum(np.square(said, dtype=np.float64))))
    assert ratio_db == pytest.approx(0.0, abs=8.0)
