"""`pgfleet.metrics.otel`: real pools read by the OpenTelemetry SDK's in-memory reader."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Gauge,
    InMemoryMetricReader,
    Metric,
    NumberDataPoint,
    Sum,
)

from pgfleet import AsyncPool, Pool, PoolStats, PoolTimeout
from pgfleet.metrics.otel import POOL_NAME, instrument
from support.flavours import AsyncFakeManager, FakeManager

SHORT = 0.05
STATE = "db.client.connection.state"

#: Observable counters (monotonic sums) -> the value they report.
COUNTERS: dict[str, Callable[[PoolStats], float]] = {
    "db.client.connection.timeouts": lambda s: s.timeouts,
    "pgfleet.pool.checkouts": lambda s: s.checkouts,
    "pgfleet.pool.checkouts_waited": lambda s: s.checkouts_waited,
    "pgfleet.pool.checkouts_rejected": lambda s: s.rejected,
    "pgfleet.pool.checkouts_failed_fast": lambda s: s.failed_fast,
    "pgfleet.pool.connections_created": lambda s: s.connections_created,
    "pgfleet.pool.connect_errors": lambda s: s.connect_errors,
    "pgfleet.pool.checks": lambda s: s.checks,
    "pgfleet.pool.checks_failed": lambda s: s.checks_failed,
    "pgfleet.pool.resets": lambda s: s.resets,
    "pgfleet.pool.returns_broken": lambda s: s.returns_broken,
    "pgfleet.pool.leaks": lambda s: s.leaks,
    "pgfleet.pool.transaction_retries": lambda s: s.transaction_retries,
    "pgfleet.pool.wait_time.sum": lambda s: s.wait_time.total,
    "pgfleet.pool.wait_time.count": lambda s: s.wait_time.count,
    "pgfleet.pool.use_time.sum": lambda s: s.usage_time.total,
    "pgfleet.pool.use_time.count": lambda s: s.usage_time.count,
    "pgfleet.pool.create_time.sum": lambda s: s.connect_time.total,
    "pgfleet.pool.create_time.count": lambda s: s.connect_time.count,
}
#: Observable up-down counters (non-monotonic sums) with the pool attribute only.
UP_DOWN: dict[str, Callable[[PoolStats], float]] = {
    "db.client.connection.max": lambda s: s.max_size,
    "db.client.connection.pending_requests": lambda s: s.waiting,
    "pgfleet.pool.connection.min": lambda s: s.min_size,
    "pgfleet.pool.connection.connecting": lambda s: s.connecting,
}
UNITS = {
    "db.client.connection.count": "{connection}",
    "db.client.connection.max": "{connection}",
    "db.client.connection.pending_requests": "{request}",
    "db.client.connection.timeouts": "{timeout}",
    "pgfleet.pool.wait_time.sum": "s",
    "pgfleet.pool.database_down": "1",
}


@pytest.fixture
def provider() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    yield provider, reader
    provider.shutdown()


def read(reader: InMemoryMetricReader) -> dict[str, Metric]:
    data = reader.get_metrics_data()
    metrics: dict[str, Metric] = {}
    if data is None:
        return metrics
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            assert scope_metrics.scope.name == "pgfleet"
            for metric in scope_metrics.metrics:
                assert metric.name not in metrics, metric.name
                metrics[metric.name] = metric
    return metrics


def points(metric: Metric, **attributes: str) -> list[NumberDataPoint]:
    """The data points of `metric` whose attributes include `attributes` (dots as ``__``)."""
    wanted = {key.replace("__", "."): value for key, value in attributes.items()}
    found = []
    for point in metric.data.data_points:
        assert isinstance(point, NumberDataPoint)
        point_attributes = dict(point.attributes or {})
        if all(point_attributes.get(key) == value for key, value in wanted.items()):
            found.append(point)
    return found


def value(metric: Metric, pool: str, **attributes: str) -> float:
    [point] = points(metric, **{POOL_NAME.replace(".", "__"): pool}, **attributes)
    return point.value


def assert_matches(metrics: dict[str, Metric], stats: PoolStats) -> None:
    pool = stats.name
    count = metrics["db.client.connection.count"]
    assert isinstance(count.data, Sum)
    assert not count.data.is_monotonic
    assert value(count, pool, **{STATE.replace(".", "__"): "idle"}) == stats.idle
    used = value(count, pool, **{STATE.replace(".", "__"): "used"})
    assert used == stats.in_use + stats.checking
    for name, get in UP_DOWN.items():
        metric = metrics[name]
        assert isinstance(metric.data, Sum), name
        assert not metric.data.is_monotonic, name
        assert value(metric, pool) == get(stats), name
    for name, get in COUNTERS.items():
        metric = metrics[name]
        assert isinstance(metric.data, Sum), name
        assert metric.data.is_monotonic, name
        assert value(metric, pool) == pytest.approx(get(stats)), name
    down = metrics["pgfleet.pool.database_down"]
    assert isinstance(down.data, Gauge)
    assert value(down, pool) == int(stats.database_down)
    # The SDK leaves out an instrument that observed nothing (no connection closed yet).
    closed = metrics.get("pgfleet.pool.connections_closed")
    by_reason = {
        dict(p.attributes or {})["pgfleet.connection.close_reason"]: p.value
        for p in (points(closed, **{POOL_NAME.replace(".", "__"): pool}) if closed else [])
    }
    assert by_reason == stats.connections_closed
    for name, unit in UNITS.items():
        assert metrics[name].unit == unit, name


def fake_options(**kwargs: Any) -> dict[str, Any]:
    return {"min_size": 1, "max_size": 1, "check_after_idle": None, **kwargs}


async def test_async_pools_observed(provider: tuple[MeterProvider, InMemoryMetricReader]) -> None:
    meter_provider, reader = provider
    async with (
        AsyncPool(manager=AsyncFakeManager(), name="orders", **fake_options()) as orders,
        AsyncPool(manager=AsyncFakeManager(), name="users", **fake_options(max_size=3)) as users,
    ):
        instruments = instrument(orders, meter_provider=meter_provider)
        assert instrument(users, meter_provider=meter_provider) is instruments
        assert instruments.pools == [orders, users]
        for _ in range(3):
            async with orders.connection():
                pass
        async with orders.connection():
            with pytest.raises(PoolTimeout):
                await orders.getconn(timeout=SHORT)
            lent = read(reader)
        await orders.drain()

        metrics = read(reader)
        stats = orders.stats()
        assert (stats.checkouts, stats.timeouts) == (4, 1)
        assert stats.connections_closed == {"drained": 1}
        assert_matches(metrics, stats)
        assert_matches(metrics, users.stats())
        assert value(metrics["db.client.connection.timeouts"], "orders") == 1
        assert value(metrics["db.client.connection.max"], "users") == 3
        assert value(metrics["pgfleet.pool.checkouts"], "users") == 0
        assert {
            dict(p.attributes or {})[POOL_NAME]
            for p in metrics["db.client.connection.max"].data.data_points
        } == {"orders", "users"}
        state = STATE.replace(".", "__")
        assert value(lent["db.client.connection.count"], "orders", **{state: "used"}) == 1
        assert value(lent["db.client.connection.count"], "orders", **{state: "idle"}) == 0

        instruments.remove(users)
        metrics = read(reader)
        assert {
            dict(p.attributes or {})[POOL_NAME]
            for p in metrics["db.client.connection.max"].data.data_points
        } == {"orders"}


def test_sync_pool_observed(provider: tuple[MeterProvider, InMemoryMetricReader]) -> None:
    meter_provider, reader = provider
    with Pool(manager=FakeManager(), name="sync", **fake_options()) as pool:
        instrument(pool, meter_provider=meter_provider)
        with pool.connection(), pytest.raises(PoolTimeout):
            pool.getconn(timeout=SHORT)
        with pool.connection():
            pass
        metrics = read(reader)
        stats = pool.stats()
    assert (stats.checkouts, stats.timeouts, stats.usage_time.count) == (2, 1, 2)
    assert_matches(metrics, stats)


def test_real_server(provider: tuple[MeterProvider, InMemoryMetricReader], pg_dsn: str) -> None:
    meter_provider, reader = provider
    with Pool(pg_dsn, name="pg-otel", min_size=1, max_size=2, timeout=10.0) as pool:
        instrument(pool, meter_provider=meter_provider)
        for _ in range(3):
            with pool.connection() as conn:
                conn.execute("SELECT 1")
        with pool.connection(), pool.connection(), pytest.raises(PoolTimeout):
            pool.getconn(timeout=SHORT)
        metrics = read(reader)
        stats = pool.stats()
    assert (stats.checkouts, stats.timeouts) == (5, 1)
    assert_matches(metrics, stats)
    assert value(metrics["pgfleet.pool.create_time.count"], "pg-otel") >= 2
    assert value(metrics["pgfleet.pool.create_time.sum"], "pg-otel") > 0


def test_duplicate_names_refused_and_pools_held_weakly(
    provider: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    meter_provider, reader = provider
    pool = Pool(manager=FakeManager(), name="twin", **fake_options())
    instruments = instrument(pool, meter_provider=meter_provider)
    with pytest.raises(ValueError, match="'twin' is already registered"):
        instrument(Pool(manager=FakeManager(), name="twin"), meter_provider=meter_provider)
    assert value(read(reader)["pgfleet.pool.checkouts"], "twin") == 0
    del pool
    gc.collect()
    assert instruments.pools == []
    metrics = read(reader)
    assert all(not m.data.data_points for m in metrics.values())
