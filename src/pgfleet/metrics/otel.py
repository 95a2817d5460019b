"""pgfleet pools through the OpenTelemetry metrics API (extra ``pgfleet[otel]``).

    from pgfleet.metrics.otel import instrument

    instruments = instrument(pool)                       # the global MeterProvider
    instruments = instrument(pool, meter_provider=mp)    # or a given one
    instruments.add(other_pool)                          # later, as pools come and go

This registers *observable* (asynchronous) instruments on the meter ``pgfleet``, whose
callbacks read each pool's `stats()` whenever the SDK collects, and the three histograms of
the semantic conventions, which the pool records synchronously, as each checkout, return and
connection happens (see "Histograms" below). It needs only ``opentelemetry-api``; install an
SDK and an exporter to send the data anywhere. One set of instruments serves every pool of a
meter provider: `instrument` returns the same `PoolInstruments` when called again for the
same provider.

Every data point carries ``db.client.connection.pool.name`` (the pool's ``name``). Names
follow the OpenTelemetry semantic conventions for database client connection pools where
they define one, and the ``pgfleet.pool.*`` namespace otherwise:

=========================================  ==============  ============
name                                       instrument      unit
=========================================  ==============  ============
``db.client.connection.count``             up-down ctr.    {connection}
``db.client.connection.max``               up-down ctr.    {connection}
``db.client.connection.pending_requests``  up-down ctr.    {request}
``db.client.connection.timeouts``          counter         {timeout}
``pgfleet.pool.connection.min``            up-down ctr.    {connection}
``pgfleet.pool.connection.connecting``     up-down ctr.    {connection}
``pgfleet.pool.database_down``             gauge           1
``pgfleet.pool.checkouts``                 counter         {checkout}
``pgfleet.pool.checkouts_waited``          counter         {checkout}
``pgfleet.pool.checkouts_rejected``        counter         {checkout}
``pgfleet.pool.checkouts_failed_fast``     counter         {checkout}
``pgfleet.pool.connections_created``       counter         {connection}
``pgfleet.pool.connect_errors``            counter         {error}
``pgfleet.pool.connections_closed``        counter         {connection}
``pgfleet.pool.checks``                    counter         {check}
``pgfleet.pool.checks_failed``             counter         {check}
``pgfleet.pool.resets``                    counter         {reset}
``pgfleet.pool.returns_broken``            counter         {connection}
``pgfleet.pool.leaks``                     counter         {connection}
``pgfleet.pool.transaction_retries``       counter         {retry}
``pgfleet.pool.wait_time.sum``             counter         s
``pgfleet.pool.wait_time.count``           counter         {checkout}
``pgfleet.pool.use_time.sum``              counter         s
``pgfleet.pool.use_time.count``            counter         {checkout}
``pgfleet.pool.create_time.sum``           counter         s
``pgfleet.pool.create_time.count``         counter         {connection}
=========================================  ==============  ============

``db.client.connection.count`` also has ``db.client.connection.state`` (``idle`` or
``used``), ``pgfleet.pool.connections_closed`` has ``pgfleet.connection.close_reason``.
``used`` counts the connections lent (``in_use``) plus those being pinged or reset
(``checking``): open connections that are not available. Connection attempts in progress
are not open connections; they are ``pgfleet.pool.connection.connecting``.

Histograms (unit ``s``), recorded by the pool itself while it is instrumented:

====================================  ===================================================
``db.client.connection.wait_time``    checkout: from asking to holding a connection
``db.client.connection.use_time``     from checkout to return (the rollback included)
``db.client.connection.create_time``  each successful connection attempt
====================================  ===================================================

OpenTelemetry has no asynchronous histogram, so these are the only instruments that cost
anything on the pool's paths: one ``Histogram.record`` per checkout, return or connect, in
the caller's thread or task (so the SDK can attach the current span as an exemplar). A pool
that is not instrumented, or instrumented with ``histograms=False``, pays one attribute test
per checkout and return (README, "Metrics", has the measured cost). Their attributes are
few and fixed per pool, as exemplars and backends like them: ``db.client.connection.pool.name``,
plus ``server.address`` and ``server.port`` when the pool's manager names one host (a
`pgfleet.AsyncPostgresManager` or `pgfleet.PostgresManager`; never the password, and a
multi-host conninfo names none: its connections may be on any of them). The buckets default
to the pool's own (`HISTOGRAM_BUCKETS`, 0.1 ms to 30 s; the conventions advise none for these
three); a View in the SDK can change them. The running totals stay available as observable
counters (``pgfleet.pool.wait_time.sum`` and ``.count``, likewise ``use_time`` and
``create_time``) for averages without the histograms.

Cluster pools (`pgfleet.ClusterPool`, `pgfleet.AsyncClusterPool`) are instrumented as one:
each collection reads the cluster's `stats()` and its ``pools`` as they are then. Every host
pool reports every instrument above with ``db.client.connection.pool.name`` (the host
pool's name, ``cluster[host:port]``), ``pgfleet.cluster.name``, ``server.address`` and
``server.port`` (never the password), its histograms included: each host pool records its
own (one made after `instrument` starts at the next collection). The cluster's own
instruments: ``pgfleet.cluster.failovers`` and ``pgfleet.cluster.fenced`` (counters) and
``pgfleet.cluster.timeline`` (gauge, the newest timeline seen on a writable server), with
``pgfleet.cluster.name``; and per host, with the host pool's attributes,
``pgfleet.cluster.host.primary`` (gauge, 1/0), ``pgfleet.cluster.host.role`` (gauge, 1 for
the current role, 0 for the others, attribute ``pgfleet.cluster.host.role``),
``pgfleet.cluster.host.timeline`` (gauge, while known), ``pgfleet.cluster.host.lag`` (gauge,
``s``, standbys), and the counters ``pgfleet.cluster.host.fenced``, ``.demotions``,
``.reads`` and ``.writes``.

Lifetime: pools are held by weak reference and vanish from the data once garbage collected;
`remove` stops reporting one earlier. OpenTelemetry cannot unregister instruments, so they
stay on the meter (reporting nothing once no pool is left).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, get_args

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Histogram, MeterProvider, Observation

from pgfleet._base import BasePool
from pgfleet._core import CLOSE_REASONS, PoolStats
from pgfleet._core.cluster import ClusterStats, HostStats, Role
from pgfleet._core.stats import BUCKETS
from pgfleet._version import __version__
from pgfleet.metrics._pools import (
    PoolSet,
    PoolSnapshot,
    ReportsOnPools,
    StatsSource,
    host_pools_of,
    server_of,
)

__all__ = ["HISTOGRAM_BUCKETS", "POOL_NAME", "PoolInstruments", "instrument"]

#: The attribute naming the pool on every data point (semantic conventions).
POOL_NAME: Final = "db.client.connection.pool.name"
#: The attribute of ``db.client.connection.count``: ``idle`` or ``used``.
STATE: Final = "db.client.connection.state"
#: The attribute of ``pgfleet.pool.connections_closed``.
CLOSE_REASON: Final = "pgfleet.connection.close_reason"
#: The attributes of the histograms naming the server (when the pool connects to one host).
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
#: The attribute naming the cluster pool on its series and on its host pools' series.
CLUSTER_NAME: Final = "pgfleet.cluster.name"
#: The attribute of ``pgfleet.cluster.host.role``.
ROLE: Final = "pgfleet.cluster.host.role"
#: The roles of a cluster's host, each a data point of ``pgfleet.cluster.host.role``.
ROLES: tuple[Role, ...] = get_args(Role)

#: The histograms' default bucket boundaries (seconds): the pool's own, as in `stats()` and
#: the Prometheus collector. Fast-path checkouts take microseconds: a first bucket of 1 ms
#: (the SDK's defaults are for milliseconds) would hold nearly all of them.
HISTOGRAM_BUCKETS: Final[tuple[float, ...]] = BUCKETS

#: The histograms: name, description.
WAIT_TIME: Final = "db.client.connection.wait_time"
USE_TIME: Final = "db.client.connection.use_time"
CREATE_TIME: Final = "db.client.connection.create_time"
_HISTOGRAMS: tuple[tuple[str, str], ...] = (
    (WAIT_TIME, "The time it took to obtain an open connection from the pool."),
    (USE_TIME, "The time between borrowing a connection and returning it to the pool."),
    (CREATE_TIME, "The time it took to create a new connection."),
)

#: The instrumentation scope of the instruments.
METER_NAME: Final = "pgfleet"

Read = Callable[[PoolStats], float]

#: Observable up-down counters with the pool attribute only: name, unit, description, value.
_UP_DOWN: tuple[tuple[str, str, str, Read], ...] = (
    (
        "db.client.connection.max",
        "{connection}",
        "The maximum number of open connections allowed (max_size).",
        lambda s: s.max_size,
    ),
    (
        "db.client.connection.pending_requests",
        "{request}",
        "The number of checkouts waiting for a connection.",
        lambda s: s.waiting,
    ),
    (
        "pgfleet.pool.connection.min",
        "{connection}",
        "Connections the pool keeps open even when idle (min_size).",
        lambda s: s.min_size,
    ),
    (
        "pgfleet.pool.connection.connecting",
        "{connection}",
        "Connection attempts in progress.",
        lambda s: s.connecting,
    ),
)

#: Observable counters with the pool attribute only: name, unit, description, value.
_COUNTERS: tuple[tuple[str, str, str, Read], ...] = (
    (
        "db.client.connection.timeouts",
        "{timeout}",
        "Checkouts that timed out waiting for a connection (PoolTimeout).",
        lambda s: s.timeouts,
    ),
    ("pgfleet.pool.checkouts", "{checkout}", "Connections lent.", lambda s: s.checkouts),
    (
        "pgfleet.pool.checkouts_waited",
        "{checkout}",
        "Checkouts that had to queue for a connection.",
        lambda s: s.checkouts_waited,
    ),
    (
        "pgfleet.pool.checkouts_rejected",
        "{checkout}",
        "Checkouts refused because max_waiting callers were queued (TooManyRequests).",
        lambda s: s.rejected,
    ),
    (
        "pgfleet.pool.checkouts_failed_fast",
        "{checkout}",
        "Checkouts failed at once while the database was down (DatabaseUnavailable).",
        lambda s: s.failed_fast,
    ),
    (
        "pgfleet.pool.connections_created",
        "{connection}",
        "Connections opened successfully.",
        lambda s: s.connections_created,
    ),
    (
        "pgfleet.pool.connect_errors",
        "{error}",
        "Connection attempts that failed.",
        lambda s: s.connect_errors,
    ),
    ("pgfleet.pool.checks", "{check}", "Health checks (pings) run.", lambda s: s.checks),
    (
        "pgfleet.pool.checks_failed",
        "{check}",
        "Health checks that failed (the connection was discarded).",
        lambda s: s.checks_failed,
    ),
    (
        "pgfleet.pool.resets",
        "{reset}",
        "Returned connections reset (rolled back) before reuse.",
        lambda s: s.resets,
    ),
    (
        "pgfleet.pool.returns_broken",
        "{connection}",
        "Connections that came back unusable and were discarded.",
        lambda s: s.returns_broken,
    ),
    (
        "pgfleet.pool.leaks",
        "{connection}",
        "Connections held longer than leak_timeout.",
        lambda s: s.leaks,
    ),
    (
        "pgfleet.pool.transaction_retries",
        "{retry}",
        "Transactions retried by run_transaction/transactional/transactions.",
        lambda s: s.transaction_retries,
    ),
    # The histograms, as running sums and counts (see the module docstring).
    (
        "pgfleet.pool.wait_time.sum",
        "s",
        "Total time checkouts waited for a connection.",
        lambda s: s.wait_time.total,
    ),
    (
        "pgfleet.pool.wait_time.count",
        "{checkout}",
        "Checkouts whose wait is in pgfleet.pool.wait_time.sum.",
        lambda s: s.wait_time.count,
    ),
    (
        "pgfleet.pool.use_time.sum",
        "s",
        "Total time connections were lent, from checkout to return.",
        lambda s: s.usage_time.total,
    ),
    (
        "pgfleet.pool.use_time.count",
        "{checkout}",
        "Returns whose usage time is in pgfleet.pool.use_time.sum.",
        lambda s: s.usage_time.count,
    ),
    (
        "pgfleet.pool.create_time.sum",
        "s",
        "Total time successful connection attempts took.",
        lambda s: s.connect_time.total,
    ),
    (
        "pgfleet.pool.create_time.count",
        "{connection}",
        "Connections whose connect time is in pgfleet.pool.create_time.sum.",
        lambda s: s.connect_time.count,
    ),
)

#: A cluster's own counters (attribute ``pgfleet.cluster.name``): name, unit, help, value.
_CLUSTER_COUNTERS: tuple[tuple[str, str, str, Callable[[ClusterStats], float]], ...] = (
    (
        "pgfleet.cluster.failovers",
        "{failover}",
        "Times the primary moved to another host.",
        lambda c: c.failovers,
    ),
    (
        "pgfleet.cluster.fenced",
        "{connection}",
        "Connections refused because their server was writable on an older timeline.",
        lambda c: c.fenced,
    ),
)

HostRead = Callable[[HostStats], float | None]

#: A cluster's per-host gauges (the host pool's attributes): name, unit, help, value (None:
#: no data point).
_HOST_GAUGES: tuple[tuple[str, str, str, HostRead], ...] = (
    (
        "pgfleet.cluster.host.primary",
        "1",
        "1 while the host is the cluster's primary, else 0.",
        lambda h: 1 if h.role == "primary" else 0,
    ),
    (
        "pgfleet.cluster.host.timeline",
        "{timeline}",
        "The timeline of the host while writable (no data point while unknown).",
        lambda h: h.timeline,
    ),
    (
        "pgfleet.cluster.host.lag",
        "s",
        "Seconds of the primary's history a standby has not replayed (standbys only).",
        lambda h: h.lag,
    ),
)

#: A cluster's per-host counters: name, unit, help, value.
_HOST_COUNTERS: tuple[tuple[str, str, str, HostRead], ...] = (
    (
        "pgfleet.cluster.host.fenced",
        "{connection}",
        "Connections to the host refused because it was writable on an older timeline.",
        lambda h: h.fenced,
    ),
    (
        "pgfleet.cluster.host.demotions",
        "{demotion}",
        "Times a connection showed the host was no longer primary (read-only, shut down).",
        lambda h: h.demoted,
    ),
    (
        "pgfleet.cluster.host.reads",
        "{checkout}",
        "Read-only checkouts the host served.",
        lambda h: h.reads,
    ),
    (
        "pgfleet.cluster.host.writes",
        "{checkout}",
        "Read-write checkouts the host served.",
        lambda h: h.writes,
    ),
)

_lock = threading.Lock()
#: The instruments registered on each meter provider (OpenTelemetry keeps the first set of
#: callbacks of an instrument name, so a second set would silently report nothing).
_by_provider: weakref.WeakKeyDictionary[MeterProvider, PoolInstruments] = (
    weakref.WeakKeyDictionary()
)


def instrument(
    *pools: StatsSource, meter_provider: MeterProvider | None = None, histograms: bool = True
) -> PoolInstruments:
    """Report `pools` through OpenTelemetry; returns the provider's `PoolInstruments`.

    `meter_provider` defaults to the global one (``opentelemetry.metrics``). Called again
    for the same provider, it adds the pools to the instruments already registered.
    `histograms`: record the wait, use and create time histograms as they happen (the one
    cost on the pool's paths; see the module docstring). Raises ValueError if a pool has the
    name of another registered pool.
    """
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    with _lock:
        instruments = _by_provider.get(provider)
        if instruments is None:
            instruments = PoolInstruments(_provider=provider)
            _by_provider[provider] = instruments
    for pool in pools:
        instruments.add(pool, histograms=histograms)
    return instruments


class PoolInstruments(ReportsOnPools):
    """The observable instruments of one meter provider and the pools they report on.

    Made by `instrument` (not directly): one per meter provider.
    """

    def __init__(self, *, _provider: MeterProvider) -> None:
        self._pools = PoolSet()
        #: The cluster pools whose host pools record the histograms (weakly held).
        self._clusters: weakref.WeakSet[StatsSource] = weakref.WeakSet()
        self.meter = metrics.get_meter(METER_NAME, __version__, meter_provider=_provider)
        wait, use, create = (
            self.meter.create_histogram(
                name,
                unit="s",
                description=description,
                explicit_bucket_boundaries_advisory=HISTOGRAM_BUCKETS,
            )
            for name, description in _HISTOGRAMS
        )
        self._histograms = _Histograms(wait, use, create)
        self.meter.create_observable_up_down_counter(
            "db.client.connection.count",
            callbacks=[self._observe_connections],
            unit="{connection}",
            description="The number of open connections in each state: idle, or used "
            "(lent, or being pinged or reset).",
        )
        for name, unit, description, read in _UP_DOWN:
            self.meter.create_observable_up_down_counter(
                name, callbacks=[self._observer(read)], unit=unit, description=description
            )
        self.meter.create_observable_gauge(
            "pgfleet.pool.database_down",
            callbacks=[self._observer(lambda s: 1 if s.database_down else 0)],
            unit="1",
            description="1 while the pool considers the database unreachable, else 0.",
        )
        for name, unit, description, read in _COUNTERS:
            self.meter.create_observable_counter(
                name, callbacks=[self._observer(read)], unit=unit, description=description
            )
        self.meter.create_observable_counter(
            "pgfleet.pool.connections_closed",
            callbacks=[self._observe_closed],
            unit="{connection}",
            description=f"Connections closed by the pool, by reason: {', '.join(CLOSE_REASONS)}.",
        )
        for name, unit, description, read_cluster in _CLUSTER_COUNTERS:
            self.meter.create_observable_counter(
                name,
                callbacks=[self._cluster_observer(read_cluster)],
                unit=unit,
                description=description,
            )
        self.meter.create_observable_gauge(
            "pgfleet.cluster.timeline",
            callbacks=[self._cluster_observer(lambda c: c.newest_timeline)],
            unit="{timeline}",
            description="The newest timeline seen on a writable server.",
        )
        self.meter.create_observable_gauge(
            "pgfleet.cluster.host.role",
            callbacks=[self._observe_roles],
            unit="1",
            description="1 for the host's current role, 0 for the others "
            f"({ROLE}: {', '.join(ROLES)}).",
        )
        for name, unit, description, read_host in _HOST_GAUGES:
            self.meter.create_observable_gauge(
                name,
                callbacks=[self._host_observer(read_host)],
                unit=unit,
                description=description,
            )
        for name, unit, description, read_host in _HOST_COUNTERS:
            self.meter.create_observable_counter(
                name,
                callbacks=[self._host_observer(read_host)],
                unit=unit,
                description=description,
            )

    def add(self, pool: StatsSource, *, histograms: bool = True) -> None:
        """Report on `pool` too (adding one already registered does nothing).

        `histograms`: the pool records the three histograms (a `Pool` or `AsyncPool`; other
        stats sources have only the observable instruments). Raises ValueError if another
        registered pool has the same name.
        """
        self._pools.add(pool)
        if histograms and isinstance(pool, BasePool):
            _Recording.of(pool).start(self._histograms, histogram_attributes(pool))
        elif histograms and host_pools_of(pool) is not None:
            self._clusters.add(pool)
            self._record_hosts(pool)

    def remove(self, pool: StatsSource) -> None:
        """Stop reporting on `pool`, histograms included (nothing happens if it was not
        registered)."""
        self._pools.remove(pool)
        if isinstance(pool, BasePool):
            _Recording.stop(pool, self._histograms)
        elif pool in self._clusters:
            self._clusters.discard(pool)
            for host_pool in host_pools_of(pool) or ():
                if isinstance(host_pool, BasePool):
                    _Recording.stop(host_pool, self._histograms)

    def _follow_clusters(self) -> None:
        """Start the histograms of host pools a cluster made since the last collection
        (a cluster's ``pools`` is read now, never kept)."""
        for cluster in list(self._clusters):
            self._record_hosts(cluster)

    def _record_hosts(self, cluster: StatsSource) -> None:
        for pool in host_pools_of(cluster) or ():
            if isinstance(pool, BasePool) and not self._records(pool):
                attributes = {**histogram_attributes(pool), CLUSTER_NAME: cluster.name}
                _Recording.of(pool).start(self._histograms, attributes)

    def _records(self, pool: BasePool[Any]) -> bool:
        """Does `pool` record into these histograms already? (Read without the lock: the
        sinks are replaced whole; a wrong "no" only costs taking the lock.)"""
        observer = pool._observer
        return isinstance(observer, _Recording) and any(
            sink is self._histograms for sink, _ in observer._sinks
        )

    def _observer(self, read: Read) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(read(pool.stats), pool_attributes(pool))
                for pool in self._pools.snapshot().pools
            ]

        return observe

    def _observe_connections(self, options: CallbackOptions) -> Iterable[Observation]:
        self._follow_clusters()  # one callback per collection does it
        observations: list[Observation] = []
        for pool in self._pools.snapshot().pools:
            stats = pool.stats
            attributes = pool_attributes(pool)
            observations.append(Observation(stats.idle, {**attributes, STATE: "idle"}))
            used = stats.in_use + stats.checking
            observations.append(Observation(used, {**attributes, STATE: "used"}))
        return observations

    def _observe_closed(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {**pool_attributes(pool), CLOSE_REASON: reason})
            for pool in self._pools.snapshot().pools
            for reason, count in sorted(pool.stats.connections_closed.items())
        ]

    def _cluster_observer(
        self, read: Callable[[ClusterStats], float]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(read(cluster.stats), {CLUSTER_NAME: cluster.name})
                for cluster in self._pools.snapshot().clusters
            ]

        return observe

    def _host_observer(
        self, read: Callable[[HostStats], float | None]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            observations: list[Observation] = []
            for cluster in self._pools.snapshot().clusters:
                for host in cluster.hosts:
                    value = read(host.host)
                    if value is not None:
                        observations.append(Observation(value, pool_attributes(host.pool)))
            return observations

        return observe

    def _observe_roles(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(
                1 if host.host.role == role else 0, {**pool_attributes(host.pool), ROLE: role}
            )
            for cluster in self._pools.snapshot().clusters
            for host in cluster.hosts
            for role in ROLES
        ]


class _Histograms:
    """The three histograms of one meter provider."""

    __slots__ = ("create", "use", "wait")

    def __init__(self, wait: Histogram, use: Histogram, create: Histogram) -> None:
        self.wait = wait
        self.use = use
        self.create = create


class _Recording:
    """A pool's `PoolObserver`: records its durations in the histograms of every provider
    it is instrumented for (usually one), with the pool's attributes."""

    __slots__ = ("_sinks",)

    def __init__(self) -> None:
        #: ``(histograms, attributes)`` per provider; a tuple, replaced whole on a change, so
        #: that a recording thread never sees it half-changed.
        self._sinks: tuple[tuple[_Histograms, Mapping[str, str | int]], ...] = ()

    @classmethod
    def of(cls, pool: BasePool[Any]) -> _Recording:
        """The pool's recording (made and set on the pool on first use)."""
        with _lock:
            observer = pool._observer
            if not isinstance(observer, _Recording):
                observer = cls()
                pool._observer = observer
            return observer

    def start(self, histograms: _Histograms, attributes: Mapping[str, str | int]) -> None:
        with _lock:
            if all(sink is not histograms for sink, _ in self._sinks):
                self._sinks = (*self._sinks, (histograms, attributes))

    @staticmethod
    def stop(pool: BasePool[Any], histograms: _Histograms) -> None:
        with _lock:
            observer = pool._observer
            if not isinstance(observer, _Recording):
                return
            observer._sinks = tuple(s for s in observer._sinks if s[0] is not histograms)
            if not observer._sinks:
                pool._observer = None  # back to one attribute test per checkout

    def checked_out(self, waited: float) -> None:
        for histograms, attributes in self._sinks:
            histograms.wait.record(waited, attributes)

    def returned(self, used: float) -> None:
        for histograms, attributes in self._sinks:
            histograms.use.record(used, attributes)

    def created(self, took: float) -> None:
        for histograms, attributes in self._sinks:
            histograms.create.record(took, attributes)


def histogram_attributes(pool: BasePool[Any]) -> dict[str, str | int]:
    """The histograms' attributes for `pool`: its name, and the server when the pool's
    manager connects to one host (from its parsed conninfo, libpq's ``PGHOST``/``PGPORT``
    filling the gaps; the host passed through the pool's redaction)."""
    return _attributes(pool.name, server_of(pool), None)


def pool_attributes(pool: PoolSnapshot) -> dict[str, str | int]:
    """The attributes of a pool's data points: its name; for a cluster's host pool, the
    cluster's name and the server too."""
    return _attributes(pool.name, pool.server, pool.cluster)


def _attributes(
    name: str, server: tuple[str, int | None] | None, cluster: str | None
) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {POOL_NAME: name}
    if cluster is not None:
        attributes[CLUSTER_NAME] = cluster
    if server is not None:
        address, port = server
        attributes[SERVER_ADDRESS] = address
        if port is not None:
            attributes[SERVER_PORT] = port
    return attributes
