"""The live page's cluster data (`pgfleet.demo._live`), without a browser: the hosts' pools
added up for the charts, the hosts' rows from `ClusterStats`, and the failover marks.

Plain function calls on stats values; the page drawing them after a real failover is
tests/browser/test_live_page.py's ``test_live_page_follows_a_failover``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from pgfleet import PoolStats
from pgfleet._core.cluster import ClusterStats, HostStats
from pgfleet._core.stats import Histogram, HistogramSnapshot
from pgfleet.demo._live import Health, History, HostBook, cluster_rows, combined_stats, snapshot

A, B = "10.0.0.1:5432", "10.0.0.2:5432"


def waits(*seconds: float) -> HistogramSnapshot:
    histogram = Histogram()
    for s in seconds:
        histogram.observe(s)
    return histogram.snapshot()


def pool(**changes: Any) -> PoolStats:
    base = PoolStats(
        name="web[x]",
        min_size=2,
        max_size=4,
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
    return replace(base, **changes)


def host(label: str, role: Any, **changes: Any) -> HostStats:
    base = HostStats(
        label=label,
        role=role,
        timeline=1,
        lag=None,
        fenced=0,
        demoted=0,
        reads=0,
        writes=0,
        pool=pool(),
    )
    return replace(base, **changes)


def cluster(primary: str | None, *hosts: HostStats, failovers: int = 0) -> ClusterStats:
    return ClusterStats(
        name="web",
        primary=primary,
        newest_timeline=max((h.timeline or 0) for h in hosts),
        failovers=failovers,
        fenced=sum(h.fenced for h in hosts),
        hosts=hosts,
    )


def test_combined_stats_add_up_the_hosts_pools() -> None:
    one = pool(size=3, idle=1, in_use=2, checkouts=10, timeouts=1, wait_time=waits(0.001, 0.2))
    two = pool(size=2, idle=2, checkouts=5, connections_closed={"broken": 1}, wait_time=waits(3))
    total = combined_stats("web", [one, two])
    assert total.name == "web"
    assert (total.size, total.idle, total.in_use, total.max_size) == (5, 3, 2, 8)
    assert (total.checkouts, total.timeouts) == (15, 1)
    assert total.connections_closed == {"broken": 1}
    assert total.wait_time.count == 3
    assert total.wait_time.maximum == pytest.approx(3)
    assert sum(total.wait_time.counts) == 3
    # Down only when every host is.
    assert not total.database_down
    assert combined_stats("web", [replace(one, database_down=True), two]).database_down is False
    both = [replace(one, database_down=True), replace(two, database_down=True)]
    assert combined_stats("web", both).database_down


def test_cluster_rows_say_role_timeline_lag_and_fencing() -> None:
    stats = cluster(
        B,
        host(A, "stale", timeline=1, fenced=2, demoted=1, writes=7, pool=pool(size=0, idle=0)),
        host(B, "primary", timeline=2, writes=3, reads=1, pool=pool(in_use=1, idle=1)),
        failovers=1,
    )
    rows = cluster_rows(stats, {B: "17.2"})
    assert [(r["address"], r["role"], r["primary"]) for r in rows] == [
        (A, "stale", False),
        (B, "primary", True),
    ]
    old, new = rows
    assert (old["stale"], old["fenced"], old["demoted"]) == (True, 2, 1)
    assert (old["state"], old["connections"]) == ("unused", 0)
    assert (new["state"], new["in_use"], new["idle"], new["timeline"]) == ("up", 1, 1, 2)
    assert (new["reads"], new["writes"], new["server_version"]) == (1, 3, "17.2")
    assert old["server_version"] is None
    standby = cluster(A, host(A, "primary"), host(B, "standby", lag=0.25))
    assert cluster_rows(standby, {})[1]["lag"] == 0.25
    down = cluster(None, host(A, "down", pool=pool(size=0, idle=0, database_down=True)))
    assert cluster_rows(down, {})[0]["state"] == "down"


def test_a_failover_is_marked_once() -> None:
    history = History()
    a_primary = cluster(A, host(A, "primary"), host(B, "standby"))
    assert history.observe_cluster(a_primary, 1.0) is None  # the first sight: nothing to compare
    assert history.observe_cluster(a_primary, 2.0) is None
    # The primary is lost: no mark until there is a new one (the banner covers the gap).
    lost = cluster(None, host(A, "down"), host(B, "standby"))
    assert history.observe_cluster(lost, 3.0) is None
    b_primary = cluster(B, host(A, "down"), host(B, "primary", timeline=2))
    mark = history.observe_cluster(b_primary, 4.0)
    assert mark is not None
    assert mark.kind == "failover"
    assert B in mark.text
    assert history.observe_cluster(b_primary, 5.0) is None
    # The pool counting a failover marks it too, even with the same primary label.
    counted = replace(b_primary, failovers=1)
    assert history.observe_cluster(counted, 6.0) is not None
    assert [m.t for m in history.marks if m.kind == "failover"] == [4.0, 6.0]


def test_snapshot_of_a_cluster_has_its_rows_and_summary() -> None:
    stats = cluster(A, host(A, "primary", writes=2), host(B, "standby", reads=3, lag=0.5))
    total = combined_stats("web", [h.pool for h in stats.hosts])
    body = snapshot(
        total,
        now=10.0,
        health=Health(),
        history=History(),
        hosts=HostBook("host=10.0.0.1,10.0.0.2 password=hunter2", {}),
        events=[],
        cluster=stats,
    )
    assert body["cluster"] == {"primary": A, "newest_timeline": 1, "failovers": 0, "fenced": 0}
    assert [(h["address"], h["role"]) for h in body["hosts"]] == [(A, "primary"), (B, "standby")]
    assert body["size"] == 4
    text = json.dumps(body)
    assert "hunter2" not in text
    one = snapshot(
        total,
        now=10.0,
        health=Health(),
        history=History(),
        hosts=HostBook("host=10.0.0.1", {}),
        events=[],
    )
    assert one["cluster"] is None
