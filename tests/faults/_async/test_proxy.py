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

from faults._async.common import (
    HEALED_WITHIN,
    WORKERS,
    assert_whole,
    fault_pool,
    unique_app,
)
from faults.workload import AsyncFaults, AsyncLoad
from pgfleet import AsyncPool, DatabaseUnavailable, PoolTimeout
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


async def probe(pool: AsyncPool[Any]) -> tuple[float, Any]:
    """One checkout with timeout=2: how long it took and what it gave (given back)."""
    elapsed, result = await AsyncFaults.timed(pool.getconn, timeout=PROBE_TIMEOUT)
    if isinstance(result, psycopg.AsyncConnection):
        await pool.putconn(result)
    else:
        assert isinstance(result, PoolTimeout), result  # DatabaseUnavailable included
    assert elapsed < PROBE_BOUND, f"a checkout with timeout={PROBE_TIMEOUT} took {elapsed:.3f} s"
    return elapsed, result


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_network_fault_under_load(pg: PgCluster, proxy: FaultProxy, fault: str) -> None:
    async with fault_pool(pg.conninfo(port=proxy.port), unique_app()) as pool:
        async with AsyncLoad(pool, workers=WORKERS, timeout=PROBE_TIMEOUT) as load:
            await load.wait_for(100)
            await AsyncFaults.run(FAULTS[fault], proxy)
            _, result = await probe(pool)
            if fault == "blackhole":
                # Every connection is stuck in a query, every connect in its handshake.
                assert isinstance(result, PoolTimeout), result
            await AsyncFaults.sleep(0.3)  # the load runs through the fault a while longer
            await AsyncFaults.run(proxy.passthrough)
            healed = time.monotonic()
            await load.wait_for(200, since=healed)
            await load.wait_for(100, since=healed + HEALED_WITHIN)
        report = load.report()
        report.assert_sound()
        report.assert_no_errors_since(healed + HEALED_WITHIN)
        await assert_whole(pool)


async def test_refused_connects(pg: PgCluster, proxy: FaultProxy) -> None:
    async with fault_pool(pg.conninfo(port=proxy.port), unique_app()) as pool:
        async with AsyncLoad(pool, workers=WORKERS, timeout=PROBE_TIMEOUT) as load:
            await load.wait_for(100)
            await AsyncFaults.run(proxy.refuse)
            refused = time.monotonic()
            # The links that are open keep working: nobody notices...
            await load.wait_for(100, since=refused)
            assert not load.report().errors(since=refused)
            # ...until the pool must connect: then the checkouts fail fast.
            await pool.drain()
            await load.wait_for(10, "pool_error", since=refused)
            elapsed, result = await probe(pool)
            assert isinstance(result, DatabaseUnavailable), result
            assert elapsed < well_under(PROBE_TIMEOUT)  # it failed fast
            await AsyncFaults.run(proxy.passthrough)
            healed = time.monotonic()
            await load.wait_for(200, since=healed)
            await load.wait_for(100, since=healed + HEALED_WITHIN)
        report = load.report()
        report.assert_sound(in_flight=False)
        report.assert_no_errors_since(healed + HEALED_WITHIN)
        await assert_whole(pool)


async def test_blackhole_while_idle(pg: PgCluster, proxy: FaultProxy) -> None:
    # check_after_idle=0: each checkout pings, so the checkout itself meets the blackhole
    # (a ping, then connects that never finish their handshake) and must keep its deadline.
    options: dict[str, Any] = {"check_after_idle": 0, "min_size": 4, "max_size": 4}
    async with fault_pool(pg.conninfo(port=proxy.port), unique_app(), **options) as pool:
        await assert_whole(pool)
        await AsyncFaults.run(proxy.blackhole)
        for _ in range(2):
            _, result = await probe(pool)
            assert isinstance(result, PoolTimeout), result
        await AsyncFaults.run(proxy.passthrough)
        healed = time.monotonic()
        async with AsyncLoad(pool, workers=WORKERS, timeout=PROBE_TIMEOUT) as load:
            await load.wait_for(200)
            await load.wait_for(100, since=healed + HEALED_WITHIN)
        report = load.report()
        report.assert_sound(in_flight=False)
        report.assert_no_errors_since(healed + HEALED_WITHIN)
        await assert_whole(pool)
