"""Device.audio's speakerphone processing, wired between speaker and microphone.

A real AudioHelper plays into a simulated room: one sound device whose
speaker side convolves what it is given with a room response and feeds the
result, delayed, to its microphone side (as one card's two directions share
a clock). The echo the microphone hears must leave the call's input tap
cancelled when ``audio_constraints`` asks for it, and untouched (bit-exact)
when it does not. Waits are on conditions; the pairing of reference and
capture does not depend on timing, so load only slows the test down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from appliance.audio.helper import AudioHelper
from appliance.audio.loader import SoundLoader
from appliance.audio.mixer import FanOutSink
from appliance.audio.speakerphone import settings_for
from appliance.errors import AudioDeviceError
from appliance.hardware.alsa_devices import CardMonitor
from appliance.media.echo import ProcessingSettings
from appliance.media.frames import FRAME_SAMPLES, Samples
from appliance_dev.analysis import speech
from appliance_dev.echo_path import room_response
from tests.audio.test_helper import Host, Listing
from tests.conftest import wait_until
from tests.media.test_echo import FAR_TEXT, MIN_ERLE_DB

ROOM = "alsa:room"
#: The device delay plus the air: 40 ms.
DELAY = 2 * FRAME_SAMPLES


class Room:
    """One sound device in a room: the speaker's sound reaches the microphone."""

    def __init__(self) -> None:
        self.taps = room_response()
        self.history = np.zeros(self.taps.size + DELAY)
        self.captured: deque[Samples] = deque()
        self.raw: list[Samples] = []
        self.waiter: asyncio.Future[None] | None = None
        self.source_open = False
        self.noise = np.random.default_rng(3)

    # The speaker side (an AudioSink).
    async def write_frame(self, samples: Samples) -> None:
        self.history = np.concatenate([self.history, samples.astype(np.float64)])
        span = self.taps.size - 1 + FRAME_SAMPLES
        window = self.history[-DELAY - span : -DELAY]
        echo = np.convolve(window, self.taps, mode="valid")
        self.history = self.history[-(self.taps.size + DELAY + FRAME_SAMPLES) :]
        if self.source_open:
            echo += self.noise.standard_normal(echo.size) * 3.0  # the ADC's floor
            frame = np.clip(np.rint(echo), -32768, 32767).astype(np.int16)
            self.captured.append(frame)
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(None)

    # The microphone side (an AudioSource).
    async def read_frame(self) -> Samples:
        while not self.captured:
            if not self.source_open:
                raise AudioDeviceError(message="room microphone closed")
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        frame = self.captured.popleft()
        self.raw.append(frame)
        return frame

    def close(self) -> None:
        self.source_open = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def open_source(self, _device_id: str) -> Room:
        self.source_open = True
        return self

    def open_sink(self, _device_id: str) -> _Speaker:
        return _Speaker(self)


class _Speaker:
    """The room's speaker as a sink of its own (closing it keeps the room)."""

    def __init__(self, room: Room) -> None:
        self.room = room

    async def write_frame(self, samples: Samples) -> None:
        await self.room.write_frame(samples)

    def close(self) -> None:
        pass


def helper_in(room: Room, tmp_path: Path, **options: Any) -> AudioHelper:
    host = Host(input_device=ROOM, output_device=ROOM, **options)
    return AudioHelper(
        host,
        monitor=CardMonitor(lister=Listing(ROOM), interval_s=0.05),
        source_opener=room.open_source,
        sink_opener=room.open_sink,
        loader=SoundLoader(tmp_path / "cache", timeout_s=2.0),
    )


async def play_and_listen(
    audio: AudioHelper, room: Room, far: Samples
) -> list[Samples]:
    """Play ``far`` as a call's audio; return what the call's input tap got."""
    tap = audio.call_source()
    heard: list[Samples] = []

    async def listen() -> None:
        with contextlib.suppress(AudioDeviceError):
            while True:
                heard.append(await tap.read_frame())

    listener = asyncio.create_task(listen())
    await wait_until(lambda: room.source_open)
    # The far end talks: the call's received audio, fed as a decoder would.
    sink = audio.call_sink()
    assert isinstance(sink, FanOutSink)
    (_mixer, stream) = sink.streams[ROOM]
    for start in range(0, far.size - FRAME_SAMPLES + 1, FRAME_SAMPLES):
        await wait_until(lambda: stream.queued_frames < 3, 10)
        await sink.write_frame(far[start : start + FRAME_SAMPLES])
    await wait_until(lambda: stream.queued_frames == 0, 10)
    sink.close()
    # Everything the room captured has gone through the input path.
    await wait_until(lambda: not room.captured and bool(heard))
    tap.close()
    listener.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await listener
    return heard


def energy(frames: list[Samples]) -> float:
    return float(np.mean(np.concatenate(frames).astype(np.float64) ** 2))


async def test_the_option_cancels_the_rooms_echo_on_the_call_input(tmp_path):
    room = Room()
    far = np.tile(speech(FAR_TEXT, tmp_path / "s.wav"), 2)
    audio = helper_in(room, tmp_path, audio_constraints={"echo_cancellation": True})
    audio.start()
    assert audio.audio_constraints_applied
    heard = await play_and_listen(audio, room, far)
    await audio.close()
    # The second pass of the speech, after the filter has converged.
    last = len(heard) // 2
    erle = 10 * np.log10(energy(room.raw[-last:]) / energy(heard[-last:]))
    assert erle >= MIN_ERLE_DB, erle


async def test_without_constraints_the_microphone_reaches_the_call_bit_exact(
    tmp_path,
):
    room = Room()
    far = speech("One two three.", tmp_path / "s.wav")
    audio = helper_in(room, tmp_path)  # audio_constraints=True: the default
    audio.start()
    assert not audio.audio_constraints_applied
    heard = await play_and_listen(audio, room, far)
    await audio.close()
    assert len(heard) > 10
    # (The tap drops its oldest frames if this reader falls behind under
    # load, so each frame heard is looked up rather than paired by index.)
    raw = {frame.tobytes() for frame in room.raw}
    assert all(frame.tobytes() in raw for frame in heard)
    assert np.concatenate(heard).any()  # the echo was there to pass


def test_constraints_map_to_processing():
    assert settings_for(True, default_on=False) == ProcessingSettings()
    assert settings_for(True, default_on=True) == ProcessingSettings(True, True, True)
    assert settings_for(False, default_on=True) == ProcessingSettings()
    wanted = {"echo_cancellation": True, "auto_gain_control": False}
    assert settings_for(wanted, default_on=True) == ProcessingSettings(True)
