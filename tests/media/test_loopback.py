import time

import numpy as np
import pytest

from appliance.errors import AudioDeviceError
from appliance.media.frames import FRAME_SAMPLES
from appliance.media.loopback import LoopbackAudio


def numbered_frame(n: int) -> np.ndarray:
    return np.full(FRAME_SAMPLES, n, dtype=np.int16)


async def test_reads_back_what_was_written_in_order():
    loop = LoopbackAudio()
    rng = np.random.default_rng(3)
    written = [
        rng.integers(-32768, 32767, FRAME_SAMPLES, dtype=np.int16) for _ in range(3)
    ]
    for frame in written:
        await loop.sink.write_frame(frame)
    read = [await loop.source.read_frame() for _ in range(3)]
    assert all(np.array_equal(a, b) for a, b in zip(read, written, strict=True))


async def test_empty_loop_reads_silence():
    loop = LoopbackAudio()
    frame = await loop.source.read_frame()
    assert frame.shape == (FRAME_SAMPLES,)
    assert not frame.any()


async def test_partial_writes_are_recut_into_whole_frames():
    loop = LoopbackAudio()
    first = np.arange(FRAME_SAMPLES, dtype=np.int16)
    await loop.sink.write_frame(first[:300])
    assert loop.queued_frames == 0
    await loop.sink.write_frame(first[300:])
    assert loop.queued_frames == 1
    assert np.array_equal(await loop.source.read_frame(), first)


async def test_full_queue_drops_the_oldest_frames():
    loop = LoopbackAudio(max_frames=3)
    for n in range(1, 6):
        await loop.sink.write_frame(numbered_frame(n))
    assert loop.dropped_frames == 2
    read = [int((await loop.source.read_frame())[0]) for _ in range(4)]
    assert read == [3, 4, 5, 0]


async def test_source_is_paced_like_a_sound_card():
    loop = LoopbackAudio(max_frames=20)
    for n in range(10):
        await loop.sink.write_frame(numbered_frame(n))
    start = time.monotonic()
    for _ in range(6):
        await loop.source.read_frame()
    assert time.monotonic() - start >= 0.095  # 5 periods after the first frame


async def test_closed_ends_refuse_io():
    loop = LoopbackAudio()
    loop.close()
    with pytest.raises(AudioDeviceError):
        await loop.sink.write_frame(numbered_frame(1))
    with pytest.raises(AudioDeviceError):
        await loop.source.read_frame()


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        LoopbackAudio(max_frames=0)
