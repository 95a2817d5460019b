"""The worker example: an asyncio job consumer over a PostgreSQL job table, with pgfleet.

Run it against any database you may create tables in::

    DATABASE_URL=postgresql://user:password@localhost/db \\
        python examples/worker/worker.py --enqueue 200 --drain --concurrency 8 --pool-size 4

``--concurrency`` consumer tasks share ONE `pgfleet.AsyncPool` whose ``max_size`` may be
smaller: a task holds a connection only for the length of one job's transaction, and waits
its turn in the pool's first-come-first-served queue otherwise.

Each job is claimed, processed and marked done inside one retried transaction
(`AsyncPool.run_transaction`)::

    SELECT ... FROM jobs WHERE status = 'queued' ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1
    -- the handler runs, writes its effect (a row of job_effects), then
    UPDATE jobs SET status = 'done', result = ... WHERE id = ...
    COMMIT

There is no "claimed" status: the claim is the row lock. If the worker crashes, the
connection breaks or the server rolls the transaction back (a deadlock, a serialization
failure), nothing of the job was applied and it is queued again, for a retry of the same
transaction or for another task. If it commits, the job is done and its effect written, at
once. So no job is lost and none is applied twice (``job_effects.job_id`` is a primary key:
a second application could not even commit).

A handler runs in a savepoint: if it raises, its own writes are rolled back and the job is
marked failed (the error, one more attempt) by the same transaction, which still holds the
claim, so no other task picks the failing job up meanwhile. A database error that means
"try again" (serialization failure, deadlock, lost connection) is not a job failure: it
escapes, and `run_transaction` replays the whole claim.

Without ``--drain`` the worker waits for new jobs until Ctrl-C (or SIGTERM): it then stops
claiming, lets the jobs in flight finish, closes the pool and prints its summary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

import pgfleet
from pgfleet.bulk import copy_rows_async
from pgfleet.tx import RETRY_SQLSTATES

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id bigserial PRIMARY KEY,
    kind text NOT NULL,
    payload jsonb NOT NULL,
    status text NOT NULL DEFAULT 'queued',
    attempts int NOT NULL DEFAULT 0,
    result jsonb,
    error text,
    created_at timestamptz DEFAULT now(),
    done_at timestamptz
);
CREATE INDEX IF NOT EXISTS jobs_queued ON jobs (id) WHERE status = 'queued';
CREATE TABLE IF NOT EXISTS job_effects (
    job_id bigint PRIMARY KEY REFERENCES jobs (id),
    value text NOT NULL
);
"""

CLAIM = """
SELECT id, kind, payload, attempts FROM jobs
WHERE status = 'queued'
ORDER BY id
FOR UPDATE SKIP LOCKED
LIMIT 1
"""

Conn = psycopg.AsyncConnection[Any]
Pool = pgfleet.AsyncPool[Conn]


@dataclass(frozen=True)
class Job:
    """One claimed row of ``jobs``."""

    id: int
    kind: str
    payload: Any
    attempts: int


@dataclass(frozen=True)
class Outcome:
    """What became of a claimed job: done, or failed with `error`."""

    job: Job
    error: str | None = None


# -- the handlers: small, real work whose effect is written in the job's transaction ------

Handler = Callable[[Conn, Job], Awaitable[dict[str, Any]]]


async def record_effect(conn: Conn, job: Job, value: str) -> None:
    """The job's side effect. Exactly once: it commits with the job's 'done', or not at all."""
    await conn.execute("INSERT INTO job_effects (job_id, value) VALUES (%s, %s)", (job.id, value))


async def sha256_job(conn: Conn, job: Job) -> dict[str, Any]:
    digest = hashlib.sha256(str(job.payload["text"]).encode()).hexdigest()
    await record_effect(conn, job, digest)
    return {"sha256": digest}


async def sum_job(conn: Conn, job: Job) -> dict[str, Any]:
    total = sum(int(n) for n in job.payload["numbers"])
    await record_effect(conn, job, str(total))
    return {"sum": total}


