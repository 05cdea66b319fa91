"""Call-quality warnings and MOS (pure), against Twilio's thresholds."""

from __future__ import annotations

import pytest

from appliance.phone.quality import QualityMonitor, Sample, WarningChange, mos

GOOD = Sample(rtt_s=0.05, jitter_s=0.002, packets_received=50, packets_lost=0)


def test_mos_of_a_perfect_line_is_twilios_ceiling():
    # R = 94.768 - 10/40 = 94.518, worked by hand: MOS 4.433.
    assert mos(Sample(0.0, 0.0, 50, 0)) == pytest.approx(4.433, abs=0.001)


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        # 5 % loss: R = 94.518 - 12.5 = 82.018.
        (Sample(0.0, 0.0, 95, 5), 4.098),
        # 400 ms RTT: L = 410, R = 94.768 - 29 = 65.768.
        (Sample(0.4, 0.0, 50, 0), 3.393),
        # 60 ms RTT and 20 ms jitter: L = 110, R = 94.768 - 2.75 = 92.018.
        (Sample(0.06, 0.02, 50, 0), 4.385),
    ],
)
def test_mos_follows_the_simplified_e_model(sample, expected):
    assert mos(sample) == pytest.approx(expected, abs=0.002)


def test_mos_stays_within_its_scale_on_a_hopeless_line():
    assert mos(Sample(3.0, 0.5, 10, 90)) == pytest.approx(1.0)


def test_unknown_rtt_and_an_empty_second_count_as_nothing_lost():
    sample = Sample(None, 0.0, 0, 0)
    assert sample.loss_percent == 0.0
    assert QualityMonitor().add(sample) == []


def feed(monitor: QualityMonitor, sample: Sample, n: int) -> list[WarningChange]:
    changes = []
    for _ in range(n):
        changes += monitor.add(sample)
    return changes


def test_a_warning_needs_three_bad_samples_and_clears_when_none_is_left():
    monitor = QualityMonitor()
    jittery = Sample(0.05, 0.031, 50, 0)  # just over 30 ms
    assert feed(monitor, jittery, 2) == []
    assert feed(monitor, GOOD, 3) == []  # two bad ones in the window: not yet
    assert feed(monitor, jittery, 1) == [WarningChange("high-jitter", True, 31.0)]
    assert monitor.active == {"high-jitter"}
    assert feed(monitor, jittery, 5) == []  # raised once, not per sample
    # Cleared only when the last bad sample has left the 10-sample window.
    assert feed(monitor, GOOD, 9) == []
    assert feed(monitor, GOOD, 1) == [WarningChange("high-jitter", False, 2.0)]
    assert monitor.active == frozenset()


@pytest.mark.parametrize(
    ("sample", "names"),
    [
        (Sample(0.401, 0.0, 50, 0), {"high-rtt", "low-mos"}),
        (Sample(0.4, 0.0, 50, 0), {"low-mos"}),  # 400 ms is not over the limit
        (Sample(0.05, 0.0, 98, 2), {"high-packet-loss"}),
        (Sample(0.05, 0.0, 99, 1), set()),  # exactly 1 % is not over it
        (Sample(0.05, 0.030, 50, 0), set()),
    ],
)
def test_thresholds_are_twilios(sample, names):
    monitor = QualityMonitor()
    raised = {c.name for c in feed(monitor, sample, 3) if c.raised}
    assert raised == names
