# WARNING: this file is generated from tests/faults/_async/test_startup.py by tools/gen_sync.py.
# Do not edit it: edit the source and run `python tools/gen_sync.py`.

"""Start-up: waiting for a database that is late, failing at once when waiting cannot help.

This file is the source of ``tests/faults/_sync/test_startup.py`` (``tools/gen_sync.py``).
"""

from __future__ import annotations

import logging
import time

import pytest
from psycopg import sql

from faults._sync.common import (
    TIMEOUT,
    WORKERS,
    assert_whole,
    fault_pool,
    unique_app,
)
from faults.workload import Faults, Load
from pgfleet import DatabaseUnavailable, PoolError, PoolTimeout
from support.cluster import APP_PASSWORD, ClusterFactory, PgCluster
from support.timing import deadline_bound, well_under

#: The pools here back off at most this long between attempts (``reconnect_max_delay``).
MAX_DELAY = 0.5
#: How long `open()` and `wait()` are given for a database that is late.
WAIT_TIMEOUT = 10.0
#: Once the server is ready, a checkout that begins this much later must succeed: one
#: back-off delay and a connect, with room for a loaded machine.
HEALED_WITHIN = deadline_bound(MAX_DELAY)


def test_open_waits_for_a_late_server(
    make_cluster: ClusterFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pgfleet")
    cluster = make_cluster()
    Faults.run(cluster.stop)
    pool = fault_pool(cluster, unique_app(), min_size=2, reconnect_max_delay=MAX_DELAY)
    opening = Faults.spawn(pool.open, True, WAIT_TIMEOUT)
    try:
        Faults.wait_until(lambda: pool.stats().connect_errors >= 3)
        Faults.run(cluster.start)
        ready = time.monotonic()
        Faults.join(opening)
        # At most one back-off delay plus a connect after the server is ready: well before
        # the open's timeout.
        assert time.monotonic() - ready < well_under(WAIT_TIMEOUT)
        messages = [r.getMessage() for r in caplog.records if r.name == "pgfleet"]
        assert any(
            "connection attempt 1 failed" in m and "next attempt in" in m for m in messages
        ), messages
        assert any("ready" in m for m in messages), messages
        assert APP_PASSWORD not in caplog.text
        assert_whole(pool)
    finally:
        pool.close()


def test_traffic_before_the_server_is_up(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster()
    Faults.run(cluster.stop)
    pool = fault_pool(cluster, unique_app(), reconnect_max_delay=MAX_DELAY)
    pool.open(wait=False)
    try:
        with Load(pool, workers=WORKERS) as load:
            # Fail fast while the database is known down, instead of waiting 2 s each.
            load.wait_for(50, "pool_error")
            Faults.run(cluster.start)
            ready = time.monotonic()
            load.wait_for(300, since=ready)
            load.wait_for(100, since=ready + HEALED_WITHIN)
        report = load.report()
        report.assert_sound(in_flight=False)
        down = report.of("pool_error")
        assert all(isinstance(o.error, DatabaseUnavailable) for o in down[:50])
        assert max(o.checkout for o in down[:50]) < well_under(TIMEOUT)
        report.assert_no_errors_since(ready + HEALED_WITHIN)
        assert_whole(pool)
    finally:
        pool.close()


def test_bad_password_fails_at_once(pg: PgCluster) -> None:
    secret = "not-the-password-8213"
    conninfo = pg.conninfo(password=secret)
    pool = fault_pool(conninfo, unique_app(), min_size=2)
    try:
        elapsed, error = Faults.timed(pool.open, wait=True, timeout=WAIT_TIMEOUT)
    finally:
        pool.close()
    assert type(error) is PoolError, error
    assert elapsed < well_under(WAIT_TIMEOUT), elapsed  # it did not wait it out
    assert "password" in str(error)
    assert secret not in str(error)
    assert "password authentication failed" in str(error.__cause__)
    # The context manager form fails the same way (and closes the pool).
    pool = fault_pool(conninfo, unique_app(), timeout=WAIT_TIMEOUT)
    with pytest.raises(PoolError) as info, pool:
        pass
    assert type(info.value) is PoolError
    assert pool.closed


def test_retry_all_errors_keeps_waiting(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster()
    rotated = "rotated-password-5521"
    pool = fault_pool(
        cluster.conninfo(password=rotated),
        unique_app(),
        min_size=2,
        retry_all_errors=True,
        reconnect_max_delay=MAX_DELAY,
    )
    try:
        elapsed, error = Faults.timed(pool.open, wait=True, timeout=1.0)
        assert isinstance(error, PoolTimeout), error
        assert elapsed >= 0.9, elapsed  # it waited, as asked
        assert "password authentication failed" in str(error.__cause__)
        waiting = Faults.spawn(pool.wait, WAIT_TIMEOUT)
        # The database is being provisioned: the password the pool has becomes valid.
        change = sql.SQL("ALTER ROLE app PASSWORD {}").format(sql.Literal(rotated))
        Faults.run(cluster.execute, change)
        ready = time.monotonic()
        Faults.join(waiting)
        # At most one back-off delay plus a connect: well before the wait's timeout.
        assert time.monotonic() - ready < well_under(WAIT_TIMEOUT)
        assert_whole(pool)
    finally:
        pool.close()
