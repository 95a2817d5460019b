# WARNING: this file is generated from src/pgfleet/_async/__init__.py by tools/gen_sync.py.
# Do not edit it: edit the source and run `python tools/gen_sync.py`.

"""The shell for threaded programs: `Pool`, its managers and its connection guard."""

from pgfleet._sync.cluster import ClusterGuard, ClusterPool
from pgfleet._sync.compat import ConnectionPool, NullConnectionPool
from pgfleet._sync.manager import Manager, ManagerProtocol
from pgfleet._sync.pool import ConnectionGuard, Pool
from pgfleet._sync.postgres import PostgresManager

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
