"""Exponential back-off with full jitter for reconnect attempts."""

from __future__ import annotations

import random
from dataclasses import dataclass

from pgfleet._core.defaults import RECONNECT_DELAY, RECONNECT_MAX_DELAY


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays of ``uniform(0, min(cap, initial * 2**(failures - 1)))`` seconds.

    Full jitter spreads the retries of many pools (and many processes) over the
    whole window, so a database coming back is not met by a herd.
    """

    initial: float = RECONNECT_DELAY
    cap: float = RECONNECT_MAX_DELAY

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.cap:
            raise ValueError(
                f"backoff needs 0 < initial <= cap, got initial={self.initial}, cap={self.cap}"
            )

    def ceiling(self, failures: int) -> float:
        """The largest delay after `failures` consecutive failures (1 or more)."""
        exponent = min(max(failures - 1, 0), 30)
        return float(min(self.cap, self.initial * (2**exponent)))

    def delay(self, failures: int, rng: random.Random) -> float:
        """A random delay in ``[0, ceiling(failures)]``."""
        return rng.uniform(0.0, self.ceiling(failures))
