# WARNING: this file is generated from tests/faults/_async/test_lifecycle.py by tools/gen_sync.py.
# Do not edit it: edit the source and run `python tools/gen_sync.py`.

"""The pool's own life under load: leaks, close with borrowed connections, drain, timeouts.

This file is the source of ``tests/faults/_sync/test_lifecycle.py`` (``tools/gen_sync.py``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg
import pytest

from faults._sync.common import (
    MAX_SIZE,
    WORKERS,
    assert_whole,
    backend_pids,
    fault_pool,
    unique_app,
)
from faults.workload import Faults, Load
from pgfleet import Pool, PoolClosed, PoolTimeout
from support.cluster import PgCluster
from support.timing import deadline_bound, well_under

LEAK_TIMEOUT = 0.4
#: How long `close()` waits for borrowed connections in `test_close_with_borrowed_connections`.
CLOSE_TIMEOUT = 2.0


def leak_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "pgfleet" and r.levelno == level and "leak" in r.getMessage()
    ]


def borrow_and_forget(
    pool: Pool[psycopg.Connection[Any]],
) -> psycopg.Connection[Any]:
    """The line the leak warning must point at."""
    return pool.getconn()  # the leak


def test_leak_timeout_under_load(pg: PgCluster, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pgfleet")
    with fault_pool(pg, unique_app(), leak_timeout=LEAK_TIMEOUT) as pool:
        with Load(pool, workers=WORKERS - 8) as load:
            conn = borrow_and_forget(pool)
            Faults.wait_until(lambda: leak_records(caplog, logging.WARNING))
            assert pool.stats().leaks == 1
            Faults.sleep(LEAK_TIMEOUT + 0.2)  # another leak_timeout: no repeat
            pool.putconn(conn)
            Faults.wait_until(lambda: leak_records(caplog, logging.INFO))
        load.report().assert_sound(pool_errors=False, in_flight=False)
        [warning] = leak_records(caplog, logging.WARNING)
        message = warning.getMessage()
        assert "held for" in message
        assert "borrow_and_forget" in message
        assert "# the leak" in message  # the very line, from the stack
        [info] = leak_records(caplog, logging.INFO)
        assert "came back" in info.getMessage()
        assert pool.stats().leaks == 1  # the load's short checkouts are no leaks
        assert_whole(pool)


def test_close_with_borrowed_connections(pg: PgCluster) -> None:
    before = Faults.background()
    app = unique_app()
    pool = fault_pool(pg, app, min_size=2, max_size=4)
    pool.open()
    held = [pool.getconn() for _ in range(4)]
    with Load(pool, workers=8, timeout=10.0) as load:
        Faults.wait_until(lambda: pool.stats().waiting == 8)
        started = time.monotonic()
        closing = Faults.spawn(pool.close, CLOSE_TIMEOUT)
        # The waiters fail at once with PoolClosed (not at the close timeout); the borrowers
        # keep their connections...
        load.wait_for(8, "pool_error")
        assert time.monotonic() - started < well_under(CLOSE_TIMEOUT)
        assert not any(conn.closed for conn in held)
        cur = held[0].execute("SELECT 1")
        assert cur.fetchone() == (1,)
        # ...until the close timeout: then they are closed under them.
        Faults.join(closing)
        assert CLOSE_TIMEOUT <= time.monotonic() - started < deadline_bound(CLOSE_TIMEOUT)
    report = load.report()
    report.assert_sound(in_flight=False, min_ok=0)
    assert len(report.outcomes) == 8
    assert all(isinstance(o.error, PoolClosed) for o in report.outcomes)
    assert all(conn.closed for conn in held)
    for conn in held:
        pool.putconn(conn)  # late returns are harmless
    pool.close()  # idempotent
    _, error = Faults.timed(pool.getconn)
    assert isinstance(error, PoolClosed)
    Faults.poll_server(lambda: not backend_pids(pg, app))
    # Nothing left behind: every background task (thread) the pool started has ended.
    Faults.wait_until(lambda: Faults.background() <= before, timeout=2.0)


def test_drain_replaces_every_connection(pg: PgCluster) -> None:
    app = unique_app()
    with fault_pool(pg, app, min_size=MAX_SIZE) as pool:
        before = assert_whole(pool)
        with Load(pool, workers=WORKERS) as load:
            load.wait_for(100)
            pool.drain()
            load.wait_for(300, since=time.monotonic())
        load.report().assert_sound(pool_errors=False, in_flight=False)
        after = assert_whole(pool)
        assert not after & before
        Faults.poll_server(lambda: not backend_pids(pg, app) & before)
        closed = pool.stats().connections_closed
        assert closed.get("drained", 0) + closed.get("retired", 0) >= MAX_SIZE, closed


def test_timeout_storm(pg: PgCluster) -> None:
    # Tiny timeouts race the hand-offs: a waiter may time out as it is served.
    with fault_pool(pg, unique_app(), min_size=2, max_size=4) as pool:
        with Load(
            pool,
            workers=WORKERS,
            timeouts=(0.0005, 0.002, 0.005, 0.02, 0.1),
            query="SELECT pg_sleep(0.002)",
            pause_after_error=0,
        ) as load:
            load.wait_for(100, "pool_error")
            load.wait_for(300)
        report = load.report()
        report.assert_sound(in_flight=False)
        assert all(isinstance(o.error, PoolTimeout) for o in report.of("pool_error"))
        stats = pool.stats()
        assert stats.timeouts >= 100
        assert stats.checks_failed == stats.returns_broken == 0
        assert_whole(pool)
