"""The live page's data (`pgfleet.demo._live`): history, marks, health, hosts, the snapshot.

Plain function calls on `PoolStats` values; the page itself is tested in a browser
(tests/browser/test_live_page.py).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from pgfleet import PoolStats
from pgfleet._core.stats import BUCKETS, Histogram, HistogramSnapshot
from pgfleet.demo._live import (
    Health,
    History,
    HostBook,
    configured_hosts,
    quantile_bound,
    snapshot,
)
from pgfleet.errors import DatabaseUnavailable, PoolTimeout

BASE = PoolStats(
    name="web",
    min_size=2,
    max_size=8,
    size=2,
    idle=2,
    in_use=0,
    checking=0,
    connecting=0,
    waiting=0,
    database_down=False,
    checkouts=0,
    checkouts_waited=0,
    timeouts=0,
    rejected=0,
    failed_fast=0,
    connections_created=2,
    connect_errors=0,
)


def waits(*seconds: float) -> HistogramSnapshot:
    histogram = Histogram()
    for s in seconds:
        histogram.observe(s)
    return histogram.snapshot()


def later(stats: PoolStats, **changes: Any) -> PoolStats:
    return replace(stats, **changes)


def test_quantile_bound_is_the_bound_of_the_bucket_that_holds_it() -> None:
    counts = [0] * (len(BUCKETS) + 1)
    assert quantile_bound(BUCKETS, counts, 0.5, 0.0) is None
    counts[0], counts[5] = 98, 2  # 98 up to 0.1 ms, 2 up to 10 ms
    assert quantile_bound(BUCKETS, counts, 0.5, 0.009) == BUCKETS[0]
    assert quantile_bound(BUCKETS, counts, 0.99, 0.009) == BUCKETS[5]
    counts[-1] = 1000  # beyond the last bound: the maximum seen
    assert quantile_bound(BUCKETS, counts, 0.99, 42.0) == 42.0


def test_samples_measure_each_interval() -> None:
    history = History()
    assert history.observe(BASE, 100.0, "up") is None  # the first call is the baseline
    s1 = later(BASE, checkouts=50, wait_time=waits(*[0.00005] * 49, 0.02), in_use=1, idle=1)
    sample = history.observe(s1, 102.0, "up")
    assert sample is not None
    assert sample.checkouts_per_s == pytest.approx(25.0)
    assert sample.wait_p50 == BUCKETS[0]
    assert sample.wait_p99 == 0.025
    assert (sample.size, sample.in_use, sample.idle) == (2, 1, 1)
    # An interval without a checkout has no wait percentiles (a gap, not a zero).
    quiet = history.observe(s1, 103.0, "up")
    assert quiet is not None
    assert quiet.checkouts_per_s == 0
    assert quiet.wait_p50 is None
    assert quiet.wait_p99 is None
    recent = history.recent(s1, 103.0)
    assert recent["checkouts_per_s"] == pytest.approx(50 / 3)
    assert recent["wait_p99"] == 0.025


def test_in_use_shows_uses_that_ended_between_two_samples() -> None:
    # Nothing in use at either end of the interval, but 1.5 connection-seconds of use in
    # its 1 s: at some moment at least 2 connections were in use.
    history = History()
    history.observe(BASE, 0.0, "up")
    used = later(BASE, checkouts=30, usage_time=waits(*[0.05] * 30))
    sample = history.observe(used, 1.0, "up")
    assert sample is not None
    assert sample.in_use == 2
    # A busier end wins over the mean.
    sample = history.observe(later(used, in_use=5, idle=0), 2.0, "up")
    assert sample is not None
    assert sample.in_use == 5
    # No use at all: nothing in use.
    sample = history.observe(later(used, in_use=0), 3.0, "up")
    assert sample is not None
    assert sample.in_use == 0


def kinds(history: History) -> list[str]:
    return [m.kind for m in history.marks]


def test_marks_growth_shrinking_reconnects_timeouts_and_outages() -> None:
    history = History()
    history.observe(BASE, 0.0, "up")
    grown = later(BASE, size=5, idle=5, connections_created=5)
    history.observe(grown, 1.0, "up")
    assert kinds(history) == ["grow"]
    assert history.marks[-1].text == "grew by 3 to 5"

    shrunk = later(grown, size=3, idle=3, connections_closed={"idle": 2})
    history.observe(shrunk, 2.0, "up")
    assert kinds(history)[-1] == "shrink"

    # Two connections failed their check and were replaced: a reconnect, not a shrink.
    lost = later(shrunk, size=1, idle=1, connections_closed={"idle": 2, "check_failed": 2})
    history.observe(lost, 3.0, "up")
    assert kinds(history)[-1] == "reconnect"
    assert history.marks[-1].text == "2 connections lost: reconnecting"

    timed_out = later(lost, timeouts=3)
    history.observe(timed_out, 4.0, "up")
    assert history.marks[-1].text == "3 checkouts timed out"

    # Down: one mark for the outage; the size moving with failed attempts marks nothing.
    down = later(timed_out, database_down=True, size=0, idle=0, connecting=1)
    history.observe(down, 5.0, "down")
    history.observe(later(down, connecting=0), 6.0, "down")
    history.observe(later(down, connecting=2, size=2), 7.0, "down")
    assert kinds(history)[-1] == "down"
    assert kinds(history).count("down") == 1
    back = later(down, database_down=False, size=2, idle=2, connecting=0)
    history.observe(back, 8.0, "up")
    assert kinds(history)[-1] == "up"
    assert [s.state for s in history.samples][-4:] == ["down", "down", "down", "up"]

    samples, marks = history.since(6.5)
    assert [s["t"] for s in samples] == [7.0, 8.0]
    assert [m["kind"] for m in marks] == ["up"]


def test_history_keeps_a_window() -> None:
    history = History(seconds=5)
    for t in range(20):
        history.observe(BASE, float(t), "up")
    assert [s.t for s in history.samples] == [15.0, 16.0, 17.0, 18.0, 19.0]


def test_health_down_when_the_pool_says_so() -> None:
    health = Health()
    assert health.evaluate(BASE, 1.0) == "up"
    assert health.evaluate(later(BASE, database_down=True), 2.0) == "down"
    assert health.since == 2.0
    assert health.evaluate(later(BASE, database_down=True), 3.0) == "down"
    assert health.since == 2.0  # since it began
    assert health.as_dict(BASE)["reason"]
    assert health.evaluate(BASE, 4.0) == "up"


def test_health_down_after_a_failed_checkout_until_the_pool_reconnects() -> None:
    health = Health()
    health.checkout_failed(DatabaseUnavailable("down"), BASE)
    # The pool may not (yet) say so, but the last checkout failed as "database down".
    assert health.evaluate(BASE, 1.0) == "down"
    assert health.as_dict(BASE)["last_failure"] == "DatabaseUnavailable"
    # A new connection since: that failure is old news.
    assert health.evaluate(later(BASE, connections_created=3), 2.0) == "up"


def test_health_failing_after_a_timeout_until_a_checkout_succeeds() -> None:
    health = Health()
    health.checkout_failed(PoolTimeout("no connection within 5 s"), BASE)
    assert health.evaluate(BASE, 1.0) == "failing"
    assert "PoolTimeout" in health.as_dict(BASE)["reason"]
    health.checkout_succeeded()
    assert health.evaluate(BASE, 2.0) == "up"


@pytest.mark.parametrize(
    ("conninfo", "env", "expected"),
    [
        ("host=db port=6432", {}, [("db", "6432")]),
        ("host=a,b,c port=5433", {}, [("a", "5433"), ("b", "5433"), ("c", "5433")]),
        ("host=a,b port=1,2", {}, [("a", "1"), ("b", "2")]),
        ("postgresql://u@a:1,b:2/app", {}, [("a", "1"), ("b", "2")]),
        ("hostaddr=10.0.0.5", {}, [("10.0.0.5", "5432")]),
        ("dbname=app", {"PGHOST": "envhost", "PGPORT": "7"}, [("envhost", "7")]),
        ("dbname=app", {}, []),
    ],
)
def test_configured_hosts(conninfo: str, env: dict[str, str], expected: list[Any]) -> None:
    assert configured_hosts(conninfo, env) == expected


def test_hosts_without_connections_are_listed_in_order() -> None:
    book = HostBook("host=primary.db,standby.db,::1 port=5432", {})
    rows = book.rows("up")
    assert [r["address"] for r in rows] == ["primary.db:5432", "standby.db:5432", "[::1]:5432"]
    assert {r["state"] for r in rows} == {"unused"}
    assert all(r["connections"] == r["in_use"] == 0 for r in rows)
    assert {r["state"] for r in book.rows("down")} == {"down"}


def test_snapshot_is_json_with_everything_the_page_draws() -> None:
    history, health = History(), Health()
    history.observe(BASE, 10.0, "up")
    now = later(BASE, checkouts=10, wait_time=waits(0.001, 0.3))
    history.observe(now, 11.0, "up")
    events = [{"time": 11.0, "level": "info", "message": "pool 'web' open"}]
    body = snapshot(
        now,
        now=11.0,
        health=health,
        history=history,
        hosts=HostBook("host=127.0.0.1 port=5432", {}),
        events=events,
    )
    decoded = json.loads(json.dumps(body, allow_nan=False))
    assert decoded["health"]["state"] == "up"
    assert decoded["hosts"][0]["address"] == "127.0.0.1:5432"
    assert len(decoded["history"]["samples"]) == 1
    buckets = decoded["wait_time"]["buckets"]
    assert buckets[-1]["le"] is None
    assert sum(b["count"] for b in buckets) == decoded["wait_time"]["count"] == 2
    assert decoded["events"] == events
