"""device.audio (AudioHelper) with file:, null and fake-listed ALSA ids."""

from __future__ import annotations

import asyncio
import functools
import http.server
import threading
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.audio.collection import AudioDeviceInfo
from appliance.audio.helper import AudioHelper
from appliance.audio.inputs import TAP_FRAMES
from appliance.audio.loader import SoundLoader, SoundLoadError
from appliance.errors import AudioDeviceError, InvalidArgumentError
from appliance.hardware.alsa_devices import AlsaDeviceInfo, CardMonitor
from appliance.media.devices import NullSink, open_sink, open_source
from appliance.media.frames import SAMPLE_RATE
from appliance.media.levels import rms_dbfs
from appliance.phone.options import DeviceOptions, parse_options
from tests.audio.test_sounds import wav_bytes
from tests.conftest import local_device, make_token, scaled, wait_until
from tests.media.helpers import dominant_frequency, read_wav


class Host:
    """A real minimal Device side: options and the error events it got."""

    def __init__(self, **options: Any) -> None:
        self.options: DeviceOptions = parse_options(options)
        self.events: list[tuple[str, tuple[Any, ...]]] = []

    def report_error(self, error: Any) -> None:
        self.events.append(("error", (error,)))


class Listing:
    """A settable ALSA listing (the helper polls it like list_pcm_devices)."""

    def __init__(self, *ids: str) -> None:
        self.ids = list(ids)

    def __call__(self) -> list[AlsaDeviceInfo]:
        out = []
        for device_id in self.ids:
            out.append(AlsaDeviceInfo(device_id, f"Card {device_id}", "output"))
            out.append(AlsaDeviceInfo(device_id, f"Card {device_id}", "input"))
        return out


def sink_opener(device_id: str):
    # alsa: ids of the fake listing play into a discarding sink.
    return NullSink() if device_id.startswith("alsa:") else open_sink(device_id)


def helper_for(tmp_path: Path, listing: Listing | None = None, **options: Any):
    host = Host(**options)
    helper = AudioHelper(
        host,
        monitor=CardMonitor(lister=listing or Listing(), interval_s=0.05),
        sink_opener=sink_opener,
        loader=SoundLoader(tmp_path / "cache", timeout_s=2.0),
    )
    return host, helper


