"""Concurrency stress tests of `AsyncPool` (hand-written, not generated).

64 tasks share 8 connections. Every run is bounded in iterations and in time; the
assertions are about what must hold whatever the interleaving: nobody starves, no
connection is held by two tasks at once, no slot is lost (not even to a cancellation
landing at any await of a checkout), the stats add up, and the queue is first come,
first served.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from pgfleet import AsyncPool, PoolTimeout
from support.cluster import PgCluster
from support.timing import deadline_bound, well_under

from .fakes import (
    MAX_SIZE,
    WORKERS,
    AsyncStressManager,
    GatedCloseManager,
    Ledger,
    StressConn,
    check_quiet_stats,
    check_stats_invariants,
)

ITERATIONS = 200
#: The cancellation storms run each checkout in a task of its own: fewer, dearer iterations.
STORM_ITERATIONS = 100
#: The pool's default checkout timeout: no checkout of the stress runs comes close.
TIMEOUT = 10.0
#: How long the workers of one run may take, all together, before the test fails.
RUN_LIMIT = 30.0

pytestmark = pytest.mark.timeout(60)


async def run_tasks(workers: int, target: Callable[[int], Coroutine[Any, Any, None]]) -> None:
    """Run ``target(i)`` in `workers` tasks; re-raise the first error."""
    tasks = [asyncio.create_task(target(i), name=f"stress-{i}") for i in range(workers)]
    _, pending = await asyncio.wait(tasks, timeout=RUN_LIMIT)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=5.0)
    # Retrieve every outcome (no "exception never retrieved"), then raise the first error.
    errors = [
        error
        for task in tasks
        if task.done() and not task.cancelled() and (error := task.exception()) is not None
    ]
    assert not pending, f"{len(pending)} workers still running after {RUN_LIMIT} s"
    if errors:
        raise errors[0]


async def hold(rng: random.Random) -> None:
    """Use the connection for a moment: a few trips through the event loop."""
    for _ in range(rng.randrange(4)):
        await asyncio.sleep(0)


async def lend_all(pool: AsyncPool[StressConn]) -> None:
    """No slot was lost: all MAX_SIZE connections can be lent at once, and no more."""
    conns: list[StressConn] = []
    try:
        for _ in range(MAX_SIZE):
            conns.append(await pool.getconn(timeout=5.0))
        assert len({id(c) for c in conns}) == MAX_SIZE
        assert all(not c.closed and not c.broken for c in conns)
        stats = pool.stats()
        check_stats_invariants(stats)
        assert stats.in_use == MAX_SIZE, stats
        with pytest.raises(PoolTimeout):
            await pool.getconn(timeout=0.05)  # no extra slot either
        assert pool.stats().waiting == 0
    finally:
        for conn in conns:
            await pool.putconn(conn)
    check_quiet_stats(pool.stats())


def stress_pool(manager: AsyncStressManager) -> AsyncPool[StressConn]:
    # min_size < max_size: the pool also grows under load, connects racing checkouts.
    return AsyncPool(manager=manager, min_size=2, max_size=MAX_SIZE, timeout=TIMEOUT)


class Storm:
    """The workers of one run, and the chaos that cancels some of their checkouts.

    Each checkout runs in a task of its own (``attempts[i]``), so that cancelling it
    is what a caller's ``asyncio.timeout`` or a cancelled request handler does, and
    the worker carries on with its next iteration.
    """

    def __init__(
        self,
        pool: AsyncPool[StressConn],
        ledger: Ledger,
        seed: int,
        *,
        broken_returns: float = 0.0,
        short_timeouts: float = 0.0,
    ) -> None:
        self.pool = pool
        self.ledger = ledger
        self.seed = seed
        self.broken_returns = broken_returns
        self.short_timeouts = short_timeouts
        self.attempts: list[asyncio.Task[bool] | None] = [None] * ledger.workers
        #: "waiting" while a worker is inside its checkout, "holding" from inside the block
        #: to the end of the return (commit, reset, closes: a cancellation may land there).
        self.phase: list[str] = ["idle"] * ledger.workers
        self.all_done = asyncio.Event()
        self.cancels_sent = 0
        #: Set by `run` when a chaos task cancels checkouts: each runs in a task of its own.
        self.chaotic = False

    async def worker(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        report = self.ledger.reports[index]
        for iteration in range(self.ledger.iterations):
            if self.chaotic:
                attempt = asyncio.create_task(self._checkout(index, rng))
                self.attempts[index] = attempt
                await asyncio.wait([attempt])
                self.attempts[index] = None
                if attempt.cancelled():
                    report.cancelled += 1
                    continue
                served = attempt.result()
            else:
                served = await self._checkout(index, rng)
            if not served:
                continue  # timed out (counted)
            report.done += 1
            if iteration % 50 == 0:
                check_stats_invariants(self.pool.stats())
        self.ledger.finish(index)
        if self.ledger.finished == self.ledger.workers:
            self.all_done.set()

    async def _checkout(self, index: int, rng: random.Random) -> bool:
        report = self.ledger.reports[index]
        timeout = None
        if self.short_timeouts and rng.random() < self.short_timeouts:
            timeout = rng.choice((0.0, 0.0001, 0.001, 0.003))
        self.phase[index] = "waiting"
        started = time.monotonic()
        try:
            async with self.pool.connection(timeout) as conn:
                self.phase[index] = "holding"
                report.waited(time.monotonic() - started)
                self.ledger.take(conn, index)
                try:
                    await hold(rng)
                finally:
                    self.ledger.give_back(conn, index)
                if self.broken_returns and rng.random() < self.broken_returns:
                    conn.broken = True  # dies in use: noticed on the way back
        except PoolTimeout as exc:
            if timeout is None or type(exc) is not PoolTimeout:
                raise
            report.timeouts += 1
            return False
        finally:
            self.phase[index] = "idle"
        return True

    async def chaos(self, max_cancels: int) -> None:
        """Cancel random checkouts: mostly queued ones, sometimes one holding a connection."""
        rng = random.Random(self.seed)
        while not self.all_done.is_set() and self.cancels_sent < max_cancels:
            for _ in range(rng.randrange(1, 8)):
                await asyncio.sleep(0)
            index = rng.randrange(self.ledger.workers)
            attempt = self.attempts[index]
            if attempt is None or attempt.done():
                continue
            phase = self.phase[index]
            if phase == "waiting" or (phase == "holding" and rng.random() < 0.1):
                attempt.cancel()
                self.cancels_sent += 1

    async def run(self, max_cancels: int = 0) -> None:
        self.chaotic = max_cancels > 0
        chaos = asyncio.create_task(self.chaos(max_cancels)) if self.chaotic else None
        try:
            await run_tasks(self.ledger.workers, self.worker)
        finally:
            if chaos is not None:
                self.all_done.set()
                await asyncio.wait_for(chaos, 5.0)


def check_no_violations(ledger: Ledger, manager: AsyncStressManager) -> None:
    problems = ledger.violations + manager.violations
    assert not problems, f"{len(problems)} violations, first: {problems[:5]}"
    assert ledger.held == 0


async def test_many_tasks_few_connections() -> None:
    seed = random.getrandbits(32)
    manager = AsyncStressManager(seed=seed)
    ledger = Ledger(WORKERS, ITERATIONS)
    total = WORKERS * ITERATIONS
    async with stress_pool(manager) as pool:
        await Storm(pool, ledger, seed).run()
        check_no_violations(ledger, manager)
        # Nobody starved, nobody timed out.
        assert [r.done for r in ledger.reports] == [ITERATIONS] * WORKERS
        assert ledger.finished == WORKERS
        stats = pool.stats()
        check_quiet_stats(stats)
        assert stats.checkouts == total
        assert stats.timeouts == 0
        assert 0 < stats.checkouts_waited <= total  # the queue was really used
        # Nothing broke, so nothing was replaced: never more than MAX_SIZE opened.
        assert manager.max_open <= MAX_SIZE
        assert stats.connections_created == len(manager.connections) <= MAX_SIZE
        # Fairness. With FIFO hand-off the workers advance together: when the first one
        # finishes, every other is well on its way; and no single wait comes near the
        # timeout (64 workers over 8 connections wait for ~8 holds each, mostly).
        progress = ledger.progress_at_first_finish
        assert progress is not None
        assert min(progress) >= ITERATIONS * 3 // 4, sorted(progress)[:8]
        assert ledger.max_wait() < well_under(TIMEOUT)
        await lend_all(pool)


async def test_broken_connections_replaced_under_load() -> None:
    seed = random.getrandbits(32)
    # 10% of the returns come back dead (reset raises); some idle ones are found dead by
    # is_broken at checkout or by the check of the suspects that follows each death.
    manager = AsyncStressManager(seed=seed, dead_on_probe=0.02, check_fails=0.05)
    ledger = Ledger(WORKERS, ITERATIONS)
    total = WORKERS * ITERATIONS
    async with stress_pool(manager) as pool:
        await Storm(pool, ledger, seed, broken_returns=0.1).run()
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
        await lend_all(pool)
    # Closing the pool closed everything it ever opened, each exactly once.
    assert manager.open_now == 0
    assert all(c.closed for c in manager.connections)


@pytest.mark.parametrize("broken_returns", [0.0, 0.1], ids=["healthy", "broken"])
async def test_cancellation_storm_loses_no_slot(broken_returns: float) -> None:
    seed = random.getrandbits(32)
    manager = AsyncStressManager(
        seed=seed,
        dead_on_probe=0.02 if broken_returns else 0.0,
        check_fails=0.05 if broken_returns else 0.0,
    )
    ledger = Ledger(WORKERS, STORM_ITERATIONS)
    async with stress_pool(manager) as pool:
        storm = Storm(pool, ledger, seed, broken_returns=broken_returns, short_timeouts=0.1)
        await storm.run(max_cancels=800)
        check_no_violations(ledger, manager)
        done = ledger.total("done")
        timeouts = ledger.total("timeouts")
        cancelled = ledger.total("cancelled")
        assert done + timeouts + cancelled == WORKERS * STORM_ITERATIONS
        assert timeouts > 0  # the storm happened
        assert cancelled > 0
        # No ghost waiter: every cancelled or timed-out caller left the queue.
        stats = pool.stats()
        check_quiet_stats(stats)
        # A checkout served at the moment its caller was cancelled counts, unused.
        assert done <= stats.checkouts <= done + cancelled
        assert stats.timeouts == timeouts
        await lend_all(pool)
    # Every connection ever opened was closed exactly once (a close interrupted by a
    # cancellation too).
    assert manager.open_now == 0
    assert all(c.closed for c in manager.connections)


# -- a cancellation landing in the pool's own awaits (regressions the storm found) -------------


async def cancel_at_close(pool: AsyncPool[StressConn], manager: GatedCloseManager) -> None:
    """Start a checkout, cancel it while the pool awaits a close inside it, open the gate."""
    manager.gate.clear()
    checkout = asyncio.create_task(pool.getconn())
    try:
        await asyncio.wait_for(manager.close_waiting.wait(), 5.0)
        checkout.cancel()
        await asyncio.wait([checkout], timeout=5.0)
        assert checkout.cancelled()
    finally:
        manager.gate.set()  # else closing the pool would wait at the gate forever
        if not checkout.done():
            checkout.cancel()
            await asyncio.wait([checkout], timeout=5.0)


async def test_cancelled_while_discarding_a_broken_connection() -> None:
    # The checkout finds the connection broken and closes it; the engine has already
    # counted the replacement connect. Cancelled in the close, the connect must still start.
    manager = GatedCloseManager()
    # check_after_idle=0: every checkout checks first (is_broken, then check), even a
    # connection verified a moment ago, whose death the pool may otherwise not see yet.
    pool = AsyncPool(manager=manager, min_size=MAX_SIZE, timeout=TIMEOUT, check_after_idle=0)
    async with pool:
        for conn in manager.connections:
            conn.broken = True
        await cancel_at_close(pool, manager)
        await lend_all(pool)
    assert manager.open_now == 0
    assert not manager.violations, manager.violations[:5]


async def test_cancelled_while_closing_an_expired_connection() -> None:
    # The checkout skips an expired idle connection (closing it) and takes the next one.
    # Cancelled in the close, the connection it already took must go back.
    manager = GatedCloseManager()
    async with AsyncPool(manager=manager, min_size=MAX_SIZE, timeout=TIMEOUT) as pool:
        # White-box: expire the top of the idle stack now rather than sleep until it does.
        pool._core.idle[-1].expires_at = 0.0
        await cancel_at_close(pool, manager)
        await lend_all(pool)
    assert manager.open_now == 0
    assert not manager.violations, manager.violations[:5]


# -- against the real server ------------------------------------------------------------------


@contextmanager
def backend_monitor(pg: PgCluster, application_name: str) -> Iterator[list[int]]:
    """Sample, in a thread, how many backends serve `application_name` until the block ends.

    A thread with a blocking connection: the samples keep coming whatever the loop does.
    """
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


async def test_real_server_many_tasks_few_connections(pg: PgCluster, pg_dsn: str) -> None:
    iterations = 20  # async psycopg costs more CPU per query than the threaded test's 30
    application_name = f"pgfleet-stress-{uuid.uuid4().hex[:12]}"
    ledger = Ledger(WORKERS, iterations)
    pool: AsyncPool[psycopg.AsyncConnection[tuple[object, ...]]] = AsyncPool(
        pg_dsn,
        kwargs={"application_name": application_name},
        min_size=2,
        max_size=MAX_SIZE,
        timeout=TIMEOUT,
    )

    async def worker(index: int) -> None:
        report = ledger.reports[index]
        for _ in range(iterations):
            started = time.monotonic()
            async with pool.connection() as conn:
                report.waited(time.monotonic() - started)
                ledger.take(conn, index)
                try:
                    cursor = await conn.execute("SELECT 1")
                    assert await cursor.fetchone() == (1,)
                finally:
                    ledger.give_back(conn, index)
            report.done += 1
        ledger.finish(index)

    with backend_monitor(pg, application_name) as samples:
        async with pool:
            await run_tasks(WORKERS, worker)
            assert not ledger.violations, ledger.violations[:5]
            assert [r.done for r in ledger.reports] == [iterations] * WORKERS
            stats = pool.stats()
            check_quiet_stats(stats)
            assert stats.checkouts == WORKERS * iterations
            assert stats.timeouts == 0
            assert stats.returns_broken == 0
            assert stats.connections_created <= MAX_SIZE
            [(backends,)] = await asyncio.to_thread(
                pg.execute,
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                application_name,
            )
            assert backends == stats.size - stats.connecting
    assert samples, "the monitor took no sample"
    assert max(samples) <= MAX_SIZE, f"{max(samples)} backends for a pool of {MAX_SIZE}"
    assert max(samples) > 0


async def test_each_queued_task_times_out_at_its_own_deadline() -> None:
    """One timer serves all the queued tasks' deadlines (`AsyncQueueClock`): a task that
    queued later with a shorter timeout must not wait for the earlier one's, and the
    earlier one keeps waiting, then gets the connection."""
    manager = AsyncStressManager(seed=1)
    async with AsyncPool(manager=manager, min_size=1, max_size=1, timeout=TIMEOUT) as pool:
        async with pool.connection():
            patient = asyncio.create_task(pool.getconn(timeout=8.0))
            await asyncio.sleep(0)  # queued first
            started = time.monotonic()
            with pytest.raises(PoolTimeout):
                await pool.getconn(timeout=0.2)
            assert time.monotonic() - started < 1.5
            assert not patient.done()
            with pytest.raises(PoolTimeout):  # and a third, shorter still, after it
                await pool.getconn(timeout=0.05)
            assert not patient.done()
        conn = await asyncio.wait_for(patient, 5)
        await pool.putconn(conn)
        assert pool.stats().timeouts == 2


async def test_queue_deadlines_hold_across_event_loops() -> None:
    """A pool used from another event loop meanwhile (one ``asyncio.run`` after another,
    or a loop closed with a caller still queued): every caller's deadline still holds."""
    pool = AsyncPool(manager=AsyncStressManager(seed=2), min_size=1, max_size=1)
    # The timeouts of a caller queued on this loop, and of one who queues after the others.
    here_timeout, later_timeout = 0.8, 0.6
    async with pool, pool.connection():
        here = asyncio.create_task(pool.getconn(timeout=here_timeout))  # queued on this loop
        await asyncio.sleep(0)

        def elsewhere() -> None:
            loop = asyncio.new_event_loop()
            try:
                left = loop.create_task(pool.getconn(timeout=0.3))
                loop.run_until_complete(asyncio.sleep(0))  # queued, then its loop closes
            finally:
                loop.close()
            assert not left.done()

            async def queue_then_give_up() -> None:
                with pytest.raises(PoolTimeout):
                    await pool.getconn(timeout=0.1)

            asyncio.run(queue_then_give_up())

        started = time.monotonic()
        await asyncio.to_thread(elsewhere)
        with pytest.raises(PoolTimeout):
            await here
        assert time.monotonic() - started < deadline_bound(here_timeout)
        started = time.monotonic()
        with pytest.raises(PoolTimeout):
            await pool.getconn(timeout=later_timeout)  # later than any timer the other loops left
        assert time.monotonic() - started < deadline_bound(later_timeout)


