"""Side-by-side benchmarks: pgfleet against psycopg_pool, asyncpg and SQLAlchemy.

Run from the repository root::

    .venv/bin/python -m bench.pool_bench            # full run, about 2 minutes
    .venv/bin/python -m bench.pool_bench --quick    # smoke run, about 30 seconds

Without ``--dsn`` a throwaway PostgreSQL cluster is started (``tests/support/cluster.py``)
and destroyed at the end, also on Ctrl-C or SIGTERM.

Every scenario opens all its contenders of one flavour (sync or async) at once and warms each
up. Each timed run is cut into slices and the contenders take turns slice by slice, A, B, C,
A, B, C..., so that they share the machine's noise; a cell is the median of ``--repeat`` runs.
The psycopg connections run in autocommit mode (asyncpg's always do), so no pool has a
transaction to end when a connection comes back: the numbers are the pools' own costs.
The raw-connection baseline runs the very loop the pool workers run (the ``with``, the
clock reads, the recorded wait), lending each worker its own connection at no cost, so
that a ratio against it is the pool's cost alone; the bare loop is shown beside it (the
loop costs a few percent). `bench/reference_pool.py`, the least a first-come-first-served
pool can do, shows what fairness itself costs in CPython.
The Markdown report goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shlex
import signal
import statistics
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    AsyncExitStack,
    ExitStack,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, Final, Generic, Literal, Protocol, TypeVar

import asyncpg  # type: ignore[import-untyped]
import psycopg
import psycopg_pool
import sqlalchemy
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy.pool import QueuePool

import pgfleet

ROOT: Final = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: bench/ is on the path, the root is not
    sys.path.insert(0, str(ROOT))

from bench.reference_pool import open_fifo_pool, open_fifo_pool_async  # noqa: E402

SCENARIOS: Final = ("checkout", "select1_4x4", "oversubscribed_64x8")
QUERY: Final = "SELECT 1"
AUTOCOMMIT: Final[dict[str, Any]] = {"autocommit": True}
#: Seconds the workers of a load run may take to finish once told to stop.
STOP_GRACE: Final = 15.0
#: Untimed checkout cycles at the start of every timed checkout run.
CHECKOUT_WARM_CYCLES: Final = 200
#: Cycles between two looks at the clock in a checkout run.
CHECKOUT_BATCH: Final = 250

Flavour = Literal["sync", "async"]
PGFLEET: Final[dict[Flavour, str]] = {"sync": "pgfleet.Pool", "async": "pgfleet.AsyncPool"}
PSYCOPG_POOL: Final[dict[Flavour, str]] = {
    "sync": "psycopg_pool.ConnectionPool",
    "async": "psycopg_pool.AsyncConnectionPool",
}
RAW: Final[dict[Flavour, str]] = {
    "sync": "raw psycopg.Connection",
    "async": "raw psycopg.AsyncConnection",
}
RAW_BARE: Final[dict[Flavour, str]] = {
    "sync": "raw psycopg.Connection, bare loop",
    "async": "raw psycopg.AsyncConnection, bare loop",
}
REFERENCE: Final = "reference: minimal FIFO pool"

S = TypeVar("S")  # what an entrant's opener yields: what its measurement works on
P = TypeVar("P")  # one slice of a timed run
R = TypeVar("R", bound="Run")  # one timed run's result (its slices merged)

clock = time.perf_counter


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Budgets


@dataclass(frozen=True)
class Budget:
    """How long and how often to measure."""

    repeat: int
    #: Untimed work per entrant before its first timed run (seconds).
    warmup: float
    #: Time limit and cycle limit of one timed checkout run.
    checkout_seconds: float
    checkout_max_cycles: int
    #: Length of one timed load run (seconds).
    duration: float
    #: Every timed run is cut in this many slices, interleaved with the other entrants'.
    slices: int

    @classmethod
    def for_args(cls, quick: bool, repeat: int) -> Budget:
        if quick:
            return cls(
                repeat,
                warmup=0.1,
                checkout_seconds=0.1,
                checkout_max_cycles=50_000,
                duration=0.5,
                slices=2,
            )
        return cls(
            repeat,
            warmup=0.3,
            checkout_seconds=0.5,
            checkout_max_cycles=300_000,
            duration=2.0,
            slices=4,
        )


@dataclass(frozen=True)
class Plan:
    """One scenario's schedule: a warm-up, then `repeat` timed runs of `seconds` per entrant,
    each cut in `slices` slices; slice k of every entrant runs before slice k + 1 of any."""

    repeat: int
    warmup: float
    seconds: float
    slices: int

    @classmethod
    def of(cls, budget: Budget, seconds: float) -> Plan:
        return cls(budget.repeat, budget.warmup, seconds, budget.slices)


# --------------------------------------------------------------------------------------------
# Results


class Run(Protocol):
    def brief(self) -> str:
        """A few words for the progress log."""
        ...


@dataclass(frozen=True)
class CheckoutRun:
    """One timed run of checkout + return cycles."""

    cycles: int
    seconds: float

    @classmethod
    def merge(cls, slices: Sequence[CheckoutRun]) -> CheckoutRun:
        return cls(sum(s.cycles for s in slices), sum(s.seconds for s in slices))

    @property
    def us_per_cycle(self) -> float:
        return self.seconds / self.cycles * 1e6

    def brief(self) -> str:
        return f"{self.us_per_cycle:.2f} µs/cycle ({self.cycles} cycles)"


@dataclass(frozen=True)
class WorkerResult:
    """What one worker did in a load run; `waits` are checkout waits in seconds."""

    ops: int
    waits: list[float]


@dataclass(frozen=True)
class LoadSlice:
    """One slice of a load run: what each worker did in `seconds`."""

    seconds: float
    workers: list[WorkerResult]
    #: CPU time this process (every thread) used meanwhile: the client's side only.
    cpu_seconds: float


@dataclass(frozen=True)
class LoadRun:
    """One timed run of concurrent workers running queries (its slices put together)."""

    seconds: float
    per_worker: list[int]
    qps: float
    jain: float
    #: Checkout wait around the benchmark's own ``with``: None without a pool (raw).
    wait_p99_ms: float | None
    wait_max_ms: float | None
    #: The client process's CPU time per query, in µs: what the pool, the driver and the
    #: event loop or threads cost. Less moved by other jobs on the machine than the
    #: throughput (which they take cores from), so it shows smaller differences.
    cpu_us_per_query: float

    @classmethod
    def merge(cls, slices: Sequence[LoadSlice]) -> LoadRun:
        seconds = sum(s.seconds for s in slices)
        per_slice = ([w.ops for w in s.workers] for s in slices)
        per_worker = [sum(ops) for ops in zip(*per_slice, strict=True)]
        waits = sorted(wait for s in slices for w in s.workers for wait in w.waits)
        return cls(
            seconds=seconds,
            per_worker=per_worker,
            qps=sum(per_worker) / seconds,
            jain=jain_index(per_worker),
            wait_p99_ms=percentile(waits, 0.99) * 1e3 if waits else None,
            wait_max_ms=waits[-1] * 1e3 if waits else None,
            cpu_us_per_query=sum(s.cpu_seconds for s in slices) / max(sum(per_worker), 1) * 1e6,
        )

    def brief(self) -> str:
        text = (
            f"{self.qps:,.0f} q/s, {self.cpu_us_per_query:.0f} µs CPU/q,"
            f" ops/worker {min(self.per_worker)}-{max(self.per_worker)}"
        )
        if self.wait_max_ms is not None:
            text += f", wait p99 {self.wait_p99_ms:.2f} ms max {self.wait_max_ms:.2f} ms"
        return text


@dataclass(frozen=True)
class Row(Generic[R]):
    """One entrant's runs in one scenario."""

    flavour: Flavour
    name: str
    runs: list[R]