async def fail_job(conn: Conn, job: Job) -> dict[str, Any]:
    raise RuntimeError(f"this job always fails: {job.payload['reason']}")


HANDLERS: dict[str, Handler] = {"sha256": sha256_job, "sum": sum_job, "fail": fail_job}


# -- the consumer ------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    concurrency: int = 8
    pool_size: int = 4
    drain: bool = False
    enqueue: int = 0
    enqueue_failing: int = 0
    poll_interval: float = 0.5
    job_delay: float = 0.0
    verbose: bool = False
    conninfo: str | None = None  # None: the pool reads DATABASE_URL


@dataclass
class Summary:
    done: int = 0
    failed: int = 0
    in_doubt: int = 0
    per_task: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0
    stats: pgfleet.PoolStats | None = None


async def process_one(conn: Conn, delay: float) -> Outcome | None:
    """Claim the oldest queued job, run it, mark it done or failed: all in the caller's
    transaction, which holds the job's row lock until it commits.

    Returns what became of the job, or None when no job is queued (or all queued ones are
    claimed by other tasks).
    """
    async with conn.cursor(row_factory=class_row(Job)) as cur:
        await cur.execute(CLAIM)
        job = await cur.fetchone()
    if job is None:
        return None
    try:
        # A savepoint: the writes of a handler that raises are undone, the claim is kept.
        async with conn.transaction():
            result = await run_handler(conn, job, delay)
    except psycopg.Error as exc:
        if exc.sqlstate in RETRY_SQLSTATES or conn.broken:
            raise  # the server rolled back or the connection broke: run_transaction retries
        error = f"{type(exc).__name__}: {exc}"
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    else:
        await conn.execute(
            "UPDATE jobs SET status = 'done', result = %s, attempts = attempts + 1,"
            " done_at = now() WHERE id = %s",
            (Jsonb(result), job.id),
        )
        return Outcome(job)
    # Marked failed while the row is still locked: no other task runs it meanwhile, and the
    # failure commits with the claim, apart from the handler's undone work.
    await conn.execute(
        "UPDATE jobs SET status = 'failed', error = %s, attempts = attempts + 1,"
        " done_at = now() WHERE id = %s",
        (error, job.id),
    )
    return Outcome(job, error)


async def run_handler(conn: Conn, job: Job, delay: float) -> dict[str, Any]:
    handler = HANDLERS.get(job.kind)
    if handler is None:
        raise LookupError(f"no handler for job kind {job.kind!r}")
    if delay:
        await asyncio.sleep(delay)  # pretend the work takes a while
    return await handler(conn, job)


async def consume(
    pool: Pool, number: int, config: Config, stop: asyncio.Event, summary: Summary
) -> None:
    """One consumer task: claim and run jobs until told to stop (or, draining, none is left)."""
    summary.per_task[number] = 0
    while not stop.is_set():
        try:
            outcome = await pool.run_transaction(process_one, config.job_delay)
        except pgfleet.CommitOutcomeUnknown as exc:
            # The job is done or still queued -- never half-done: the table says which.
            summary.in_doubt += 1
            print(f"task {number}: commit outcome unknown ({exc}); continuing", file=sys.stderr)
            continue
        if outcome is None:
            if config.drain:
                return
            # Idle: wait for new jobs, or for the order to stop.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), config.poll_interval)
            continue
        if outcome.error is not None:
            summary.failed += 1
            if config.verbose:
                print(f"task {number}: job {outcome.job.id} failed: {outcome.error}", flush=True)
            continue
        summary.done += 1
        summary.per_task[number] += 1
        if config.verbose:
            print(f"task {number}: job {outcome.job.id} done", flush=True)


async def create_schema(pool: Pool) -> None:
    async with pool.connection() as conn:
        await conn.execute(SCHEMA)


