"""The histograms behind the stats."""

from __future__ import annotations

import pytest

from pgfleet._core import Histogram
from pgfleet._core.stats import BUCKETS


def test_histogram_buckets_and_summary() -> None:
    histogram = Histogram()
    for seconds in (0.00005, 0.0003, 0.0003, 0.2, 42.0):
        histogram.observe(seconds)
    snapshot = histogram.snapshot()
    assert snapshot.buckets == BUCKETS
    assert snapshot.count == 5
    assert snapshot.total == pytest.approx(42.20065)
    assert snapshot.maximum == 42.0
    assert len(snapshot.counts) == len(BUCKETS) + 1
    assert snapshot.counts[0] == 1  # <= 0.1 ms
    assert snapshot.counts[1] == 2  # <= 0.5 ms
    assert snapshot.counts[BUCKETS.index(0.25)] == 1
    assert snapshot.counts[-1] == 1  # above the last bound
    assert sum(snapshot.counts) == snapshot.count


def test_histogram_snapshot_counts_fast_path_zeros_apart() -> None:
    histogram = Histogram()
    histogram.observe(1.0)
    snapshot = histogram.snapshot(zeros=3)
    assert snapshot.count == 4
    assert snapshot.counts[0] == 3
    assert histogram.snapshot().count == 1  # the histogram itself is unchanged


def test_quantiles_are_bucket_upper_bounds_capped_at_the_maximum() -> None:
    empty = Histogram().snapshot()
    assert empty.quantile(0.5) == 0.0
    histogram = Histogram()
    for _ in range(90):
        histogram.observe(0.003)  # the 5 ms bucket
    for _ in range(10):
        histogram.observe(0.7)  # the 1 s bucket
    snapshot = histogram.snapshot()
    assert snapshot.quantile(0.5) == 0.005
    assert snapshot.quantile(0.9) == 0.005
    assert snapshot.quantile(0.95) == 0.7  # capped at the largest value seen
    assert snapshot.quantile(1.0) == 0.7
    histogram.observe(100.0)
    assert histogram.snapshot().quantile(1.0) == 100.0