def percentile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank `q` quantile of an ascending, non-empty sequence."""
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


def jain_index(values: Sequence[int]) -> float:
    """Jain's fairness index: 1 when all equal, 1/n when one value takes everything."""
    squares = sum(v * v for v in values)
    return sum(values) ** 2 / (len(values) * squares) if squares else 0.0


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


# --------------------------------------------------------------------------------------------
# Connections and pools. An opener yields `acquire`: ``acquire()`` is a context manager
# that lends one connection (``pool.connection``, ``engine.connect``, ``pool.acquire``).

Acquire = Callable[[], AbstractContextManager[Any]]
AsyncAcquire = Callable[[], AbstractAsyncContextManager[Any]]


@contextmanager
def open_pgfleet(dsn: str, size: int) -> Iterator[Acquire]:
    with pgfleet.Pool(dsn, min_size=size, max_size=size, kwargs=AUTOCOMMIT) as pool:
        yield pool.connection


@contextmanager
def open_psycopg_pool(dsn: str, size: int) -> Iterator[Acquire]:
    pool = psycopg_pool.ConnectionPool(
        dsn, min_size=size, max_size=size, kwargs=AUTOCOMMIT, open=False
    )
    try:
        pool.open(wait=True, timeout=30)
        yield pool.connection
    finally:
        pool.close()


@contextmanager
def open_sqlalchemy(dsn: str, size: int, *, pre_ping: bool) -> Iterator[Acquire]:
    engine = sqlalchemy.create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(dsn),
        poolclass=QueuePool,
        pool_size=size,
        max_overflow=0,
        pool_pre_ping=pre_ping,
    )
    try:
        with engine.connect():  # the first connection initializes the dialect
            pass
        yield engine.connect
    finally:
        engine.dispose()


@asynccontextmanager
async def open_pgfleet_async(dsn: str, size: int) -> AsyncIterator[AsyncAcquire]:
    async with pgfleet.AsyncPool(dsn, min_size=size, max_size=size, kwargs=AUTOCOMMIT) as pool:
        yield pool.connection


@asynccontextmanager
async def open_psycopg_pool_async(dsn: str, size: int) -> AsyncIterator[AsyncAcquire]:
    pool = psycopg_pool.AsyncConnectionPool(
        dsn, min_size=size, max_size=size, kwargs=AUTOCOMMIT, open=False
    )
    try:
        await pool.open(wait=True, timeout=30)
        yield pool.connection
    finally:
        await pool.close()


async def _skip_reset(conn: Any) -> None:
    """An asyncpg ``reset`` that does nothing (the default runs a query on every release)."""


@asynccontextmanager
async def open_asyncpg(dsn: str, size: int, *, reset: bool) -> AsyncIterator[AsyncAcquire]:
    pool = await asyncpg.create_pool(
        min_size=size, max_size=size, reset=None if reset else _skip_reset, **asyncpg_params(dsn)
    )
    try:
        yield pool.acquire
    finally:
        await pool.close()


