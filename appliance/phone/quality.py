"""Call-quality warnings from 1 s media samples (pure).

Twilio.Device samples WebRTC stats every second and raises ``warning`` events
when a metric is bad in at least 3 of the recent samples, clearing them with
``warning-cleared`` once none of them is (anchors.md A2, ``statsMonitor.ts``).
Thresholds: RTT > 400 ms, jitter > 30 ms, packet loss > 1 %, MOS < 3.5. MOS uses
Twilio's simplified E-model (anchors.md §3.1): effective latency
L = RTT + 2*jitter + 10 ms; R = 94.768 - L/40 (L < 160) or 94.768 - (L - 120)/10;
R -= 2.5 * loss %; MOS = 1 + 0.035 R + 7e-6 R (R - 60)(100 - R).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["QualityMonitor", "Sample", "WarningChange", "loss_percent", "mos"]

WINDOW = 10
RAISE_COUNT = 3


@dataclass(frozen=True)
class Sample:
    """One second of media statistics.

    Attributes:
        rtt_s: round-trip time from RTCP, if known.
        jitter_s: receive jitter.
        packets_received: packets received in this second.
        packets_lost: packets lost in this second.
    """

    rtt_s: float | None
    jitter_s: float
    packets_received: int
    packets_lost: int

    @property
    def loss_percent(self) -> float:
        """Lost packets as a percentage of expected packets."""
        return loss_percent(self.packets_received, self.packets_lost)


def loss_percent(received: int, lost: int) -> float:
    """``lost`` as a percentage of the packets expected (0.0 when none were)."""
    expected = received + lost
    return 100.0 * lost / expected if expected else 0.0


@dataclass(frozen=True)
class WarningChange:
    """A warning raised (``raised=True``) or cleared."""

    name: str
    raised: bool
    value: float


def mos(sample: Sample) -> float:
    """Mean opinion score (1.0-4.5) of a sample."""
    rtt_ms = 1000.0 * (sample.rtt_s or 0.0)
    latency = rtt_ms + 2.0 * 1000.0 * sample.jitter_s + 10.0
    r = (
        94.768 - latency / 40.0
        if latency < 160.0
        else 94.768 - (latency - 120.0) / 10.0
    )
    r -= 2.5 * sample.loss_percent
    r = max(0.0, min(100.0, r))
    return 1.0 + 0.035 * r + 7.0e-6 * r * (r - 60.0) * (100.0 - r)


def _metrics(sample: Sample) -> dict[str, tuple[float, bool]]:
    rtt_ms = 1000.0 * sample.rtt_s if sample.rtt_s is not None else 0.0
    jitter_ms = 1000.0 * sample.jitter_s
    score = mos(sample)
    return {
        "high-rtt": (rtt_ms, rtt_ms > 400.0),
        "high-jitter": (jitter_ms, jitter_ms > 30.0),
        "high-packet-loss": (sample.loss_percent, sample.loss_percent > 1.0),
        "low-mos": (score, score < 3.5),
    }


class QualityMonitor:
    """Turns samples into warning changes."""

    def __init__(self) -> None:
        self._history: dict[str, deque[bool]] = {}
        self._active: set[str] = set()

    @property
    def active(self) -> frozenset[str]:
        """Names of the warnings raised now."""
        return frozenset(self._active)

    def add(self, sample: Sample) -> list[WarningChange]:
        """Add one sample; return the warnings raised or cleared by it."""
        changes = []
        for name, (value, bad) in _metrics(sample).items():
            history = self._history.setdefault(name, deque(maxlen=WINDOW))
            history.append(bad)
            count = sum(history)
            if name not in self._active and count >= RAISE_COUNT:
                self._active.add(name)
                changes.append(WarningChange(name, True, value))
            elif name in self._active and count == 0:
                self._active.discard(name)
                changes.append(WarningChange(name, False, value))
        return changes
