"""The OpenTelemetry histograms (`db.client.connection.wait_time`, `use_time`,
`create_time`), recorded by real pools on a real server and read by the SDK's in-memory
reader; and nothing recorded, nothing imported, when a pool is not instrumented."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from psycopg.conninfo import conninfo_to_dict

from pgfleet import AsyncPool, Pool, PoolStats
from pgfleet.metrics.otel import (
    CREATE_TIME,
    HISTOGRAM_BUCKETS,
    POOL_NAME,
    USE_TIME,
    WAIT_TIME,
    histogram_attributes,
    instrument,
)
from support.cluster import APP_PASSWORD
from support.flavours import FakeManager

#: How long a caller holds a connection that another caller queues for (a duration the
#: histograms must show, not a synchronisation).
HOLD = 0.05
#: A generous ceiling for any duration in these tests.
CEILING = 10.0


@pytest.fixture
def provider() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    yield provider, reader
    provider.shutdown()


def histograms(reader: InMemoryMetricReader) -> dict[str, list[HistogramDataPoint]]:
    """The data points of each histogram the reader collects now."""
    found: dict[str, list[HistogramDataPoint]] = {}
    data = reader.get_metrics_data()
    if data is None:
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name in (WAIT_TIME, USE_TIME, CREATE_TIME):
                    assert metric.unit == "s", metric.name
                    found[metric.name] = [
                        p for p in metric.data.data_points if isinstance(p, HistogramDataPoint)
                    ]
    return found


def expected_attributes(dsn: str, name: str) -> dict[str, Any]:
    params = conninfo_to_dict(dsn)
    port = int(str(params["port"]))
    return {POOL_NAME: name, "server.address": params["host"], "server.port": port}


def assert_recorded(
    reader: InMemoryMetricReader, stats: PoolStats, attributes: dict[str, Any]
) -> dict[str, HistogramDataPoint]:
    """One observation per checkout, return and connect, with the pool's attributes; the
    use and create times are the very durations the engine counted."""
    found = histograms(reader)
    points: dict[str, HistogramDataPoint] = {}
    for name in (WAIT_TIME, USE_TIME, CREATE_TIME):
        [point] = found[name]  # one attribute set: one pool, one host
        assert dict(point.attributes or {}) == attributes, name
        assert tuple(point.explicit_bounds) == HISTOGRAM_BUCKETS, name
        assert sum(point.bucket_counts) == point.count, name
        assert 0 <= point.min <= point.max < CEILING, name
        assert APP_PASSWORD not in repr(point.attributes), name
        points[name] = point
    assert points[WAIT_TIME].count == stats.checkouts
    assert points[USE_TIME].count == stats.usage_time.count == stats.checkouts
    assert points[USE_TIME].sum == pytest.approx(stats.usage_time.total)
    assert points[CREATE_TIME].count == stats.connections_created
    assert points[CREATE_TIME].sum == pytest.approx(stats.connect_time.total)
    assert points[CREATE_TIME].min > 0  # a real connect takes time
    return points


def test_sync_pool_records_each_checkout_return_and_connect(
    provider: tuple[MeterProvider, InMemoryMetricReader], pg_dsn: str
) -> None:
    meter_provider, reader = provider
    pool = Pool(pg_dsn, name="hist-sync", min_size=1, max_size=1, timeout=CEILING)
    instrument(pool, meter_provider=meter_provider)  # before open: the first connect counts
    with pool:
        for _ in range(3):
            with pool.connection() as conn:
                conn.execute("SELECT pg_sleep(%s)", (HOLD,))
        conn = pool.getconn()
        pool.putconn(conn)
        # A caller that queues while the only connection is held for HOLD seconds.
        with pool.connection():

            def take_and_give_back() -> None:
                with pool.connection():
                    pass

            waiter = threading.Thread(target=take_and_give_back)
            waiter.start()
            deadline = time.monotonic() + CEILING
            while pool.stats().waiting == 0 and time.monotonic() < deadline:
                time.sleep(0.001)
            assert pool.stats().waiting == 1
            time.sleep(HOLD)
        waiter.join(CEILING)
        assert not waiter.is_alive()
        stats = pool.stats()
        points = assert_recorded(reader, stats, expected_attributes(pg_dsn, "hist-sync"))
    assert stats.checkouts == 6
    assert points[USE_TIME].max >= HOLD  # the three pg_sleep blocks
    assert points[WAIT_TIME].max >= HOLD  # the queued caller
    assert points[WAIT_TIME].min < HOLD  # the others found a connection idle


async def test_async_pool_records_each_checkout_return_and_connect(
    provider: tuple[MeterProvider, InMemoryMetricReader], pg_dsn: str
) -> None:
    meter_provider, reader = provider
    pool: AsyncPool[Any] = AsyncPool(
        pg_dsn, name="hist-async", min_size=1, max_size=2, timeout=CEILING
    )
    instrument(pool, meter_provider=meter_provider)
    async with pool:
        for _ in range(2):
            async with pool.connection() as conn:
                await conn.execute("SELECT pg_sleep(%s)", (HOLD,))
        async with pool.connection(), pool.connection():  # the second one connects
            pass
        conn = await pool.getconn()
        await pool.putconn(conn)
        with pytest.raises(psycopg.errors.DivisionByZero):
            async with pool.connection() as conn:
                await conn.execute("SELECT 1/0")  # the reset path: a rollback, then returned
        stats = pool.stats()
        points = assert_recorded(reader, stats, expected_attributes(pg_dsn, "hist-async"))
    assert (stats.checkouts, stats.connections_created, stats.resets) == (6, 2, 1)
    assert points[USE_TIME].max >= HOLD


async def test_the_current_span_is_the_exemplar(
    provider: tuple[MeterProvider, InMemoryMetricReader], pg_dsn: str
) -> None:
    """Recorded in the caller's task, a checkout carries the caller's span as exemplar."""
    meter_provider, reader = provider
    tracer = TracerProvider().get_tracer("test")
    async with AsyncPool(pg_dsn, name="exemplars", min_size=1, timeout=CEILING) as pool:
        instrument(pool, meter_provider=meter_provider)
        with tracer.start_as_current_span("request") as span:
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")
        trace_id = span.get_span_context().trace_id
        found = histograms(reader)
    for name in (WAIT_TIME, USE_TIME):
        [point] = found[name]
        assert [e.trace_id for e in point.exemplars] == [trace_id], name


def observer(pool: Pool[Any]) -> object:
    """The pool's observer (read through a call: mypy would narrow the attribute)."""
    return pool._observer


