"""Session state through a transaction pooler: a session ``SET`` made through one pool is not
seen by another client afterwards.

Through PgBouncer in transaction mode (with ``server_reset_query`` empty, as measured) a
session ``SET`` stays on the server session that ran it and reaches whichever client gets
that session next. The pool's ``configure`` callback is where a pool makes such settings:
without ``transaction_pooler`` its ``SET`` leaks to other clients (the contrast test, which
also shows that the check below can fail); with it, the ``SET`` is refused before it is sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import psycopg
import pytest
from psycopg.types import TypeInfo

from pgfleet import Pool, PoolError, TransactionPoolerError
from support.cluster import PgCluster
from support.pgbouncer import PgBouncer

from .conftest import POOL_SIZE, BouncerFactory

#: The value the pool's configure sets; the server's default is 4MB.
LEAKED = "7MB"


def set_work_mem(conn: psycopg.Connection[Any]) -> None:
    conn.execute(f"SET work_mem = '{LEAKED}'")


@contextmanager
def every_server_session(bouncer: PgBouncer) -> Iterator[list[psycopg.Connection[Any]]]:
    """`POOL_SIZE` other clients, each inside a transaction: together they hold every server
    session of the pooler at once."""
    with ExitStack() as stack:
        clients = []
        for _ in range(POOL_SIZE):
            conn = stack.enter_context(psycopg.connect(bouncer.conninfo(), connect_timeout=5))
            conn.execute("SELECT 1")  # opens the transaction: the session is this client's
            clients.append(conn)
        yield clients


def work_mem_seen_by_other_clients(bouncer: PgBouncer) -> list[str]:
    with every_server_session(bouncer) as clients:
        values = []
        pids = set()
        for conn in clients:
            row = conn.execute("SELECT current_setting('work_mem'), pg_backend_pid()").fetchone()
            assert row is not None
            values.append(str(row[0]))
            pids.add(row[1])
        assert len(pids) == POOL_SIZE  # every server session, each seen once
        return values


def test_without_transaction_pooler_a_configure_set_leaks_to_other_clients(
    bouncer_cluster: PgCluster, make_bouncer: BouncerFactory
) -> None:
    bouncer = make_bouncer(bouncer_cluster)
    pool = Pool(bouncer.conninfo(), min_size=1, kwargs={"autocommit": True}, configure=set_work_mem)
    with pool, pool.connection() as conn:
        conn.execute("SELECT 1")
    assert LEAKED in work_mem_seen_by_other_clients(bouncer)


def test_with_it_the_set_is_refused_before_it_is_sent(
    bouncer_cluster: PgCluster, make_bouncer: BouncerFactory
) -> None:
    bouncer = make_bouncer(bouncer_cluster)
    pool = Pool(
        bouncer.conninfo(),
        min_size=1,
        kwargs={"autocommit": True},
        configure=set_work_mem,
        transaction_pooler=True,
    )
    with pytest.raises(PoolError, match="waiting will not help") as caught:
        pool.open(wait=True, timeout=10)  # at once: the error is permanent
    pool.close()
    cause = caught.value.__cause__
    assert isinstance(cause, TransactionPoolerError)
    assert "SET without LOCAL" in str(cause)
    assert "Nothing was sent" in str(cause)
    assert isinstance(cause, psycopg.NotSupportedError)
    assert LEAKED not in work_mem_seen_by_other_clients(bouncer)


@pytest.mark.parametrize(
    "statement",
    [
        "LISTEN jobs",
        "SELECT pg_advisory_lock(42)",
        "CREATE TEMP TABLE scratch (a int)",
        "PREPARE q AS SELECT 1",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        "SELECT set_config('work_mem', '7MB', false)",
    ],
)
def test_other_session_features_in_configure_are_refused(
    bouncer: PgBouncer, statement: str
) -> None:
    def configure(conn: psycopg.Connection[Any]) -> None:
        conn.execute(statement)

    pool = Pool(bouncer.conninfo(), min_size=1, configure=configure, transaction_pooler=True)
    with pytest.raises(PoolError) as caught:
        pool.open(wait=True, timeout=10)
    pool.close()
    assert isinstance(caught.value.__cause__, TransactionPoolerError)


def test_a_configure_that_keeps_to_its_transaction_works(bouncer: PgBouncer) -> None:
    seen: list[str] = []

    def configure(conn: psycopg.Connection[Any]) -> None:
        info = TypeInfo.fetch(conn, "text")  # a catalog query, and client-side adapters
        assert info is not None
        with conn.transaction():
            conn.execute("SET LOCAL work_mem = '8MB'")
            row = conn.execute("SELECT current_setting('work_mem')").fetchone()
            assert row is not None
            seen.append(str(row[0]))

    pool = Pool(bouncer.conninfo(), min_size=2, configure=configure, transaction_pooler=True)
    with pool, pool.connection() as conn:
        # The guard was only for configure: application code is not policed.
        assert conn.cursor_factory is psycopg.Cursor
        conn.execute("SELECT 1")
    assert seen == ["8MB", "8MB"]
    assert "8MB" not in work_mem_seen_by_other_clients(bouncer)
