# WARNING: this file is generated from tests/_async/test_pool_pg.py by tools/gen_sync.py.
# Do not edit it: edit the source and run `python tools/gen_sync.py`.

"""`Pool` against a real PostgreSQL server (fixtures from tests/conftest.py).

The async file is the source, the threaded one is generated (``python tools/gen_sync.py``).
Every pool gets a unique ``application_name`` so that its backends can be counted and
terminated in ``pg_stat_activity`` without touching anybody else's.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import pq
from psycopg.rows import dict_row

from pgfleet import Pool, PostgresManager
from support.cluster import ClusterFactory, PgCluster
from support.fds import many_open_files
from support.flavours import Flavour
from support.timing import well_under

#: The pools' checkout timeout. A checkout that must not wait for anything ends
#: `well_under` it.
TIMEOUT = 10.0


class BodyError(Exception):
    """Raised by the body of a ``connection()`` block."""


def unique_app() -> str:
    return f"pgfleet-test-{uuid.uuid4().hex[:12]}"


def pg_pool(cluster: PgCluster, app: str, **options: Any) -> Pool[Any]:
    """A pool on `cluster` whose connections carry `application_name=app`."""
    kwargs = {"application_name": app, **options.pop("kwargs", {})}
    options.setdefault("min_size", 1)
    options.setdefault("timeout", TIMEOUT)
    options.setdefault("connect_timeout", 5.0)
    return Pool(cluster.conninfo(), kwargs=kwargs, **options)


def backends(cluster: PgCluster, app: str) -> int:
    """How many backends carry `application_name=app`."""
    [(count,)] = cluster.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", app
    )
    return int(count)


def select_one(pool: Pool[Any]) -> None:
    started = time.monotonic()
    with pool.connection() as conn:
        cur = conn.execute("SELECT 1")
        assert cur.fetchone() == (1,)
        assert conn.info.transaction_status == pq.TransactionStatus.INTRANS
    assert time.monotonic() - started < well_under(TIMEOUT)


def test_select_through_the_pool(pg: PgCluster) -> None:
    with pg_pool(pg, unique_app()) as pool:
        with pool.connection() as conn:
            assert isinstance(conn, psycopg.Connection)
            cur = conn.execute("SELECT 1, current_user, current_database()")
            assert cur.fetchone() == (1, "app", "app")
        conn = pool.getconn()
        try:
            cur = conn.execute("SELECT %s::int + 1", [41])
            assert cur.fetchone() == (42,)
        finally:
            pool.putconn(conn)
        assert pool.stats().checkouts == 2


def test_min_size_connections_open_at_start_up(pg: PgCluster) -> None:
    app = unique_app()
    with pg_pool(pg, app, min_size=3, max_size=5) as pool:
        assert backends(pg, app) == 3
        assert pool.stats().idle == 3
    Flavour.wait_until(lambda: backends(pg, app) == 0)  # close() closed them


def test_fallback_application_name(pg: PgCluster) -> None:
    with Pool(pg.conninfo(), min_size=1) as pool, pool.connection() as conn:
        cur = conn.execute("SHOW application_name")
        assert cur.fetchone() == ("pgfleet",)


def test_transaction_left_open_is_rolled_back(pg: PgCluster) -> None:
    with pg_pool(pg, unique_app(), max_size=1) as pool:
        conn = pool.getconn()
        conn.execute("CREATE TEMP TABLE items (x int)")
        conn.commit()
        conn.execute("BEGIN")  # a no-op on top of psycopg's own implicit BEGIN
        conn.execute("INSERT INTO items VALUES (1)")
        assert conn.info.transaction_status == pq.TransactionStatus.INTRANS
        pool.putconn(conn)

        again = pool.getconn()
        assert again is conn  # the same session: its temp table is still there
        assert again.info.transaction_status == pq.TransactionStatus.IDLE
        cur = again.execute("SELECT count(*) FROM items")
        assert cur.fetchone() == (0,)
        pool.putconn(again)


def test_failed_transaction_is_rolled_back(pg: PgCluster) -> None:
    with pg_pool(pg, unique_app(), max_size=1) as pool:
        conn = pool.getconn()
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            conn.execute("SELECT 'not a number'::int")
        assert conn.info.transaction_status == pq.TransactionStatus.INERROR
        pool.putconn(conn)

        again = pool.getconn()
        assert again is conn
        assert again.info.transaction_status == pq.TransactionStatus.IDLE
        cur = again.execute("SELECT 1")
        assert cur.fetchone() == (1,)
        pool.putconn(again)
        assert pool.stats().returns_broken == 0


def insert_then_fail(pool: Pool[Any]) -> None:
    with pool.connection() as conn:
        conn.execute("INSERT INTO items VALUES (2)")
        raise BodyError("boom")


def test_connection_block_commits_when_it_ends_cleanly(pg: PgCluster) -> None:
    with pg_pool(pg, unique_app(), max_size=1) as pool:
        with pool.connection() as conn:
            conn.execute("CREATE TEMP TABLE items (x int)")
            conn.execute("INSERT INTO items VALUES (1)")
        with pytest.raises(BodyError):
            insert_then_fail(pool)
        with pool.connection() as conn:
            cur = conn.execute("SELECT array_agg(x) FROM items")
            assert cur.fetchone() == ([1],)


def test_error_in_connection_block_passes_through(pg: PgCluster) -> None:
    with pg_pool(pg, unique_app(), max_size=1) as pool:
        with pytest.raises(psycopg.errors.DivisionByZero), pool.connection() as conn:
            conn.execute("SELECT 1 / 0")
        select_one(pool)
        assert pool.stats().returns_broken == 0


def test_terminated_idle_connections_are_replaced_quietly(pg: PgCluster) -> None:
    app = unique_app()
    with pg_pool(pg, app, min_size=2, max_size=2) as pool:
        assert pg.terminate_backends(application_name=app) == 2
        for _ in range(3):
            select_one(pool)  # no error: the dead connections are never lent
        conn = pool.getconn(timeout=TIMEOUT)
        cur = conn.execute("SELECT 1")
        assert cur.fetchone() == (1,)
        pool.putconn(conn)
        Flavour.wait_until(lambda: pool.stats().idle == 2)
        assert backends(pg, app) == 2


def test_connection_broken_while_lent_is_discarded(pg: PgCluster) -> None:
    app = unique_app()
    with pg_pool(pg, app, min_size=1, max_size=1) as pool:
        conn = pool.getconn()
        assert pg.terminate_backends(application_name=app) == 1
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        pool.putconn(conn)  # no error for the caller
        assert conn.closed
        select_one(pool)
        assert pool.stats().returns_broken == 1


def test_connection_killed_while_lent_and_returned_unused(pg: PgCluster) -> None:
    app = unique_app()
    with pg_pool(pg, app, min_size=1, max_size=1) as pool:
        conn = pool.getconn()
        assert pg.terminate_backends(application_name=app) == 1
        pool.putconn(conn)  # it never noticed: the pool must
        select_one(pool)
        select_one(pool)


@pytest.mark.parametrize("outage", ["restart", "crash"])
def test_server_restart_while_idle(make_cluster: ClusterFactory, outage: str) -> None:
    cluster = make_cluster()
    with pg_pool(cluster, unique_app(), min_size=2, max_size=2) as pool:
        select_one(pool)
        if outage == "restart":
            cluster.restart(mode="fast")
        else:
            cluster.crash()
            cluster.start()
        # The server is ready again: these checkouts must succeed at once, with no error.
        for _ in range(3):
            select_one(pool)
        Flavour.wait_until(lambda: pool.stats().idle == 2)


def test_configure_reset_and_check_callbacks(pg: PgCluster) -> None:
    calls: list[str] = []

    def configure(conn: psycopg.Connection[Any]) -> None:
        calls.append("configure")
        conn.execute("SET statement_timeout = '12s'")
        conn.commit()
        # Left inside a transaction: the pool rolls it back before the first use.
        conn.execute("SELECT 1")

    def reset(conn: psycopg.Connection[Any]) -> None:
        calls.append("reset")
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE  # rolled back first
        conn.execute("RESET work_mem")
        conn.commit()  # a reset callback must leave the connection idle

    def check(conn: psycopg.Connection[Any]) -> None:
        calls.append("check")
        conn.execute("SELECT 1")
        conn.rollback()

    pool = Pool(
        pg.conninfo(),
        kwargs={"application_name": unique_app()},
        min_size=1,
        max_size=1,
        check_after_idle=0,
        configure=configure,
        reset=reset,
        check=check,
    )
    with pool:
        assert calls == ["configure"]
        with pool.connection() as conn:
            assert conn.info.transaction_status == pq.TransactionStatus.IDLE
            cur = conn.execute("SHOW statement_timeout")
            assert cur.fetchone() == ("12s",)
            conn.execute("SET work_mem = '5MB'")  # committed at the end of the block
        with pool.connection() as conn:
            cur = conn.execute("SHOW work_mem")
            assert cur.fetchone() != ("5MB",)  # the reset callback undid it
    assert calls == ["configure", "check", "reset", "check", "reset"]


def test_failing_reset_callback_discards_the_connection(pg: PgCluster) -> None:
    app = unique_app()

    def reset(conn: psycopg.Connection[Any]) -> None:
        raise RuntimeError("cannot reset")

    with Pool(
        pg.conninfo(), kwargs={"application_name": app}, min_size=1, max_size=1, reset=reset
    ) as pool:
        with pool.connection() as conn:
            pass
        assert conn.closed
        with pool.connection(timeout=TIMEOUT) as again:
            assert again is not conn
        assert pool.stats().returns_broken == 2


def test_an_overridden_is_clean_is_still_asked(pg: PgCluster) -> None:
    # The guard compares the stock manager's clean status in place (a call fewer): a
    # subclass's own is_clean must still decide.
    class NeverClean(PostgresManager):
        asked = 0

        def is_clean(self, conn: psycopg.Connection[Any]) -> bool:
            NeverClean.asked += 1
            return False

    manager = NeverClean(pg.conninfo(), kwargs={"application_name": unique_app()})
    with Pool(manager=manager, min_size=1, max_size=1, timeout=TIMEOUT) as pool:
        with pool.connection() as conn:
            conn.execute("SET work_mem = '5MB'")  # in a transaction: committed
        assert NeverClean.asked >= 1
        assert pool.stats().resets == 1  # not clean: the return went through the reset


def test_kwargs_are_honoured(pg: PgCluster) -> None:
    options = {"kwargs": {"autocommit": True, "row_factory": dict_row}}
    with pg_pool(pg, unique_app(), **options) as pool, pool.connection() as conn:
        assert conn.autocommit
        cur = conn.execute("SELECT 1 AS one")
        assert cur.fetchone() == {"one": 1}
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE


def test_stats_count_real_checkouts(pg: PgCluster) -> None:
    app = unique_app()
    with pg_pool(pg, app, min_size=1, max_size=2) as pool:
        first = pool.getconn()
        second = pool.getconn()  # grows the pool
        assert backends(pg, app) == 2
        pool.putconn(first)
        pool.putconn(second)
        select_one(pool)
        stats = pool.stats()
        assert (stats.size, stats.idle, stats.in_use) == (2, 2, 0)
        assert (stats.checkouts, stats.connections_created, stats.connect_errors) == (3, 2, 0)
        psycopg_stats = pool.get_stats()
        assert psycopg_stats["pool_size"] == 2
        assert psycopg_stats["requests_num"] == 3
        assert psycopg_stats["connections_num"] == 2


def test_resets_count_returns_with_something_to_undo(pg: PgCluster) -> None:
    with pg_pool(pg, unique_app(), max_size=1) as pool:
        select_one(pool)  # the block's transaction is committed: nothing to undo
        conn = pool.getconn()
        pool.putconn(conn)  # idle, no reset callback: nothing to undo
        assert pool.stats().resets == 0
        conn = pool.getconn()
        conn.execute("SELECT 1")
        pool.putconn(conn)  # inside a transaction: rolled back
        assert pool.stats().resets == 1
        with pytest.raises(BodyError):
            insert_nothing_then_fail(pool)  # a block that raises: rolled back
        assert pool.stats().resets == 2
        assert pool.stats().returns_broken == 0


def insert_nothing_then_fail(pool: Pool[Any]) -> None:
    with pool.connection() as conn:
        conn.execute("SELECT 1")
        raise BodyError("boom")


def in_transaction_round_trips(pool: Pool[Any], rounds: int) -> None:
    """Pinged checkouts and returns that roll back: every one waits on the socket."""
    for _ in range(rounds):
        select_one(pool)
        conn = pool.getconn()
        assert conn.pgconn.socket >= 1024
        conn.execute("SELECT 1")
        pool.putconn(conn)  # the rollback waits on the socket too
    pool.check()


@pytest.fixture
def held_open_files() -> Iterator[None]:
    with many_open_files():
        yield


@pytest.mark.usefixtures("held_open_files")
def test_sockets_numbered_above_1024_work(make_cluster: ClusterFactory) -> None:
    # select() refuses descriptors >= 1024: every ping and rollback failed, and every
    # returned connection was discarded and replaced (silent churn).
    cluster = make_cluster()
    with pg_pool(cluster, unique_app(), min_size=2, max_size=2, check_after_idle=0) as pool:
        in_transaction_round_trips(pool, 10)
        stats = pool.stats()
        assert stats.connections_closed == {}, stats
        assert (stats.checks_failed, stats.returns_broken, stats.resets) == (0, 0, 10)
        cluster.restart(mode="fast")
        for _ in range(3):
            select_one(pool)
        Flavour.wait_until(lambda: pool.stats().idle == 2)
        before = pool.stats()
        in_transaction_round_trips(pool, 10)
        after = pool.stats()
        assert after.connections_closed == before.connections_closed, after
        assert after.connections_created == before.connections_created, after
        assert after.returns_broken == before.returns_broken == 0, after
