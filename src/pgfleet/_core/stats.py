"""Counters, histograms and the frozen stats snapshot."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

#: Upper bounds (seconds) of the histogram buckets; the last bucket is unbounded.
BUCKETS: tuple[float, ...] = (
    0.0001,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class Histogram:
    """A fixed-bucket histogram of durations in seconds."""

    __slots__ = ("counts", "total", "maximum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        self.maximum = 0.0

    def observe(self, seconds: float) -> None:
        """Record one duration (on hot paths: keep it to a few operations)."""
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        if seconds > self.maximum:
            self.maximum = seconds

    def snapshot(self, zeros: int = 0) -> HistogramSnapshot:
        """A frozen copy; `zeros` more observations of 0 s (counted apart by a fast path)."""
        counts = list(self.counts)
        counts[0] += zeros
        return HistogramSnapshot(
            buckets=BUCKETS,
            counts=tuple(counts),
            count=sum(counts),
            total=self.total,
            maximum=self.maximum,
        )


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """Bucket counts (not cumulative; the last bucket is above ``buckets[-1]``)."""

    buckets: tuple[float, ...]
    counts: tuple[int, ...]
    count: int
    total: float
    maximum: float

    def quantile(self, q: float) -> float:
        """An upper bound of the `q` quantile (the bound of the bucket that holds it)."""
        if not self.count:
            return 0.0
        rank = q * self.count
        seen = 0
        for bound, n in zip((*self.buckets, self.maximum), self.counts, strict=True):
            seen += n
            if seen >= rank:
                return min(bound, self.maximum)
        return self.maximum


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A consistent snapshot of a pool's state and counters, taken under its lock."""

    name: str
    min_size: int
    max_size: int
    #: Connections that exist or are being opened: idle + in_use + checking + connecting.
    size: int
    idle: int
    in_use: int
    checking: int
    connecting: int
    waiting: int
    database_down: bool
    checkouts: int
    checkouts_waited: int
    timeouts: int
    rejected: int
    failed_fast: int
    connections_created: int
    connect_errors: int
    connections_closed: dict[str, int] = field(default_factory=dict)
    checks: int = 0
    checks_failed: int = 0
    returns_broken: int = 0
    #: Returned connections that had something to undo (an open transaction rolled back,
    #: or the ``reset`` callback run) before they were lent again.
    resets: int = 0
    leaks: int = 0
    transaction_retries: int = 0
    wait_time: HistogramSnapshot = field(default_factory=lambda: Histogram().snapshot())
    usage_time: HistogramSnapshot = field(default_factory=lambda: Histogram().snapshot())
    connect_time: HistogramSnapshot = field(default_factory=lambda: Histogram().snapshot())

    def as_psycopg_pool_dict(self) -> dict[str, Any]:
        """The subset psycopg_pool's ``get_stats()`` reports, under its key names."""
        return {
            "pool_min": self.min_size,
            "pool_max": self.max_size,
            "pool_size": self.size,
            "pool_available": self.idle,
            "requests_waiting": self.waiting,
            "requests_num": self.checkouts,
            "requests_queued": self.checkouts_waited,
            "requests_wait_ms": round(self.wait_time.total * 1000),
            "requests_errors": self.timeouts + self.rejected + self.failed_fast,
            "usage_ms": round(self.usage_time.total * 1000),
            "returns_bad": self.returns_broken,
            "connections_num": self.connections_created + self.connect_errors,
            "connections_ms": round(self.connect_time.total * 1000),
            "connections_errors": self.connect_errors,
            "connections_lost": self.checks_failed,
        }