def asyncpg_params(dsn: str) -> dict[str, Any]:
    """asyncpg's connection arguments for a libpq conninfo or URL (address and credentials;
    other libpq parameters are not translated)."""
    info = conninfo_to_dict(dsn)
    names = {"host": "host", "port": "port", "user": "user", "password": "password"}
    params: dict[str, Any] = {new: info[old] for old, new in names.items() if old in info}
    if "dbname" in info:
        params["database"] = info["dbname"]
    if "port" in params:
        params["port"] = int(params["port"])
    return params


# --------------------------------------------------------------------------------------------
# Checkout cycles: checkout + return, no query, one worker


def time_checkouts(acquire: Acquire, seconds: float, *, max_cycles: int) -> CheckoutRun:
    def cycles(n: int) -> None:
        for _ in range(n):
            with acquire():
                pass

    cycles(CHECKOUT_WARM_CYCLES)
    done = 0
    started = clock()
    deadline = started + seconds
    while done < max_cycles:
        cycles(CHECKOUT_BATCH)
        done += CHECKOUT_BATCH
        if clock() >= deadline:
            break
    return CheckoutRun(cycles=done, seconds=clock() - started)


async def time_checkouts_async(
    acquire: AsyncAcquire, seconds: float, *, max_cycles: int
) -> CheckoutRun:
    async def cycles(n: int) -> None:
        for _ in range(n):
            async with acquire():
                pass

    await cycles(CHECKOUT_WARM_CYCLES)
    done = 0
    started = clock()
    deadline = started + seconds
    while done < max_cycles:
        await cycles(CHECKOUT_BATCH)
        done += CHECKOUT_BATCH
        if clock() >= deadline:
            break
    return CheckoutRun(cycles=done, seconds=clock() - started)


# --------------------------------------------------------------------------------------------
# Load runs: workers (threads or tasks) running `SELECT 1` until told to stop


class StopFlag:
    """Set once by the timer; read by the workers (a plain attribute: the cheapest read)."""

    __slots__ = ("stopped",)

    def __init__(self) -> None:
        self.stopped = False


SyncQuery = Callable[[Any], object]
AsyncQuery = Callable[[Any], Coroutine[Any, Any, object]]
SyncWorker = Callable[[StopFlag], WorkerResult]
AsyncWorker = Callable[[StopFlag], Coroutine[Any, Any, WorkerResult]]
#: Worker number -> that worker (raw connections give each worker its own).
WorkerFor = Callable[[int], SyncWorker]
AsyncWorkerFor = Callable[[int], AsyncWorker]


def psycopg_select1(conn: psycopg.Connection[Any]) -> None:
    conn.execute(QUERY).fetchone()


async def psycopg_select1_async(conn: psycopg.AsyncConnection[Any]) -> None:
    await (await conn.execute(QUERY)).fetchone()


def sqlalchemy_select1(conn: Any) -> None:
    conn.exec_driver_sql(QUERY).scalar()


async def asyncpg_select1(conn: Any) -> None:
    await conn.fetchval(QUERY)


def pool_worker(acquire: Acquire, query: SyncQuery, stop: StopFlag) -> WorkerResult:
    waits: list[float] = []
    while not stop.stopped:
        started = clock()
        with acquire() as conn:
            waits.append(clock() - started)
            query(conn)
    return WorkerResult(len(waits), waits)


async def pool_worker_async(
    acquire: AsyncAcquire, query: AsyncQuery, stop: StopFlag
) -> WorkerResult:
    waits: list[float] = []
    while not stop.stopped:
        started = clock()
        async with acquire() as conn:
            waits.append(clock() - started)
            await query(conn)
    return WorkerResult(len(waits), waits)


class OwnConnection:
    """The raw baseline's lender: each worker's own connection, lent through the same
    ``with`` and the same bookkeeping as a pool's, at no cost (no lookup, no allocation).
    A ratio against it is the pool's cost alone, not the benchmark loop's."""

    __slots__ = ("conn",)

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def __call__(self) -> OwnConnection:
        return self

    def __enter__(self) -> Any:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        return None

    async def __aenter__(self) -> Any:
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        return None


@contextmanager
def pool_workers(opener: AbstractContextManager[Acquire], query: SyncQuery) -> Iterator[WorkerFor]:
    with opener as acquire:
        yield lambda _number: partial(pool_worker, acquire, query)


@asynccontextmanager
async def pool_workers_async(
    opener: AbstractAsyncContextManager[AsyncAcquire], query: AsyncQuery
) -> AsyncIterator[AsyncWorkerFor]:
    async with opener as acquire:
        yield lambda _number: partial(pool_worker_async, acquire, query)


@contextmanager
def own_connections(dsn: str, count: int) -> Iterator[list[psycopg.Connection[Any]]]:
    """`count` autocommit connections, one per worker, closed at the end."""
    with ExitStack() as stack:
        yield [stack.enter_context(psycopg.connect(dsn, autocommit=True)) for _ in range(count)]


@asynccontextmanager
async def own_connections_async(
    dsn: str, count: int
) -> AsyncIterator[list[psycopg.AsyncConnection[Any]]]:
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                await psycopg.AsyncConnection.connect(dsn, autocommit=True)
            )
            for _ in range(count)
        ]


