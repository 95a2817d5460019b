"""The set of pools an exporter reports on: weakly held, in order, one per name.

A registered cluster pool (`pgfleet.ClusterPool`, `pgfleet.AsyncClusterPool`: a ``stats()``
returning `ClusterStats`) is read at each collection: its host pools as they are then (never
a list taken at registration), each reported as a pool of its own with its server, plus the
cluster's own numbers.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pgfleet._core import PoolStats
from pgfleet._core.cluster import ClusterStats, HostStats


class StatsSource(Protocol):
    """What an exporter needs from a pool: `pgfleet.Pool` and `pgfleet.AsyncPool` fit."""

    @property
    def name(self) -> str: ...

    def stats(self) -> PoolStats | ClusterStats: ...


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    """One pool's stats, read at one collection, and who it is."""

    name: str
    stats: PoolStats
    #: ``(address, port)`` of the one server the pool connects to, when it names one (the
    #: host pools of a cluster always do); never a password.
    server: tuple[str, int | None] | None = None
    #: The name of the cluster pool this is a host pool of (None: a pool on its own).
    cluster: str | None = None


@dataclass(frozen=True, slots=True)
class HostSnapshot:
    """One host of a cluster at one collection: its host pool and its role and counters."""

    pool: PoolSnapshot
    host: HostStats


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """A cluster pool at one collection (one ``stats()`` call)."""

    name: str
    stats: ClusterStats
    hosts: tuple[HostSnapshot, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything an exporter reports at one collection."""

    #: The pools on their own, then every host pool of every cluster.
    pools: list[PoolSnapshot]
    clusters: list[ClusterSnapshot]


class PoolSet:
    """Pools held by weak reference, so that registering one never keeps it alive.

    Two live pools with the same name would report clashing series, so `add` refuses the
    second one (`remove` the first, or name the pools apart).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._refs: dict[int, weakref.ref[StatsSource]] = {}

    def add(self, pool: StatsSource) -> None:
        if not callable(getattr(pool, "stats", None)) or not isinstance(
            getattr(pool, "name", None), str
        ):
            raise TypeError(f"expected a pool with a name and stats(), got {pool!r}")
        with self._lock:
            key = id(pool)
            known = self._refs.get(key)
            if known is not None and known() is pool:
                return
            for other in self._live():
                if other.name == pool.name:
                    raise ValueError(
                        f"a pool named {pool.name!r} is already registered; remove it first "
                        "or give the pools distinct names"
                    )
            self._refs[key] = weakref.ref(pool)

    def remove(self, pool: StatsSource) -> None:
        """Stop reporting on `pool` (nothing happens if it was not registered)."""
        with self._lock:
            ref = self._refs.get(id(pool))
            if ref is not None and ref() is pool:
                del self._refs[id(pool)]

    def __iter__(self) -> Iterator[StatsSource]:
        with self._lock:
            return iter(self._live())

    def __len__(self) -> int:
        with self._lock:
            return len(self._live())

    def _live(self) -> list[StatsSource]:
        """The live pools, pruning dead references (under the lock; no weakref callbacks,
        which could run in the middle of a locked section)."""
        live: list[StatsSource] = []
        for key, ref in list(self._refs.items()):
            pool = ref()
            if pool is None:
                del self._refs[key]
            else:
                live.append(pool)
        return live

    def snapshot(self) -> Snapshot:
        """Every live pool's `stats()`, read now (a cluster's once, host pools included)."""
        pools: list[PoolSnapshot] = []
        clusters: list[ClusterSnapshot] = []
        for source in self:
            host_pools = host_pools_of(source)  # before stats(): a host added in between
            stats = source.stats()  # is missed this time, not mislabelled
            if isinstance(stats, ClusterStats):
                cluster = _cluster_snapshot(stats, host_pools or ())
                clusters.append(cluster)
            else:
                pools.append(PoolSnapshot(source.name, stats))
        pools.extend(host.pool for cluster in clusters for host in cluster.hosts)
        return Snapshot(pools, clusters)


def host_pools_of(source: object) -> Sequence[Any] | None:
    """A cluster pool's host pools as they are now (its ``pools``), else None."""
    pools = getattr(source, "pools", None)
    if isinstance(pools, Sequence) and not isinstance(pools, str):
        return pools
    return None


def _cluster_snapshot(stats: ClusterStats, host_pools: Sequence[Any]) -> ClusterSnapshot:
    """Pair each host of `stats` with its host pool (named ``cluster[host:port]``)."""
    by_name = {getattr(pool, "name", None): pool for pool in host_pools}
    hosts: list[HostSnapshot] = []
    for host in stats.hosts:
        name = f"{stats.name}[{host.label}]"
        pool = by_name.get(name)
        server = server_of(pool) if pool is not None else None
        if server is None:
            address, _, port = host.label.rpartition(":")
            server = (address, int(port)) if address and port.isdigit() else None
        hosts.append(HostSnapshot(PoolSnapshot(name, host.pool, server, stats.name), host))
    return ClusterSnapshot(stats.name, stats, tuple(hosts))


def server_of(pool: object) -> tuple[str, int | None] | None:
    """``(address, port)`` of the one server `pool` connects to, from its manager's parsed
    conninfo (libpq's ``PGHOST``/``PGPORT`` filling the gaps; the address passed through
    the pool's redaction); None when the conninfo names several hosts or none (libpq's
    default socket), or the manager has no conninfo."""
    params = getattr(getattr(getattr(pool, "manager", None), "target", None), "params", None)
    if not isinstance(params, Mapping):
        return None
    host = params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST")
    port = str(params.get("port") or os.environ.get("PGPORT") or "5432")
    if not host or "," in host or "," in port:
        return None  # libpq's default socket, or several hosts: any of them
    redact = getattr(pool, "_redact", None)
    address = redact(host) if callable(redact) else str(host)
    return address, int(port) if port.isdigit() else None


class ReportsOnPools:
    """The pool registration both exporters offer, over their `PoolSet`."""

    _pools: PoolSet

    def add(self, pool: StatsSource) -> None:
        """Report on `pool` too (adding one already registered does nothing).

        Raises ValueError if another registered pool has the same name.
        """
        self._pools.add(pool)

    def remove(self, pool: StatsSource) -> None:
        """Stop reporting on `pool` (nothing happens if it was not registered)."""
        self._pools.remove(pool)

    @property
    def pools(self) -> list[StatsSource]:
        """The live registered pools, in the order they were added."""
        return list(self._pools)
