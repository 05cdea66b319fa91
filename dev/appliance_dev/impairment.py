"""What a lossy, jittery network does to each packet (pure; time and dice injected).

The kernel of the development and CI machines has no ``netem`` qdisc
(test-rig.md §5), so :mod:`appliance_dev.netem` forwards packets between two
network namespaces in user space. This module only decides, per packet: drop it,
or release it at ``now + delay + uniform(-jitter, +jitter)``. Each packet gets
its own delay, so a packet can overtake the one before it: reordering follows
from jitter as it does on a real path (and with netem's default).

The random source is passed in (a seeded :class:`random.Random`) so a run can
be repeated, and ``now`` is the caller's clock, so tests need no clock at all.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Impairer", "Impairment"]


@dataclass(frozen=True)
class Impairment:
    """One direction's impairment.

    Attributes:
        loss: probability that a packet is dropped, 0 <= loss < 1.
        delay_s: mean one-way delay added, seconds.
        jitter_s: half-width of the uniform spread around ``delay_s``; must
            not exceed it (a packet is never released before it arrived).
    """

    loss: float = 0.0
    delay_s: float = 0.0
    jitter_s: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"loss must be in [0, 1), not {self.loss}")
        if self.delay_s < 0 or not 0.0 <= self.jitter_s <= self.delay_s:
            raise ValueError(
                f"need 0 <= jitter ({self.jitter_s}) <= delay ({self.delay_s})"
            )

    def describe(self) -> str:
        """``5 % loss, 40 +/- 10 ms`` (for reports)."""
        return (
            f"{100 * self.loss:g} % loss, {1000 * self.delay_s:g} +/- "
            f"{1000 * self.jitter_s:g} ms"
        )


class Impairer:
    """Decides the fate of each packet of one direction and counts them."""

    def __init__(self, impairment: Impairment, rng: random.Random) -> None:
        self.impairment = impairment
        self._rng = rng
        self.seen = 0
        self.dropped = 0
        self.reordered = 0
        self._last_release = float("-inf")

    def decide(self, now: float) -> float | None:
        """When to release a packet that arrived at ``now``; None drops it.

        The two draws (loss, then delay) are made for every packet, dropped or
        not, so one seed gives the same delays whatever the loss rate.
        """
        spec = self.impairment
        self.seen += 1
        lost = self._rng.random() < spec.loss
        spread = self._rng.uniform(-spec.jitter_s, spec.jitter_s)
        if lost:
            self.dropped += 1
            return None
        release = now + spec.delay_s + spread
        if release < self._last_release:
            self.reordered += 1
        self._last_release = max(self._last_release, release)
        return release

    def counts(self) -> dict[str, int]:
        """Packets seen, dropped and released before an earlier one."""
        return {"seen": self.seen, "dropped": self.dropped, "reordered": self.reordered}
