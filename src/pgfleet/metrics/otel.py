"""pgfleet pools through the OpenTelemetry metrics API (extra ``pgfleet[otel]``).

    from pgfleet.metrics.otel import instrument

    instruments = instrument(pool)                       # the global MeterProvider
    instruments = instrument(pool, meter_provider=mp)    # or a given one
    instruments.add(other_pool)                          # later, as pools come and go

This registers *observable* (asynchronous) instruments on the meter ``pgfleet``; their
callbacks read each pool's `stats()` whenever the SDK collects, so nothing runs on the
pool's hot paths. It needs only ``opentelemetry-api``; install an SDK and an exporter to send
the data anywhere. One set of instruments serves every pool of a meter provider:
`instrument` returns the same `PoolInstruments` when called again for the same provider.

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

Histograms: the semantic conventions define ``db.client.connection.wait_time``,
``use_time`` and ``create_time`` as histograms, but OpenTelemetry has no asynchronous
histogram, and the pool keeps its own buckets rather than calling out on every checkout.
This module therefore does **not** emit those three: it exposes each one's running total
(``.sum``, seconds) and number of observations (``.count``) as observable counters, from
which a backend computes averages (``rate(sum) / rate(count)``). For the distributions
(percentiles), use the Prometheus collector (`pgfleet.metrics.prometheus`), which exports
the pool's buckets, or read `stats()` directly.

Lifetime: pools are held by weak reference and vanish from the data once garbage collected;
`remove` stops reporting one earlier. OpenTelemetry cannot unregister instruments, so they
stay on the meter (reporting nothing once no pool is left).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Final

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from pgfleet._core import CLOSE_REASONS, PoolStats
from pgfleet._version import __version__
from pgfleet.metrics._pools import PoolSet, ReportsOnPools, StatsSource

__all__ = ["POOL_NAME", "PoolInstruments", "instrument"]

#: The attribute naming the pool on every data point (semantic conventions).
POOL_NAME: Final = "db.client.connection.pool.name"
#: The attribute of ``db.client.connection.count``: ``idle`` or ``used``.
STATE: Final = "db.client.connection.state"
#: The attribute of ``pgfleet.pool.connections_closed``.
CLOSE_REASON: Final = "pgfleet.connection.close_reason"

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

_lock = threading.Lock()
#: The instruments registered on each meter provider (OpenTelemetry keeps the first set of
#: callbacks of an instrument name, so a second set would silently report nothing).
_by_provider: weakref.WeakKeyDictionary[MeterProvider, PoolInstruments] = (
    weakref.WeakKeyDictionary()
)


def instrument(*pools: StatsSource, meter_provider: MeterProvider | None = None) -> PoolInstruments:
    """Report `pools` through OpenTelemetry; returns the provider's `PoolInstruments`.

    `meter_provider` defaults to the global one (``opentelemetry.metrics``). Called again
    for the same provider, it adds the pools to the instruments already registered.
    Raises ValueError if a pool has the name of another registered pool.
    """
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    with _lock:
        instruments = _by_provider.get(provider)
        if instruments is None:
            instruments = PoolInstruments(_provider=provider)
            _by_provider[provider] = instruments
    for pool in pools:
        instruments.add(pool)
    return instruments


class PoolInstruments(ReportsOnPools):
    """The observable instruments of one meter provider and the pools they report on.

    Made by `instrument` (not directly): one per meter provider.
    """

    def __init__(self, *, _provider: MeterProvider) -> None:
        self._pools = PoolSet()
        self.meter = metrics.get_meter(METER_NAME, __version__, meter_provider=_provider)
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

    def _observer(self, read: Read) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(read(stats), {POOL_NAME: name})
                for name, stats in self._pools.snapshots()
            ]

        return observe

    def _observe_connections(self, options: CallbackOptions) -> Iterable[Observation]:
        observations: list[Observation] = []
        for name, stats in self._pools.snapshots():
            observations.append(Observation(stats.idle, {POOL_NAME: name, STATE: "idle"}))
            used = stats.in_use + stats.checking
            observations.append(Observation(used, {POOL_NAME: name, STATE: "used"}))
        return observations

    def _observe_closed(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {POOL_NAME: name, CLOSE_REASON: reason})
            for name, stats in self._pools.snapshots()
            for reason, count in sorted(stats.connections_closed.items())
        ]
