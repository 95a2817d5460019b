# WARNING: this file is generated from tests/faults/_async/test_proxy.py by tools/gen_sync.py.
# Do not edit it: edit the source and run `python tools/gen_sync.py`.

"""Network faults through the TCP fault proxy (tests/support/proxy.py), under load.

This file is the source of ``tests/faults/_sync/test_proxy.py`` (``tools/gen_sync.py``).
Whatever the network does, a checkout with ``timeout=2`` keeps its deadline (it returns a
connection or a `PoolTimeout`), and once the network is back the pool heals by itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from faults._sync.common import (
    HEALED_WITHIN,
    WORKERS,
    assert_whole,
    fault_pool,
    unique_app,
)
from faults.workload import Faults, Load
from pgfleet import DatabaseUnavailable, Pool, PoolTimeout
from support.cluster import PgCluster
from support.proxy import FaultProxy
from support.timing import deadline_bound, well_under

#: A checkout with this timeout must return within `PROBE_BOUND`, whatever the network does.
PROBE_TIMEOUT = 2.0
PROBE_BOUND = deadline_bound(PROBE_TIMEOUT)

FAULTS: dict[str, Callable[[FaultProxy], None]] = {
    "reset": FaultProxy.reset,
    "close": FaultProxy.close,
    "delay": lambda proxy: proxy.delay(200),
    "blackhole": FaultProxy.blackhole,
    "cut": lambda proxy: proxy.cut_after(300, "down"),
}


@pytest.fixture
def proxy(pg: PgCluster) -> Iterator[FaultProxy]:
    with FaultProxy(("127.0.0.1", pg.port)) as proxy:
        yield proxy


def probe(pool: Pool[Any]) -> tuple[float, Any]:
    """One checkout with timeout=2: how long it took and what it gave (given back)."""
    elapsed, result = Faults.timed(pool.getconn, timeout=PROBE_TIMEOUT)
    if isinstance(result, psycopg.Connection):
        pool.putconn(result)
    else:
        assert isinstance(result, PoolTimeout), result  # DatabaseUnavailable included
    assert elapsed < PROBE_BOUND, f"a checkout with timeout={PROBE_TIMEOUT} took {elapsed:.3f} s"
    return elapsed, result


@pytest.mark.parametrize("fault", list(FAULTS))
def test_network_fault_under_load(pg: PgCluster, proxy: FaultProxy, fault: str) -> None:
    with fault_pool(pg.conninfo(port=proxy.port), unique_app()) as pool:
        with Load(pool, workers=WORKERS, timeout=PROBE_TIMEOUT) as load:
            load.wait_for(100)
            Faults.run(FAULTS[fault], proxy)
            _, result = probe(pool)
            if fault == "blackhole":
                # Every connection is stuck in a query, every connect in its handshake.
                assert isinstance(result, PoolTimeout), result
            Faults.sleep(0.3)  # the load runs through the fault a while longer
            Faults.run(proxy.passthrough)
            healed = time.monotonic()
            load.wait_for(200, since=healed)
            load.wait_for(100, since=healed + HEALED_WITHIN)
        report = load.report()
        report.assert_sound()
        report.assert_no_errors_since(healed + HEALED_WITHIN)
        assert_whole(pool)


def test_refused_connects(pg: PgCluster, proxy: FaultProxy) -> None:
    with fault_pool(pg.conninfo(port=proxy.port), unique_app()) as pool:
        with Load(pool, workers=WORKERS, timeout=PROBE_TIMEOUT) as load:
            load.wait_for(100)
            Faults.run(proxy.refuse)
            refused = time.monotonic()
            # The links that are open keep working: nobody notices...
            load.wait_for(100, since=refused)
            assert not load.report().errors(since=refused)
            # ...until the pool must connect: then the checkouts fail fast.
            pool.drain()
            load.wait_for(10, "pool_error", since=refused)
            elapsed, result = probe(pool)
            assert isinstance(result, DatabaseUnavailable), result
            assert elapsed < well_under(PROBE_TIMEOUT)  # it failed fast
            Faults.run(proxy.passthrough)
            healed = time.monotonic()
            load.wait_for(200, since=healed)
            load.wait_for(100, since=healed + HEALED_WITHIN)
        report = load.report()
        report.assert_sound(in_flight=False)
        report.assert_no_errors_since(healed + HEALED_WITHIN)
        assert_whole(pool)


def test_blackhole_while_idle(pg: PgCluster, proxy: FaultProxy) -> None:
    # check_after_idle=0: each checkout pings, so the checkout itself meets the blackhole
    # (a ping, then connects that never finish their handshake) and must keep its deadline.
    options: dict[str, Any] = {"check_after_idle": 0, "min_size": 4, "max_size": 4}
    with fault_pool(pg.conninfo(port=proxy.port), unique_app(), **options) as pool:
        assert_whole(pool)
        Faults.run(proxy.blackhole)
        for _ in range(2):
            _, result = probe(pool)
            assert isinstance(result, PoolTimeout), result
        Faults.run(proxy.passthrough)
        healed = time.monotonic()
        with Load(pool, workers=WORKERS, timeout=PROBE_TIMEOUT) as load:
            load.wait_for(200)
            load.wait_for(100, since=healed + HEALED_WITHIN)
        report = load.report()
        report.assert_sound(in_flight=False)
        report.assert_no_errors_since(healed + HEALED_WITHIN)
        assert_whole(pool)
