"""psycopg's documented SQLAlchemy recipe on a pool (issue #16): SQLAlchemy's ``NullPool``
takes connections with ``pool.getconn`` and closes them, and ``close_returns=True`` turns
that close into a return. Under 32 concurrent workers, every connection must come back:
none leaks, none is closed for real, and the pool's stats balance."""

# mypy keeps `pool.closed` narrowed across the calls that change it (python/mypy#9457),
# and a pool class taken from `Impl` leaves its connection type unsolved.
# mypy: disable-error-code="unreachable, var-annotated"

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import Insert, column, create_engine, insert
from sqlalchemy import table as sql_table
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from compat.helpers import Impl, Observer, unique_app, with_app
from support.flavours import AsyncFlavour, Flavour

WORKERS = 32
ROUNDS = 5
MAX_SIZE = 4


class Rollback(Exception):
    """Raised inside a transaction to make SQLAlchemy roll it back."""


def insert_into(table: str) -> Insert:
    return insert(sql_table(table, column("id")))


def committed() -> set[int]:
    """The ids the workers commit: every round but the last, which rolls back."""
    return {worker * ROUNDS + round_ for worker in range(WORKERS) for round_ in range(ROUNDS - 1)}


def assert_balanced(pool: Any, observer: Observer, app: str) -> None:
    stats = pool.get_stats()
    assert stats["requests_num"] == WORKERS * ROUNDS
    assert stats["requests_waiting"] == 0
    assert stats.get("requests_errors", 0) == 0
    assert stats.get("returns_bad", 0) == 0  # closed by SQLAlchemy means returned
    assert stats["pool_available"] == stats["pool_size"]
    assert 1 <= stats["pool_size"] <= MAX_SIZE
    assert observer.backends(app) == stats["pool_size"]


def test_sqlalchemy_engine_on_a_pool_with_threads(
    impl: Impl, observer: Observer, pg_dsn: str, table: str
) -> None:
    app = unique_app()
    with impl.ConnectionPool(
        with_app(pg_dsn, app),
        min_size=2,
        max_size=MAX_SIZE,
        close_returns=True,
        timeout=10.0,
        open=False,
    ) as pool:
        engine = create_engine("postgresql+psycopg://", creator=pool.getconn, poolclass=NullPool)

        def fail_in_transaction(key: int) -> None:
            with engine.begin() as conn:
                conn.execute(insert_into(table), {"id": key})
                raise Rollback

        def work(worker: int) -> None:
            for round_ in range(ROUNDS):
                key = worker * ROUNDS + round_
                if round_ == ROUNDS - 1:
                    # Rolled back, and the connection still comes back.
                    with pytest.raises(Rollback):
                        fail_in_transaction(-key)
                else:
                    with engine.begin() as conn:
                        conn.execute(insert_into(table), {"id": key})

        try:
            with ThreadPoolExecutor(WORKERS) as executor:
                for future in [executor.submit(work, n) for n in range(WORKERS)]:
                    future.result(timeout=30)
        finally:
            engine.dispose()
        Flavour.wait_until(
            lambda: pool.get_stats()["pool_available"] == pool.get_stats()["pool_size"]
        )
        assert_balanced(pool, observer, app)
    assert observer.ids(table) == committed()


async def test_sqlalchemy_async_engine_on_a_pool_with_tasks(
    impl: Impl, observer: Observer, pg_dsn: str, table: str
) -> None:
    app = unique_app()
    async with impl.AsyncConnectionPool(
        with_app(pg_dsn, app),
        min_size=2,
        max_size=MAX_SIZE,
        close_returns=True,
        timeout=10.0,
        open=False,
    ) as pool:
        engine = create_async_engine(
            "postgresql+psycopg://", async_creator=pool.getconn, poolclass=NullPool
        )

        async def fail_in_transaction(key: int) -> None:
            async with engine.begin() as conn:
                await conn.execute(insert_into(table), {"id": key})
                raise Rollback

        async def work(worker: int) -> None:
            for round_ in range(ROUNDS):
                key = worker * ROUNDS + round_
                if round_ == ROUNDS - 1:
                    with pytest.raises(Rollback):
                        await fail_in_transaction(-key)
                else:
                    async with engine.begin() as conn:
                        await conn.execute(insert_into(table), {"id": key})

        try:
            async with asyncio.timeout(30):
                await asyncio.gather(*(work(n) for n in range(WORKERS)))
        finally:
            await engine.dispose()
        await AsyncFlavour.wait_until(
            lambda: pool.get_stats()["pool_available"] == pool.get_stats()["pool_size"]
        )
        assert_balanced(pool, observer, app)
    assert observer.ids(table) == committed()
