"""The metrics exporters on a cluster pool (`AsyncClusterPool`), a real primary and standby:
every host pool as its own series (with its server), the histograms per host, and the cluster's
failovers, fencing and roles, through a crash, a promotion and a stale primary's return.

The async file is the source, the threaded one is generated (``python tools/gen_sync.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest

from pgfleet import AsyncClusterPool, AsyncPool
from pgfleet.metrics.otel import CLUSTER_NAME, POOL_NAME, ROLE, WAIT_TIME, instrument
from pgfleet.metrics.prometheus import PoolCollector
from support.cluster import APP_PASSWORD, HOST
from support.flavours import AsyncFlavour
from support.replication import PgNode, Replication, multi_host_conninfo

pytestmark = pytest.mark.pg

NAME = "orders"
README = Path(__file__).resolve().parents[3] / "README.md"


@pytest.fixture
def otel() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    yield provider, reader
    provider.shutdown()


def host_name(node: PgNode) -> str:
    """The name of the host pool of `node`."""
    return f"{NAME}[{HOST}:{node.port}]"


def host_labels(node: PgNode) -> dict[str, str]:
    """The Prometheus labels of every series of `node`'s host pool."""
    return {
        "cluster": NAME,
        "pool": host_name(node),
        "server_address": HOST,
        "server_port": str(node.port),
    }


