"""The pure jitter buffer, driven by simulated arrivals and a simulated clock."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from appliance.media.jitter import FrameKind, JitterBuffer, Playout

T = 0.020


def payload(index: int) -> bytes:
    return index.to_bytes(2, "big")


def simulate(
    buffer: JitterBuffer,
    count: int,
    delay_of: Callable[[int], float | None],
    *,
    phase: float = 0.007,
    quiet_of: Callable[[int], bool] = lambda i: False,
    first_sequence: int = 0,
) -> list[tuple[float, Playout | None, float | None]]:
    """Send packets 0..count-1 every 20 ms; ``delay_of(i)`` is the network delay
    (None: lost). Ticks every 20 ms; returns (tick time, playout, delay)."""
    arrivals = sorted(
        (i * T + d, i) for i in range(count) if (d := delay_of(i)) is not None
    )
    ticks = []
    k = 0
    now = phase
    while k < len(arrivals) or buffer.buffered:
        while k < len(arrivals) and arrivals[k][0] <= now:
            at, i = arrivals[k]
            sequence = (first_sequence + i) % 65536
            buffer.push(sequence, payload(i), at, quiet=quiet_of(i))
            k += 1
        delay = buffer.delay(now)
        ticks.append((now, buffer.pop(now), delay))
        now += T
    return ticks


def played(ticks: list[tuple[float, Playout | None, float | None]]) -> list[int]:
    return [
        int.from_bytes(p.payload, "big")
        for _, p, _ in ticks
        if p is not None and p.kind is FrameKind.AUDIO and p.payload is not None
    ]


def test_a_steady_stream_plays_every_frame_in_order_at_the_smallest_delay():
    buffer = JitterBuffer()
    ticks = simulate(buffer, 200, lambda i: 0.030)
    assert played(ticks) == list(range(200))
    stats = buffer.stats()
    assert stats.concealed == stats.dropped == stats.late == 0
    delays = [d for _, p, d in ticks[20:150] if d is not None]
    assert max(delays) <= 0.045
    assert buffer.target_delay == pytest.approx(0.020)


def test_a_lost_packet_is_concealed_in_its_slot():
    buffer = JitterBuffer()
    ticks = simulate(buffer, 100, lambda i: None if i == 50 else 0.030)
    kinds = [p.kind for _, p, _ in ticks if p is not None]
    at = kinds.index(FrameKind.CONCEAL)
    assert played(ticks) == [i for i in range(100) if i != 50]
    assert kinds[at - 1] is kinds[at + 1] is FrameKind.AUDIO
    assert buffer.stats().concealed == 1


def test_a_lost_packet_is_decoded_from_the_next_packets_fec_when_it_is_here():
    buffer = JitterBuffer(fec=True, min_delay_s=0.030, start_delay_s=0.040)
    ticks = simulate(buffer, 100, lambda i: None if i == 50 else 0.030)
    recovered = [p for _, p, _ in ticks if p is not None and p.kind is FrameKind.FEC]
    assert recovered == [Playout(FrameKind.FEC, payload(51))]
    assert buffer.stats().concealed == 0


def test_a_long_loss_counts_its_concealed_frames_for_the_fade():
    buffer = JitterBuffer(fec=True)
    ticks = simulate(buffer, 100, lambda i: None if 40 <= i < 46 else 0.030)
    runs = [p.concealed_run for _, p, _ in ticks if p and p.kind is FrameKind.CONCEAL]
    assert runs == [1, 2, 3, 4, 5]  # the sixth comes from packet 46's FEC
    assert played(ticks)[39:41] == [39, 46]


def test_reordered_packets_play_in_sequence_order():
    buffer = JitterBuffer()
    # Every tenth packet overtakes the one before it by 10 ms.
    ticks = simulate(buffer, 100, lambda i: 0.015 if i % 10 == 5 else 0.035)
    numbers = played(ticks)
    assert numbers == sorted(numbers)
    stats = buffer.stats()
    assert stats.late == stats.concealed == 0
    # Only the shrinking after the first early packet skipped a frame.
    assert len(numbers) + stats.dropped == 100
    assert stats.dropped <= 2


def test_sequence_numbers_wrap_around():
    buffer = JitterBuffer()
    ticks = simulate(buffer, 100, lambda i: 0.030, first_sequence=65500)
    assert played(ticks) == list(range(100))


def test_a_packet_after_its_slot_is_discarded_as_late_and_grows_the_target():
    buffer = JitterBuffer()
    ticks = simulate(buffer, 100, lambda i: 0.200 if i == 50 else 0.030)
    assert 50 not in played(ticks)
    assert buffer.stats().late == 1


def test_the_buffer_grows_under_jitter_and_shrinks_back_after_the_burst():
    rng = random.Random(7)
    buffer = JitterBuffer(fec=True)
    # 3 s calm, 4 s of 40 +/- 20 ms jitter, then 8 s calm.
    burst = range(150, 350)
    ticks = simulate(
        buffer,
        750,
        lambda i: 0.030 + (rng.uniform(0, 0.060) if i in burst else 0.0),
    )
    delay_at = {round(t / T): d for t, _, d in ticks if d is not None}
    before = max(delay_at[k] for k in range(100, 150))
    during = max(delay_at[k] for k in range(250, 350))
    after = max(delay_at[k] for k in range(650, 750))
    assert before <= 0.045
    assert during >= 0.050  # grew to hold most of the jitter
    assert after <= 0.045  # and shrank back
    assert all(d <= buffer.max_delay_s + 2 * T for d in delay_at.values())
    stats = buffer.stats()
    assert stats.stretched > 0 and stats.dropped > 0
    # Most packets of the burst arrived in time to be played.
    assert stats.late < 0.15 * len(burst)


def test_the_delay_stays_bounded_under_extreme_jitter():
    rng = random.Random(3)
    buffer = JitterBuffer()
    ticks = simulate(buffer, 500, lambda i: 0.030 + rng.uniform(0, 0.400))
    delays = [d for _, _, d in ticks[50:] if d is not None]
    assert max(delays) <= buffer.max_delay_s + 2 * T
    assert buffer.target_delay == pytest.approx(buffer.max_delay_s)


def test_quiet_frames_are_dropped_first_when_shrinking():
    # Playout starts 100 ms after the first packet: 80 ms more than needed.
    buffer = JitterBuffer(start_delay_s=0.100, drop_every=1000)
    ticks = simulate(buffer, 100, lambda i: 0.030, quiet_of=lambda i: 60 <= i < 70)
    numbers = played(ticks)
    skipped = set(range(100)) - set(numbers)
    assert len(skipped) >= 3 and skipped <= set(range(60, 70))
    delays = [d for _, _, d in ticks if d is not None]
    assert delays[-1] <= delays[0] - 3 * T


def test_a_jump_in_transit_restarts_the_buffer():
    buffer = JitterBuffer()
    # The far side paused 5 s without advancing its sequence numbers.
    ticks = simulate(buffer, 100, lambda i: 0.030 + (5.0 if i >= 50 else 0.0))
    assert buffer.stats().resyncs == 1
    assert played(ticks) == list(range(100))


def test_under_loss_a_fec_codec_waits_a_frame_more_so_fec_can_recover():
    rng = random.Random(5)
    lossy = JitterBuffer(fec=True)
    ticks = simulate(
        lossy, 1000, lambda i: None if rng.random() < 0.05 else rng.uniform(0.03, 0.05)
    )
    stats = lossy.stats()
    assert stats.recovered >= 4 * stats.concealed
    assert lossy.target_delay >= 0.035  # about 20 ms of jitter plus a frame
    # Without FEC waiting longer would buy nothing: no extra frame.
    plain = JitterBuffer()
    simulate(plain, 1000, lambda i: None if i % 20 == 10 else 0.030)
    assert plain.target_delay == pytest.approx(0.020)
    assert all(d <= lossy.max_delay_s + 2 * T for _, _, d in ticks if d is not None)


def test_after_a_short_pause_of_the_sender_playback_resumes():
    buffer = JitterBuffer()
    # The far side stops sending for 400 ms; its sequence numbers go on
    # where they stopped, so every later packet is 400 ms "late".
    ticks = simulate(buffer, 200, lambda i: 0.030 + (0.400 if i >= 100 else 0.0))
    numbers = played(ticks)
    assert numbers[-1] == 199
    assert len([n for n in numbers if n >= 100]) >= 85
    assert buffer.stats().resyncs == 1