@contextmanager
def raw_workers(dsn: str, count: int) -> Iterator[WorkerFor]:
    with own_connections(dsn, count) as conns:
        yield lambda number: partial(pool_worker, OwnConnection(conns[number]), psycopg_select1)


@asynccontextmanager
async def raw_workers_async(dsn: str, count: int) -> AsyncIterator[AsyncWorkerFor]:
    async with own_connections_async(dsn, count) as conns:
        yield lambda number: partial(
            pool_worker_async, OwnConnection(conns[number]), psycopg_select1_async
        )


def bare_worker(conn: psycopg.Connection[Any], stop: StopFlag) -> WorkerResult:
    """`SELECT 1` in a loop with no bookkeeping: shows what the loop itself costs."""
    ops = 0
    while not stop.stopped:
        psycopg_select1(conn)
        ops += 1
    return WorkerResult(ops, [])


async def bare_worker_async(conn: psycopg.AsyncConnection[Any], stop: StopFlag) -> WorkerResult:
    ops = 0
    while not stop.stopped:
        await psycopg_select1_async(conn)
        ops += 1
    return WorkerResult(ops, [])


@contextmanager
def bare_workers(dsn: str, count: int) -> Iterator[WorkerFor]:
    with own_connections(dsn, count) as conns:
        yield lambda number: partial(bare_worker, conns[number])


@asynccontextmanager
async def bare_workers_async(dsn: str, count: int) -> AsyncIterator[AsyncWorkerFor]:
    async with own_connections_async(dsn, count) as conns:
        yield lambda number: partial(bare_worker_async, conns[number])


def first_failure(outcomes: Sequence[WorkerResult | BaseException | None]) -> list[WorkerResult]:
    """The workers' results, or raise the first worker's exception."""
    results: list[WorkerResult] = []
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome is None:
            raise RuntimeError(f"a worker did not finish within {STOP_GRACE} s of the stop")
        results.append(outcome)
    return results


def run_threads(workers: Sequence[SyncWorker], seconds: float) -> LoadSlice:
    """Start every worker in its own thread at once; stop them after `seconds`."""
    stop = StopFlag()
    start_line = threading.Barrier(len(workers) + 1)
    outcomes: list[WorkerResult | BaseException | None] = [None] * len(workers)

    def body(number: int, worker: SyncWorker) -> None:
        try:
            start_line.wait()
            outcomes[number] = worker(stop)
        except BaseException as exc:
            outcomes[number] = exc

    threads = [
        threading.Thread(target=body, args=(n, w), name=f"bench-{n}", daemon=True)
        for n, w in enumerate(workers)
    ]
    for thread in threads:
        thread.start()
    started = None
    cpu_started = 0.0
    try:
        start_line.wait()
        started = clock()
        cpu_started = time.process_time()
        time.sleep(seconds)
    finally:
        stop.stopped = True
        if started is None:
            # Release the workers if we never got past the start line. Only then: a
            # worker woken by the start but not yet scheduled again (64 threads on a
            # loaded machine) would see the barrier broken and fail.
            start_line.abort()
        give_up = clock() + STOP_GRACE
        for thread in threads:
            thread.join(max(give_up - clock(), 0.0))
    assert started is not None
    elapsed = clock() - started
    return LoadSlice(elapsed, first_failure(outcomes), time.process_time() - cpu_started)


async def run_tasks(workers: Sequence[AsyncWorker], seconds: float) -> LoadSlice:
    """Start every worker in its own task at once; stop them after `seconds`."""
    stop = StopFlag()
    start_line = asyncio.Event()

    async def body(worker: AsyncWorker) -> WorkerResult:
        await start_line.wait()
        return await worker(stop)

    tasks = [asyncio.create_task(body(w)) for w in workers]
    await asyncio.sleep(0)  # every task reaches the start line
    start_line.set()
    started = clock()
    cpu_started = time.process_time()
    try:
        await asyncio.sleep(seconds)
    finally:
        stop.stopped = True
        done, pending = await asyncio.wait(tasks, timeout=STOP_GRACE)
        for task in pending:
            task.cancel()
    elapsed = clock() - started
    return LoadSlice(
        elapsed,
        first_failure([task_outcome(t) if t in done else None for t in tasks]),
        time.process_time() - cpu_started,
    )


def task_outcome(task: asyncio.Task[WorkerResult]) -> WorkerResult | BaseException:
    if task.cancelled():
        return asyncio.CancelledError()
    return task.exception() or task.result()


def measure_threads(worker_for: WorkerFor, seconds: float, *, workers: int) -> LoadSlice:
    return run_threads([worker_for(n) for n in range(workers)], seconds)


async def measure_tasks(worker_for: AsyncWorkerFor, seconds: float, *, workers: int) -> LoadSlice:
    return await run_tasks([worker_for(n) for n in range(workers)], seconds)


# --------------------------------------------------------------------------------------------
# Interleaving: open all entrants, warm each, then time them in turn


@dataclass(frozen=True)
class Entrant(Generic[S]):
    name: str
    open: Callable[[], AbstractContextManager[S]]


@dataclass(frozen=True)
class AsyncEntrant(Generic[S]):
    name: str
    open: Callable[[], AbstractAsyncContextManager[S]]


def log_run(scenario: str, row: Row[R], number: int, repeat: int) -> None:
    log(f"{scenario} {row.flavour:5} {row.name}: run {number}/{repeat} {row.runs[-1].brief()}")


