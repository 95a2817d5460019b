"""The asyncio shell: the source the threaded shell is generated from."""

from pgfleet._async.manager import AsyncManager, AsyncManagerProtocol
from pgfleet._async.pool import AsyncConnectionGuard, AsyncPool
from pgfleet._async.postgres import AsyncPostgresManager

__all__ = [
    "AsyncConnectionGuard",
    "AsyncManager",
    "AsyncManagerProtocol",
    "AsyncPool",
    "AsyncPostgresManager",
]
