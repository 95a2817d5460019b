"""pgfleet: a fast, fair, resilient PostgreSQL connection pool for threads and asyncio."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pgfleet._version import __version__

if TYPE_CHECKING:  # what type checkers and editors see: every name, as if imported eagerly
    from pgfleet import bulk, rows, tx
    from pgfleet._async import (
        AsyncClusterPool,
        AsyncConnectionGuard,
        AsyncConnectionPool,
        AsyncManager,
        AsyncManagerProtocol,
        AsyncNullConnectionPool,
        AsyncPool,
        AsyncPostgresManager,
    )
    from pgfleet._core import PoolStats
    from pgfleet._core.cluster import ClusterStats, HostStats, WriteToken
    from pgfleet._sync import (
        ClusterPool,
        ConnectionGuard,
        ConnectionPool,
        Manager,
        ManagerProtocol,
        NullConnectionPool,
        Pool,
        PostgresManager,
    )
    from pgfleet.errors import (
        CommitOutcomeUnknown,
        DatabaseUnavailable,
        PoolClosed,
        PoolError,
        PoolTimeout,
        TooManyRequests,
        TransactionPoolerError,
    )
    from pgfleet.tls import TLSInfo, tls_info

#: Where each public name lives. It is imported on first use (PEP 562 ``__getattr__``):
#: ``import pgfleet`` alone imports nothing else, and ``from pgfleet import Pool`` brings in
#: the threaded shell without the asyncio one, `pgfleet.bulk`, `pgfleet.tx` or `pgfleet.tls`
#: (issue #15: ``import pgfleet`` at most 1.1x ``import psycopg``).
_LAZY: dict[str, str] = {
    "AsyncClusterPool": "pgfleet._async",
    "AsyncConnectionGuard": "pgfleet._async",
    "AsyncConnectionPool": "pgfleet._async",
    "AsyncManager": "pgfleet._async",
    "AsyncManagerProtocol": "pgfleet._async",
    "AsyncNullConnectionPool": "pgfleet._async",
    "AsyncPool": "pgfleet._async",
    "AsyncPostgresManager": "pgfleet._async",
    "ClusterPool": "pgfleet._sync",
    "ClusterStats": "pgfleet._core.cluster",
    "CommitOutcomeUnknown": "pgfleet.errors",
    "ConnectionGuard": "pgfleet._sync",
    "ConnectionPool": "pgfleet._sync",
    "DatabaseUnavailable": "pgfleet.errors",
    "HostStats": "pgfleet._core.cluster",
    "Manager": "pgfleet._sync",
    "ManagerProtocol": "pgfleet._sync",
    "NullConnectionPool": "pgfleet._sync",
    "Pool": "pgfleet._sync",
    "PoolClosed": "pgfleet.errors",
    "PoolError": "pgfleet.errors",
    "PoolStats": "pgfleet._core",
    "PoolTimeout": "pgfleet.errors",
    "PostgresManager": "pgfleet._sync",
    "TLSInfo": "pgfleet.tls",
    "TooManyRequests": "pgfleet.errors",
    "TransactionPoolerError": "pgfleet.errors",
    "WriteToken": "pgfleet._core.cluster",
    "tls_info": "pgfleet.tls",
}
#: Public submodules, imported on first use too.
_SUBMODULES = frozenset({"bulk", "rows", "tx"})


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"pgfleet.{name}")  # which also sets the attribute
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'pgfleet' has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value  # the next use is a plain attribute read
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "AsyncClusterPool",
    "AsyncConnectionGuard",
    "AsyncConnectionPool",
    "AsyncManager",
    "AsyncManagerProtocol",
    "AsyncNullConnectionPool",
    "AsyncPool",
    "AsyncPostgresManager",
    "ClusterPool",
    "ClusterStats",
    "CommitOutcomeUnknown",
    "ConnectionGuard",
    "ConnectionPool",
    "DatabaseUnavailable",
    "HostStats",
    "Manager",
    "ManagerProtocol",
    "NullConnectionPool",
    "Pool",
    "PoolClosed",
    "PoolError",
    "PoolStats",
    "PoolTimeout",
    "PostgresManager",
    "TLSInfo",
    "TooManyRequests",
    "TransactionPoolerError",
    "WriteToken",
    "__version__",
    "bulk",
    "rows",
    "tls_info",
    "tx",
]
