"""Pools, server helpers and the end-of-scenario checks shared by the fault tests.

This file is the source of ``tests/faults/_sync/common.py`` (``python tools/gen_sync.py``).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import pq

from pgfleet import AsyncPool
from support.cluster import PgCluster
from support.timing import deadline_bound

#: Workers and connections of a standard load: oversubscribed four times.
WORKERS = 32
MAX_SIZE = 8
#: The checkout timeout of the load's workers.
TIMEOUT = 2.0
#: How long `assert_whole` may wait for each of the ``max_size`` connections.
WHOLE_TIMEOUT = 5.0
#: Once the server is ready (or the network is back), every checkout that begins this much
#: later must succeed. Healing takes a back-off (``reconnect_max_delay``, 0.5 s) and a
#: connect: well under a second, and this leaves room for a loaded machine.
HEALED_WITHIN = deadline_bound(1.0)


def unique_app() -> str:
    """An ``application_name`` that tells this test's backends apart."""
    return f"pgfleet-fault-{uuid.uuid4().hex[:12]}"


def fault_pool(
    conninfo: PgCluster | str, app: str, **options: Any
) -> AsyncPool[psycopg.AsyncConnection[Any]]:
    """A pool sized for the standard load whose connections carry `app`."""
    if isinstance(conninfo, PgCluster):
        conninfo = conninfo.conninfo()
    kwargs = {"application_name": app, **options.pop("kwargs", {})}
    options.setdefault("min_size", 4)
    options.setdefault("max_size", MAX_SIZE)
    options.setdefault("timeout", TIMEOUT)
    options.setdefault("connect_timeout", 2.0)
    options.setdefault("reconnect_max_delay", 0.5)
    return AsyncPool(conninfo, kwargs=kwargs, **options)


def backend_pids(cluster: PgCluster, app: str, state: str | None = None) -> set[int]:
    """Backends whose application_name is `app` (in `state`, if given)."""
    rows = cluster.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
        " AND (%s::text IS NULL OR state = %s::text)",
        app,
        state,
        state,
    )
    return {int(pid) for (pid,) in rows}


def terminate_busy(cluster: PgCluster, app: str) -> int:
    """``pg_terminate_backend`` the backends of `app` running a query; how many there were."""
    rows = cluster.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = %s AND state = 'active'",
        app,
    )
    return sum(1 for (done,) in rows if done)


def crash_and_start(cluster: PgCluster, down_for: float = 0.3) -> None:
    """``pg_ctl stop -m immediate``, a moment with the port closed, then start (recovery)."""
    cluster.crash()
    time.sleep(down_for)  # refused connects meanwhile: the fail-fast path
    cluster.start()


@contextmanager
def hung(cluster: PgCluster, app: str) -> Iterator[set[int]]:
    """SIGSTOP the postmaster and the backends of `app`: TCP answers, PostgreSQL does not."""
    pids = backend_pids(cluster, app)
    stopped: list[int] = []
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        cluster.kill_postmaster_stop()
        yield pids
    finally:
        cluster.resume()
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


async def assert_whole(
    pool: AsyncPool[psycopg.AsyncConnection[Any]], timeout: float = WHOLE_TIMEOUT
) -> set[int]:
    """No slot lost, nothing dead lent: the pool lends ``max_size`` working connections at once.

    Returns their backend pids.
    """
    stats = pool.stats()
    assert stats.in_use == 0, f"connections still lent: {stats}"
    assert stats.waiting == 0, f"ghost waiters: {stats}"
    assert stats.size <= stats.max_size, f"over max_size: {stats}"
    conns: list[psycopg.AsyncConnection[Any]] = []
    pids: set[int] = set()
    try:
        for _ in range(stats.max_size):
            conns.append(await pool.getconn(timeout=timeout))
        for conn in conns:
            # Nothing dirty comes out of the pool: not mid-transaction, not mid-query.
            assert conn.info.transaction_status == pq.TransactionStatus.IDLE, conn
            cur = await conn.execute("SELECT pg_backend_pid()")
            row = await cur.fetchone()
            assert row is not None
            pids.add(int(row[0]))
    finally:
        for conn in conns:
            await pool.putconn(conn)
    assert len(pids) == stats.max_size
    after = pool.stats()
    assert (after.in_use, after.waiting) == (0, 0), after
    assert after.size <= after.max_size, after
    return pids
