"""Helpers for the compat suite that do not depend on the flavour (threads or asyncio)."""

from __future__ import annotations

import importlib
import uuid
from typing import Any, NoReturn

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

#: The names a drop-in replacement for psycopg_pool must export.
NAMES = (
    "ConnectionPool",
    "AsyncConnectionPool",
    "NullConnectionPool",
    "AsyncNullConnectionPool",
    "PoolTimeout",
    "PoolClosed",
    "TooManyRequests",
)


class Impl:
    """The module under test, seen through the names psycopg_pool exports.

    The names are looked up when the fixture runs, not at import or collection: a name the
    module lacks fails the tests that use it (and only them), with a message saying so.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        module = importlib.import_module(name)
        for attr in NAMES:
            if hasattr(module, attr):
                setattr(self, attr, getattr(module, attr))

    def __getattr__(self, attr: str) -> NoReturn:
        # Only called for names the module lacks.
        if attr in NAMES:
            pytest.fail(f"{self.name}.{attr} does not exist", pytrace=False)
        raise AttributeError(attr)

    def __repr__(self) -> str:
        return f"<Impl {self.name}>"


#: A generous upper bound for something that must not wait (an open, a refused connect).
PROMPT = 2.0


def unique_app() -> str:
    """An application_name no other test uses."""
    return f"compat-{uuid.uuid4().hex[:12]}"


def with_app(dsn: str, app: str) -> str:
    """`dsn` with ``application_name=app`` (never by concatenation)."""
    return make_conninfo(dsn, application_name=app)


class Observer:
    """Looks at the server from outside the pools, on one superuser connection (autocommit,
    so every statement sees the latest activity and commits)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def backends(self, app: str) -> int:
        """How many backends carry `application_name=app`."""
        cur = self.conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [app]
        )
        row = cur.fetchone()
        assert row is not None
        return int(row[0])

    def ids(self, table: str) -> set[int]:
        """The ids committed in `table`."""
        cur = self.conn.execute(sql.SQL("SELECT id FROM {}").format(sql.Identifier(table)))
        return {row[0] for row in cur.fetchall()}


def insert(table: str) -> sql.Composed:
    """``INSERT INTO table VALUES (%s)``."""
    return sql.SQL("INSERT INTO {} VALUES (%s)").format(sql.Identifier(table))
