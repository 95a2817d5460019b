"""Fork safety, for both flavours (written per flavour: forking differs).

A child forked while the parent's pool is busy (half its connections lent, half idle) must
never write a byte to the parent's connections (not even the Terminate that closing or
garbage-collecting them would send) and must open its own. Proof: the child's backends have
other pids, the parent's backends are all still there afterwards, and the parent's
connections keep working without one being found broken or replaced.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

from psycopg import pq

from faults._async.common import MAX_SIZE, backend_pids, fault_pool, unique_app
from faults._async.common import assert_whole as async_assert_whole
from faults._sync.common import assert_whole as sync_assert_whole
from faults._sync.common import fault_pool as sync_fault_pool
from faults.workload import AsyncLoad, Load
from support.cluster import PgCluster

#: The child must be done by then, or it is killed and the test fails.
CHILD_PATIENCE = 20.0


def fork_child(child: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Fork; the child runs `child` and reports its result as JSON; the parent returns it."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking a multi-threaded process: that is the point here.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.close(read_end)
            try:
                report = child()
                code = 0
            except BaseException:
                report = {"error": traceback.format_exc()}
            gc.collect()  # the parent's connections must survive a collection too
            os.write(write_end, json.dumps(report).encode())
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        data = b""
        deadline = time.monotonic() + CHILD_PATIENCE
        os.set_blocking(read_end, False)
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            try:
                while chunk := os.read(read_end, 65536):
                    data += chunk
            except BlockingIOError:
                pass
            if done:
                assert os.waitstatus_to_exitcode(status) == 0, data.decode()
                return dict(json.loads(data))
            time.sleep(0.01)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise AssertionError(f"the child did not finish within {CHILD_PATIENCE} s")
    finally:
        os.close(read_end)


def assert_parent_untouched(before: Any, after: Any) -> None:
    """No connection of the parent was found broken, failed a check or was replaced."""
    assert after.connections_created == before.connections_created, after
    assert after.returns_broken == after.checks_failed == 0, after
    assert not after.connections_closed, after


def test_fork_threaded_pool(pg: PgCluster) -> None:
    app = unique_app()
    with sync_fault_pool(pg, app, min_size=8) as pool:
        sync_assert_whole(pool)

        def child() -> dict[str, Any]:
            pids = []
            for _ in range(2):
                with pool.connection(timeout=5) as first, pool.connection(timeout=5) as second:
                    pids += [first.info.backend_pid, second.info.backend_pid]
                    for conn in (first, second):
                        assert conn.execute("SELECT 1").fetchone() == (1,)
            pool.close()
            return {"pids": pids}

        with Load(pool, workers=MAX_SIZE // 2) as load:
            load.wait_for(100)
            before = pool.stats()
            parent_pids = backend_pids(pg, app)
            report = fork_child(child)
            load.wait_for(100, since=time.monotonic())
        load.report().assert_sound(pool_errors=False, in_flight=False)
        assert "error" not in report, report.get("error")
        assert set(report["pids"]).isdisjoint(parent_pids)
        assert len(set(report["pids"])) >= 2  # its own connections, not one per checkout
        after = pool.stats()
        assert_parent_untouched(before, after)
        assert sync_assert_whole(pool) == parent_pids  # the very same backends, working
        assert backend_pids(pg, app) == parent_pids  # the child's are gone


async def test_fork_asyncio_pool(pg: PgCluster) -> None:
    app = unique_app()
    async with fault_pool(pg, app, min_size=8) as pool:
        await async_assert_whole(pool)

        def child() -> dict[str, Any]:
            # The child forked from a thread that runs no event loop: it starts its own.
            async def use_the_pool() -> dict[str, Any]:
                pids = []
                for _ in range(2):
                    async with (
                        pool.connection(timeout=5) as first,
                        pool.connection(timeout=5) as second,
                    ):
                        pids += [first.info.backend_pid, second.info.backend_pid]
                        for conn in (first, second):
                            cur = await conn.execute("SELECT 1")
                            assert await cur.fetchone() == (1,)
                await pool.close()
                return {"pids": pids}

            return asyncio.run(use_the_pool())

        async with AsyncLoad(pool, workers=MAX_SIZE // 2) as load:
            await load.wait_for(100)
            before = pool.stats()
            parent_pids = await asyncio.to_thread(backend_pids, pg, app)
            # Fork from a worker thread while the loop keeps serving the load.
            report = await asyncio.to_thread(fork_child, child)
            await load.wait_for(100, since=time.monotonic())
        load.report().assert_sound(pool_errors=False, in_flight=False)
        assert "error" not in report, report.get("error")
        assert set(report["pids"]).isdisjoint(parent_pids)
        assert len(set(report["pids"])) >= 2
        assert_parent_untouched(before, pool.stats())
        assert await async_assert_whole(pool) == parent_pids
        assert backend_pids(pg, app) == parent_pids


def test_a_connection_lent_across_a_fork_is_left_to_the_parent(pg: PgCluster) -> None:
    """The block that holds a connection forks; the child ends the block too. Ending it
    cleanly would commit on the parent's session, raising would roll it back: the child
    must send nothing, and its pool must not take the parent's entry for one of its own."""
    app = unique_app()
    with sync_fault_pool(pg, app, min_size=2, max_size=2, kwargs={"autocommit": False}) as pool:
        guard = pool.connection()
        conn = guard.__enter__()
        conn.execute("SELECT 1")  # the parent's transaction is open
        parent_pid = conn.info.backend_pid

        def child() -> dict[str, Any]:
            with pool.connection(timeout=5) as own:  # the child's first entry
                own_pid = own.info.backend_pid
                guard.__exit__(None, None, None)  # the parent's block ends here too
                assert pool.stats().in_use == 1  # the child's entry is still lent
            with pool.connection(timeout=5) as again:
                again_pid = again.info.backend_pid
            pool.close()
            return {"own": own_pid, "again": again_pid}

        report = fork_child(child)
        assert "error" not in report, report.get("error")
        assert parent_pid not in (report["own"], report["again"])
        # Nothing was sent on the parent's session: still inside its transaction.
        state = pg.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", parent_pid)
        assert state == [("idle in transaction",)]
        assert conn.info.transaction_status == pq.TransactionStatus.INTRANS
        guard.__exit__(None, None, None)  # the parent commits as usual
        state = pg.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", parent_pid)
        assert state == [("idle",)]
        assert pool.stats().connections_closed == {}
