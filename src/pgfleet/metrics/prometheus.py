"""A Prometheus collector for pgfleet pools (extra ``pgfleet[prometheus]``).

    from prometheus_client import REGISTRY
    from pgfleet.metrics.prometheus import PoolCollector

    collector = PoolCollector(pool)          # one or many pools
    REGISTRY.register(collector)
    collector.add(other_pool)                # later, as pools come and go

Every scrape calls each pool's `stats()` once and reports that one snapshot, so the numbers
of a pool are consistent with each other. Every series has the label ``pool`` (the pool's
``name``); names must be unique among the registered pools.

Metrics (the counters are exposed with the ``_total`` suffix, the histograms with
``_bucket``/``_sum``/``_count``; the histogram buckets are the pool's, cumulative, with
``+Inf``):

==========================================  =========  ===============================
name                                        type       labels besides ``pool``
==========================================  =========  ===============================
``pgfleet_pool_connections``                gauge      ``state``: idle, in_use,
                                                       checking, connecting
``pgfleet_pool_connections_min``            gauge
``pgfleet_pool_connections_max``            gauge
``pgfleet_pool_waiting``                    gauge
``pgfleet_pool_database_down``              gauge
``pgfleet_checkouts_total``                 counter
``pgfleet_checkouts_waited_total``          counter
``pgfleet_checkout_timeouts_total``         counter
``pgfleet_checkouts_rejected_total``        counter
``pgfleet_checkouts_failed_fast_total``     counter
``pgfleet_connections_created_total``       counter
``pgfleet_connect_errors_total``            counter
``pgfleet_connections_closed_total``        counter    ``reason``
``pgfleet_connection_checks_total``         counter
``pgfleet_connection_checks_failed_total``  counter
``pgfleet_connection_resets_total``         counter
``pgfleet_returns_broken_total``            counter
``pgfleet_connection_leaks_total``          counter
``pgfleet_transaction_retries_total``       counter
``pgfleet_checkout_wait_seconds``           histogram
``pgfleet_connection_usage_seconds``        histogram
``pgfleet_connect_seconds``                 histogram
==========================================  =========  ===============================

A cluster pool (`pgfleet.ClusterPool`, `pgfleet.AsyncClusterPool`) is registered as one:
each scrape reads its `stats()` once and its ``pools`` as they are then (a host pool the
cluster adds or replaces is reported, nothing kept from registration). Each host pool gets
every series above, its ``pool`` label being the host pool's name (``cluster[host:port]``),
plus the *host labels* ``cluster``, ``server_address`` and ``server_port`` (from the host's
conninfo, never the password). The cluster's own series:

=======================================  =======  ====================================
name                                     type     labels
=======================================  =======  ====================================
``pgfleet_cluster_failovers_total``      counter  ``cluster``
``pgfleet_cluster_fenced_total``         counter  ``cluster``
``pgfleet_cluster_timeline``             gauge    ``cluster``
``pgfleet_cluster_host_primary``         gauge    ``cluster``, ``pool``, server labels
``pgfleet_cluster_host_role``            gauge    the same, ``role`` (1 for the current)
``pgfleet_cluster_host_timeline``        gauge    the same (absent while unknown)
``pgfleet_cluster_host_lag_seconds``     gauge    the same (standbys only)
``pgfleet_cluster_host_fenced_total``    counter  the same
``pgfleet_cluster_host_demotions_total`` counter  the same
``pgfleet_cluster_host_reads_total``     counter  the same
``pgfleet_cluster_host_writes_total``    counter  the same
=======================================  =======  ====================================

``pgfleet_pool_connections`` is one gauge with a ``state`` label (rather than one gauge per
state) because the states partition the pool: ``sum without (state)`` is the pool's size.

Lifetime: the collector holds its pools by weak reference; a pool that has been garbage
collected simply disappears from the output. A closed pool that is still referenced keeps
reporting its last numbers until it is removed with `remove`.

Threads: `pgfleet.Pool.stats()` takes the pool's lock. `pgfleet.AsyncPool.stats()` takes no
lock (the asyncio pool lives on one thread); scraped from another thread (for example
``prometheus_client.start_http_server``) each number is read atomically, but the gauges of
one scrape may come from instants a few microseconds apart. Serve ``/metrics`` from the
event loop (``generate_latest()`` in a handler) for a strictly consistent snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import get_args

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from pgfleet._core import CLOSE_REASONS, PoolStats
from pgfleet._core.cluster import ClusterStats, HostStats, Role
from pgfleet._core.stats import HistogramSnapshot
from pgfleet.metrics._pools import (
    ClusterSnapshot,
    HostSnapshot,
    PoolSet,
    PoolSnapshot,
    ReportsOnPools,
    Snapshot,
    StatsSource,
)

__all__ = ["PoolCollector"]

#: The connection states of ``pgfleet_pool_connections``, with how to read each one.
_STATES: tuple[tuple[str, Callable[[PoolStats], int]], ...] = (
    ("idle", lambda s: s.idle),
    ("in_use", lambda s: s.in_use),
    ("checking", lambda s: s.checking),
    ("connecting", lambda s: s.connecting),
)

#: Gauges with the ``pool`` label only: name, help, value.
_GAUGES: tuple[tuple[str, str, Callable[[PoolStats], float]], ...] = (
    (
        "pgfleet_pool_connections_min",
        "Connections the pool keeps open even when idle (min_size).",
        lambda s: s.min_size,
    ),
    (
        "pgfleet_pool_connections_max",
        "The most connections the pool may have open at once (max_size).",
        lambda s: s.max_size,
    ),
    (
        "pgfleet_pool_waiting",
        "Checkouts queued, waiting for a connection.",
        lambda s: s.waiting,
    ),
    (
        "pgfleet_pool_database_down",
        "1 while the pool considers the database unreachable, else 0.",
        lambda s: 1 if s.database_down else 0,
    ),
)

#: Counters with the ``pool`` label only: name (without ``_total``), help, value.
_COUNTERS: tuple[tuple[str, str, Callable[[PoolStats], float]], ...] = (
    ("pgfleet_checkouts", "Connections lent by the pool.", lambda s: s.checkouts),
    (
        "pgfleet_checkouts_waited",
        "Checkouts that had to queue for a connection.",
        lambda s: s.checkouts_waited,
    ),
    (
        "pgfleet_checkout_timeouts",
        "Checkouts that gave up after their timeout (PoolTimeout).",
        lambda s: s.timeouts,
    ),
    (
        "pgfleet_checkouts_rejected",
        "Checkouts refused because max_waiting callers were queued (TooManyRequests).",
        lambda s: s.rejected,
    ),
    (
        "pgfleet_checkouts_failed_fast",
        "Checkouts failed at once while the database was down (DatabaseUnavailable).",
        lambda s: s.failed_fast,
    ),
    (
        "pgfleet_connections_created",
        "Connections opened successfully.",
        lambda s: s.connections_created,
    ),
    ("pgfleet_connect_errors", "Connection attempts that failed.", lambda s: s.connect_errors),
    ("pgfleet_connection_checks", "Health checks (pings) run.", lambda s: s.checks),
    (
        "pgfleet_connection_checks_failed",
        "Health checks that failed (the connection was discarded).",
        lambda s: s.checks_failed,
    ),
    (
        "pgfleet_connection_resets",
        "Returned connections reset (rolled back) before reuse.",
        lambda s: s.resets,
    ),
    (
        "pgfleet_returns_broken",
        "Connections that came back unusable and were discarded.",
        lambda s: s.returns_broken,
    ),
    (
        "pgfleet_connection_leaks",
        "Connections held longer than leak_timeout.",
        lambda s: s.leaks,
    ),
    (
        "pgfleet_transaction_retries",
        "Transactions retried by run_transaction/transactional/transactions.",
        lambda s: s.transaction_retries,
    ),
)

#: Histograms: name (ending in ``_seconds``), help, value.
_HISTOGRAMS: tuple[tuple[str, str, Callable[[PoolStats], HistogramSnapshot]], ...] = (
    (
        "pgfleet_checkout_wait_seconds",
        "Time a checkout waited for a connection (0 when one was idle).",
        lambda s: s.wait_time,
    ),
    (
        "pgfleet_connection_usage_seconds",
        "Time a connection was lent, from checkout to return.",
        lambda s: s.usage_time,
    ),
    (
        "pgfleet_connect_seconds",
        "Time a successful connection attempt took.",
        lambda s: s.connect_time,
    ),
)

#: The roles a cluster's host can have, in the order of ``pgfleet_cluster_host_role``.
ROLES: tuple[Role, ...] = get_args(Role)

Family = type[GaugeMetricFamily] | type[CounterMetricFamily]

#: A cluster's own series, with the ``cluster`` label only: name, kind, help, value.
_CLUSTER_SERIES: tuple[tuple[str, Family, str, Callable[[ClusterStats], float]], ...] = (
    (
        "pgfleet_cluster_failovers",
        CounterMetricFamily,
        "Times the primary moved to another host.",
        lambda c: c.failovers,
    ),
    (
        "pgfleet_cluster_fenced",
        CounterMetricFamily,
        "Connections refused because their server was writable on an older timeline.",
        lambda c: c.fenced,
    ),
    (
        "pgfleet_cluster_timeline",
        GaugeMetricFamily,
        "The newest timeline seen on a writable server.",
        lambda c: c.newest_timeline,
    ),
)

#: The labels of a cluster's per-host series (its host pool's series have them too).
_HOST_LABELS = ["cluster", "pool", "server_address", "server_port"]
_HOST_ROLE = "pgfleet_cluster_host_role"

#: A cluster's per-host series: name, kind, help, value (None: no sample).
_HOST_SERIES: tuple[tuple[str, Family, str, Callable[[HostStats], float | None]], ...] = (
    (
        "pgfleet_cluster_host_primary",
        GaugeMetricFamily,
        "1 while the host is the cluster's primary, else 0.",
        lambda h: 1 if h.role == "primary" else 0,
    ),
    (
        "pgfleet_cluster_host_timeline",
        GaugeMetricFamily,
        "The timeline of the host while writable (absent while unknown).",
        lambda h: h.timeline,
    ),
    (
        "pgfleet_cluster_host_lag_seconds",
        GaugeMetricFamily,
        "Seconds of the primary's history a standby has not replayed (standbys only).",
        lambda h: h.lag,
    ),
    (
        "pgfleet_cluster_host_fenced",
        CounterMetricFamily,
        "Connections to the host refused because it was writable on an older timeline.",
        lambda h: h.fenced,
    ),
    (
        "pgfleet_cluster_host_demotions",
        CounterMetricFamily,
        "Times a connection showed the host was no longer primary (read-only, shut down).",
        lambda h: h.demoted,
    ),
    (
        "pgfleet_cluster_host_reads",
        CounterMetricFamily,
        "Read-only checkouts the host served.",
        lambda h: h.reads,
    ),
    (
        "pgfleet_cluster_host_writes",
        CounterMetricFamily,
        "Read-write checkouts the host served.",
        lambda h: h.writes,
    ),
)

_CLOSED = "pgfleet_connections_closed"
_CONNECTIONS = "pgfleet_pool_connections"


class PoolCollector(ReportsOnPools, Collector):
    """Report the `stats()` of one or more pools to Prometheus, at scrape time.

    Register it with a ``prometheus_client`` registry (``REGISTRY.register(collector)``).
    Pools are held weakly; `add` refuses a second live pool with a name already present.
    """

    def __init__(self, *pools: StatsSource) -> None:
        self._pools = PoolSet()
        for pool in pools:
            self._pools.add(pool)

    def describe(self) -> Iterable[Metric]:
        """The metric families without samples, so that a registry can check the names
        for clashes even while no pool is registered."""
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        """The metric families with one snapshot of every registered pool."""
        return self._families(self._pools.snapshot())

    def _families(self, snapshot: Snapshot | None) -> Iterator[Metric]:
        pools = snapshot.pools if snapshot is not None else []
        clusters = snapshot.clusters if snapshot is not None else []
        connections = GaugeMetricFamily(
            _CONNECTIONS,
            "Connections by state: idle, in_use (lent), checking (being pinged or reset), "
            "connecting (attempts in progress). Their sum is the pool's size.",
            labels=["pool", "state"],
        )
        for pool in pools:
            with _host_labels(connections, pool):
                for state, read in _STATES:
                    connections.add_metric([pool.name, state], read(pool.stats))
        yield connections

        for metric, documentation, value in _GAUGES:
            gauge = GaugeMetricFamily(metric, documentation, labels=["pool"])
            for pool in pools:
                with _host_labels(gauge, pool):
                    gauge.add_metric([pool.name], value(pool.stats))
            yield gauge

        for metric, documentation, value in _COUNTERS:
            counter = CounterMetricFamily(metric, documentation, labels=["pool"])
            for pool in pools:
                with _host_labels(counter, pool):
                    counter.add_metric([pool.name], value(pool.stats))
            yield counter

        closed = CounterMetricFamily(
            _CLOSED,
            f"Connections closed by the pool, by reason: {', '.join(CLOSE_REASONS)}.",
            labels=["pool", "reason"],
        )
        for pool in pools:
            with _host_labels(closed, pool):
                for reason, count in sorted(pool.stats.connections_closed.items()):
                    closed.add_metric([pool.name, reason], count)
        yield closed

        for metric, documentation, histogram_of in _HISTOGRAMS:
            histogram = HistogramMetricFamily(
                metric, documentation, labels=["pool"], unit="seconds"
            )
            for pool in pools:
                histogram_snapshot = histogram_of(pool.stats)
                with _host_labels(histogram, pool):
                    histogram.add_metric(
                        [pool.name],
                        cumulative_buckets(histogram_snapshot),
                        histogram_snapshot.total,
                    )
            yield histogram

        yield from _cluster_families(clusters)


def _cluster_families(clusters: list[ClusterSnapshot]) -> Iterator[Metric]:
    """The clusters' own series: per cluster, then per host (with the host pool's labels)."""
    for metric, family, documentation, cluster_value in _CLUSTER_SERIES:
        series = family(metric, documentation, labels=["cluster"])
        for cluster in clusters:
            series.add_metric([cluster.name], cluster_value(cluster.stats))
        yield series

    role = GaugeMetricFamily(
        _HOST_ROLE,
        "1 for the host's current role, 0 for the others: "
        f"{', '.join(ROLES)} (unknown: not asked since something went wrong).",
        labels=[*_HOST_LABELS, "role"],
    )
    for cluster in clusters:
        for host in cluster.hosts:
            for name in ROLES:
                role.add_metric([*_host_values(host), name], 1 if host.host.role == name else 0)
    yield role

    for metric, family, documentation, host_value in _HOST_SERIES:
        series = family(metric, documentation, labels=_HOST_LABELS)
        for cluster in clusters:
            for host in cluster.hosts:
                value = host_value(host.host)
                if value is not None:
                    series.add_metric(_host_values(host), value)
        yield series


def _host_values(host: HostSnapshot) -> list[str]:
    """The values of `_HOST_LABELS` for one host."""
    address, port = host.pool.server or ("", None)
    return [host.pool.cluster or "", host.pool.name, address, "" if port is None else str(port)]


@contextmanager
def _host_labels(family: Metric, pool: PoolSnapshot) -> Iterator[None]:
    """Give the samples added in the block a cluster's host labels, when `pool` is the
    host pool of a cluster (a pool on its own keeps the ``pool`` label alone)."""
    start = len(family.samples)
    yield
    if pool.cluster is None:
        return
    address, port = pool.server or ("", None)
    extra = {
        "cluster": pool.cluster,
        "server_address": address,
        "server_port": "" if port is None else str(port),
    }
    family.samples[start:] = [
        sample._replace(labels={**sample.labels, **extra}) for sample in family.samples[start:]
    ]


def cumulative_buckets(snapshot: HistogramSnapshot) -> list[tuple[str, float]]:
    """Prometheus buckets: ``(le, observations <= le)``, cumulative, ending with ``+Inf``.

    pgfleet's snapshot counts each bucket apart and keeps the overflow in its last count.
    """
    bounds = [_le(bound) for bound in snapshot.buckets] + ["+Inf"]
    if len(bounds) != len(snapshot.counts):
        raise ValueError(
            f"histogram with {len(snapshot.buckets)} bounds has {len(snapshot.counts)} counts"
        )
    buckets: list[tuple[str, float]] = []
    seen = 0
    for bound, count in zip(bounds, snapshot.counts, strict=True):
        seen += count
        buckets.append((bound, seen))
    return buckets


def _le(bound: float) -> str:
    """A bucket bound as Prometheus' own client writes it (``0.005``, ``1.0``)."""
    return repr(float(bound))
