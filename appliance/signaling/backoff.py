"""Reconnect delays and the retry policy (pure).

Twilio.Device reconnects its WebSocket with exponential backoff: 100 ms first,
factor 2, up to +40 % random jitter, capped by ``backoff_max_ms`` (default
20 000 ms, never below 3 000 ms) (signaling-protocol.md §4.2). Unlike the npm
``backoff`` package the SDK uses, the jittered delay is capped too, so the cap is
a true upper bound that a user (and a test) can rely on.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.errors import (
    AuthenticationError,
    ConnectionLostError,
    SignalingError,
    TwilioError,
)

__all__ = ["BackoffPolicy", "is_retryable"]

MIN_BACKOFF_MAX_MS = 3000


@dataclass(frozen=True)
class BackoffPolicy:
    """Exponential backoff with additive jitter.

    Attributes:
        initial_ms: delay before the first retry.
        factor: growth per attempt.
        jitter: the delay grows by up to this fraction at random.
        max_ms: upper bound of every delay, jitter included.
    """

    initial_ms: float = 100.0
    factor: float = 2.0
    jitter: float = 0.4
    max_ms: float = 20_000.0

    @classmethod
    def for_option(cls, backoff_max_ms: int) -> BackoffPolicy:
        """Build the policy for Device's ``backoff_max_ms`` option."""
        return cls(max_ms=float(max(backoff_max_ms, MIN_BACKOFF_MAX_MS)))

    def delay_ms(self, attempt: int, random_fraction: float) -> float:
        """Return the delay before retry number ``attempt`` (0-based).

        Args:
            attempt: how many retries have happened since the last success.
            random_fraction: a uniform random number in [0, 1).
        """
        exponent = min(attempt, 64)  # 2**64 * 100 ms is far past any cap
        base = min(self.initial_ms * self.factor**exponent, self.max_ms)
        return min(base * (1.0 + random_fraction * self.jitter), self.max_ms)


def is_retryable(error: TwilioError) -> bool:
    """Tell whether reconnecting can help after ``error``.

    Token problems (312xx, 201xx) need a new token from the application;
    transport failures are retried.
    """
    if isinstance(error, AuthenticationError):
        return False
    return isinstance(error, ConnectionLostError | SignalingError)