def prom(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    """The value of one sample (None: no such sample)."""
    return registry.get_sample_value(name, labels)


def otel_points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    """The data points of every instrument, collected now."""
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: list(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


def otel_value(points: dict[str, list[Any]], name: str, **attributes: Any) -> float | None:
    """The value of the one data point of `name` having `attributes` (None: none has)."""
    found = [
        p.value
        for p in points.get(name, [])
        if all(p.attributes.get(k) == v for k, v in attributes.items())
    ]
    assert len(found) <= 1, (name, attributes, found)
    return found[0] if found else None


def otel_host(node: PgNode) -> dict[str, Any]:
    """The OpenTelemetry attributes of `node`'s host pool."""
    return {
        CLUSTER_NAME: NAME,
        POOL_NAME: host_name(node),
        "server.address": HOST,
        "server.port": node.port,
    }


async def test_cluster_series_per_host_through_failover_and_fencing(
    make_replication: Any, otel: tuple[MeterProvider, InMemoryMetricReader]
) -> None:
    rs: Replication = make_replication(standbys=1)
    old, new = rs.primary, rs.standbys[0]
    provider, reader = otel
    registry = CollectorRegistry()
    pool = AsyncClusterPool(
        rs.conninfo(connect_timeout=2),
        name=NAME,
        min_size=1,
        max_size=2,
        timeout=10.0,
        lag_interval=0.1,
    )
    async with pool:
        registry.register(PoolCollector(pool))
        instrument(pool, meter_provider=provider)
        async with pool.connection() as conn:
            await conn.execute("SELECT 1")
        async with pool.connection(read_only=True) as conn:
            await conn.execute("SELECT 1")
        await AsyncFlavour.wait_until(
            lambda: all(h.pool.idle >= 1 for h in pool.stats().hosts), timeout=15.0
        )

        # Each host pool is its own set of series, labelled with its server.
        for node in (old, new):
            labels = host_labels(node)
            assert prom(registry, "pgfleet_pool_connections", state="idle", **labels)
            assert prom(registry, "pgfleet_connections_created_total", **labels)
            assert prom(registry, "pgfleet_checkouts_total", **labels)
            assert prom(registry, "pgfleet_checkout_wait_seconds_count", **labels)
            assert prom(registry, "pgfleet_cluster_host_reads_total", **labels) is not None
        assert prom(registry, "pgfleet_cluster_host_primary", **host_labels(old)) == 1
        assert prom(registry, "pgfleet_cluster_host_primary", **host_labels(new)) == 0
        assert prom(registry, "pgfleet_cluster_host_role", role="standby", **host_labels(new))
        assert prom(registry, "pgfleet_cluster_host_writes_total", **host_labels(old)) == 1
        assert prom(registry, "pgfleet_cluster_host_reads_total", **host_labels(new)) == 1
        assert prom(registry, "pgfleet_cluster_host_timeline", **host_labels(old)) == 1
        assert prom(registry, "pgfleet_cluster_timeline", cluster=NAME) == 1
        assert prom(registry, "pgfleet_cluster_failovers_total", cluster=NAME) == 0
        assert prom(registry, "pgfleet_cluster_fenced_total", cluster=NAME) == 0
        await AsyncFlavour.wait_until(
            lambda: (
                prom(registry, "pgfleet_cluster_host_lag_seconds", **host_labels(new)) is not None
            ),
            timeout=15.0,
        )

        points = otel_points(reader)
        for node in (old, new):
            attributes = otel_host(node)
            assert otel_value(
                points,
                "db.client.connection.count",
                **attributes,
                **{"db.client.connection.state": "idle"},
            )
            assert otel_value(points, "pgfleet.pool.checkouts", **attributes)
            # The histograms, recorded as it happened, per host.
            [wait] = [
                p
                for p in points[WAIT_TIME]
                if isinstance(p, HistogramDataPoint) and dict(p.attributes or {}) == attributes
            ]
            assert wait.count >= 1
        assert otel_value(points, "pgfleet.cluster.host.primary", **otel_host(old)) == 1
        assert otel_value(points, "pgfleet.cluster.host.primary", **otel_host(new)) == 0
        assert (
            otel_value(points, "pgfleet.cluster.host.role", **otel_host(new), **{ROLE: "standby"})
            == 1
        )
        assert otel_value(points, "pgfleet.cluster.failovers", **{CLUSTER_NAME: NAME}) == 0
        cluster_instruments = {name for name in points if name.startswith("pgfleet.cluster.")}
        assert len(cluster_instruments) == 11
        readme = README.read_text()
        assert not [name for name in cluster_instruments if f"`{name}`" not in readme]

        # Crash and promote: the failover counter moves, and so do the roles.
        await AsyncFlavour.blocking(rs.crash, old)
        await AsyncFlavour.blocking(rs.promote, new)
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT inet_server_port()")
            assert await cur.fetchone() == (new.port,)
        assert prom(registry, "pgfleet_cluster_failovers_total", cluster=NAME) == 1
        assert prom(registry, "pgfleet_cluster_host_primary", **host_labels(new)) == 1
        assert prom(registry, "pgfleet_cluster_host_primary", **host_labels(old)) == 0
        assert prom(registry, "pgfleet_cluster_host_role", role="primary", **host_labels(new))
        assert prom(registry, "pgfleet_cluster_timeline", cluster=NAME) == 2
        assert prom(registry, "pgfleet_cluster_host_timeline", **host_labels(new)) == 2
        points = otel_points(reader)
        assert otel_value(points, "pgfleet.cluster.failovers", **{CLUSTER_NAME: NAME}) == 1
        assert otel_value(points, "pgfleet.cluster.host.primary", **otel_host(new)) == 1
        assert (
            otel_value(points, "pgfleet.cluster.host.role", **otel_host(old), **{ROLE: "primary"})
            == 0
        )

        # The old primary comes back writable on timeline 1; every connection is remade:
        # its connections are refused, and counted.
        await AsyncFlavour.blocking(rs.start_old_primary_as_writable, old)
        await pool.drain()
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT inet_server_port()")
            assert await cur.fetchone() == (new.port,)
        await AsyncFlavour.wait_until(lambda: pool.stats().fenced >= 1, timeout=15.0)
        fenced = prom(registry, "pgfleet_cluster_fenced_total", cluster=NAME)
        assert (fenced or 0) >= 1
        host_fenced = prom(registry, "pgfleet_cluster_host_fenced_total", **host_labels(old))
        assert (host_fenced or 0) >= 1
        assert prom(registry, "pgfleet_cluster_host_fenced_total", **host_labels(new)) == 0
        assert prom(registry, "pgfleet_cluster_host_role", role="stale", **host_labels(old))
        points = otel_points(reader)
        otel_fenced = otel_value(points, "pgfleet.cluster.fenced", **{CLUSTER_NAME: NAME})
        assert (otel_fenced or 0) >= 1
        otel_host_fenced = otel_value(points, "pgfleet.cluster.host.fenced", **otel_host(old))
        assert (otel_host_fenced or 0) >= 1

        # No password anywhere in what the exporters give out.
        exposition = generate_latest(registry).decode()
        assert APP_PASSWORD not in exposition
        assert APP_PASSWORD not in repr(reader.get_metrics_data())


def wait_count(reader: InMemoryMetricReader, attributes: dict[str, Any]) -> int:
    """The count of the wait-time histogram's data point with exactly `attributes`."""
    points = otel_points(reader).get(WAIT_TIME, [])
    return sum(p.count for p in points if dict(p.attributes) == attributes)


async def test_a_host_pool_replaced_later_is_exported(
    shared_replication: Replication, otel: tuple[MeterProvider, InMemoryMetricReader]
) -> None:
    """The exporters read the cluster's ``pools`` at each collection, never a list kept
    from registration: a host pool the cluster replaces is reported, histograms included."""
    rs = shared_replication
    standby = rs.standbys[0]
    provider, reader = otel
    registry = CollectorRegistry()
    pool = AsyncClusterPool(
        rs.conninfo(connect_timeout=2), name=NAME, min_size=0, max_size=2, lag_interval=60.0
    )
    async with pool:
        registry.register(PoolCollector(pool))
        instrument(pool, meter_provider=provider)
        assert prom(registry, "pgfleet_pool_connections_max", **host_labels(standby)) == 2
        [index] = [i for i, p in enumerate(pool.pools) if p.name == host_name(standby)]
        replaced = pool.pools[index]
        replacement = AsyncPool(
            multi_host_conninfo([standby], connect_timeout=2),
            name=host_name(standby),
            min_size=0,
            max_size=7,
        )
        async with replacement:
            pool.pools = tuple(replacement if p is replaced else p for p in pool.pools)
            await replaced.close()  # records nothing more
            assert prom(registry, "pgfleet_pool_connections_max", **host_labels(standby)) == 7
            before = wait_count(reader, otel_host(standby))  # this collection picks it up
            async with replacement.connection() as conn:
                await conn.execute("SELECT 1")
            assert wait_count(reader, otel_host(standby)) >= before + 1
            exposition = generate_latest(registry).decode()
            assert APP_PASSWORD not in exposition
