"""pgfleet.integrations.sqlalchemy on a real server: SQLAlchemy engines whose connections come
from a pgfleet pool and go back to it, under 32 concurrent workers (threads, then asyncio
tasks); every connection returns, none leaks, the pool's stats balance."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from sqlalchemy import column, insert, table, text
from sqlalchemy.pool import NullPool

from pgfleet import AsyncPool, Pool, PoolStats
from pgfleet.integrations.sqlalchemy import create_async_engine, create_engine
from support.cluster import PgCluster

WORKERS = 32
ROUNDS = 5
MAX_SIZE = 4


class Rollback(Exception):
    """Raised in a transaction to make SQLAlchemy roll it back."""


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def ids_table(pg: PgCluster) -> Iterator[str]:
    name = unique("sa")
    pg.execute(
        sql.SQL("CREATE TABLE {} (id int PRIMARY KEY)").format(sql.Identifier(name)), dbname="app"
    )
    pg.execute(sql.SQL("GRANT ALL ON {} TO app").format(sql.Identifier(name)), dbname="app")
    yield name
    pg.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)), dbname="app")


def stored(pg: PgCluster, name: str) -> set[int]:
    rows = pg.execute(sql.SQL("SELECT id FROM {}").format(sql.Identifier(name)), dbname="app")
    return {int(row[0]) for row in rows}


def committed() -> set[int]:
    """What the workers commit: every round but the last, which rolls back."""
    return {w * ROUNDS + r for w in range(WORKERS) for r in range(ROUNDS - 1)}


def backends(pg: PgCluster, app: str) -> int:
    [(count,)] = pg.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", app
    )
    return int(count)


def assert_balanced(stats: PoolStats) -> None:
    assert stats.checkouts == WORKERS * ROUNDS
    assert (stats.in_use, stats.waiting, stats.connecting) == (0, 0, 0)
    assert stats.idle == stats.size
    assert 1 <= stats.size <= MAX_SIZE
    # Every close was a return: nothing broken, nothing replaced, nothing timed out.
    assert stats.returns_broken == 0
    assert stats.timeouts == 0
    assert stats.connections_created == stats.size + sum(stats.connections_closed.values())
    assert stats.connections_created <= MAX_SIZE


def test_an_engine_on_a_pool_under_32_threads(pg: PgCluster, ids_table: str) -> None:
    app = unique("sa-threads")
    pool = Pool(
        make_conninfo(pg.conninfo(), application_name=app),
        min_size=2,
        max_size=MAX_SIZE,
        timeout=20.0,
    )
    before = pool.close_returns
    engine = create_engine(pool)
    assert (before, pool.close_returns) == (False, True)
    assert isinstance(engine.pool, NullPool)
    rows = table(ids_table, column("id"))

    def fail_in_transaction(key: int) -> None:
        with engine.begin() as conn:
            conn.execute(insert(rows), {"id": key})
            raise Rollback

    def work(worker: int) -> None:
        for round_ in range(ROUNDS):
            key = worker * ROUNDS + round_
            if round_ == ROUNDS - 1:
                with pytest.raises(Rollback):
                    fail_in_transaction(-key)
            else:
                with engine.begin() as conn:
                    conn.execute(insert(rows), {"id": key})

    with pool:
        try:
            with ThreadPoolExecutor(WORKERS) as executor:
                for future in [executor.submit(work, n) for n in range(WORKERS)]:
                    future.result(timeout=60)
        finally:
            engine.dispose()
        assert_balanced(pool.stats())
        assert backends(pg, app) == pool.stats().size
    assert stored(pg, ids_table) == committed()


async def test_an_async_engine_on_a_pool_under_32_tasks(pg: PgCluster, ids_table: str) -> None:
    app = unique("sa-tasks")
    pool = AsyncPool(
        make_conninfo(pg.conninfo(), application_name=app),
        min_size=2,
        max_size=MAX_SIZE,
        timeout=20.0,
    )
    engine = create_async_engine(pool)
    assert pool.close_returns is True
    rows = table(ids_table, column("id"))

    async def fail_in_transaction(key: int) -> None:
        async with engine.begin() as conn:
            await conn.execute(insert(rows), {"id": key})
            raise Rollback

    async def work(worker: int) -> None:
        for round_ in range(ROUNDS):
            key = worker * ROUNDS + round_
            if round_ == ROUNDS - 1:
                with pytest.raises(Rollback):
                    await fail_in_transaction(-key)
            else:
                async with engine.begin() as conn:
                    await conn.execute(insert(rows), {"id": key})

    async with pool:
        try:
            async with asyncio.timeout(60):
                await asyncio.gather(*(work(n) for n in range(WORKERS)))
        finally:
            await engine.dispose()
        assert_balanced(pool.stats())
        assert backends(pg, app) == pool.stats().size
    assert stored(pg, ids_table) == committed()


def test_a_statement_error_rolls_back_and_the_connection_returns(pg: PgCluster) -> None:
    with Pool(pg.conninfo(), min_size=1, max_size=1, timeout=10.0) as pool:
        engine = create_engine(pool)
        with pytest.raises(Exception, match="division by zero"), engine.connect() as conn:
            conn.execute(text("SELECT 1 / 0"))
        with engine.connect() as conn:  # the same connection, clean again
            assert conn.execute(text("SELECT 1")).scalar() == 1
        stats = pool.stats()
        assert (stats.idle, stats.in_use, stats.returns_broken) == (1, 0, 0)
        assert stats.connections_created == 1
        engine.dispose()


def test_the_helpers_refuse_the_wrong_pool_or_their_own_settings() -> None:
    sync_pool: Any = Pool("")
    async_pool: Any = AsyncPool("")
    with pytest.raises(TypeError, match="use create_async_engine"):
        create_engine(async_pool)
    with pytest.raises(TypeError, match="use create_engine"):
        create_async_engine(sync_pool)
    with pytest.raises(TypeError, match="sets creator itself"):
        create_engine(sync_pool, creator=lambda: None)
    with pytest.raises(TypeError, match="sets poolclass itself"):
        create_async_engine(async_pool, poolclass=NullPool)
    assert sync_pool.close_returns is False  # refused: nothing changed
