"""Cancellation storms (asyncio only: a thread cannot be cancelled; the threaded pool's
equivalent, checkouts timing out as they are served, is ``test_timeout_storm``).

Tasks are cancelled at random while they wait in the queue and while they hold a connection
in the middle of a transaction. Afterwards: no ghost waiter, no lost slot, nothing dirty
lent, and no write of a cancelled transaction committed.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import psycopg
from psycopg import sql

from faults._async.common import WORKERS, assert_whole, fault_pool, unique_app
from faults.workload import CHECKOUT_ERRORS, HANG_SLACK
from support.cluster import PgCluster

#: Cancellations of each kind the storm must deliver.
PER_KIND = 40
#: The storm stops after this long even if it fell short (the test then fails).
STORM_LIMIT = 10.0


def _stack(task: asyncio.Task[Any]) -> str:
    """Where a suspended task is, down its whole chain of awaits."""
    lines = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is not None:
            lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return "\n".join(lines)


class Worker:
    """A task looping over transactions that insert a row each; tells where it is."""

    def __init__(self, pool: Any, table: str, number: int, timeout: float) -> None:
        self.pool = pool
        self.insert = sql.SQL("INSERT INTO {} VALUES (%s)").format(sql.Identifier(table))
        self.number = number
        self.timeout = timeout
        self.phase = "idle"  # "waiting" for a connection, "holding" one mid-transaction
        self.row = 0
        #: Rows whose transaction was cancelled before COMMIT was sent: must not exist.
        self.cancelled_rows: list[int] = []
        self.committed = 0
        self.task = asyncio.create_task(self.run())

    async def run(self) -> None:
        while True:
            self.row += 1
            row = self.number * 1_000_000 + self.row
            self.phase = "waiting"
            started = time.monotonic()
            try:
                async with self.pool.connection(timeout=self.timeout) as conn:
                    self.phase = "holding"
                    await conn.execute(self.insert, [row])
                    await conn.execute("SELECT pg_sleep(0.005)")
                    self.phase = "committing"  # __aexit__ commits: the outcome is the server's
                self.committed += 1
            except asyncio.CancelledError:
                if self.phase == "holding":
                    self.cancelled_rows.append(row)
                raise
            except CHECKOUT_ERRORS:
                assert self.phase == "waiting"
                assert time.monotonic() - started < self.timeout + HANG_SLACK
            finally:
                self.phase = "idle"


async def test_cancellation_storm(pg: PgCluster) -> None:
    table = f"storm_{unique_app().rsplit('-', 1)[1]}"
    name = sql.Identifier(table)
    pg.execute(sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY)").format(name), dbname="app")
    pg.execute(sql.SQL("GRANT ALL ON {} TO app").format(name), dbname="app")
    rng = random.Random(3)
    async with fault_pool(pg, unique_app(), timeout=2.0) as pool:
        workers = [Worker(pool, table, n, pool.timeout) for n in range(WORKERS)]
        finished: list[Worker] = []
        cancelled = {"waiting": 0, "holding": 0}
        deadline = time.monotonic() + STORM_LIMIT
        while min(cancelled.values()) < PER_KIND and time.monotonic() < deadline:
            await asyncio.sleep(rng.uniform(0, 0.004))
            kind = min(cancelled, key=lambda k: cancelled[k])
            victims = [w for w in workers if w.phase == kind]
            if not victims:
                continue
            victim = rng.choice(victims)
            victim.task.cancel()
            cancelled[kind] += 1
            workers.remove(victim)
            finished.append(victim)
            workers.append(Worker(pool, table, WORKERS + len(finished), pool.timeout))
        assert min(cancelled.values()) >= PER_KIND, cancelled
        for worker in workers:
            worker.task.cancel()
        every = [*finished, *workers]
        _, pending = await asyncio.wait([w.task for w in every], timeout=HANG_SLACK + 2.0)
        stuck = [f"{w.phase}:\n{_stack(w.task)}" for w in every if w.task in pending]
        assert not stuck, "tasks outlived their cancellation:\n" + "\n".join(stuck[:3])
        odd = [w.task.exception() for w in every if not w.task.cancelled()]
        assert not odd, odd[:5]  # each task ended by its cancellation, nothing else
        assert sum(w.committed for w in every) > 0

        stats = pool.stats()
        assert not pool._core.waiters, "ghost waiters"
        assert stats.waiting == stats.in_use == 0, stats
        await assert_whole(pool)  # no slot lost, nothing dirty lent

        # No cancelled transaction was committed.
        doomed = [row for w in every for row in w.cancelled_rows]
        assert len(doomed) >= PER_KIND // 2  # (a few were cancelled during the INSERT itself)
        async with pool.connection() as conn:
            count = sql.SQL("SELECT count(*) FROM {} WHERE id = ANY(%s)").format(name)
            cur = await conn.execute(count, [doomed])
            assert await cur.fetchone() == (0,)


async def test_cancelled_while_holding_returns_nothing_dirty(pg: PgCluster) -> None:
    # The simplest storm: one holder, cancelled mid-query, again and again, max_size=1.
    async with fault_pool(pg, unique_app(), min_size=1, max_size=1) as pool:
        for _ in range(20):
            holding = asyncio.Event()

            async def hold(holding: asyncio.Event = holding) -> None:
                async with pool.connection() as conn:
                    await conn.execute("SET LOCAL statement_timeout = '7s'")
                    holding.set()
                    await conn.execute("SELECT pg_sleep(10)")

            task = asyncio.create_task(hold())
            await asyncio.wait_for(holding.wait(), 5)
            await asyncio.sleep(0.002)
            task.cancel()
            results = await asyncio.gather(task, return_exceptions=True)
            assert isinstance(results[0], asyncio.CancelledError)
            async with pool.connection(timeout=2) as conn:
                assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
                cur = await conn.execute("SHOW statement_timeout")
                assert await cur.fetchone() == ("0",)
        assert pool.stats().in_use == 0


async def test_cancellation_racing_a_hand_off_is_not_swallowed(pg: PgCluster) -> None:
    # A waiter served and cancelled at the same moment: cancel it at every step of its way
    # back from the queue. Whenever cancel() is accepted, the task must end cancelled (and
    # the connection go back), never carry on with it as if nothing happened.
    async with fault_pool(pg, unique_app(), min_size=1, max_size=1) as pool:
        swallowed = []
        for steps in range(12):
            held = await pool.getconn()
            task = asyncio.create_task(pool.getconn())
            while pool.stats().waiting == 0:
                await asyncio.sleep(0)
            await pool.putconn(held)  # handed to the waiting task...
            for _ in range(steps):
                await asyncio.sleep(0)
            accepted = task.cancel()  # ...which is cancelled on its way back
            result: psycopg.AsyncConnection[Any] | BaseException
            [result] = await asyncio.gather(task, return_exceptions=True)
            if isinstance(result, psycopg.AsyncConnection):
                await pool.putconn(result)
                if accepted:
                    swallowed.append(steps)
            else:
                assert isinstance(result, asyncio.CancelledError), result
        assert not swallowed, f"cancellation swallowed after {swallowed} loop steps"
        stats = pool.stats()
        assert stats.waiting == stats.in_use == 0, stats
        await assert_whole(pool)