def interleave(
    scenario: str,
    entrants: Sequence[Entrant[S]],
    measure: Callable[[S, float], P],
    merge: Callable[[Sequence[P]], R],
    plan: Plan,
) -> list[Row[R]]:
    """Open every entrant, warm each up, then time them slice by slice, in turn."""
    with ExitStack() as stack:
        subjects = [stack.enter_context(e.open()) for e in entrants]
        for entrant, subject in zip(entrants, subjects, strict=True):
            warm = merge([measure(subject, plan.warmup)])
            log(f"{scenario} sync  {entrant.name}: warm-up {warm.brief()}")
        rows: list[Row[R]] = [Row("sync", e.name, []) for e in entrants]
        for number in range(1, plan.repeat + 1):
            slices: list[list[P]] = [[] for _ in entrants]
            for _ in range(plan.slices):
                for parts, subject in zip(slices, subjects, strict=True):
                    parts.append(measure(subject, plan.seconds / plan.slices))
            for row, parts in zip(rows, slices, strict=True):
                row.runs.append(merge(parts))
                log_run(scenario, row, number, plan.repeat)
    return rows


async def interleave_async(
    scenario: str,
    entrants: Sequence[AsyncEntrant[S]],
    measure: Callable[[S, float], Coroutine[Any, Any, P]],
    merge: Callable[[Sequence[P]], R],
    plan: Plan,
) -> list[Row[R]]:
    """`interleave` for asyncio entrants."""
    async with AsyncExitStack() as stack:
        subjects = [await stack.enter_async_context(e.open()) for e in entrants]
        for entrant, subject in zip(entrants, subjects, strict=True):
            warm = merge([await measure(subject, plan.warmup)])
            log(f"{scenario} async {entrant.name}: warm-up {warm.brief()}")
        rows: list[Row[R]] = [Row("async", e.name, []) for e in entrants]
        for number in range(1, plan.repeat + 1):
            slices: list[list[P]] = [[] for _ in entrants]
            for _ in range(plan.slices):
                for parts, subject in zip(slices, subjects, strict=True):
                    parts.append(await measure(subject, plan.seconds / plan.slices))
            for row, parts in zip(rows, slices, strict=True):
                row.runs.append(merge(parts))
                log_run(scenario, row, number, plan.repeat)
    return rows


# --------------------------------------------------------------------------------------------
# Scenarios


