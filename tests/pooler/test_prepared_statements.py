"""32 workers over several pools, through PgBouncer 1.18 in transaction mode, running
parameterised queries often enough to cross psycopg's prepare threshold (5 runs of one
query on one connection).

With ``transaction_pooler=True`` no error at all; without it, psycopg's automatic prepared
statements fail ("prepared statement ... does not exist" / "already exists"), which is what
makes the first test able to fail.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Sequence
from typing import Any

import pytest
from psycopg import errors

from pgfleet import AsyncPool, Pool
from support.cluster import PgCluster
from support.pgbouncer import PgBouncer

WORKERS = 32
POOLS = 4
#: Per pool: 16 client connections over PgBouncer's 3 server sessions.
MAX_SIZE = 4
#: At most this long to see the failure with it off (it shows within milliseconds).
REPRODUCE_WITHIN = 3.0
#: Two query texts, each run far more than 5 times on every connection.
QUERIES = ("SELECT %s::int + %s::int", "SELECT %s::text || %s::text")
#: Successful calls the load runs for with transaction_pooler on: enough for every
#: connection to run each query far past psycopg's prepare threshold (5). The load is
#: counted, not timed, so a slow machine runs longer instead of failing.
TARGET_CALLS = POOLS * MAX_SIZE * len(QUERIES) * 10
#: The load stops after this many seconds even short of its target (the test then fails).
LOAD_CAP = 60.0
PREPARED_STATEMENT_ERRORS = (errors.InvalidSqlStatementName, errors.DuplicatePreparedStatement)


class Tally:
    """What the workers did: completed calls and errors by kind (thread-safe enough: one
    lock, taken once per call)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.prepared_failures = 0
        self.examples: list[BaseException] = []

    def success(self) -> None:
        with self.lock:
            self.ok += 1

    def failure(self, exc: BaseException) -> None:
        with self.lock:
            self.errors[f"{type(exc).__name__}: {str(exc).splitlines()[0]}"] += 1
            if isinstance(exc, PREPARED_STATEMENT_ERRORS):
                self.prepared_failures += 1
            if len(self.examples) < 3:
                self.examples.append(exc)


def params(worker: int, call: int, query: str) -> tuple[Any, Any]:
    return (worker, call) if "int" in query else (str(worker), str(call))


def expected(worker: int, call: int, query: str) -> Any:
    return worker + call if "int" in query else f"{worker}{call}"


def check(row: tuple[Any, ...] | None, worker: int, call: int, query: str) -> None:
    """The answer is this call's own (a mix-up of sessions would show here)."""
    if row is None or row[0] != expected(worker, call, query):
        raise AssertionError(f"worker {worker} call {call}: got {row!r}")


def run_threads(
    pools: Sequence[Pool[Any]],
    seconds: float,
    *,
    until_prepared_failure: bool = False,
    until_calls: int | None = None,
) -> Tally:
    tally = Tally()
    stop = threading.Event()

    def work(worker: int) -> None:
        pool = pools[worker % len(pools)]
        call = 0
        while not stop.is_set():
            query = QUERIES[call % 2]
            try:
                with pool.connection(timeout=10) as conn:
                    row = conn.execute(query, params(worker, call, query)).fetchone()
                check(row, worker, call, query)
                tally.success()
                if until_calls is not None and tally.ok >= until_calls:
                    stop.set()
            except Exception as exc:
                tally.failure(exc)
                if until_prepared_failure and tally.prepared_failures:
                    stop.set()
            call += 1

    threads = [threading.Thread(target=work, args=(n,), daemon=True) for n in range(WORKERS)]
    for thread in threads:
        thread.start()
    stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive(), "a worker is stuck"
    return tally


def open_pools(bouncer: PgBouncer, **options: Any) -> list[Pool[Any]]:
    pools = [
        Pool(bouncer.conninfo(), min_size=1, max_size=MAX_SIZE, name=f"p{n}", **options)
        for n in range(POOLS)
    ]
    for pool in pools:
        pool.open(wait=True, timeout=10)
    return pools


def assert_whole(pool: Pool[Any] | AsyncPool[Any]) -> None:
    """No slot lost: nothing lent, nobody waiting, no more than max_size."""
    stats = pool.stats()
    assert stats.in_use == 0, stats
    assert stats.waiting == 0, stats
    assert stats.size <= MAX_SIZE, stats


def test_32_workers_with_transaction_pooler_have_no_error(bouncer: PgBouncer) -> None:
    pools = open_pools(bouncer, transaction_pooler=True)
    try:
        tally = run_threads(pools, LOAD_CAP, until_calls=TARGET_CALLS)
        for pool in pools:
            assert_whole(pool)
            # Every connection crossed the threshold many times over.
            assert pool.stats().size >= 1
    finally:
        for pool in pools:
            pool.close()
    assert not tally.errors, (tally.errors, tally.examples)
    # Enough calls for every connection to have run each query far past 5 times.
    assert tally.ok >= TARGET_CALLS, tally.ok


def test_without_it_the_prepared_statement_failure_reproduces(
    bouncer: PgBouncer, caplog: pytest.LogCaptureFixture
) -> None:
    pools = open_pools(bouncer)
    try:
        tally = run_threads(pools, REPRODUCE_WITHIN, until_prepared_failure=True)
    finally:
        for pool in pools:
            pool.close()
    assert tally.prepared_failures >= 1, (tally.ok, tally.errors)
    assert any("prepared statement" in kind for kind in tally.errors), tally.errors


async def test_32_tasks_over_async_pools_with_transaction_pooler(bouncer: PgBouncer) -> None:
    pools = [
        AsyncPool(
            bouncer.conninfo(), min_size=1, max_size=MAX_SIZE, name=f"a{n}", transaction_pooler=True
        )
        for n in range(POOLS)
    ]
    for pool in pools:
        await pool.open(wait=True, timeout=10)
    tally = Tally()
    stop = asyncio.Event()

    async def work(worker: int) -> None:
        pool = pools[worker % len(pools)]
        call = 0
        while not stop.is_set():
            query = QUERIES[call % 2]
            try:
                async with pool.connection(timeout=10) as conn:
                    cursor = await conn.execute(query, params(worker, call, query))
                    row = await cursor.fetchone()
                check(row, worker, call, query)
                tally.success()
                if tally.ok >= TARGET_CALLS:
                    stop.set()
            except Exception as exc:
                tally.failure(exc)
            call += 1

    tasks = [asyncio.create_task(work(n)) for n in range(WORKERS)]
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), LOAD_CAP)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        for pool in pools:
            assert_whole(pool)
            await pool.close()
    assert not tally.errors, (tally.errors, tally.examples)
    assert tally.ok >= TARGET_CALLS, tally.ok


def test_the_connections_really_are_unprepared(bouncer_cluster: PgCluster) -> None:
    """Straight to the server (one session per connection, so the session's own catalog
    tells): with the flag nothing is prepared; without it, psycopg prepares as usual."""
    for flag, prepared in ((True, 0), (False, 1)):
        with (
            Pool(bouncer_cluster.conninfo(), min_size=1, transaction_pooler=flag) as pool,
            pool.connection() as conn,
        ):
            assert conn.prepare_threshold == (None if flag else 5)
            for _ in range(10):
                conn.execute("SELECT %s::int", (1,))
            cursor = conn.execute("SELECT count(*) FROM pg_prepared_statements")
            assert cursor.fetchone() == (prepared,), flag
