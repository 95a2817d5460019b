"""Concurrency stress tests of the threaded `Pool` (hand-written, not generated).

64 threads share 8 connections. Every run is bounded in iterations and in time; the
assertions are about what must hold whatever the interleaving: nobody starves, no
connection is held by two threads at once, no slot is lost, the stats add up, and the
queue is first come, first served.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import pytest

from pgfleet import Pool, PoolTimeout
from support.cluster import PgCluster
from support.timing import well_under

from .fakes import (
    MAX_SIZE,
    WORKERS,
    Ledger,
    StressConn,
    ThreadStressManager,
    check_quiet_stats,
    check_stats_invariants,
)

ITERATIONS = 200
#: The pool's default checkout timeout: no checkout of the stress runs comes close.
TIMEOUT = 10.0
#: How long the workers of one run may take, all together, before the test fails.
RUN_LIMIT = 30.0

pytestmark = pytest.mark.timeout(60)


def run_threads(workers: int, target: Callable[[int], None]) -> None:
    """Run ``target(i)`` in `workers` threads released at once; re-raise the first error."""
    barrier = threading.Barrier(workers)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=RUN_LIMIT)
            target(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(i,), name=f"stress-{i}", daemon=True)
        for i in range(workers)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + RUN_LIMIT
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.0))
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"{len(stuck)} workers still running after {RUN_LIMIT} s: {stuck[:8]}"
    if errors:
        raise errors[0]


def hold(rng: random.Random) -> None:
    """Use the connection for a moment (a bounded, tiny amount of simulated work)."""
    roll = rng.random()
    if roll < 0.5:
        time.sleep(0)  # let the other threads run
    elif roll < 0.9:
        time.sleep(0.0001)


def lend_all(pool: Pool[StressConn]) -> None:
    """No slot was lost: all MAX_SIZE connections can be lent at once, and no more."""
    conns = [pool.getconn(timeout=5.0) for _ in range(MAX_SIZE)]
    try:
        assert len({id(c) for c in conns}) == MAX_SIZE
        assert all(not c.closed and not c.broken for c in conns)
        stats = pool.stats()
        check_stats_invariants(stats)
        assert stats.in_use == MAX_SIZE, stats
        with pytest.raises(PoolTimeout):
            pool.getconn(timeout=0.05)  # no extra slot either
        assert pool.stats().waiting == 0
    finally:
        for conn in conns:
            pool.putconn(conn)
    check_quiet_stats(pool.stats())


def stress_pool(manager: ThreadStressManager) -> Pool[StressConn]:
    # min_size < max_size: the pool also grows under load, connects racing checkouts.
    return Pool(manager=manager, min_size=2, max_size=MAX_SIZE, timeout=TIMEOUT)


def checkout_loop(
    pool: Pool[StressConn],
    ledger: Ledger,
    seed: int,
    *,
    broken_returns: float = 0.0,
    short_timeouts: float = 0.0,
) -> Callable[[int], None]:
    """A worker: ``ledger.iterations`` checkouts, each held briefly."""

    def worker(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        report = ledger.reports[index]
        for iteration in range(ledger.iterations):
            timeout = None
            if short_timeouts and rng.random() < short_timeouts:
                timeout = rng.choice((0.0, 0.0001, 0.001, 0.003))
            started = time.monotonic()
            try:
                with pool.connection(timeout) as conn:
                    report.waited(time.monotonic() - started)
                    ledger.take(conn, index)
                    try:
                        hold(rng)
                    finally:
                        ledger.give_back(conn, index)
                    if broken_returns and rng.random() < broken_returns:
                        conn.broken = True  # dies in use: reset() raises on the way back
            except PoolTimeout as exc:
                if timeout is None or type(exc) is not PoolTimeout:
                    raise
                report.timeouts += 1
                continue
            report.done += 1
            if iteration % 50 == 0:
                check_stats_invariants(pool.stats())
        ledger.finish(index)

    return worker


def check_no_violations(ledger: Ledger, manager: ThreadStressManager) -> None:
    problems = ledger.violations + manager.violations
    assert not problems, f"{len(problems)} violations, first: {problems[:5]}"
    assert ledger.held == 0


def test_many_threads_few_connections() -> None:
    seed = random.getrandbits(32)
    manager = ThreadStressManager(seed=seed)
    ledger = Ledger(WORKERS, ITERATIONS)
    total = WORKERS * ITERATIONS
    with stress_pool(manager) as pool:
        run_threads(WORKERS, checkout_loop(pool, ledger, seed))
        check_no_violations(ledger, manager)
        # Nobody starved, nobody timed out.
        assert [r.done for r in ledger.reports] == [ITERATIONS] * WORKERS
        assert ledger.finished == WORKERS
        stats = pool.stats()
        check_quiet_stats(stats)
        assert stats.checkouts == total
        assert stats.timeouts == 0
        assert stats.checkouts_waited > 0  # the queue was really used
        # Nothing broke, so nothing was replaced: never more than MAX_SIZE opened.
        assert manager.max_open <= MAX_SIZE
        assert stats.connections_created == len(manager.connections) <= MAX_SIZE
        # Fairness. With FIFO hand-off the workers advance together: when the first one
        # finishes, every other is well on its way; and no single wait comes near the
        # timeout (64 workers over 8 connections wait for ~8 holds each, mostly).
        progress = ledger.progress_at_first_finish
        assert progress is not None
        assert min(progress) >= ITERATIONS // 2, sorted(progress)[:8]
        assert ledger.max_wait() < well_under(TIMEOUT)
        lend_all(pool)


def test_broken_connections_replaced_under_load() -> None:
    seed = random.getrandbits(32)
    # 10% of the returns come back dead (reset raises); some idle ones are found dead by
    # is_broken at checkout or by the check of the suspects that follows each death.
    manager = ThreadStressManager(seed=seed, dead_on_probe=0.02, check_fails=0.05)
    ledger = Ledger(WORKERS, ITERATIONS)
    total = WORKERS * ITERATIONS
    with stress_pool(manager) as pool:
        run_threads(WORKERS, checkout_loop(pool, ledger, seed, broken_returns=0.1))
        check_no_violations(ledger, manager)
        assert [r.done for r in ledger.reports] == [ITERATIONS] * WORKERS
        stats = pool.stats()
        check_quiet_stats(stats)
        assert stats.checkouts == total
        assert stats.timeouts == 0
        assert stats.returns_broken >= total // 20, stats  # ~10% (at least 5%)
        assert manager.found_dead > 0
        assert stats.connections_created == len(manager.connections) > total // 20
        assert ledger.max_wait() < well_under(TIMEOUT)
        lend_all(pool)
    # Closing the pool closed everything it ever opened, each exactly once.
    assert manager.open_now == 0
    assert all(c.closed for c in manager.connections)


@pytest.mark.parametrize("broken_returns", [0.0, 0.1], ids=["healthy", "broken"])
def test_timeout_storm_loses_no_slot(broken_returns: float) -> None:
    seed = random.getrandbits(32)
    manager = ThreadStressManager(
        seed=seed,
        dead_on_probe=0.02 if broken_returns else 0.0,
        check_fails=0.05 if broken_returns else 0.0,
    )
    ledger = Ledger(WORKERS, ITERATIONS)
    with stress_pool(manager) as pool:
        worker = checkout_loop(
            pool, ledger, seed, broken_returns=broken_returns, short_timeouts=0.15
        )
        run_threads(WORKERS, worker)
        check_no_violations(ledger, manager)
        done, timeouts = ledger.total("done"), ledger.total("timeouts")
        assert done + timeouts == WORKERS * ITERATIONS
        assert timeouts > 0  # the storm happened
        stats = pool.stats()
        check_quiet_stats(stats)
        assert stats.checkouts == done
        assert stats.timeouts == timeouts
        lend_all(pool)
    # Every connection ever opened was closed exactly once (a close interrupted by a
    # cancellation too).
    assert manager.open_now == 0
    assert all(c.closed for c in manager.connections)


# -- against the real server ------------------------------------------------------------------


@contextmanager
def backend_monitor(pg: PgCluster, application_name: str) -> Iterator[list[int]]:
    """Sample, in a thread, how many backends serve `application_name` until the block ends."""
    samples: list[int] = []
    stop = threading.Event()
    errors: list[BaseException] = []
    query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"

    with psycopg.connect(pg.superuser_conninfo(), autocommit=True) as monitor:

        def sample() -> None:
            try:
                deadline = time.monotonic() + RUN_LIMIT
                while time.monotonic() < deadline:
                    row = monitor.execute(query, [application_name]).fetchone()
                    assert row is not None
                    samples.append(row[0])
                    if stop.wait(0.002):
                        return
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=sample, name="backend-monitor", daemon=True)
        thread.start()
        try:
            yield samples
        finally:
            stop.set()
            thread.join(RUN_LIMIT)
        assert not thread.is_alive()
        if errors:
            raise errors[0]
        row = monitor.execute(query, [application_name]).fetchone()
        assert row is not None
        samples.append(row[0])


@pytest.mark.timeout(60)
def test_real_server_many_threads_few_connections(pg: PgCluster, pg_dsn: str) -> None:
    iterations = 30
    application_name = f"pgfleet-stress-{uuid.uuid4().hex[:12]}"
    ledger = Ledger(WORKERS, iterations)

    def worker(index: int) -> None:
        report = ledger.reports[index]
        for _ in range(iterations):
            started = time.monotonic()
            with pool.connection() as conn:
                report.waited(time.monotonic() - started)
                ledger.take(conn, index)
                try:
                    assert conn.execute("SELECT 1").fetchone() == (1,)
                finally:
                    ledger.give_back(conn, index)
            report.done += 1
        ledger.finish(index)

    with (
        backend_monitor(pg, application_name) as samples,
        Pool(
            pg_dsn,
            kwargs={"application_name": application_name},
            min_size=2,
            max_size=MAX_SIZE,
            timeout=TIMEOUT,
        ) as pool,
    ):
        run_threads(WORKERS, worker)
        assert not ledger.violations, ledger.violations[:5]
        assert [r.done for r in ledger.reports] == [iterations] * WORKERS
        stats = pool.stats()
        check_quiet_stats(stats)
        assert stats.checkouts == WORKERS * iterations
        assert stats.timeouts == 0
        assert stats.returns_broken == 0
        assert stats.connections_created <= MAX_SIZE
        [(backends,)] = pg.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", application_name
        )
        assert backends == stats.size - stats.connecting
    assert samples, "the monitor took no sample"
    assert max(samples) <= MAX_SIZE, f"{max(samples)} backends for a pool of {MAX_SIZE}"
    assert max(samples) > 0
