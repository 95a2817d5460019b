"""`pgfleet.metrics.prometheus`: scrape real pools and parse the exposition text."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from pgfleet import AsyncPool, Pool, PoolStats, PoolTimeout
from pgfleet._core.stats import BUCKETS, HistogramSnapshot
from pgfleet.metrics.prometheus import PoolCollector, cumulative_buckets
from support.flavours import AsyncFakeManager, FakeConn, FakeManager

SHORT = 0.05

GAUGES = {
    "pgfleet_pool_connections",
    "pgfleet_pool_connections_min",
    "pgfleet_pool_connections_max",
    "pgfleet_pool_waiting",
    "pgfleet_pool_database_down",
}
#: Counter family -> the PoolStats field it reports.
COUNTERS = {
    "pgfleet_checkouts": "checkouts",
    "pgfleet_checkouts_waited": "checkouts_waited",
    "pgfleet_checkout_timeouts": "timeouts",
    "pgfleet_checkouts_rejected": "rejected",
    "pgfleet_checkouts_failed_fast": "failed_fast",
    "pgfleet_connections_created": "connections_created",
    "pgfleet_connect_errors": "connect_errors",
    "pgfleet_connection_checks": "checks",
    "pgfleet_connection_checks_failed": "checks_failed",
    "pgfleet_connection_resets": "resets",
    "pgfleet_returns_broken": "returns_broken",
    "pgfleet_connection_leaks": "leaks",
    "pgfleet_transaction_retries": "transaction_retries",
}
#: Histogram family -> the PoolStats field it reports.
HISTOGRAMS = {
    "pgfleet_checkout_wait_seconds": "wait_time",
    "pgfleet_connection_usage_seconds": "usage_time",
    "pgfleet_connect_seconds": "connect_time",
}


def scrape(registry: CollectorRegistry) -> dict[str, Metric]:
    text = generate_latest(registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family: Metric, suffix: str = "", **labels: str) -> list[Sample]:
    """The samples of `family` named ``family.name + suffix`` whose labels include `labels`."""
    return [
        sample
        for sample in family.samples
        if sample.name == family.name + suffix
        and all(sample.labels.get(key) == value for key, value in labels.items())
    ]


def value(family: Metric, suffix: str = "", **labels: str) -> float:
    [sample] = samples(family, suffix, **labels)
    return sample.value


def assert_matches(families: dict[str, Metric], stats: PoolStats) -> None:
    """Every family reports `stats` for the pool ``stats.name``."""
    pool = stats.name
    connections = families["pgfleet_pool_connections"]
    assert connections.type == "gauge"
    for state in ("idle", "in_use", "checking", "connecting"):
        assert value(connections, pool=pool, state=state) == getattr(stats, state)
    assert sum(s.value for s in samples(connections, pool=pool)) == stats.size
    assert value(families["pgfleet_pool_connections_min"], pool=pool) == stats.min_size
    assert value(families["pgfleet_pool_connections_max"], pool=pool) == stats.max_size
    assert value(families["pgfleet_pool_waiting"], pool=pool) == stats.waiting
    assert value(families["pgfleet_pool_database_down"], pool=pool) == int(stats.database_down)

    for name, field in COUNTERS.items():
        family = families[name]
        assert family.type == "counter", name
        assert value(family, "_total", pool=pool) == getattr(stats, field), name
    closed = families["pgfleet_connections_closed"]
    assert {
        s.labels["reason"]: s.value for s in samples(closed, "_total", pool=pool)
    } == stats.connections_closed

    for name, field in HISTOGRAMS.items():
        family = families[name]
        snapshot: HistogramSnapshot = getattr(stats, field)
        assert family.type == "histogram", name
        assert family.unit == "" or family.unit == "seconds"
        buckets = samples(family, "_bucket", pool=pool)
        assert [float(b.labels["le"]) for b in buckets] == [*snapshot.buckets, float("inf")]
        assert buckets[-1].labels["le"] == "+Inf"
        counts = [b.value for b in buckets]
        assert counts == sorted(counts), f"{name} buckets are not cumulative"
        assert counts[-1] == snapshot.count
        assert value(family, "_count", pool=pool) == snapshot.count
        assert value(family, "_sum", pool=pool) == pytest.approx(snapshot.total)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def fake_options(**kwargs: Any) -> dict[str, Any]:
    return {"min_size": 1, "max_size": 1, "check_after_idle": None, **kwargs}


async def test_async_pools_scraped_with_a_label_each(registry: CollectorRegistry) -> None:
    manager = AsyncFakeManager()
    async with (
        AsyncPool(manager=manager, name="orders", **fake_options()) as orders,
        AsyncPool(manager=AsyncFakeManager(), name="users", **fake_options(max_size=2)) as users,
    ):
        registry.register(PoolCollector(orders, users))
        for _ in range(3):
            async with orders.connection():
                pass
        async with orders.connection() as conn:
            with pytest.raises(PoolTimeout):
                await orders.getconn(timeout=SHORT)
            conn_while_lent = scrape(registry)
        await orders.drain()

        families = scrape(registry)
        stats = orders.stats()
        assert stats.checkouts == 4
        assert stats.timeouts == 1
        assert stats.connections_closed == {"drained": 1}
        assert_matches(families, stats)
        assert_matches(families, users.stats())
        assert value(families["pgfleet_checkouts"], "_total", pool="users") == 0
        assert {s.labels["pool"] for s in families["pgfleet_pool_waiting"].samples} == {
            "orders",
            "users",
        }
        assert value(families["pgfleet_checkout_timeouts"], "_total", pool="orders") == 1
        assert value(families["pgfleet_checkout_wait_seconds"], "_count", pool="orders") == 4

        lent = conn_while_lent["pgfleet_pool_connections"]
        assert value(lent, pool="orders", state="in_use") == 1
        assert value(lent, pool="orders", state="idle") == 0
        assert isinstance(conn, FakeConn)


def test_sync_pool_scraped(registry: CollectorRegistry) -> None:
    collector = PoolCollector()
    registry.register(collector)
    with Pool(manager=FakeManager(), name="sync", **fake_options()) as pool:
        collector.add(pool)
        with pool.connection(), pytest.raises(PoolTimeout):
            pool.getconn(timeout=SHORT)
        with pool.connection():
            pass
        families = scrape(registry)
        stats = pool.stats()
    assert stats.checkouts == 2
    assert stats.timeouts == 1
    assert stats.usage_time.count == 2
    assert_matches(families, stats)
    usage = families["pgfleet_connection_usage_seconds"]
    assert value(usage, "_count", pool="sync") == 2


def test_real_server(registry: CollectorRegistry, pg_dsn: str) -> None:
    with Pool(pg_dsn, name="pg", min_size=1, max_size=2, timeout=10.0) as pool:
        registry.register(PoolCollector(pool))
        for _ in range(5):
            with pool.connection() as conn:
                conn.execute("SELECT 1")
        with pool.connection(), pool.connection(), pytest.raises(PoolTimeout):
            pool.getconn(timeout=SHORT)
        families = scrape(registry)
        stats = pool.stats()
    assert stats.checkouts == 7
    assert stats.timeouts == 1
    assert stats.connections_created >= 2
    assert_matches(families, stats)
    connect = families["pgfleet_connect_seconds"]
    assert value(connect, "_count", pool="pg") == stats.connect_time.count >= 2
    assert value(connect, "_sum", pool="pg") > 0


def test_cumulative_buckets_end_with_inf() -> None:
    counts = [0] * (len(BUCKETS) + 1)
    counts[0], counts[3], counts[-1] = 2, 1, 4
    snapshot = HistogramSnapshot(
        buckets=BUCKETS, counts=tuple(counts), count=7, total=200.0, maximum=60.0
    )
    buckets = cumulative_buckets(snapshot)
    assert [le for le, _ in buckets] == [*(repr(b) for b in BUCKETS), "+Inf"]
    by_le = dict(buckets)
    assert (by_le["0.0001"], by_le["0.0025"], by_le["30.0"], by_le["+Inf"]) == (2, 3, 3, 7)


def test_no_pools_still_describes_the_names(registry: CollectorRegistry) -> None:
    registry.register(PoolCollector())
    text = generate_latest(registry).decode()
    assert "# TYPE pgfleet_checkouts_total counter" in text
    assert "# TYPE pgfleet_checkout_wait_seconds histogram" in text
    assert "pool=" not in text
    # The names are claimed: a second collector clashes in the same registry.
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(PoolCollector())


async def test_add_remove_and_names() -> None:
    async with (
        AsyncPool(manager=AsyncFakeManager(), name="a", **fake_options()) as a,
        AsyncPool(manager=AsyncFakeManager(), name="b", **fake_options()) as b,
        AsyncPool(manager=AsyncFakeManager(), name="a", **fake_options()) as other_a,
    ):
        collector = PoolCollector(a)
        collector.add(a)  # again: nothing
        collector.add(b)
        assert collector.pools == [a, b]
        with pytest.raises(ValueError, match="'a' is already registered"):
            collector.add(other_a)
        collector.remove(a)
        collector.remove(a)  # again: nothing
        collector.add(other_a)
        assert collector.pools == [b, other_a]
        with pytest.raises(TypeError):
            collector.add(object())  # type: ignore[arg-type]


def test_pools_are_held_weakly(registry: CollectorRegistry) -> None:
    pool = Pool(manager=FakeManager(), name="gone", **fake_options())
    collector = PoolCollector(pool)
    registry.register(collector)
    assert "gone" in {s.labels["pool"] for s in scrape(registry)["pgfleet_pool_waiting"].samples}
    del pool
    gc.collect()
    assert collector.pools == []
    assert scrape(registry)["pgfleet_pool_waiting"].samples == []
