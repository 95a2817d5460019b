# WARNING: this file is generated from src/pgfleet/_async/__init__.py by tools/gen_sync.py.
# Do not edit it: edit the source and run `python tools/gen_sync.py`.

"""The shell for threaded programs: `Pool`, its managers and its connection guard."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and editors see: every name, as if imported eagerly
    from pgfleet._sync.cluster import ClusterGuard, ClusterPool
    from pgfleet._sync.compat import ConnectionPool, NullConnectionPool
    from pgfleet._sync.manager import Manager, ManagerProtocol
    from pgfleet._sync.pool import ConnectionGuard, Pool
    from pgfleet._sync.postgres import PostgresManager

#: Where each name lives, imported on first use (PEP 562 ``__getattr__``): ``from pgfleet
#: import Pool`` then imports neither the cluster pool nor the psycopg_pool classes
#: (issue #15: the cost of importing the pool).
_LAZY: dict[str, str] = {
    "ClusterGuard": "pgfleet._sync.cluster",
    "ClusterPool": "pgfleet._sync.cluster",
    "ConnectionGuard": "pgfleet._sync.pool",
    "ConnectionPool": "pgfleet._sync.compat",
    "Manager": "pgfleet._sync.manager",
    "ManagerProtocol": "pgfleet._sync.manager",
    "NullConnectionPool": "pgfleet._sync.compat",
    "Pool": "pgfleet._sync.pool",
    "PostgresManager": "pgfleet._sync.postgres",
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
    "ClusterGuard",
    "ClusterPool",
    "ConnectionGuard",
    "ConnectionPool",
    "Manager",
    "ManagerProtocol",
    "NullConnectionPool",
    "Pool",
    "PostgresManager",
]
