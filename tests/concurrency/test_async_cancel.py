"""Cancelled asyncio callers: no ghost waiter, no lost slot, nothing dirty lent again.

Hand-written (asyncio only, not generated): a thread cannot be cancelled. The stress version
is ``test_tasks.py::test_cancellation_storm_loses_no_slot``; these are the single, exact cases.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import pq

from pgfleet import AsyncPool
from support.cluster import PgCluster
from support.flavours import AsyncFakeManager, AsyncFlavour, FakeConn

SHORT = 0.2


def fake_pool(manager: AsyncFakeManager, **kwargs: Any) -> AsyncPool[FakeConn]:
    kwargs.setdefault("min_size", 1)
    kwargs.setdefault("max_size", 1)
    kwargs.setdefault("check_after_idle", None)
    return AsyncPool(manager=manager, **kwargs)


async def test_cancelled_waiter_leaves_no_ghost_and_loses_no_slot() -> None:
    async with fake_pool(AsyncFakeManager()) as pool:
        conn = await pool.getconn()
        waiter = asyncio.create_task(pool.getconn(timeout=10.0))
        await AsyncFlavour.wait_until(lambda: pool.stats().waiting == 1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert pool.stats().waiting == 0  # no ghost waiter
        await pool.putconn(conn)
        stats = pool.stats()
        assert (stats.idle, stats.in_use, stats.size) == (1, 0, 1)  # no lost slot
        assert await pool.getconn(timeout=SHORT) is conn
        await pool.putconn(conn)
        assert pool.stats().timeouts == 0  # a cancellation is not a timeout


async def test_waiter_cancelled_as_it_is_served_gives_the_connection_back() -> None:
    async with fake_pool(AsyncFakeManager()) as pool:
        conn = await pool.getconn()
        waiter = asyncio.create_task(pool.getconn(timeout=10.0))
        await AsyncFlavour.wait_until(lambda: pool.stats().waiting == 1)
        await pool.putconn(conn)  # hands the connection to the waiter...
        waiter.cancel()  # ...which is cancelled before it runs again
        try:
            got = await waiter
        except asyncio.CancelledError:
            pass  # the served entry went back to the pool
        else:
            await pool.putconn(got)  # the cancellation lost the race: a normal checkout
        await AsyncFlavour.wait_until(lambda: pool.stats().idle == 1)
        stats = pool.stats()
        assert (stats.in_use, stats.waiting, stats.size) == (0, 0, 1)
        assert await pool.getconn(timeout=SHORT) is conn
        await pool.putconn(conn)


async def test_waiter_cancelled_while_a_connect_is_in_flight() -> None:
    manager = AsyncFakeManager()
    async with fake_pool(manager, max_size=2) as pool:
        held = await pool.getconn()
        manager.connect_gate.clear()  # the next connect hangs
        waiter = asyncio.create_task(pool.getconn(timeout=10.0))
        await AsyncFlavour.wait_until(lambda: manager.connect_attempts == 2)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        manager.connect_gate.set()
        # The connection opened for the departed caller is pooled, not lost.
        await AsyncFlavour.wait_until(lambda: pool.stats().idle == 1)
        stats = pool.stats()
        assert (stats.size, stats.in_use, stats.waiting, stats.connecting) == (2, 1, 0, 0)
        await pool.putconn(held)


async def test_cancelled_connection_block_returns_the_connection() -> None:
    async with fake_pool(AsyncFakeManager()) as pool:
        entered = asyncio.Event()

        async def hold() -> None:
            async with pool.connection():
                entered.set()
                await asyncio.sleep(10)

        task = asyncio.create_task(hold())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stats = pool.stats()
        assert (stats.idle, stats.in_use) == (1, 0)
        assert pool.manager.commits == 0  # type: ignore[attr-defined]


async def test_task_cancelled_mid_query_returns_nothing_dirty(pg: PgCluster) -> None:
    app = f"pgfleet-test-{uuid.uuid4().hex[:12]}"
    async with AsyncPool(
        pg.conninfo(), kwargs={"application_name": app}, min_size=1, max_size=1, timeout=10.0
    ) as pool:
        started = asyncio.Event()

        async def sleep_in_the_server() -> None:
            async with pool.connection() as conn:
                await conn.execute("CREATE TEMP TABLE IF NOT EXISTS items (x int)")
                await conn.execute("INSERT INTO items VALUES (1)")
                started.set()
                await conn.execute("SELECT pg_sleep(10)")

        task = asyncio.create_task(sleep_in_the_server())
        await started.wait()
        await AsyncFlavour.wait_until(lambda: _active_sleeps(pg, app) == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        async with pool.connection(timeout=5.0) as conn:
            assert conn.info.transaction_status == pq.TransactionStatus.IDLE
            cur = await conn.execute("SELECT 1")
            assert await cur.fetchone() == (1,)
            # Either the same session, rolled back, or a new one: never the insert.
            cur = await conn.execute("SELECT to_regclass('pg_temp.items') IS NOT NULL")
            row = await cur.fetchone()
            if row == (True,):
                cur = await conn.execute("SELECT count(*) FROM items")
                assert await cur.fetchone() == (0,)
        assert _active_sleeps(pg, app) == 0
        stats = pool.stats()
        assert (stats.in_use, stats.waiting) == (0, 0)


def _active_sleeps(pg: PgCluster, app: str) -> int:
    [(count,)] = pg.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE application_name = %s AND state = 'active' AND query LIKE %s",
        app,
        "%pg_sleep%",
    )
    return int(count)


async def test_cancelled_task_in_a_transaction_is_rolled_back(pg: PgCluster) -> None:
    app = f"pgfleet-test-{uuid.uuid4().hex[:12]}"
    async with AsyncPool(
        pg.conninfo(), kwargs={"application_name": app}, min_size=1, max_size=1
    ) as pool:
        inserted = asyncio.Event()

        async def insert_and_wait() -> None:
            async with pool.connection() as conn:
                await conn.execute("CREATE TEMP TABLE IF NOT EXISTS items (x int)")
                await conn.execute("INSERT INTO items VALUES (1)")
                inserted.set()
                await asyncio.sleep(10)  # cancelled here, outside any query

        task = asyncio.create_task(insert_and_wait())
        await inserted.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT to_regclass('pg_temp.items') IS NOT NULL")
            assert await cur.fetchone() == (False,)  # the CREATE was rolled back too
        assert isinstance(conn, psycopg.AsyncConnection)