async def test_a_caller_queued_across_a_fork_still_times_out() -> None:
    """In a forked child the pool drops its engine and makes a new one (what the at-fork
    hook does): a caller queued in the old one (a task copied into the child) must still
    get its timeout, from the old engine's queue clock."""
    pool = AsyncPool(manager=AsyncStressManager(seed=4), min_size=1, max_size=1)
    async with pool, pool.connection():
        queued = asyncio.create_task(pool.getconn(timeout=0.2))
        await asyncio.sleep(0)
        assert len(pool._core.waiters) == 1
        pool._forget_after_fork()
        started = time.monotonic()
        with pytest.raises(PoolTimeout):
            await asyncio.wait_for(queued, 5)
        assert time.monotonic() - started < deadline_bound(0.2)


async def test_callers_giving_up_do_not_pile_up_behind_a_patient_one() -> None:
    """A storm of callers who give up behind one still waiting leaves nothing behind: the
    engine's queue holds the patient one only, and the queue clock keeps no caller of its
    own, only one timer (memory grows with the queue, not with the storm)."""
    pool = AsyncPool(manager=AsyncStressManager(seed=3), min_size=1, max_size=1)
    async with pool, pool.connection():
        patient = asyncio.create_task(pool.getconn(timeout=TIMEOUT))
        await asyncio.sleep(0)
        for _ in range(1000):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(pool.getconn(), 0.0001)
        assert list(pool._queue_clock._timers) == [asyncio.get_running_loop()]
        assert len(pool._core.waiters) == 1
        patient.cancel()
        with pytest.raises(asyncio.CancelledError):
            await patient
