"""The shell for asyncio programs: `AsyncPool`, its managers and its connection guard."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and editors see: every name, as if imported eagerly
    from pgfleet._async.cluster import AsyncClusterGuard, AsyncClusterPool
    from pgfleet._async.compat import AsyncConnectionPool, AsyncNullConnectionPool
    from pgfleet._async.manager import AsyncManager, AsyncManagerProtocol
    from pgfleet._async.pool import AsyncConnectionGuard, AsyncPool
    from pgfleet._async.postgres import AsyncPostgresManager

#: Where each name lives, imported on first use (PEP 562 ``__getattr__``): ``from pgfleet
#: import AsyncPool`` then imports neither the cluster pool nor the psycopg_pool classes
#: (issue #15: the cost of importing the pool).
_LAZY: dict[str, str] = {
    "AsyncClusterGuard": "pgfleet._async.cluster",
    "AsyncClusterPool": "pgfleet._async.cluster",
    "AsyncConnectionGuard": "pgfleet._async.pool",
    "AsyncConnectionPool": "pgfleet._async.compat",
    "AsyncManager": "pgfleet._async.manager",
    "AsyncManagerProtocol": "pgfleet._async.manager",
    "AsyncNullConnectionPool": "pgfleet._async.compat",
    "AsyncPool": "pgfleet._async.pool",
    "AsyncPostgresManager": "pgfleet._async.postgres",
}


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value  # the next use is a plain attribute read
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


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