async def enqueue(pool: Pool, count: int, failing: int = 0) -> int:
    """Add demo jobs: `count` that succeed (sha256 and sum, in turn), `failing` that raise."""
    rows: list[tuple[str, Any]] = []
    for i in range(count):
        if i % 2:
            rows.append(("sum", {"numbers": list(range(i % 50 + 1))}))
        else:
            rows.append(("sha256", {"text": f"job number {i}"}))
    rows += [("fail", {"reason": f"demo failure {i}"}) for i in range(failing)]
    async with pool.connection() as conn:  # committed when the block ends
        return await copy_rows_async(conn, "jobs", ["kind", "payload"], rows)


async def run(config: Config, stop: asyncio.Event | None = None) -> Summary:
    """Run the worker until `stop` is set (or, with ``drain``, the queue is empty)."""
    stop = stop if stop is not None else asyncio.Event()
    summary = Summary()
    started = time.monotonic()
    async with pgfleet.AsyncPool(
        config.conninfo, min_size=1, max_size=config.pool_size, name="worker"
    ) as pool:
        await create_schema(pool)
        if config.enqueue or config.enqueue_failing:
            added = await enqueue(pool, config.enqueue, config.enqueue_failing)
            print(f"enqueued {added} jobs", flush=True)
        print(
            f"consuming with {config.concurrency} tasks over a pool of {config.pool_size}",
            flush=True,
        )
        async with asyncio.TaskGroup() as tasks:
            for number in range(config.concurrency):
                tasks.create_task(consume(pool, number, config, stop, summary))
        summary.stats = pool.stats()
    summary.elapsed = time.monotonic() - started
    return summary


def report(summary: Summary) -> None:
    print(f"jobs done: {summary.done}")
    print(f"jobs failed: {summary.failed}")
    if summary.in_doubt:
        print(f"commits in doubt: {summary.in_doubt}")
    print("per task: " + ", ".join(f"{n}={c}" for n, c in sorted(summary.per_task.items())))
    print(f"elapsed: {summary.elapsed:.2f}s")
    if summary.stats is not None:
        s = summary.stats
        print(
            f"pool: checkouts={s.checkouts} waited={s.checkouts_waited}"
            f" max_wait={s.wait_time.maximum * 1000:.1f}ms"
            f" connections={s.connections_created} retries={s.transaction_retries}"
        )


def parse_args(argv: Sequence[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--concurrency", type=int, default=8, help="consumer tasks (8)")
    parser.add_argument("--pool-size", type=int, default=4, help="pool max_size (4)")
    parser.add_argument("--drain", action="store_true", help="exit when the queue is empty")
    parser.add_argument("--enqueue", type=int, default=0, metavar="N", help="add N demo jobs")
    parser.add_argument(
        "--enqueue-failing", type=int, default=0, metavar="N", help="add N jobs that fail"
    )
    parser.add_argument("--poll-interval", type=float, default=0.5, help="idle wait, seconds")
    parser.add_argument("--job-delay", type=float, default=0.0, help="extra seconds per job")
    parser.add_argument("--verbose", action="store_true", help="one line per job")
    parser.add_argument("--dsn", default=None, help="conninfo (default: DATABASE_URL)")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.pool_size < 1:
        parser.error("--concurrency and --pool-size must be at least 1")
    return Config(
        concurrency=args.concurrency,
        pool_size=args.pool_size,
        drain=args.drain,
        enqueue=args.enqueue,
        enqueue_failing=args.enqueue_failing,
        poll_interval=args.poll_interval,
        job_delay=args.job_delay,
        verbose=args.verbose,
        conninfo=args.dsn,
    )


async def main(argv: Sequence[str] | None = None) -> Summary:
    config = parse_args(argv)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    current = asyncio.current_task()

    def on_signal() -> None:
        if stop.is_set() and current is not None:
            current.cancel()  # a second Ctrl-C: stop now, jobs in flight roll back
            return
        print("stopping: finishing the jobs in flight (Ctrl-C again to abort)", flush=True)
        stop.set()

    installed: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, on_signal)
        except (NotImplementedError, RuntimeError):  # Windows; or not the main thread
            continue
        installed.append(signum)
    try:
        summary = await run(config, stop)
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
    report(summary)
    return summary


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit(130)
