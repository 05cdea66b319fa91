"""Output mixing: sums, the bounded call buffer, fan-out, idle close."""

from __future__ import annotations

import asyncio
import bisect
import time

import numpy as np

from appliance.audio.mixer import FanOutSink, OutputMixer, Playback, SoundInput
from appliance.audio.sounds import Sound
from appliance.media.frames import FRAME_SAMPLES, SAMPLE_RATE
from tests.conftest import scaled, wait_until


def list_opener(sinks: list[ListSink]):
    def opener(_device_id: str) -> ListSink:
        sinks.append(ListSink())
        return sinks[-1]

    return opener


class ListSink:
    """A real in-memory AudioSink: keeps every frame with its arrival time."""

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []
        self.times: list[float] = []
        self.closed = False

    async def write_frame(self, samples: np.ndarray) -> None:
        self.frames.append(np.array(samples))
        self.times.append(time.monotonic())

    def close(self) -> None:
        self.closed = True


def constant(name: str, value: int, seconds: float) -> Sound:
    return Sound(name, np.full(int(seconds * SAMPLE_RATE), value, np.int16))


async def test_two_sounds_are_summed_and_the_sink_closes_when_both_end():
    sinks: list[ListSink] = []
    mixer = OutputMixer("null", opener=list_opener(sinks))
    short, long = Playback(constant("a", 1000, 0.2)), Playback(constant("b", 300, 0.4))
    for playback in (short, long):
        mixer.add(SoundInput(playback, gain=1.0))
        playback.seal()
    await asyncio.wait_for(long.wait(), scaled(2))
    assert short.done.is_set()
    sink = sinks[0]
    assert len(sinks) == 1 and sink.closed and not mixer.running
    levels = [int(f[0]) for f in sink.frames]
    assert levels[:10] == [1300] * 10  # both
    assert levels[10:20] == [300] * 10  # only the longer one
    # Paced in real time: 20 frames take about 380 ms (the first is at once).
    assert 0.3 < sink.times[-1] - sink.times[0] < scaled(0.6)


async def test_call_buffer_drops_oldest_and_latency_stays_bounded():
    # The far end sends 50 % faster than the device plays (a clock mismatch
    # exaggerated): the buffer must stay within its capacity, drop the oldest
    # frames and keep playing the newest ones.
    sink_list: list[ListSink] = []
    mixer = OutputMixer("null", opener=list_opener(sink_list))
    fan = FanOutSink(capacity=5, prefetch=2)
    fan.attach(mixer)
    _mixer, stream = fan.streams["null"]
    pushed = 0
    push_times: list[float] = []  # push_times[n - 1]: when frame n was written
    max_queued = 0
    period = 0.020 / 1.5
    start = time.monotonic()
    while (now := time.monotonic()) - start < 1.5:
        # On schedule on average even when this loop runs late: late frames
        # arrive as a burst, as they do from a network.
        while pushed < int((now - start) / period) + 1:
            pushed += 1
            await fan.write_frame(np.full(FRAME_SAMPLES, pushed, np.int16))
            push_times.append(time.monotonic())
            max_queued = max(max_queued, stream.queued_frames)
        await asyncio.sleep(period)  # the far end's pace
    fan.close()
    sink = sink_list[0]
    assert sink.closed
    assert max_queued <= 5
    assert stream.dropped_frames > 0.2 * pushed
    # Lag of each played frame: how many frames had been written when it
    # played, minus its own number. Bounded by the capacity, never growing.
    lags = [
        (t - sink.times[0], bisect.bisect_right(push_times, t) - int(f[0]))
        for f, t in zip(sink.frames, sink.times, strict=True)
        if f[0] != 0
    ]
    assert lags[-1][1] <= 5 + 1  # the last frame played was among the newest
    assert max(lag for t, lag in lags if t >= 0.5) <= 5 + 1


async def test_slow_producer_underruns_with_silence_and_reprimes():
    sinks: list[ListSink] = []
    mixer = OutputMixer("null", opener=list_opener(sinks))
    fan = FanOutSink(capacity=5, prefetch=2)
    fan.attach(mixer)
    _mixer, stream = fan.streams["null"]
    for value in range(1, 21):  # half the device's rate
        await fan.write_frame(np.full(FRAME_SAMPLES, value, np.int16))
        await asyncio.sleep(0.040)  # the producer's pace
    fan.close()
    values = [int(f[0]) for f in sinks[0].frames]
    heard = [v for v in values if v]
    assert heard == sorted(heard) and len(heard) >= 15  # nothing replayed
    assert stream.underruns >= 3 and values.count(0) >= 10


def heard(sink: ListSink) -> list[int]:
    """The non-silent samples at both ends of each frame played."""
    return [int(v) for f in sink.frames for v in f[[0, -1]] if v]


async def test_fan_out_plays_the_call_on_two_devices_and_each_closes():
    sinks: dict[str, ListSink] = {}

    def opener(device_id: str) -> ListSink:
        sinks[device_id] = ListSink()
        return sinks[device_id]

    a, b = OutputMixer("file:a.wav", opener=opener), OutputMixer("null", opener=opener)
    fan = FanOutSink(prefetch=0)
    fan.attach(a)
    fan.attach(b)
    for value in range(1, 11):
        await fan.write_frame(np.full(FRAME_SAMPLES // 2, value, np.int16))
        await asyncio.sleep(0.011)  # the producer's pace
    # Both devices have played the first frames before "null" goes away.
    await wait_until(lambda: all(len(heard(s)) >= 4 for s in sinks.values()))
    fan.detach("null")
    assert sinks["null"].closed and not sinks["file:a.wav"].closed
    fan.close()
    assert sinks["file:a.wav"].closed
    for sink in sinks.values():
        # Half frames were re-cut into whole 20 ms frames: 1|2, 3|4, ...
        assert heard(sink)[:4] == [1, 2, 3, 4]


def _frame(value: int = 1000) -> np.ndarray:
    return np.full(FRAME_SAMPLES, value, dtype=np.int16)


def test_a_burst_leaves_no_standing_delay():
    from appliance.audio.mixer import DRAIN_WINDOW, StreamInput

    stream = StreamInput(capacity=5, prefetch=2)
    for _ in range(4):  # a burst: with the next frame the buffer is at its cap
        stream.push(_frame())
    depths = []
    for _ in range(4 * DRAIN_WINDOW):  # then one in, one out, for 4 s
        stream.push(_frame())
        assert stream.next_frame() is not None
        depths.append(stream.queued_frames)
    assert depths[0] == 4  # 100 ms queued before the pop
    assert depths[-1] == 2  # back at the target: prefetch frames after a pop
    assert stream.drained_frames == 2
    assert stream.dropped_frames == 0


def test_steady_jittery_arrival_is_not_drained():
    from appliance.audio.mixer import DRAIN_WINDOW, StreamInput

    stream = StreamInput(capacity=5, prefetch=2)
    stream.push(_frame())
    stream.push(_frame())
    for i in range(4 * DRAIN_WINDOW):
        # Packets arrive in pairs every 40 ms: jitter the buffer must absorb.
        if i % 2 == 0:
            stream.push(_frame())
            stream.push(_frame())
        stream.next_frame()
    assert stream.drained_frames == 0
    assert stream.underruns == 0
