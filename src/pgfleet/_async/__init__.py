"""The asyncio shell: the source the threaded shell is generated from."""

from pgfleet._async.manager import AsyncManager, AsyncPostgresManager
from pgfleet._async.pool import AsyncConnectionGuard, AsyncPool

__all__ = ["AsyncConnectionGuard", "AsyncManager", "AsyncPool", "AsyncPostgresManager"]
