"""The shell for asyncio programs: `AsyncPool`, its managers and its connection guard."""

from pgfleet._async.cluster import AsyncClusterGuard, AsyncClusterPool
from pgfleet._async.compat import AsyncConnectionPool, AsyncNullConnectionPool
from pgfleet._async.manager import AsyncManager, AsyncManagerProtocol
from pgfleet._async.pool import AsyncConnectionGuard, AsyncPool
from pgfleet._async.postgres import AsyncPostgresManager

__all__ = [
    "AsyncClusterGuard",
    "AsyncClusterPool",
    "AsyncConnectionGuard",
    "AsyncConnectionPool",
    "AsyncManager",
    "AsyncManagerProtocol",
    "AsyncNullConnectionPool",
    "AsyncPool",
    "AsyncPostgresManager",
]
