"""pgfleet: a fast, fair, resilient PostgreSQL connection pool for threads and asyncio."""

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
from pgfleet._version import __version__
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
    "CommitOutcomeUnknown",
    "ConnectionGuard",
    "ConnectionPool",
    "DatabaseUnavailable",
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
    "__version__",
    "bulk",
    "rows",
    "tls_info",
    "tx",
]