def write_wav(path: Path, samples: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(SAMPLE_RATE)
        writer.writeframes(samples.astype("<i2").tobytes())
    return path


def tone(freq: float, seconds: float, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


# ---------------------------------------------------------------- listing


async def test_listing_selection_and_the_seeds_error_cases(tmp_path):
    _host, audio = helper_for(tmp_path, Listing("alsa:usb"), output_device="null")
    await audio.refresh_devices()
    outputs = audio.available_output_devices
    assert set(outputs) == {"default", "null", "alsa:usb"}
    assert outputs["alsa:usb"] == AudioDeviceInfo(
        "alsa:usb", "Card alsa:usb", "audiooutput"
    )
    assert set(audio.available_input_devices) == {"default", "null", "alsa:usb"}
    assert {d.device_id for d in audio.speaker_devices.get()} == {"default"}

    await audio.speaker_devices.set(["alsa:usb", "null"])
    assert {d.device_id for d in audio.speaker_devices.get()} == {"alsa:usb", "null"}
    await audio.ringtone_devices.set("alsa:usb")
    assert audio.ringtone_devices.ids == ("alsa:usb",)

    with pytest.raises(AudioDeviceError) as unknown:
        await audio.speaker_devices.set(["null", "alsa:gone"])
    assert unknown.value.code == 31402
    assert audio.speaker_devices.ids == ("alsa:usb", "null")  # unchanged
    with pytest.raises(InvalidArgumentError):
        await audio.speaker_devices.set([])
    with pytest.raises(AudioDeviceError):
        await audio.ringtone_devices.set("bogus:thing")
    with pytest.raises(AudioDeviceError):
        await audio.set_input_device("alsa:nope")
    with pytest.raises(AudioDeviceError):
        await audio.set_input_device(f"file:{tmp_path}/missing.wav")
    assert audio.input_device is None
    await audio.close()


async def test_constraints_are_validated_stored_and_applied(tmp_path):
    _host, audio = helper_for(tmp_path)
    assert audio.audio_constraints is None
    assert audio.audio_constraints_applied is False
    await audio.set_audio_constraints({"echo_cancellation": True, "device_id": "x"})
    assert audio.audio_constraints == {"echo_cancellation": True}
    assert audio.audio_constraints_applied is True
    with pytest.raises(InvalidArgumentError):
        await audio.set_audio_constraints({"echoCancelation": True})
    with pytest.raises(InvalidArgumentError):
        await audio.set_audio_constraints({"channel_count": "two"})
    await audio.unset_audio_constraints()
    assert audio.audio_constraints is None
    assert audio.audio_constraints_applied is False


def test_flags_are_getter_setters():
    audio = AudioHelper(Host())
    assert audio.incoming() and audio.outgoing() and audio.disconnect()
    assert audio.incoming(False) is False and audio.incoming() is False
    assert audio.disconnect(False) is False and audio.outgoing() is True
    with pytest.raises(InvalidArgumentError):
        audio.outgoing("yes")  # type: ignore[arg-type]


# ----------------------------------------------------------- playing audio


async def test_ring_on_ringtone_file_while_call_audio_on_speaker_file(tmp_path):
    ring_wav, speaker_wav = tmp_path / "ring.wav", tmp_path / "speaker.wav"
    _host, audio = helper_for(tmp_path, output_device=f"file:{speaker_wav}")
    await audio.ringtone_devices.set(f"file:{ring_wav}")
    call = object()
    started = time.monotonic()
    await audio.ring(call)
    assert time.monotonic() - started < scaled(0.5)  # incoming fires at once
    # The call's media starts while it rings; both devices play at once.
    sink = audio.call_sink()
    for _ in range(60):  # 1.2 s of 1 kHz "call audio"
        chunk = tone(1000, 0.02)
        await sink.write_frame(chunk)
        await asyncio.sleep(0.02)  # the far end's pace
    audio.stop_ring(call)
    await asyncio.sleep(0.1)  # the call goes on a moment after the ring stops
    sink.close()
    await audio.close()
    ring, _rate, _ch = read_wav(ring_wav)
    heard, _rate, _ch = read_wav(speaker_wav)
    assert ring.size >= 1.0 * SAMPLE_RATE and heard.size >= 1.0 * SAMPLE_RATE
    # The ringtone file has the US ring (440+480 Hz, on in the first 2 s)...
    assert abs(dominant_frequency(ring) - 460) < 25
    assert rms_dbfs(ring) > -25
    # ...and the speaker file only the call.
    assert abs(dominant_frequency(heard) - 1000) < 15
    spectrum = np.abs(np.fft.rfft(heard.astype(float)))
    freqs = np.fft.rfftfreq(heard.size, 1 / SAMPLE_RATE)
    assert spectrum[np.abs(freqs - 460) < 30].max() < 0.01 * spectrum.max()


async def test_role_volume_scales_a_ring_that_is_already_playing(tmp_path):
    ring_wav = tmp_path / "ring.wav"
    _host, audio = helper_for(tmp_path)
    await audio.ringtone_devices.set(f"file:{ring_wav}")
    call = object()
    await audio.ring(call)
    await asyncio.sleep(0.8)  # rings loud for a while...
    audio.ringtone_devices.volume = 0.5  # the front panel's Vol- during a ring
    await asyncio.sleep(0.8)  # ...then quieter
    audio.stop_ring(call)
    await audio.close()
    ring, _rate, _ch = read_wav(ring_wav)
    loud = rms_dbfs(ring[int(0.1 * SAMPLE_RATE) : int(0.6 * SAMPLE_RATE)])
    quiet = rms_dbfs(ring[int(1.0 * SAMPLE_RATE) : int(1.5 * SAMPLE_RATE)])
    assert loud - quiet == pytest.approx(20 * np.log10(2), abs=0.5)
    with pytest.raises(InvalidArgumentError):
        audio.speaker_devices.volume = 5.0


async def test_disconnect_plays_only_after_an_answered_call(tmp_path):
    speaker = tmp_path / "speaker.wav"
    _host, audio = helper_for(tmp_path, output_device=f"file:{speaker}")
    rejected, answered = object(), object()
    audio.call_ended(rejected)
    # Nothing to wait for: nothing may play. An answered call's sound opens
    # its device at once (below), so this window is ample.
    await asyncio.sleep(scaled(0.1))
    assert not speaker.exists()
    audio.call_opened(answered, outgoing=False)
    audio.call_ended(answered)
    device_id = f"file:{speaker}"
    await wait_until(lambda: device_id in audio.mixers)
    await wait_until(lambda: not audio.mixers[device_id].running)
    samples, _rate, _ch = read_wav(speaker)
    assert 0.3 * SAMPLE_RATE < samples.size < 0.8 * SAMPLE_RATE
    assert rms_dbfs(samples) > -25
    await audio.close()


async def test_input_volume_follows_the_input_level(tmp_path):
    _host, audio = helper_for(tmp_path, input_device="null")
    volumes: list[tuple[float, float]] = []
    audio.on("input_volume", lambda v: volumes.append((time.monotonic(), v)))
    await audio.set_input_device("tone:440")
    assert audio.input_device is not None
    await asyncio.sleep(0.5)  # a loud microphone for half a second
    loud = [v for _t, v in volumes]
    await audio.set_input_device("default")  # options.input_device = null
    mark = len(volumes)
    await asyncio.sleep(0.3)  # then a silent one
    quiet = [v for _t, v in volumes[mark + 2 :]]
    await audio.unset_input_device()
    mark = len(volumes)
    # Nothing to wait for: no event may come. Ten metering periods (20 ms).
    await asyncio.sleep(scaled(0.2))
    assert len(volumes) == mark  # no metering without an input device
    # -12 dBFS tone: RMS -15 dBFS -> (100 - 15) / 70 > 1 -> clamped to 1.0
    assert len(loud) >= 15 and min(loud[1:]) > 0.95
    assert quiet and max(quiet) == 0.0
    times = [t for t, _v in volumes]
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert rate <= 61
    await audio.close()


async def test_device_change_and_fallback_when_an_active_device_is_lost(tmp_path):
    listing = Listing("alsa:usb", "alsa:hat")
    _host, audio = helper_for(tmp_path, listing)
    changes: list[list[AudioDeviceInfo]] = []
    audio.on("device_change", changes.append)
    audio.start()
    await wait_until(lambda: "alsa:hat" in audio.available_output_devices)
    await audio.speaker_devices.set(["alsa:usb", "alsa:hat"])
    await audio.ringtone_devices.set("alsa:usb")
    sink = audio.call_sink()  # a call plays on both speakers
    assert set(sink.streams) == {"alsa:usb", "alsa:hat"}

    listing.ids.append("alsa:new")  # plugged in: a change, nothing lost
    await wait_until(lambda: len(changes) == 1)
    assert changes[0] == []
    listing.ids.remove("alsa:usb")  # unplugged
    await wait_until(lambda: len(changes) == 2)
    assert {d.device_id for d in changes[1]} == {"alsa:usb"}
    assert audio.speaker_devices.ids == ("alsa:hat",)
    assert audio.ringtone_devices.ids == ("default",)  # fell back
    assert set(sink.streams) == {"alsa:hat"}  # the call goes on
    assert "alsa:usb" not in audio.available_output_devices
    sink.close()
    await audio.close()


# ----------------------------------------------------------- custom sounds


async def test_custom_wav_plays_and_a_bad_one_falls_back_with_an_error(tmp_path):
    good = write_wav(tmp_path / "ding.wav", tone(2000, 4.0))
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF junk")
    host, audio = helper_for(
        tmp_path,
        sounds={"outgoing": str(good), "disconnect": str(bad), "dtmf1": "/no/such.wav"},
    )
    audio.start()
    outgoing = await audio.sound("outgoing")
    assert outgoing.custom and outgoing.duration_s == pytest.approx(3.0)
    disconnect = await audio.sound("disconnect")
    assert not disconnect.custom  # the default
    assert not (await audio.sound("dtmf1")).custom
    errors = [args[0] for name, args in host.events if name == "error"]
    assert len(errors) == 2 and all(isinstance(e, SoundLoadError) for e in errors)
    assert all(e.code == 31000 for e in errors)
    assert any("broken.wav" in e.message for e in errors)
    await audio.close()


@pytest.fixture
def http_dir(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            hits.append(self.path)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


async def test_url_sound_is_fetched_once_and_cached(tmp_path, http_dir, monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    root, base, hits = http_dir
    write_wav(root / "ring.wav", tone(700, 1.0))
    loader = SoundLoader(tmp_path / "cache", timeout_s=2.0)
    first = await loader.load("incoming", f"{base}/ring.wav")
    again = await SoundLoader(tmp_path / "cache").load("incoming", f"{base}/ring.wav")
    assert first.loop and np.array_equal(first.samples, again.samples)
    assert len(hits) == 1  # the second came from the cache
    assert loader.cache_path(f"{base}/ring.wav").is_file()
    with pytest.raises(SoundLoadError):
        await loader.load("incoming", f"{base}/missing.wav")
    assert not loader.cache_path(f"{base}/missing.wav").exists()


@pytest.fixture
def cut_short_server():
    """An HTTP server that promises a whole WAV and closes halfway through it,
    once with Content-Length and once chunked."""
    wav = wav_bytes(tone(700, 2.0))

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            half = wav[: len(wav) // 2]
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav")
            if self.path.endswith("chunked.wav"):
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"%x\r\n" % len(half) + half + b"\r\n")
            else:
                self.send_header("Content-Length", str(len(wav)))
                self.end_headers()
                self.wfile.write(half)
            self.close_connection = True

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_a_download_cut_short_is_an_error_and_not_cached(
    tmp_path, cut_short_server, monkeypatch
):
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    loader = SoundLoader(tmp_path / "cache", timeout_s=2.0)
    for url in (f"{cut_short_server}/ring.wav", f"{cut_short_server}/chunked.wav"):
        with pytest.raises(SoundLoadError, match="unusable"):
            await loader.load("incoming", url)
        assert not loader.cache_path(url).exists()


# ------------------------------------------------------------- the Device


@pytest.mark.slow  # a real aiortc call
async def test_device_rings_then_fires_incoming_and_plays_dtmf_feedback(
    exchange, tmp_path
):
    ring_wav = tmp_path / "bob-ring.wav"
    bob_out = tmp_path / "bob.wav"
    alice = local_device(exchange.url)
    bob = local_device(
        exchange.url,
        input_device="tone:1000",
        output_device=f"file:{bob_out}",
    )
    incoming: asyncio.Queue[Any] = asyncio.Queue()
    bob.on("incoming", lambda conn: incoming.put_nowait((time.monotonic(), conn)))
    try:
        await alice.setup(make_token("alice"))
        await bob.setup(make_token("bob"))
        await bob.audio.ringtone_devices.set(f"file:{ring_wav}")
        invited = time.monotonic()
        conn = await alice.connect({"To": "bob"})
        fired, call = await asyncio.wait_for(incoming.get(), scaled(5))
        assert fired - invited < 2.0
        await asyncio.sleep(0.5)  # let it ring
        await call.accept()
        await wait_until(lambda: call.status() == "open")
        await asyncio.sleep(0.3)  # talk a little
        call.send_digits("5")
        await asyncio.sleep(0.6)  # the key's feedback tone plays out
        await conn.disconnect()
        await wait_until(lambda: call.status() == "closed")
    finally:
        await alice.destroy()
        await bob.destroy()
    ring, _r, _c = read_wav(ring_wav)
    assert 0.4 * SAMPLE_RATE < ring.size < 1.5 * SAMPLE_RATE
    assert abs(dominant_frequency(ring) - 460) < 25
    heard, _r, _c = read_wav(bob_out)
    spectrum = np.abs(np.fft.rfft(heard.astype(float)))
    freqs = np.fft.rfftfreq(heard.size, 1 / SAMPLE_RATE)
    # Bob's speaker got the Q.23 feedback for "5" (770 + 1336 Hz).
    for hz in (770, 1336):
        assert spectrum[np.abs(freqs - hz) < 5].max() > 0.05 * spectrum.max()


@pytest.mark.slow  # a real aiortc call
async def test_switching_the_microphone_mid_call_changes_what_the_far_end_hears(
    exchange, tmp_path
):
    bob_out = tmp_path / "bob.wav"
    alice = local_device(
        exchange.url,
        input_device="tone:440",
    )
    bob = local_device(
        exchange.url,
        output_device=f"file:{bob_out}",
    )
    incoming: asyncio.Queue[Any] = asyncio.Queue()
    bob.on("incoming", incoming.put_nowait)
    try:
        await alice.setup(make_token("alice"))
        await bob.setup(make_token("bob"))
        conn = await alice.connect({"To": "bob"})
        call = await asyncio.wait_for(incoming.get(), scaled(5))
        await call.accept()
        await wait_until(lambda: conn.status() == "open")
        await asyncio.sleep(1.0)  # talk on the first microphone...
        await alice.audio.set_input_device("tone:1000")  # a headset plugged in
        microphone = alice.audio.input_device
        assert microphone is not None and microphone.device_id == "tone:1000"
        await asyncio.sleep(1.0)  # ...then on the headset
        assert conn.status() == "open" and call.status() == "open"
        await conn.disconnect()
        await wait_until(lambda: call.status() == "closed")
    finally:
        await alice.destroy()
        await bob.destroy()
    heard, _r, _c = read_wav(bob_out)
    # Bob's file holds the call (and the short disconnect sound at its end):
    # the 440 Hz microphone first, then the 1 kHz one, without a gap.
    start = np.flatnonzero(np.abs(heard) > 1000)[0]
    first = heard[start + SAMPLE_RATE // 10 : start + SAMPLE_RATE // 2]
    later = heard[start + int(1.4 * SAMPLE_RATE) : start + int(1.8 * SAMPLE_RATE)]
    assert abs(dominant_frequency(first) - 440) < 15
    assert abs(dominant_frequency(later) - 1000) < 15
    assert rms_dbfs(later) > -30


class FailingSource:
    """Behaves like AlsaSource when its card goes: after ``good`` frames it
    reads paced silence and says ``failed``, without raising."""

    def __init__(self, good: int, level: int = 3000) -> None:
        self.good, self.level, self.n, self.failed = good, level, 0, False

    async def read_frame(self) -> np.ndarray:
        await asyncio.sleep(0.02)  # a card's clock: one 20 ms period
        self.n += 1
        self.failed = self.failed or self.n > self.good
        return np.full(960, 0 if self.failed else self.level, np.int16)

    def close(self) -> None:
        pass


async def test_a_microphone_that_fails_mid_call_is_replaced_and_comes_back(tmp_path):
    opened: list[str] = []
    sources = iter([FailingSource(good=5), FailingSource(good=10**6, level=2000)])

    def source_opener(device_id: str):
        opened.append(device_id)
        return (
            next(sources) if device_id.startswith("alsa:") else open_source(device_id)
        )

    listing = Listing("alsa:usb")
    host = Host(input_device="alsa:usb", output_device="null")
    audio = AudioHelper(
        host,
        monitor=CardMonitor(lister=listing, interval_s=0.05),
        source_opener=source_opener,
        loader=SoundLoader(tmp_path / "cache"),
    )
    audio.start()
    tap = audio.call_source()  # a call reads the microphone
    try:
        levels = [int(np.abs(await tap.read_frame()).max()) for _ in range(15)]
        assert levels[0] == 3000 and levels[-1] == 0
        # Replaced by silence at the first failed read, not left to the poll.
        assert audio.input_device_in_use == "null"
        listing.ids = []  # the card leaves the listing...
        await wait_until(lambda: audio.device_changes == 1)
        listing.ids = ["alsa:usb"]  # ...and comes back (replugged)
        await wait_until(lambda: audio.input_device_in_use == "alsa:usb")
        # Up to TAP_FRAMES frames of the silence wait in the tap for the call;
        # the frame after them can only come from the microphone.
        later = [
            int(np.abs(await tap.read_frame()).max()) for _ in range(TAP_FRAMES + 1)
        ]
        assert later[-1] == 2000  # the call hears the microphone again
        assert opened == ["alsa:usb", "null", "alsa:usb"]
    finally:
        tap.close()
        await audio.close()


class BrokenSink:
    """A sink whose device fails after a few frames: a full disk (raises) or
    an unplugged card (reports ``failed`` and drops frames, like AlsaSink)."""

    def __init__(self, good: int, *, raises: bool) -> None:
        self.good, self.raises, self.n = good, raises, 0
        self.failed = self.closed = False
        self.played = 0

    async def write_frame(self, samples: np.ndarray) -> None:
        self.n += 1
        if self.n > self.good:
            if self.raises:
                raise AudioDeviceError(message="write failed (no space left)")
            self.failed = True
        if not self.failed and samples.any():
            self.played += 1

    def close(self) -> None:
        self.closed = True


async def test_a_device_test_fails_and_closes_when_the_device_fails(tmp_path):
    sinks: dict[str, BrokenSink] = {}

    def sink_opener(device_id: str):
        if device_id.startswith("file:"):
            sinks[device_id] = BrokenSink(good=3, raises=True)
            return sinks[device_id]
        return NullSink()

    audio = AudioHelper(
        Host(output_device="null"),
        monitor=CardMonitor(lister=Listing()),
        sink_opener=sink_opener,
        loader=SoundLoader(tmp_path / "cache"),
    )
    target = f"file:{tmp_path / 'full-disk.wav'}"
    await audio.speaker_devices.set(["null", target])
    with pytest.raises(AudioDeviceError, match="no space left"):
        await asyncio.wait_for(audio.speaker_devices.test(), scaled(5))
    assert sinks[target].closed  # a recording gets its header finalised
    await audio.close()


async def test_call_audio_comes_back_when_the_default_card_is_replugged(tmp_path):
    plugged = True
    sinks: list[BrokenSink] = []

    def sink_opener(device_id: str):
        if not plugged:
            raise AudioDeviceError(message=f"{device_id}: no such card")
        sinks.append(BrokenSink(good=10**6, raises=False))
        return sinks[-1]

    listing = Listing("alsa:usb")
    audio = AudioHelper(
        Host(output_device="alsa:usb", input_device="null"),
        monitor=CardMonitor(lister=listing, interval_s=0.05),
        sink_opener=sink_opener,
        loader=SoundLoader(tmp_path / "cache"),
    )
    audio.start()
    call = audio.call_sink()  # the call plays on the default device, the USB card

    async def far_end() -> None:
        while True:
            await call.write_frame(np.full(960, 1000, np.int16))
            await asyncio.sleep(0.02)  # the far end's pace

    talking = asyncio.create_task(far_end())
    try:
        await wait_until(lambda: sinks and sinks[0].played > 5)
        plugged = False
        sinks[0].failed = True  # unplugged: the sink says so and drops audio
        listing.ids = []
        await wait_until(lambda: audio.device_changes >= 1)
        plugged = True
        listing.ids = ["alsa:usb"]  # plugged back in: no user action needed
        await wait_until(lambda: len(sinks) == 2 and sinks[1].played > 5)
        assert sinks[0].closed
        assert audio.speaker_devices.ids == ("default",)
    finally:
        talking.cancel()
        call.close()
        await audio.close()


async def test_a_new_location_for_a_sound_replaces_the_loaded_one(tmp_path):
    high = write_wav(tmp_path / "high.wav", tone(2000, 1.0))
    low = write_wav(tmp_path / "low.wav", tone(700, 1.0))
    host, audio = helper_for(tmp_path, sounds={"outgoing": str(high)})
    audio.start()
    first = await audio.sound("outgoing")
    assert first.custom and abs(dominant_frequency(first.samples) - 2000) < 20
    host.options = parse_options({"sounds": {"outgoing": str(low)}})
    audio.start()  # what setup() with new options does
    second = await audio.sound("outgoing")
    assert second.custom and abs(dominant_frequency(second.samples) - 700) < 20
    host.options = parse_options({})
    audio.start()
    assert not (await audio.sound("outgoing")).custom  # back to the default
    await audio.close()