def test_remove_and_histograms_false_stop_the_recording(
    provider: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    meter_provider, reader = provider
    options: dict[str, Any] = {"min_size": 1, "max_size": 1, "check_after_idle": None}
    with (
        Pool(manager=FakeManager(), name="quiet", **options) as quiet,
        Pool(manager=FakeManager(), name="loud", **options) as loud,
    ):
        instruments = instrument(quiet, meter_provider=meter_provider, histograms=False)
        instrument(loud, meter_provider=meter_provider)
        assert observer(quiet) is None
        assert observer(loud) is not None
        for pool in (quiet, loud):
            with pool.connection():
                pass
        [point] = histograms(reader)[WAIT_TIME]
        assert dict(point.attributes or {}) == {POOL_NAME: "loud"}  # no server: a fake
        assert point.count == 1
        instruments.remove(loud)
        assert observer(loud) is None  # back to one attribute test per checkout
        with loud.connection():
            pass
        [point] = histograms(reader)[WAIT_TIME]
        assert point.count == 1  # cumulative: the old point stays, nothing new


def test_two_providers_each_get_every_observation(pg_dsn: str) -> None:
    readers = [InMemoryMetricReader(), InMemoryMetricReader()]
    providers = [MeterProvider(metric_readers=[r], shutdown_on_exit=False) for r in readers]
    try:
        with Pool(pg_dsn, name="twice", min_size=1, timeout=CEILING) as pool:
            for provider in providers:
                instrument(pool, meter_provider=provider)
            instrument(pool, meter_provider=providers[0])  # again: still once
            for _ in range(2):
                with pool.connection():
                    pass
            counts = [histograms(r)[WAIT_TIME][0].count for r in readers]
    finally:
        for provider in providers:
            provider.shutdown()
    assert counts == [2, 2]


@pytest.mark.parametrize(
    ("conninfo", "server"),
    [
        ("host=db.example port=6432 password=hunter2", ("db.example", 6432)),
        ("postgresql://u:hunter2@10.0.0.7/app", ("10.0.0.7", 5432)),
        ("host=/run/postgresql", ("/run/postgresql", 5432)),
        ("host=a.example,b.example password=hunter2", None),  # a connection may be on either
    ],
)
def test_server_attributes_name_one_host_never_a_secret(
    conninfo: str, server: tuple[str, int] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGHOST", raising=False)
    monkeypatch.delenv("PGPORT", raising=False)
    pool = Pool(conninfo, name="where")  # not opened: nothing connects
    attributes = histogram_attributes(pool)
    expected: dict[str, Any] = {POOL_NAME: "where"}
    if server is not None:
        expected |= {"server.address": server[0], "server.port": server[1]}
    assert attributes == expected
    assert "hunter2" not in repr(attributes)


#: Run in a fresh interpreter: pools used without instrumentation.
_UNINSTRUMENTED = """
import asyncio, sys
import pgfleet

with pgfleet.Pool(min_size=1, timeout=10) as pool:
    for _ in range(3):
        with pool.connection() as conn:
            conn.execute("SELECT 1")
    assert pool._observer is None

async def main():
    async with pgfleet.AsyncPool(min_size=1, timeout=10) as pool:
        async with pool.connection() as conn:
            await conn.execute("SELECT 1")
        assert pool._observer is None

asyncio.run(main())
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
print("opentelemetry modules:", loaded)
"""


def test_no_instrumentation_imports_no_opentelemetry(pg_dsn: str) -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", _UNINSTRUMENTED],
        env={**os.environ, "DATABASE_URL": pg_dsn},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "opentelemetry modules: []" in result.stdout
