"""`AsyncPool` against a real PostgreSQL server (fixtures from tests/conftest.py).

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

from pgfleet import AsyncPool, AsyncPostgresManager
from support.cluster import ClusterFactory, PgCluster
from support.fds import many_open_files
from support.flavours import AsyncFlavour
from support.timing import well_under

#: The pools' checkout timeout. A checkout that must not wait for anything ends
#: `well_under` it.
TIMEOUT = 10.0


class BodyError(Exception):
    """Raised by the body of a ``connection()`` block."""


def unique_app() -> str:
    return f"pgfleet-test-{uuid.uuid4().hex[:12]}"


def pg_pool(cluster: PgCluster, app: str, **options: Any) -> AsyncPool[Any]:
    """A pool on `cluster` whose connections carry `application_name=app`."""
    kwargs = {"application_name": app, **options.pop("kwargs", {})}
    options.setdefault("min_size", 1)
    options.setdefault("timeout", TIMEOUT)
    options.setdefault("connect_timeout", 5.0)
    return AsyncPool(cluster.conninfo(), kwargs=kwargs, **options)


def backends(cluster: PgCluster, app: str) -> int:
    """How many backends carry `application_name=app`."""
    [(count,)] = cluster.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", app
    )
    return int(count)


async def select_one(pool: AsyncPool[Any]) -> None:
    started = time.monotonic()
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT 1")
        assert await cur.fetchone() == (1,)
        assert conn.info.transaction_status == pq.TransactionStatus.INTRANS
    assert time.monotonic() - started < well_under(TIMEOUT)


async def test_select_through_the_pool(pg: PgCluster) -> None:
    async with pg_pool(pg, unique_app()) as pool:
        async with pool.connection() as conn:
            assert isinstance(conn, psycopg.AsyncConnection)
            cur = await conn.execute("SELECT 1, current_user, current_database()")
            assert await cur.fetchone() == (1, "app", "app")
        conn = await pool.getconn()
        try:
            cur = await conn.execute("SELECT %s::int + 1", [41])
            assert await cur.fetchone() == (42,)
        finally:
            await pool.putconn(conn)
        assert pool.stats().checkouts == 2


async def test_min_size_connections_open_at_start_up(pg: PgCluster) -> None:
    app = unique_app()
    async with pg_pool(pg, app, min_size=3, max_size=5) as pool:
        assert backends(pg, app) == 3
        assert pool.stats().idle == 3
    await AsyncFlavour.wait_until(lambda: backends(pg, app) == 0)  # close() closed them


async def test_fallback_application_name(pg: PgCluster) -> None:
    async with AsyncPool(pg.conninfo(), min_size=1) as pool, pool.connection() as conn:
        cur = await conn.execute("SHOW application_name")
        assert await cur.fetchone() == ("pgfleet",)


async def test_transaction_left_open_is_rolled_back(pg: PgCluster) -> None:
    async with pg_pool(pg, unique_app(), max_size=1) as pool:
        conn = await pool.getconn()
        await conn.execute("CREATE TEMP TABLE items (x int)")
        await conn.commit()
        await conn.execute("BEGIN")  # a no-op on top of psycopg's own implicit BEGIN
        await conn.execute("INSERT INTO items VALUES (1)")
        assert conn.info.transaction_status == pq.TransactionStatus.INTRANS
        await pool.putconn(conn)

        again = await pool.getconn()
        assert again is conn  # the same session: its temp table is still there
        assert again.info.transaction_status == pq.TransactionStatus.IDLE
        cur = await again.execute("SELECT count(*) FROM items")
        assert await cur.fetchone() == (0,)
        await pool.putconn(again)


async def test_failed_transaction_is_rolled_back(pg: PgCluster) -> None:
    async with pg_pool(pg, unique_app(), max_size=1) as pool:
        conn = await pool.getconn()
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            await conn.execute("SELECT 'not a number'::int")
        assert conn.info.transaction_status == pq.TransactionStatus.INERROR
        await pool.putconn(conn)

        again = await pool.getconn()
        assert again is conn
        assert again.info.transaction_status == pq.TransactionStatus.IDLE
        cur = await again.execute("SELECT 1")
        assert await cur.fetchone() == (1,)
        await pool.putconn(again)
        assert pool.stats().returns_broken == 0


async def insert_then_fail(pool: AsyncPool[Any]) -> None:
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO items VALUES (2)")
        raise BodyError("boom")


async def test_connection_block_commits_when_it_ends_cleanly(pg: PgCluster) -> None:
    async with pg_pool(pg, unique_app(), max_size=1) as pool:
        async with pool.connection() as conn:
            await conn.execute("CREATE TEMP TABLE items (x int)")
            await conn.execute("INSERT INTO items VALUES (1)")
        with pytest.raises(BodyError):
            await insert_then_fail(pool)
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT array_agg(x) FROM items")
            assert await cur.fetchone() == ([1],)


async def test_error_in_connection_block_passes_through(pg: PgCluster) -> None:
    async with pg_pool(pg, unique_app(), max_size=1) as pool:
        with pytest.raises(psycopg.errors.DivisionByZero):
            async with pool.connection() as conn:
                await conn.execute("SELECT 1 / 0")
        await select_one(pool)
        assert pool.stats().returns_broken == 0


async def test_terminated_idle_connections_are_replaced_quietly(pg: PgCluster) -> None:
    app = unique_app()
    async with pg_pool(pg, app, min_size=2, max_size=2) as pool:
        assert pg.terminate_backends(application_name=app) == 2
        for _ in range(3):
            await select_one(pool)  # no error: the dead connections are never lent
        conn = await pool.getconn(timeout=TIMEOUT)
        cur = await conn.execute("SELECT 1")
        assert await cur.fetchone() == (1,)
        await pool.putconn(conn)
        await AsyncFlavour.wait_until(lambda: pool.stats().idle == 2)
        assert backends(pg, app) == 2


async def test_connection_broken_while_lent_is_discarded(pg: PgCluster) -> None:
    app = unique_app()
    async with pg_pool(pg, app, min_size=1, max_size=1) as pool:
        conn = await pool.getconn()
        assert pg.terminate_backends(application_name=app) == 1
        with pytest.raises(psycopg.OperationalError):
            await conn.execute("SELECT 1")
        await pool.putconn(conn)  # no error for the caller
        assert conn.closed
        await select_one(pool)
        assert pool.stats().returns_broken == 1


async def test_connection_killed_while_lent_and_returned_unused(pg: PgCluster) -> None:
    app = unique_app()
    async with pg_pool(pg, app, min_size=1, max_size=1) as pool:
        conn = await pool.getconn()
        assert pg.terminate_backends(application_name=app) == 1
        await pool.putconn(conn)  # it never noticed: the pool must
        await select_one(pool)
        await select_one(pool)


@pytest.mark.parametrize("outage", ["restart", "crash"])
async def test_server_restart_while_idle(make_cluster: ClusterFactory, outage: str) -> None:
    cluster = make_cluster()
    async with pg_pool(cluster, unique_app(), min_size=2, max_size=2) as pool:
        await select_one(pool)
        if outage == "restart":
            cluster.restart(mode="fast")
        else:
            cluster.crash()
            cluster.start()
        # The server is ready again: these checkouts must succeed at once, with no error.
        for _ in range(3):
            await select_one(pool)
        await AsyncFlavour.wait_until(lambda: pool.stats().idle == 2)


async def test_configure_reset_and_check_callbacks(pg: PgCluster) -> None:
    calls: list[str] = []

    async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
        calls.append("configure")
        await conn.execute("SET statement_timeout = '12s'")
        await conn.commit()
        # Left inside a transaction: the pool rolls it back before the first use.
        await conn.execute("SELECT 1")

    async def reset(conn: psycopg.AsyncConnection[Any]) -> None:
        calls.append("reset")
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE  # rolled back first
        await conn.execute("RESET work_mem")
        await conn.commit()  # a reset callback must leave the connection idle

    async def check(conn: psycopg.AsyncConnection[Any]) -> None:
        calls.append("check")
        await conn.execute("SELECT 1")
        await conn.rollback()

    pool = AsyncPool(
        pg.conninfo(),
        kwargs={"application_name": unique_app()},
        min_size=1,
        max_size=1,
        check_after_idle=0,
        configure=configure,
        reset=reset,
        check=check,
    )
    async with pool:
        assert calls == ["configure"]
        async with pool.connection() as conn:
            assert conn.info.transaction_status == pq.TransactionStatus.IDLE
            cur = await conn.execute("SHOW statement_timeout")
            assert await cur.fetchone() == ("12s",)
            await conn.execute("SET work_mem = '5MB'")  # committed at the end of the block
        async with pool.connection() as conn:
            cur = await conn.execute("SHOW work_mem")
            assert await cur.fetchone() != ("5MB",)  # the reset callback undid it
    assert calls == ["configure", "check", "reset", "check", "reset"]


async def test_failing_reset_callback_discards_the_connection(pg: PgCluster) -> None:
    app = unique_app()

    async def reset(conn: psycopg.AsyncConnection[Any]) -> None:
        raise RuntimeError("cannot reset")

    async with AsyncPool(
        pg.conninfo(), kwargs={"application_name": app}, min_size=1, max_size=1, reset=reset
    ) as pool:
        async with pool.connection() as conn:
            pass
        assert conn.closed
        async with pool.connection(timeout=TIMEOUT) as again:
            assert again is not conn
        assert pool.stats().returns_broken == 2


async def test_an_overridden_is_clean_is_still_asked(pg: PgCluster) -> None:
    # The guard compares the stock manager's clean status in place (a call fewer): a
    # subclass's own is_clean must still decide.
    class NeverClean(AsyncPostgresManager):
        asked = 0

        def is_clean(self, conn: psycopg.AsyncConnection[Any]) -> bool:
            NeverClean.asked += 1
            return False

    manager = NeverClean(pg.conninfo(), kwargs={"application_name": unique_app()})
    async with AsyncPool(manager=manager, min_size=1, max_size=1, timeout=TIMEOUT) as pool:
        async with pool.connection() as conn:
            await conn.execute("SET work_mem = '5MB'")  # in a transaction: committed
        assert NeverClean.asked >= 1
        assert pool.stats().resets == 1  # not clean: the return went through the reset


async def test_kwargs_are_honoured(pg: PgCluster) -> None:
    options = {"kwargs": {"autocommit": True, "row_factory": dict_row}}
    async with pg_pool(pg, unique_app(), **options) as pool, pool.connection() as conn:
        assert conn.autocommit
        cur = await conn.execute("SELECT 1 AS one")
        assert await cur.fetchone() == {"one": 1}
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE


async def test_stats_count_real_checkouts(pg: PgCluster) -> None:
    app = unique_app()
    async with pg_pool(pg, app, min_size=1, max_size=2) as pool:
        first = await pool.getconn()
        second = await pool.getconn()  # grows the pool
        assert backends(pg, app) == 2
        await pool.putconn(first)
        await pool.putconn(second)
        await select_one(pool)
        stats = pool.stats()
        assert (stats.size, stats.idle, stats.in_use) == (2, 2, 0)
        assert (stats.checkouts, stats.connections_created, stats.connect_errors) == (3, 2, 0)
        psycopg_stats = pool.get_stats()
        assert psycopg_stats["pool_size"] == 2
        assert psycopg_stats["requests_num"] == 3
        assert psycopg_stats["connections_num"] == 2


async def test_resets_count_returns_with_something_to_undo(pg: PgCluster) -> None:
    async with pg_pool(pg, unique_app(), max_size=1) as pool:
        await select_one(pool)  # the block's transaction is committed: nothing to undo
        conn = await pool.getconn()
        await pool.putconn(conn)  # idle, no reset callback: nothing to undo
        assert pool.stats().resets == 0
        conn = await pool.getconn()
        await conn.execute("SELECT 1")
        await pool.putconn(conn)  # inside a transaction: rolled back
        assert pool.stats().resets == 1
        with pytest.raises(BodyError):
            await insert_nothing_then_fail(pool)  # a block that raises: rolled back
        assert pool.stats().resets == 2
        assert pool.stats().returns_broken == 0


async def insert_nothing_then_fail(pool: AsyncPool[Any]) -> None:
    async with pool.connection() as conn:
        await conn.execute("SELECT 1")
        raise BodyError("boom")


async def in_transaction_round_trips(pool: AsyncPool[Any], rounds: int) -> None:
    """Pinged checkouts and returns that roll back: every one waits on the socket."""
    for _ in range(rounds):
        await select_one(pool)
        conn = await pool.getconn()
        assert conn.pgconn.socket >= 1024
        await conn.execute("SELECT 1")
        await pool.putconn(conn)  # the rollback waits on the socket too
    await pool.check()


@pytest.fixture
def held_open_files() -> Iterator[None]:
    with many_open_files():
        yield


@pytest.mark.usefixtures("held_open_files")
async def test_sockets_numbered_above_1024_work(make_cluster: ClusterFactory) -> None:
    # select() refuses descriptors >= 1024: every ping and rollback failed, and every
    # returned connection was discarded and replaced (silent churn).
    cluster = make_cluster()
    async with pg_pool(cluster, unique_app(), min_size=2, max_size=2, check_after_idle=0) as pool:
        await in_transaction_round_trips(pool, 10)
        stats = pool.stats()
        assert stats.connections_closed == {}, stats
        assert (stats.checks_failed, stats.returns_broken, stats.resets) == (0, 0, 10)
        cluster.restart(mode="fast")
        for _ in range(3):
            await select_one(pool)
        await AsyncFlavour.wait_until(lambda: pool.stats().idle == 2)
        before = pool.stats()
        await in_transaction_round_trips(pool, 10)
        after = pool.stats()
        assert after.connections_closed == before.connections_closed, after
        assert after.connections_created == before.connections_created, after
        assert after.returns_broken == before.returns_broken == 0, after
