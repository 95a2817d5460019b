"""A database of their own for the transaction tests, with a short deadlock_timeout.

``deadlock_timeout`` (how long a blocked lock waits before the deadlock check) is
a superuser setting, 1 s by default; the harness sets it per database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from psycopg import sql

from support.cluster import APP_USER, PgCluster


@pytest.fixture(scope="session")
def tx_dsn(pg: PgCluster) -> Iterator[str]:
    """conninfo of a fresh database (owned by ``app``) for the transaction tests."""
    name = f"tx_{uuid.uuid4().hex[:8]}"
    pg.execute(
        sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(name), sql.Identifier(APP_USER)
        )
    )
    pg.execute(
        sql.SQL("ALTER DATABASE {} SET deadlock_timeout = '50ms'").format(sql.Identifier(name))
    )
    yield pg.conninfo(dbname=name)
    pg.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
