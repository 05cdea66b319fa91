"""The forwarder's decisions (appliance_dev.impairment): pure, seeded, no clock."""

from __future__ import annotations

import random

import pytest

from appliance_dev.impairment import Impairer, Impairment


def test_releases_within_delay_plus_minus_jitter_and_drops_about_the_loss():
    impairer = Impairer(Impairment(0.1, 0.040, 0.010), random.Random(7))
    released = []
    for k in range(5000):
        now = k * 0.005
        when = impairer.decide(now)
        if when is not None:
            released.append(when - now)
    assert min(released) >= 0.030 - 1e-9 and max(released) <= 0.050 + 1e-9
    assert max(released) - min(released) > 0.015  # the spread is used
    assert 350 < impairer.dropped < 650  # 500 expected, sd 21
    assert impairer.seen == 5000
    # Packets 5 ms apart with +/- 10 ms of jitter overtake each other.
    assert impairer.reordered > 500


def test_same_seed_same_fate_and_no_jitter_keeps_order():
    def fates(seed: int) -> list[float | None]:
        impairer = Impairer(Impairment(0.05, 0.040, 0.010), random.Random(seed))
        return [impairer.decide(k * 0.02) for k in range(200)]

    assert fates(3) == fates(3)
    assert fates(3) != fates(4)
    steady = Impairer(Impairment(0.0, 0.040, 0.0), random.Random(1))
    assert [steady.decide(t) for t in (0.0, 0.02)] == [0.040, 0.060]
    assert steady.counts() == {"seen": 2, "dropped": 0, "reordered": 0}


@pytest.mark.parametrize(
    ("loss", "delay", "jitter"), [(1.0, 0.0, 0.0), (-0.1, 0, 0), (0, 0.01, 0.02)]
)
def test_impossible_impairments_are_refused(loss, delay, jitter):
    with pytest.raises(ValueError):
        Impairment(loss, delay, jitter)
