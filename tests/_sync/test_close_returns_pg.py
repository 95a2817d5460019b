# WARNING: this file is generated from tests/_async/test_close_returns_pg.py by tools/gen_sync.py.
# Do not edit it: edit the source and run `python tools/gen_sync.py`.

"""``close_returns`` and connections closed by their user, against a real server.

With ``close_returns`` on, psycopg (3.3) turns ``conn.close()`` on a connection from
``getconn`` into ``pool.putconn(conn)``. Without it, a connection its user closed comes
back closed: the pool discards it quietly and replaces it (as psycopg_pool does).

The async file is the source, the threaded one is generated (``python tools/gen_sync.py``).
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg import pq

from pgfleet import Pool
from support.cluster import PgCluster
from support.flavours import Flavour

TIMEOUT = 10.0


def unique_app() -> str:
    return f"pgfleet-test-{uuid.uuid4().hex[:12]}"


def pg_pool(cluster: PgCluster, app: str, **options: Any) -> Pool[Any]:
    options.setdefault("min_size", 1)
    options.setdefault("timeout", TIMEOUT)
    return Pool(cluster.conninfo(), kwargs={"application_name": app}, **options)


def backends(cluster: PgCluster, app: str) -> int:
    [(count,)] = cluster.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", app
    )
    return int(count)


def close_then_fail(pool: Pool[Any]) -> None:
    with pool.connection() as conn:
        conn.close()
        _ = 1 / 0


def end_cleanly_on_a_dead_connection(pool: Pool[Any], pg: PgCluster, app: str) -> None:
    with pool.connection() as conn:
        conn.execute("SELECT 1")  # a transaction to commit at the end of the block
        pg.terminate_backends(application_name=app)


def test_close_gives_the_connection_back_when_close_returns_is_on(pg: PgCluster) -> None:
    app = unique_app()
    with pg_pool(pg, app, max_size=1) as pool:
        assert pool.close_returns is False  # off by default
        pool.close_returns = True
        conn = pool.getconn()
        pid = conn.info.backend_pid
        conn.execute("CREATE TEMP TABLE t (x int)")  # a transaction left open
        conn.close()  # returns it, rolled back
        assert not conn.closed
        stats = pool.stats()
        assert (stats.idle, stats.in_use, stats.connections_closed) == (1, 0, {})
        assert stats.resets == 1
        again = pool.getconn()
        assert again is conn
        assert again.info.backend_pid == pid
        assert again.info.transaction_status == pq.TransactionStatus.IDLE
        again.close()
        assert not again.closed
        assert pool.stats().checkouts == 2
        assert backends(pg, app) == 1


def test_a_returned_connection_closes_for_real(pg: PgCluster) -> None:
    with pg_pool(pg, unique_app(), max_size=1) as pool:
        pool.close_returns = True
        conn = pool.getconn()
        pool.putconn(conn)  # given back: close() is no longer a return
        with pytest.raises(ValueError, match="not lent"):
            pool.putconn(conn)
        assert pool.stats().idle == 1


def test_closing_the_pool_closes_what_close_returns_would_return(pg: PgCluster) -> None:
    app = unique_app()
    pool = pg_pool(pg, app, max_size=2)
    pool.close_returns = True
    pool.open()
    conn = pool.getconn()
    pool.close(timeout=0.1)  # closes the connection still lent, for real
    assert conn.closed
    conn.close()  # the user's late close: nothing to do, nothing raised
    Flavour.wait_until(lambda: backends(pg, app) == 0)


def test_a_connection_closed_in_a_block_is_discarded_quietly(pg: PgCluster) -> None:
    app = unique_app()
    with pg_pool(pg, app, min_size=1, max_size=1) as pool:
        with pool.connection() as conn:
            conn.execute("SELECT 1")  # a transaction open when it is closed
            conn.close()
        assert conn.closed
        stats = pool.stats()
        assert stats.returns_broken == 1
        assert stats.connections_closed.get("broken") == 1
        with pool.connection() as other:  # replaced
            assert other is not conn
            other.execute("SELECT 1")
        # Closed in the block with an error: the error passes through unchanged.
        with pytest.raises(ZeroDivisionError):
            close_then_fail(pool)
        stats = pool.stats()
        assert stats.returns_broken == 2
        opened = stats.size - stats.connecting
        assert stats.connections_created - sum(stats.connections_closed.values()) == opened


def test_a_connection_from_getconn_closed_by_its_user_is_replaced(pg: PgCluster) -> None:
    with pg_pool(pg, unique_app(), min_size=1, max_size=1) as pool:
        conn = pool.getconn()
        conn.close()  # close_returns off: closed for real
        pool.putconn(conn)  # no error: discarded
        assert pool.stats().returns_broken == 1
        with pool.connection() as other:
            assert other is not conn
            other.execute("SELECT 1")


def test_a_broken_connection_in_a_clean_block_still_raises(pg: PgCluster) -> None:
    # Not closed by its user: the transaction was lost, and the block says so.
    app = unique_app()
    with pg_pool(pg, app, min_size=1, max_size=1) as pool:
        with pytest.raises(psycopg.OperationalError):
            end_cleanly_on_a_dead_connection(pool, pg, app)
        assert pool.stats().returns_broken == 1