def bench_checkout(dsn: str, budget: Budget) -> list[Row[CheckoutRun]]:
    """Checkout + return through the context manager, no query, one worker, one connection."""
    plan = Plan.of(budget, budget.checkout_seconds)
    measure = partial(time_checkouts, max_cycles=budget.checkout_max_cycles // budget.slices)
    measure_async = partial(
        time_checkouts_async, max_cycles=budget.checkout_max_cycles // budget.slices
    )
    sync_rows = interleave(
        "checkout",
        [
            Entrant(PGFLEET["sync"], partial(open_pgfleet, dsn, 1)),
            Entrant(REFERENCE, partial(open_fifo_pool, dsn, 1)),
            Entrant(PSYCOPG_POOL["sync"], partial(open_psycopg_pool, dsn, 1)),
            Entrant("SQLAlchemy QueuePool", partial(open_sqlalchemy, dsn, 1, pre_ping=False)),
            Entrant(
                "SQLAlchemy QueuePool, pre_ping", partial(open_sqlalchemy, dsn, 1, pre_ping=True)
            ),
        ],
        measure,
        CheckoutRun.merge,
        plan,
    )
    async_rows = asyncio.run(
        interleave_async(
            "checkout",
            [
                AsyncEntrant(PGFLEET["async"], partial(open_pgfleet_async, dsn, 1)),
                AsyncEntrant(REFERENCE, partial(open_fifo_pool_async, dsn, 1)),
                AsyncEntrant(PSYCOPG_POOL["async"], partial(open_psycopg_pool_async, dsn, 1)),
                AsyncEntrant("asyncpg Pool", partial(open_asyncpg, dsn, 1, reset=True)),
                AsyncEntrant(
                    "asyncpg Pool, reset=no-op", partial(open_asyncpg, dsn, 1, reset=False)
                ),
            ],
            measure_async,
            CheckoutRun.merge,
            plan,
        )
    )
    return sync_rows + async_rows


def bench_select1_4x4(dsn: str, budget: Budget) -> list[Row[LoadRun]]:
    """4 workers over 4 connections running ``SELECT 1``; raw connections are the baseline."""
    n = 4
    plan = Plan.of(budget, budget.duration)
    sync_rows = interleave(
        "select1_4x4",
        [
            Entrant(PGFLEET["sync"], lambda: pool_workers(open_pgfleet(dsn, n), psycopg_select1)),
            Entrant(RAW["sync"], partial(raw_workers, dsn, n)),
            Entrant(
                PSYCOPG_POOL["sync"],
                lambda: pool_workers(open_psycopg_pool(dsn, n), psycopg_select1),
            ),
            Entrant(REFERENCE, lambda: pool_workers(open_fifo_pool(dsn, n), psycopg_select1)),
            Entrant(
                "SQLAlchemy QueuePool",
                lambda: pool_workers(open_sqlalchemy(dsn, n, pre_ping=False), sqlalchemy_select1),
            ),
            Entrant(RAW_BARE["sync"], partial(bare_workers, dsn, n)),
        ],
        partial(measure_threads, workers=n),
        LoadRun.merge,
        plan,
    )
    async_rows = asyncio.run(
        interleave_async(
            "select1_4x4",
            [
                AsyncEntrant(
                    PGFLEET["async"],
                    lambda: pool_workers_async(open_pgfleet_async(dsn, n), psycopg_select1_async),
                ),
                AsyncEntrant(RAW["async"], partial(raw_workers_async, dsn, n)),
                AsyncEntrant(
                    PSYCOPG_POOL["async"],
                    lambda: pool_workers_async(
                        open_psycopg_pool_async(dsn, n), psycopg_select1_async
                    ),
                ),
                AsyncEntrant(
                    REFERENCE,
                    lambda: pool_workers_async(open_fifo_pool_async(dsn, n), psycopg_select1_async),
                ),
                AsyncEntrant(
                    "asyncpg Pool",
                    lambda: pool_workers_async(open_asyncpg(dsn, n, reset=True), asyncpg_select1),
                ),
                AsyncEntrant(RAW_BARE["async"], partial(bare_workers_async, dsn, n)),
            ],
            partial(measure_tasks, workers=n),
            LoadRun.merge,
            plan,
        )
    )
    return sync_rows + async_rows


def bench_oversubscribed_64x8(dsn: str, budget: Budget) -> list[Row[LoadRun]]:
    """64 workers over 8 connections running ``SELECT 1``: queueing, fairness, waits."""
    workers, size = 64, 8
    plan = Plan.of(budget, budget.duration)
    sync_rows = interleave(
        "oversubscribed_64x8",
        [
            Entrant(
                PGFLEET["sync"], lambda: pool_workers(open_pgfleet(dsn, size), psycopg_select1)
            ),
            Entrant(
                PSYCOPG_POOL["sync"],
                lambda: pool_workers(open_psycopg_pool(dsn, size), psycopg_select1),
            ),
            Entrant(REFERENCE, lambda: pool_workers(open_fifo_pool(dsn, size), psycopg_select1)),
            Entrant(
                "SQLAlchemy QueuePool",
                lambda: pool_workers(
                    open_sqlalchemy(dsn, size, pre_ping=False), sqlalchemy_select1
                ),
            ),
        ],
        partial(measure_threads, workers=workers),
        LoadRun.merge,
        plan,
    )
    async_rows = asyncio.run(
        interleave_async(
            "oversubscribed_64x8",
            [
                AsyncEntrant(
                    PGFLEET["async"],
                    lambda: pool_workers_async(
                        open_pgfleet_async(dsn, size), psycopg_select1_async
                    ),
                ),
                AsyncEntrant(
                    PSYCOPG_POOL["async"],
                    lambda: pool_workers_async(
                        open_psycopg_pool_async(dsn, size), psycopg_select1_async
                    ),
                ),
                AsyncEntrant(
                    "asyncpg Pool",
                    lambda: pool_workers_async(
                        open_asyncpg(dsn, size, reset=True), asyncpg_select1
                    ),
                ),
                AsyncEntrant(
                    "asyncpg Pool, reset=no-op",
                    lambda: pool_workers_async(
                        open_asyncpg(dsn, size, reset=False), asyncpg_select1
                    ),
                ),
                AsyncEntrant(
                    REFERENCE,
                    lambda: pool_workers_async(
                        open_fifo_pool_async(dsn, size), psycopg_select1_async
                    ),
                ),
            ],
            partial(measure_tasks, workers=workers),
            LoadRun.merge,
            plan,
        )
    )
    return sync_rows + async_rows


# --------------------------------------------------------------------------------------------
# Report


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: int) -> str:
    """A Markdown table whose columns from `numeric` on are right-aligned."""
    align = ["---" if i < numeric else "---:" for i in range(len(header))]
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def row_named(rows: Sequence[Row[R]], flavour: Flavour, name: str) -> Row[R]:
    return next(r for r in rows if r.flavour == flavour and r.name == name)


def flavours(rows: Sequence[Row[R]]) -> list[Flavour]:
    return [f for f in ("sync", "async") if any(r.flavour == f for r in rows)]


def verdict(value: float, target: float, *, at_least: bool) -> str:
    """How `value` fares against a bound: 'met', or how far it is from it."""
    if value >= target if at_least else value <= target:
        return "met"
    gap = abs(value / target - 1) * 100
    return f"missed, {gap:.0f}% {'short' if at_least else 'over'}"


def ratio(value: float) -> str:
    return f"{value:.2f}x"


def ahead(rows: Sequence[Row[R]], flavour: Flavour, cell: Callable[[Row[R]], float]) -> str:
    """Whether pgfleet is ahead of every other pool of its flavour (not the yardsticks)."""
    ours = cell(row_named(rows, flavour, PGFLEET[flavour]))
    behind = [
        row.name
        for row in rows
        if row.flavour == flavour
        and row.name not in (PGFLEET[flavour], REFERENCE, RAW[flavour], RAW_BARE[flavour])
        and "reset=no-op" not in row.name  # asyncpg as it runs by default: with its reset
        and cell(row) >= ours
    ]
    return "ahead of the other pools" if not behind else "behind " + ", ".join(behind)


def section(title: str, table: str, notes: Sequence[str]) -> str:
    return "\n".join([f"## {title}", "", table, "", *notes])


