"""A pool that keeps no idle connection (``_keeps_idle = False``, what the null pools
build on), against a real PostgreSQL server.

The async file is the source, the threaded one is generated (``python tools/gen_sync.py``).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any, ClassVar

import psycopg
import pytest

from pgfleet import AsyncPool
from pgfleet.errors import PoolError
from support.cluster import ClusterFactory, PgCluster
from support.flavours import AsyncFlavour, AsyncTask
from support.timing import well_under

TIMEOUT = 10.0


class _NoIdle(AsyncPool[Any]):
    """The smallest pool that keeps no idle connection."""

    _keeps_idle: ClassVar[bool] = False


def unique_app() -> str:
    return f"pgfleet-test-{uuid.uuid4().hex[:12]}"


def no_idle_pool(cluster: PgCluster, app: str, **options: Any) -> _NoIdle:
    options.setdefault("min_size", 0)
    options.setdefault("max_size", 2)
    options.setdefault("timeout", TIMEOUT)
    options.setdefault("connect_timeout", 5.0)
    return _NoIdle(cluster.conninfo(), kwargs={"application_name": app}, **options)


def backends(cluster: PgCluster, app: str) -> int:
    [(count,)] = cluster.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", app
    )
    return int(count)


def assert_balanced(pool: AsyncPool[Any]) -> None:
    stats = pool.stats()
    assert stats.idle == 0
    closed = sum(stats.connections_closed.values())
    assert stats.connections_created - closed == stats.size, stats


async def test_no_connection_is_kept_after_a_return(pg: PgCluster) -> None:
    app = unique_app()
    async with no_idle_pool(pg, app) as pool:
        assert backends(pg, app) == 0  # nothing filled at open
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT 1")
            assert await cur.fetchone() == (1,)
            assert backends(pg, app) == 1
        stats = pool.stats()
        assert (stats.size, stats.idle, stats.in_use) == (0, 0, 0)
        assert stats.connections_closed == {"not_kept": 1}
        await AsyncFlavour.wait_until(lambda: backends(pg, app) == 0)
        conn = await pool.getconn()
        await pool.putconn(conn)
        assert conn.closed
        assert pool.stats().connections_created == 2
        assert_balanced(pool)


async def test_min_size_must_be_zero(pg: PgCluster) -> None:
    with pytest.raises(ValueError, match="min_size must be 0"):
        no_idle_pool(pg, unique_app(), min_size=1)


async def test_max_size_bounds_concurrency_and_callers_queue(pg: PgCluster) -> None:
    app = unique_app()
    lock = threading.Lock()
    inside = [0, 0]  # now, most at once

    async def work(pool: _NoIdle) -> None:
        async with pool.connection() as conn:
            with lock:
                inside[0] += 1
                inside[1] = max(inside[1], inside[0])
            await conn.execute("SELECT pg_sleep(0.02)")
            with lock:
                inside[0] -= 1

    async with no_idle_pool(pg, app, max_size=2) as pool:
        tasks = [AsyncTask(work, pool) for _ in range(8)]
        for task in tasks:
            await task.join(TIMEOUT)
        stats = pool.stats()
        assert inside[1] <= 2
        assert stats.checkouts == 8
        assert stats.checkouts_waited >= 1  # callers queued rather than grew the pool
        assert stats.connections_created <= 8
        assert (stats.size, stats.in_use, stats.waiting) == (0, 0, 0)
        assert_balanced(pool)
    assert backends(pg, app) == 0


@pytest.mark.parametrize("fail_fast", [True, False])
async def test_database_down_gives_the_caller_the_connect_error(
    make_cluster: ClusterFactory, fail_fast: bool
) -> None:
    cluster = make_cluster()
    app = unique_app()
    async with no_idle_pool(cluster, app, fail_fast=fail_fast) as pool:
        async with pool.connection() as conn:
            await conn.execute("SELECT 1")
        cluster.stop()
        for _ in range(3):  # each caller gets its own attempt's error, none hangs
            started = time.monotonic()
            with pytest.raises(psycopg.OperationalError) as caught:
                async with pool.connection():
                    pass
            assert time.monotonic() - started < well_under(TIMEOUT)
            assert isinstance(caught.value, PoolError)
            assert isinstance(caught.value.__cause__, psycopg.OperationalError)
        cluster.start()
        async with pool.connection() as conn:  # back: the next caller connects
            await conn.execute("SELECT 1")
        assert pool.stats().failed_fast >= 3
        assert_balanced(pool)
