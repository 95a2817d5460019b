"""Server-side faults under load: restarts, crashes, terminated backends, full servers,
idle timeouts, a hung server.

This file is the source of ``tests/faults/_sync/test_outages.py`` (``tools/gen_sync.py``).
Every scenario runs 32 workers over 8 connections through the fault, then asserts the rules
of `faults.workload.Report.assert_sound` and that the pool is whole (`assert_whole`).
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest

from faults._async.common import (
    HEALED_WITHIN,
    MAX_SIZE,
    WORKERS,
    assert_whole,
    backend_pids,
    crash_and_start,
    fault_pool,
    hung,
    terminate_busy,
    unique_app,
)
from faults.workload import HANG_SLACK, AsyncFaults, AsyncLoad
from pgfleet import DatabaseUnavailable, PoolTimeout
from support.cluster import ClusterFactory, PgCluster
from support.timing import deadline_bound


async def outage(cluster: PgCluster, mode: str) -> None:
    if mode == "restart":
        await AsyncFaults.run(cluster.restart, "fast")
    else:
        await AsyncFaults.run(crash_and_start, cluster)


@pytest.mark.parametrize("mode", ["restart", "crash"])
async def test_outage_mid_load(make_cluster: ClusterFactory, mode: str) -> None:
    cluster = make_cluster()
    async with fault_pool(cluster, unique_app()) as pool:
        async with AsyncLoad(pool, workers=WORKERS) as load:
            await load.wait_for(200)
            await outage(cluster, mode)
            ready = time.monotonic()
            await load.wait_for(300, since=ready)
            await load.wait_for(100, since=ready + HEALED_WITHIN)
        report = load.report()
        report.assert_sound()
        report.assert_no_errors_since(ready + HEALED_WITHIN)
        await assert_whole(pool)


@pytest.mark.parametrize("mode", ["restart", "crash"])
async def test_outage_while_idle(make_cluster: ClusterFactory, mode: str) -> None:
    cluster = make_cluster()
    app = unique_app()
    async with fault_pool(cluster, app, min_size=MAX_SIZE) as pool:
        before = await assert_whole(pool)
        await outage(cluster, mode)
        # The server is ready: from now on no checkout may fail, and none may be lent a
        # connection that died in the outage.
        async with AsyncLoad(pool, workers=WORKERS) as load:
            await load.wait_for(300)
        load.report().assert_sound(pool_errors=False, in_flight=False)
        assert not (await assert_whole(pool)) & before


async def test_terminate_idle_connections(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster()
    app = unique_app()
    async with fault_pool(cluster, app, min_size=MAX_SIZE) as pool:
        before = await assert_whole(pool)
        assert cluster.terminate_backends(application_name=app) == MAX_SIZE
        async with AsyncLoad(pool, workers=WORKERS) as load:
            await load.wait_for(300)
        load.report().assert_sound(pool_errors=False, in_flight=False)
        assert not (await assert_whole(pool)) & before


async def test_terminate_busy_connections(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster()
    app = unique_app()
    async with fault_pool(cluster, app) as pool:
        async with AsyncLoad(pool, workers=WORKERS, query="SELECT pg_sleep(0.01)") as load:
            killed = 0
            for _ in range(3):
                await load.wait_for(50, since=time.monotonic())
                killed += await AsyncFaults.run(terminate_busy, cluster, app)
            await load.wait_for(100, since=time.monotonic())
        report = load.report()
        # The queries in flight fail; the checkouts never do: the pool replaces the dead.
        report.assert_sound(pool_errors=False)
        assert killed >= 3
        assert 1 <= len(report.of("in_flight")) <= killed
        assert pool.stats().returns_broken >= 1
        await assert_whole(pool)


def fill_server(cluster: PgCluster, app: str) -> list[psycopg.Connection[Any]]:
    """Connect until the server says "too many clients": the slots are all taken."""
    hogs: list[psycopg.Connection[Any]] = []
    while len(hogs) < 100:
        try:
            hogs.append(psycopg.connect(cluster.conninfo(application_name=app)))
        except psycopg.OperationalError as exc:
            # A full server says "too many clients" or, for the last few, that the slots
            # left are reserved (for superusers).
            if "too many clients" in str(exc) or "slots are reserved" in str(exc):
                return hogs
            error: Exception = exc
            break
    else:
        error = AssertionError("the server never filled up")
    for hog in hogs:
        hog.close()
    raise error


async def test_max_connections_exhausted(make_cluster: ClusterFactory) -> None:
    # 3 of the 13 slots are reserved for superusers: 10 for the app, all taken by others.
    cluster = make_cluster(max_connections=13)
    hogs = await AsyncFaults.run(fill_server, cluster, unique_app())
    pool = fault_pool(cluster, unique_app(), min_size=2)
    await pool.open(wait=False)
    try:
        async with AsyncLoad(pool, workers=WORKERS) as load:
            # Full: no connection at all, so the checkouts fail (fast) with a pool error.
            await load.wait_for(20, "pool_error")
            # Two slots free up: the pool takes them, and while it holds connections its
            # refused refills ("too many clients") fail nobody: the queue is served.
            for hog in hogs[:2]:
                hog.close()
            partial = time.monotonic()
            await load.wait_for(200, since=partial)
            stats = pool.stats()
            assert stats.size - stats.connecting <= 2, stats
            # Every slot is free: the pool grows to max_size.
            for hog in hogs[2:]:
                hog.close()
            await AsyncFaults.wait_until(lambda: pool.stats().size == MAX_SIZE)
            await load.wait_for(100, since=time.monotonic())
            await load.wait_for(100, since=partial + HEALED_WITHIN)
        report = load.report()
        report.assert_sound(in_flight=False)
        assert all(isinstance(o.error, PoolTimeout) for o in report.of("pool_error"))
        report.assert_no_errors_since(partial + HEALED_WITHIN)
        assert pool.stats().connect_errors >= 1
        assert len(await assert_whole(pool)) == MAX_SIZE
    finally:
        for hog in hogs:
            hog.close()
        await pool.close()


async def test_idle_session_timeout(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(extra_conf={"idle_session_timeout": "300ms"})
    app = unique_app()
    async with fault_pool(cluster, app, min_size=MAX_SIZE) as pool:
        await assert_whole(pool)
        # Two workers keep two connections hot (LIFO) while the server closes the six others.
        async with AsyncLoad(pool, workers=2) as light:
            await AsyncFaults.poll_server(lambda: len(backend_pids(cluster, app)) <= 2)
            # Then everybody at once: the dead ones must be noticed, not lent.
            async with AsyncLoad(pool, workers=WORKERS) as burst:
                await burst.wait_for(300)
        light.report().assert_sound(pool_errors=False, in_flight=False)
        burst.report().assert_sound(pool_errors=False, in_flight=False)
        await assert_whole(pool)


async def hold_in_transaction(pool: Any, cluster: PgCluster) -> None:
    """Borrow a connection, leave it idle in a transaction until the server kills it."""
    conn = await pool.getconn()
    await conn.execute("SELECT 1")  # opens the transaction
    pid = conn.info.backend_pid
    await AsyncFaults.poll_server(
        lambda: not cluster.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", pid)
    )
    await pool.putconn(conn)  # no error for the borrower either


async def test_idle_in_transaction_session_timeout(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(extra_conf={"idle_in_transaction_session_timeout": "200ms"})
    app = unique_app()
    async with fault_pool(cluster, app, min_size=MAX_SIZE) as pool:
        await assert_whole(pool)
        async with AsyncLoad(pool, workers=WORKERS - 4) as load:
            holders = [AsyncFaults.spawn(hold_in_transaction, pool, cluster) for _ in range(4)]
            for holder in holders:
                await AsyncFaults.join(holder)
            await load.wait_for(200, since=time.monotonic())
        load.report().assert_sound(pool_errors=False, in_flight=False)
        assert pool.stats().returns_broken >= 4
        await assert_whole(pool)


async def test_hung_server_checkout_times_out(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster()
    app = unique_app()
    async with fault_pool(cluster, app, max_size=4, timeout=1.0) as pool:
        async with AsyncLoad(pool, workers=16, timeout=1.0) as load:
            await load.wait_for(100)
            with hung(cluster, app):
                # Every connection is now stuck in a query; the connects get no answer.
                elapsed, error = await AsyncFaults.timed(pool.getconn, timeout=1.0)
                assert isinstance(error, PoolTimeout), error
                assert not isinstance(error, DatabaseUnavailable)
                assert elapsed < deadline_bound(1.0), elapsed
                await load.wait_for(16, "pool_error")
            await load.wait_for(100, since=time.monotonic())
        load.report().assert_sound()
        await assert_whole(pool)


async def test_hung_server_idle_pool(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster()
    app = unique_app()
    # check_after_idle=0: every checkout pings, so the checkout itself meets the hung server.
    async with fault_pool(cluster, app, max_size=4, check_after_idle=0) as pool:
        await assert_whole(pool)
        with hung(cluster, app):
            for _ in range(2):
                elapsed, error = await AsyncFaults.timed(pool.getconn, timeout=1.0)
                assert isinstance(error, PoolTimeout), error
                assert elapsed < deadline_bound(1.0), elapsed
        async with AsyncLoad(pool, workers=WORKERS) as load:
            await load.wait_for(200)
        report = load.report()
        report.assert_sound(in_flight=False)
        assert max(o.checkout for o in report.outcomes) < pool.timeout + HANG_SLACK
        await assert_whole(pool)