def report_checkout(rows: Sequence[Row[CheckoutRun]], repeat: int) -> str:
    def cell(row: Row[CheckoutRun]) -> float:
        return median([run.us_per_cycle for run in row.runs])

    table: list[list[str]] = []
    notes = [
        f"Median of {repeat} runs per cell. The figure to track is the instruction count"
        " (`python -m bench.instructions`, or `--instructions` here): the clock moves with"
        " the machine's load.",
        "",
    ]
    for flavour in flavours(rows):
        ours = cell(row_named(rows, flavour, PGFLEET[flavour]))
        for row in (r for r in rows if r.flavour == flavour):
            table.append(
                [
                    flavour,
                    row.name,
                    f"{cell(row):.2f}",
                    "—" if row.name == PGFLEET[flavour] else ratio(ours / cell(row)),
                    " / ".join(f"{run.us_per_cycle:.2f}" for run in row.runs),
                ]
            )
        reference = ours / cell(row_named(rows, flavour, REFERENCE))
        peer = ours / cell(row_named(rows, flavour, PSYCOPG_POOL[flavour]))
        notes.append(
            f"- {flavour}: pgfleet takes {ratio(reference)} the reference pool's time per cycle,"
            f" {ratio(peer)} psycopg_pool's"
        )
    header = ["flavour", "pool", "µs per cycle", "pgfleet ÷ pool", "runs (µs)"]
    return section(
        "checkout: checkout + return, no query, 1 worker, 1 connection",
        markdown_table(header, table, numeric=2),
        notes,
    )


def report_select1(rows: Sequence[Row[LoadRun]], repeat: int) -> str:
    def cell(row: Row[LoadRun]) -> float:
        return median([run.qps for run in row.runs])

    table: list[list[str]] = []
    notes = [
        f"Median of {repeat} runs per cell. Target (issue #15): pgfleet ≥ 0.95x the reference"
        " pool, and ahead of the other pools.",
        "",
    ]
    for flavour in flavours(rows):
        raw = cell(row_named(rows, flavour, RAW[flavour]))
        reference = cell(row_named(rows, flavour, REFERENCE))
        for row in (r for r in rows if r.flavour == flavour):
            table.append(
                [
                    flavour,
                    row.name,
                    f"{cell(row):,.0f}",
                    ratio(cell(row) / reference),
                    ratio(cell(row) / raw),
                    " / ".join(f"{run.qps:,.0f}" for run in row.runs),
                ]
            )
        ours = cell(row_named(rows, flavour, PGFLEET[flavour]))
        notes.append(
            f"- {flavour}: {ratio(ours / reference)} the reference"
            f" ({verdict(ours / reference, 0.95, at_least=True)}); {ratio(ours / raw)} raw;"
            f" {ahead(rows, flavour, cell)}"
        )
    header = ["flavour", "contender", "queries/s", "÷ reference", "÷ raw", "runs (q/s)"]
    return section(
        "select1_4x4: 4 workers, 4 connections, `SELECT 1`",
        markdown_table(header, table, numeric=2),
        notes,
    )


