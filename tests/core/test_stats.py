"""The counters and histograms behind the stats."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgfleet._core import Counters, Histogram
from pgfleet._core.stats import BUCKETS, PENDING_MAX


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


def test_histogram_unobserve_takes_back_an_observation() -> None:
    histogram = Histogram()
    histogram.observe(0.003)
    histogram.observe(0.7)
    histogram.unobserve(0.7)
    snapshot = histogram.snapshot()
    assert snapshot.count == 1
    assert snapshot.counts[BUCKETS.index(0.005)] == 1
    assert snapshot.total == pytest.approx(0.003)
    assert snapshot.maximum == 0.7  # a maximum cannot be taken back: still an upper bound


def test_counters_unobserve_lend_undoes_observe_lend() -> None:
    counters = Counters()
    counters.observe_lend(None)  # served at once
    counters.observe_lend(0.2)  # served after 0.2 s in the queue
    stats = counters.snapshot(
        name="test",
        min_size=0,
        max_size=1,
        idle=0,
        in_use=2,
        checking=0,
        connecting=0,
        waiting=0,
        database_down=False,
    )
    assert (stats.checkouts, stats.checkouts_waited, stats.wait_time.count) == (2, 1, 2)
    assert stats.wait_time.total == pytest.approx(0.2)
    assert stats.size == 2
    counters.unobserve_lend(0.2)
    counters.unobserve_lend(None)
    after = counters.snapshot(
        name="test",
        min_size=0,
        max_size=1,
        idle=0,
        in_use=0,
        checking=0,
        connecting=0,
        waiting=0,
        database_down=False,
    )
    assert (after.checkouts, after.checkouts_waited, after.wait_time.count) == (0, 0, 0)
    assert after.wait_time.total == pytest.approx(0.0)


@given(st.lists(st.floats(min_value=0.0, max_value=100.0), max_size=600))
def test_pending_durations_bucket_as_observed_ones(durations: list[float]) -> None:
    observed, batched = Histogram(), Histogram()
    for seconds in durations:
        observed.observe(seconds)
        batched.pending.append(seconds)
        if len(batched.pending) >= PENDING_MAX:
            batched.fold()
    one, other = observed.snapshot(), batched.snapshot()
    assert other.counts == one.counts
    assert other.maximum == one.maximum
    assert other.total == pytest.approx(one.total)
    assert not batched.pending
