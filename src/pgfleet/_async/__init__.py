"""The shell for asyncio programs: `AsyncPool`, its managers and its connection guard."""

from pgfleet._async.manager import AsyncManager, AsyncPostgresManager
from pgfleet._async.pool import AsyncConnectionGuard, AsyncPool

__all__ = ["AsyncConnectionGuard", "AsyncManager", "AsyncPool", "AsyncPostgresManager"]