def report_oversubscribed(rows: Sequence[Row[LoadRun]], repeat: int) -> str:
    def qps(row: Row[LoadRun]) -> float:
        return median([run.qps for run in row.runs])

    def max_wait(row: Row[LoadRun]) -> float:
        return median([run.wait_max_ms or 0.0 for run in row.runs])

    def slowest_worker(row: Row[LoadRun]) -> int:
        return min(min(run.per_worker) for run in row.runs)

    def cpu(row: Row[LoadRun]) -> float:
        return median([run.cpu_us_per_query for run in row.runs])

    def spread(row: Row[LoadRun]) -> str:
        """Least and most served workers' queries in the run of median throughput."""
        run = sorted(row.runs, key=lambda r: r.qps)[(len(row.runs) - 1) // 2]
        return f"{min(run.per_worker)}-{max(run.per_worker)}"

    table: list[list[str]] = []
    notes = [
        f"Median of {repeat} runs per cell, but `ops per worker` (queries completed by the"
        " least and the most served worker, in the run of median throughput) and `(worst)`"
        " (the longest wait of all runs). A wait is the time to enter the `with` block, as the"
        " worker sees it. Client CPU: this process's CPU time (all threads) per query: the"
        " pool's, the driver's and the threads' or event loop's work, without the server's.",
        "Targets for pgfleet (issue #15): ≥ 0.95x the reference pool's throughput, ahead of"
        " the other pools, no starved worker, worst wait ≤ the reference's.",
        "",
    ]
    for flavour in flavours(rows):
        peer = row_named(rows, flavour, PSYCOPG_POOL[flavour])
        yardstick = row_named(rows, flavour, REFERENCE)
        for row in (r for r in rows if r.flavour == flavour):
            worst = max(run.wait_max_ms or 0.0 for run in row.runs)
            table.append(
                [
                    flavour,
                    row.name,
                    f"{qps(row):,.0f}",
                    ratio(qps(row) / qps(yardstick)),
                    ratio(qps(row) / qps(peer)),
                    f"{cpu(row):.0f}",
                    ratio(cpu(row) / cpu(yardstick)),
                    spread(row),
                    f"{median([run.jain for run in row.runs]):.3f}",
                    f"{median([run.wait_p99_ms or 0.0 for run in row.runs]):.2f}",
                    f"{max_wait(row):.2f} ({worst:.2f})",
                ]
            )
        ours = row_named(rows, flavour, PGFLEET[flavour])
        speed = qps(ours) / qps(yardstick)

        def worst(row: Row[LoadRun]) -> float:
            return max(run.wait_max_ms or 0.0 for run in row.runs)

        waits = worst(ours) / worst(yardstick)
        notes.append(
            f"- {flavour}: throughput {ratio(speed)} the reference"
            f" ({verdict(speed, 0.95, at_least=True)}); {ahead(rows, flavour, qps)};"
            f" least served worker of all runs {slowest_worker(ours)} queries"
            f" ({'starved' if slowest_worker(ours) == 0 else 'none starved'});"
            f" worst wait {ratio(waits)} the reference's ({verdict(waits, 1.0, at_least=False)})"
        )
    header = [
        "flavour",
        "pool",
        "queries/s",
        "÷ reference",
        "÷ psycopg_pool",
        "client CPU µs per query",
        "CPU ÷ reference",
        "ops per worker",
        "Jain",
        "wait p99 ms",
        "wait max ms (worst)",
    ]
    return section(
        "oversubscribed_64x8: 64 workers, 8 connections, `SELECT 1`",
        markdown_table(header, table, numeric=2),
        notes,
    )


# --------------------------------------------------------------------------------------------
# Environment


def pg_version(number: int) -> str:
    """libpq/server version number (170005) as text (17.5)."""
    return f"{number // 10000}.{number % 100}"


def machine(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        server = pg_version(conn.info.server_version)
        where = f"{conn.info.host}:{conn.info.port}"
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": sys.version.split()[0],
        "psycopg": f"{psycopg.__version__} ({psycopg.pq.__impl__})",
        "libpq": pg_version(psycopg.pq.version()),
        "server": f"PostgreSQL {server} at {where}",
        "pgfleet": pgfleet.__version__,
        "psycopg_pool": psycopg_pool.__version__,
        "asyncpg": asyncpg.__version__,
        "sqlalchemy": sqlalchemy.__version__,
    }


@contextmanager
def database(dsn: str | None) -> Iterator[str]:
    """`dsn`, or a throwaway cluster's conninfo (the cluster is destroyed on exit)."""
    if dsn is not None:
        yield dsn
        return
    from tests.support.cluster import PgCluster, find_pg_bin

    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise SystemExit("no PostgreSQL binaries found: set PG_BIN or pass --dsn")
    cluster = PgCluster(bin_dir)
    try:
        with cluster:
            log(f"throwaway cluster {cluster.base_dir} (from {bin_dir}) started")
            yield cluster.conninfo()
    finally:
        log("throwaway cluster destroyed")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


# --------------------------------------------------------------------------------------------
# CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pool_bench",
        description="Benchmark pgfleet side by side with psycopg_pool, asyncpg and SQLAlchemy.",
    )
    parser.add_argument(
        "--dsn", help="server to use (default: a throwaway cluster, destroyed at the end)"
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument(
        "--repeat", type=int, default=3, metavar="N", help="runs per cell, median reported"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="save the raw results here")
    parser.add_argument(
        "--only",
        action="append",
        choices=SCENARIOS,
        metavar="SCENARIO",
        help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--instructions",
        type=int,
        default=0,
        metavar="N",
        help="also count instructions per checkout + return under callgrind, N cycles"
        " (bench/instructions.py; a few minutes)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


ScenarioRunner = Callable[[str, Budget], tuple[str, list[dict[str, Any]]]]


def scenario(
    bench: Callable[[str, Budget], list[Row[R]]],
    report: Callable[[Sequence[Row[R]], int], str],
) -> ScenarioRunner:
    """Bench, then return the Markdown report and the raw rows."""

    def run(dsn: str, budget: Budget) -> tuple[str, list[dict[str, Any]]]:
        rows = bench(dsn, budget)
        return report(rows, budget.repeat), [asdict(row) for row in rows]

    return run


RUNNERS: Final[dict[str, ScenarioRunner]] = {
    "checkout": scenario(bench_checkout, report_checkout),
    "select1_4x4": scenario(bench_select1_4x4, report_select1),
    "oversubscribed_64x8": scenario(bench_oversubscribed_64x8, report_oversubscribed),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    budget = Budget.for_args(args.quick, args.repeat)
    chosen = [name for name in SCENARIOS if not args.only or name in args.only]
    signal.signal(signal.SIGTERM, _interrupt)
    command = shlex.join(sys.orig_argv)
    started = clock()
    sections: list[str] = []
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        with database(args.dsn) as dsn:
            env = machine(dsn)
            for name in chosen:
                report, results[name] = RUNNERS[name](dsn, budget)
                sections.append(report)
            if args.instructions:
                from bench import instructions

                log("counting instructions under callgrind")
                counts = instructions.count(
                    list(instructions.CONTENDERS), dsn, args.instructions, jobs=2
                )
                sections.append(
                    "## instructions per checkout + return (callgrind)\n\n"
                    + instructions.report(counts)
                )
                results["instructions"] = [
                    {"pool": c.name, "flavour": c.flavour, "per_cycle": c.per_cycle}
                    for c in counts.values()
                ]
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    print(f"Command: `{command}` ({clock() - started:.0f} s)")
    print("Machine: " + ", ".join(f"{key} {value}" for key, value in env.items()))
    print()
    print("\n\n".join(sections))
    if args.json is not None:
        document = {
            "command": command,
            "machine": env,
            "budget": asdict(budget),
            "results": results,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        log(f"raw results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
