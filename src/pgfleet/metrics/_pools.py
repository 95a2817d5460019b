"""The set of pools an exporter reports on: weakly held, in order, one per name."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from typing import Protocol

from pgfleet._core import PoolStats


class StatsSource(Protocol):
    """What an exporter needs from a pool: `pgfleet.Pool` and `pgfleet.AsyncPool` fit."""

    @property
    def name(self) -> str: ...

    def stats(self) -> PoolStats: ...


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

    def snapshots(self) -> list[tuple[str, PoolStats]]:
        """``(name, stats())`` of every live pool, read now."""
        return [(pool.name, pool.stats()) for pool in self]


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
