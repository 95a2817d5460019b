"""Outage benchmark: how pools behave when the server restarts or the network blackholes.

Run from the repository root::

    .venv/bin/python bench/outage_bench.py              # 3 repeats, about 2 minutes
    .venv/bin/python bench/outage_bench.py --quick      # 1 repeat, about 40 seconds

Without ``--dsn`` a throwaway PostgreSQL cluster is started (``tests/support/cluster.py``)
and destroyed at the end, also on Ctrl-C or SIGTERM. With ``--dsn`` only the blackhole
scenario runs: the restarts need a server this script controls.

Contenders, all with 4 connections, in autocommit mode, default settings otherwise:
pgfleet ``Pool`` and ``AsyncPool``; psycopg_pool's ``ConnectionPool`` without and with
``check=ConnectionPool.check_connection``; asyncpg's pool; SQLAlchemy's ``QueuePool`` with
``pool_pre_ping=True``. A *call* is checkout + ``SELECT 1`` + return, with a 2 s checkout
timeout (SQLAlchemy: ``pool_timeout=2``).

Scenarios:

1. **idle restart** -- the pool is idle (4 warm connections) when the server restarts
   (``pg_ctl restart -m fast``). From the moment the server is ready, one caller makes
   calls until one succeeds, then 8 more: the time from "ready" to the end of the first
   successful call, and how many calls failed (all of them began after the server was ready).
2. **busy restart** -- a caller loops over calls (pausing 10 ms after a failure) while the
   server stops (``-m fast``), stays down for 0.5 s and starts again: the time from "ready"
   to the end of the first successful call, the failed calls that began after "ready", and
   the longest single call (the target: no longer than the outage plus 100 ms, or the 2 s
   timeout).
3. **blackhole** -- the pools reach the server through a TCP proxy (tests/support/proxy.py)
   and sit idle for 1.2 s; then the proxy stops forwarding (connections stay open, nothing
   answers). All contenders at once make one checkout with ``timeout=2``: does it return
   within 2.2 s (and how long it really took, up to ``--blackhole-limit``); and when it
   returned a connection, does ``SELECT 1`` on it answer within 2 s.

Every contender runs each scenario once per repeat, and the repeats are interleaved (A, B,
C..., then A, B, C... in a rotated order). Cells are medians over the repeats; error counts
are listed per repeat. Every call, close and wait is bounded; a call that does not return
is reported as such. The Markdown report goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shlex
import signal
import statistics
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Final, Literal, TypeVar

import asyncpg  # type: ignore[import-untyped]
import psycopg
import psycopg_pool
import sqlalchemy
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy.pool import QueuePool

import pgfleet

ROOT: Final = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from support.cluster import PgCluster, find_pg_bin  # noqa: E402
from support.proxy import FaultProxy  # noqa: E402

T = TypeVar("T")

SIZE: Final = 4
TIMEOUT: Final = 2.0
#: The blackhole verdict: a checkout with timeout=2 must return within this.
BLACKHOLE_BOUND: Final = 2.2
#: After a failed call the busy caller pauses this long (as a client would).
PAUSE_AFTER_ERROR: Final = 0.01
#: The busy restart: how long the server stays down, and how long the caller runs around it.
OUTAGE: Final = 0.5
BEFORE_OUTAGE: Final = 0.3
AFTER_READY: Final = 1.5
#: The idle restart: calls after the first success, and how long to try for one.
CALLS_AFTER_SUCCESS: Final = 8
IDLE_LIMIT: Final = 10.0
#: How long the pools sit idle before the blackhole (pgfleet pings after 1 s idle).
IDLE_BEFORE_BLACKHOLE: Final = 1.2
#: How long a SELECT 1 on a connection lent during the blackhole may take to count as an answer.
QUERY_PATIENCE: Final = 2.0
#: Any single operation (open, close, a call) that takes longer than this is abandoned.
OPERATION_LIMIT: Final = 30.0
AUTOCOMMIT: Final[dict[str, Any]] = {"autocommit": True}

clock = time.monotonic


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Hung(Exception):
    """An operation did not finish within its bound (its thread or task is abandoned)."""


# --------------------------------------------------------------------------------------------
# Running blocking calls from the event loop, bounded


async def in_thread(fn: Callable[..., T], *args: Any, limit: float = OPERATION_LIMIT) -> T:
    """Run a blocking call in a daemon thread; `Hung` after `limit` (the thread is left)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:
            with contextlib.suppress(RuntimeError):  # the loop is gone
                loop.call_soon_threadsafe(settle, None, exc)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name=f"bench-{fn.__name__}", daemon=True).start()
    return await bounded(future, limit)


async def bounded(awaitable: Awaitable[T], limit: float) -> T:
    """Await with a bound; `Hung` (the awaitable keeps running, unobserved) after it."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=limit)
    if not done:
        task.add_done_callback(_ignore_result)
        raise Hung(f"no result within {limit:.3g} s")
    return task.result()


def _ignore_result(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


# --------------------------------------------------------------------------------------------
# Contenders: each lends connections in its own way; `call` is checkout + SELECT 1 + return.


@dataclass
class Call:
    """One checkout + query, timed."""

    started: float
    ended: float
    error: str | None = None
    #: When the checkout returned (the connection, or its error).
    checked_out: float = 0.0

    @property
    def seconds(self) -> float:
        return self.ended - self.started


class SyncContender:
    """A threaded pool, driven from worker threads."""

    name = ""
    flavour: Literal["sync", "async"] = "sync"

    def open(self, dsn: str) -> None:
        raise NotImplementedError

    def acquire(self, timeout: float) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def query(self, conn: Any) -> None:
        conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        raise NotImplementedError

    def warm(self) -> None:
        """Make every connection exist and serve once (all at once)."""
        with contextlib.ExitStack() as stack:
            conns = [stack.enter_context(self.acquire(TIMEOUT)) for _ in range(SIZE)]
            for conn in conns:
                self.query(conn)

    def call(
        self, timeout: float = TIMEOUT, query: bool = True, record: Call | None = None
    ) -> Call:
        """One call; `record` (filled in as it goes, for an observer) or a new one."""
        record = record or Call(clock(), 0.0)
        try:
            with self.acquire(timeout) as conn:
                record.checked_out = clock()
                if query:
                    self.query(conn)
        except Exception as exc:
            record.error = type(exc).__name__
        record.ended = clock()
        if not record.checked_out:
            record.checked_out = record.ended
        return record


class AsyncContender:
    """An asyncio pool, driven from the benchmark's event loop."""

    name = ""
    flavour: Literal["sync", "async"] = "async"

    async def open(self, dsn: str) -> None:
        raise NotImplementedError

    def acquire(self, timeout: float) -> AbstractAsyncContextManager[Any]:
        raise NotImplementedError

    async def query(self, conn: Any) -> None:
        cur = await conn.execute("SELECT 1")
        await cur.fetchone()

    async def close(self) -> None:
        raise NotImplementedError

    async def warm(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            conns = [await stack.enter_async_context(self.acquire(TIMEOUT)) for _ in range(SIZE)]
            for conn in conns:
                await self.query(conn)

    async def call(
        self, timeout: float = TIMEOUT, query: bool = True, record: Call | None = None
    ) -> Call:
        """One call; `record` (filled in as it goes, for an observer) or a new one."""
        record = record or Call(clock(), 0.0)
        try:
            async with self.acquire(timeout) as conn:
                record.checked_out = clock()
                if query:
                    await self.query(conn)
        except Exception as exc:
            record.error = type(exc).__name__
        record.ended = clock()
        if not record.checked_out:
            record.checked_out = record.ended
        return record


class PgfleetSync(SyncContender):
    name = "pgfleet Pool"

    def open(self, dsn: str) -> None:
        self.pool = pgfleet.Pool(
            dsn, min_size=SIZE, max_size=SIZE, timeout=TIMEOUT, kwargs=AUTOCOMMIT
        )
        self.pool.open(wait=True, timeout=OPERATION_LIMIT)

    def acquire(self, timeout: float) -> AbstractContextManager[Any]:
        return self.pool.connection(timeout=timeout)

    def close(self) -> None:
        self.pool.close(timeout=TIMEOUT)


class PsycopgPool(SyncContender):
    name = "psycopg_pool ConnectionPool"
    check: Any = None

    def open(self, dsn: str) -> None:
        self.pool = psycopg_pool.ConnectionPool(
            dsn,
            min_size=SIZE,
            max_size=SIZE,
            timeout=TIMEOUT,
            kwargs=AUTOCOMMIT,
            check=self.check,
            open=False,
        )
        self.pool.open(wait=True, timeout=OPERATION_LIMIT)

    def acquire(self, timeout: float) -> AbstractContextManager[Any]:
        return self.pool.connection(timeout=timeout)

    def close(self) -> None:
        self.pool.close(timeout=TIMEOUT)


class PsycopgPoolChecked(PsycopgPool):
    name = "psycopg_pool, check_connection"
    check = staticmethod(psycopg_pool.ConnectionPool.check_connection)


class SqlAlchemyPrePing(SyncContender):
    name = "SQLAlchemy QueuePool, pre_ping"

    def open(self, dsn: str) -> None:
        self.engine = sqlalchemy.create_engine(
            "postgresql+psycopg://",
            creator=lambda: psycopg.connect(dsn, autocommit=True),
            poolclass=QueuePool,
            pool_size=SIZE,
            max_overflow=0,
            pool_timeout=TIMEOUT,
            pool_pre_ping=True,
        )

    def acquire(self, timeout: float) -> AbstractContextManager[Any]:
        return self.engine.connect()  # its timeout is the engine's pool_timeout

    def query(self, conn: Any) -> None:
        conn.exec_driver_sql("SELECT 1").fetchone()

    def close(self) -> None:
        self.engine.dispose()


class PgfleetAsync(AsyncContender):
    name = "pgfleet AsyncPool"

    async def open(self, dsn: str) -> None:
        self.pool = pgfleet.AsyncPool(
            dsn, min_size=SIZE, max_size=SIZE, timeout=TIMEOUT, kwargs=AUTOCOMMIT
        )
        await self.pool.open(wait=True, timeout=OPERATION_LIMIT)

    def acquire(self, timeout: float) -> AbstractAsyncContextManager[Any]:
        return self.pool.connection(timeout=timeout)

    async def close(self) -> None:
        await self.pool.close(timeout=TIMEOUT)


class Asyncpg(AsyncContender):
    name = "asyncpg pool"

    async def open(self, dsn: str) -> None:
        self.pool = await asyncpg.create_pool(min_size=SIZE, max_size=SIZE, **asyncpg_params(dsn))

    def acquire(self, timeout: float) -> AbstractAsyncContextManager[Any]:
        return self.pool.acquire(timeout=timeout)  # type: ignore[no-any-return]

    async def query(self, conn: Any) -> None:
        await conn.fetchval("SELECT 1")

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.pool.close(), TIMEOUT)
        except (TimeoutError, OSError, asyncpg.PostgresError):
            self.pool.terminate()


def asyncpg_params(dsn: str) -> dict[str, Any]:
    """asyncpg's connection arguments for a libpq conninfo or URL."""
    info = conninfo_to_dict(dsn)
    names = {"host": "host", "port": "port", "user": "user", "password": "password"}
    params: dict[str, Any] = {new: info[old] for old, new in names.items() if old in info}
    if "dbname" in info:
        params["database"] = info["dbname"]
    if "port" in params:
        params["port"] = int(params["port"])
    return params


Contender = SyncContender | AsyncContender
CONTENDERS: Final[tuple[type[SyncContender] | type[AsyncContender], ...]] = (
    PgfleetSync,
    PgfleetAsync,
    PsycopgPool,
    PsycopgPoolChecked,
    Asyncpg,
    SqlAlchemyPrePing,
)


async def c_open(contender: Contender, dsn: str) -> None:
    if isinstance(contender, SyncContender):
        await in_thread(contender.open, dsn)
        await in_thread(contender.warm)
    else:
        await bounded(contender.open(dsn), OPERATION_LIMIT)
        await bounded(contender.warm(), OPERATION_LIMIT)


async def c_close(contender: Contender) -> None:
    try:
        if isinstance(contender, SyncContender):
            await in_thread(contender.close, limit=OPERATION_LIMIT)
        else:
            await bounded(contender.close(), OPERATION_LIMIT)
    except Hung:
        log(f"  {contender.name}: close() did not return within {OPERATION_LIMIT} s")


async def c_call(
    contender: Contender, *, query: bool = True, limit: float = OPERATION_LIMIT
) -> Call:
    if isinstance(contender, SyncContender):
        return await in_thread(contender.call, TIMEOUT, query, limit=limit)
    return await bounded(contender.call(TIMEOUT, query), limit)


@contextlib.asynccontextmanager
async def opened(contender: Contender, dsn: str) -> AsyncIterator[Contender]:
    await c_open(contender, dsn)
    try:
        yield contender
    finally:
        await c_close(contender)


# --------------------------------------------------------------------------------------------
# The server


class Server:
    """The throwaway cluster the restart scenarios stop and start."""

    def __init__(self, cluster: PgCluster) -> None:
        self.cluster = cluster
        self.conninfo = cluster.conninfo()

    def outage(self, seconds: float, ready: threading.Event | None = None) -> tuple[float, float]:
        """Stop (``-m fast``), stay down `seconds`, start: (stop began, server ready).

        "Ready" is the moment the postmaster declares itself ready in ``postmaster.pid``
        (``pg_ctl -w`` polls it only every 100 ms); `ready` is set then.
        """
        began = clock()
        self.cluster.stop("fast")
        time.sleep(seconds)
        ready_at: list[float] = []
        starting = threading.Event()

        def watch() -> None:
            pidfile = self.cluster.data_dir / "postmaster.pid"
            while not starting.is_set():
                with contextlib.suppress(OSError):
                    lines = pidfile.read_text().splitlines()
                    if len(lines) > 7 and lines[7].strip() == "ready":
                        ready_at.append(clock())
                        break
                time.sleep(0.0005)
            if ready is not None:
                ready.set()

        watcher = threading.Thread(target=watch, name="bench-ready-watch", daemon=True)
        watcher.start()
        try:
            self.cluster.start()
        finally:
            starting.set()
            watcher.join(5)
        return began, ready_at[0] if ready_at else clock()


# --------------------------------------------------------------------------------------------
# Scenarios


@dataclass
class Result:
    """One contender's numbers in one scenario run (seconds; None: not reached)."""

    first_ok: float | None = None
    errors: int = 0
    longest: float | None = None
    outage: float | None = None
    checkout: float | None = None
    outcome: str = ""
    query: str = ""
    notes: list[str] = field(default_factory=list)


async def idle_restart(contender: Contender, server: Server) -> Result:
    result = Result()
    async with opened(contender, server.conninfo):
        # The caller starts as soon as the server is ready, not when pg_ctl notices it.
        is_ready = threading.Event()
        restart = asyncio.ensure_future(in_thread(server.outage, 0.0, is_ready))
        await in_thread(is_ready.wait, OPERATION_LIMIT)
        started = clock()
        first_ok_at: float | None = None
        successes = 0
        while successes <= CALLS_AFTER_SUCCESS and clock() - started < IDLE_LIMIT:
            try:
                call = await c_call(contender, limit=IDLE_LIMIT)
            except Hung:
                result.notes.append("a call hung")
                break
            if call.error is None:
                successes += 1
                if first_ok_at is None:
                    first_ok_at = call.ended
            else:
                result.errors += 1
                await asyncio.sleep(PAUSE_AFTER_ERROR)
        _, ready = await bounded(restart, OPERATION_LIMIT)
        if first_ok_at is not None:
            result.first_ok = first_ok_at - ready
    return result


def busy_loop_sync(contender: SyncContender, stop: threading.Event, calls: list[Call]) -> None:
    while not stop.is_set():
        call = contender.call()
        calls.append(call)
        if call.error is not None:
            time.sleep(PAUSE_AFTER_ERROR)


async def busy_loop_async(
    contender: AsyncContender, stop: threading.Event, calls: list[Call]
) -> None:
    while not stop.is_set():
        call = await contender.call()
        calls.append(call)
        await asyncio.sleep(PAUSE_AFTER_ERROR if call.error is not None else 0)


async def busy_restart(contender: Contender, server: Server) -> Result:
    result = Result()
    calls: list[Call] = []
    stop = threading.Event()
    async with opened(contender, server.conninfo):
        if isinstance(contender, SyncContender):
            caller: asyncio.Future[None] = asyncio.ensure_future(
                in_thread(busy_loop_sync, contender, stop, calls, limit=OPERATION_LIMIT)
            )
        else:
            caller = asyncio.ensure_future(busy_loop_async(contender, stop, calls))
        await asyncio.sleep(BEFORE_OUTAGE)
        began, ready = await in_thread(server.outage, OUTAGE)
        await asyncio.sleep(AFTER_READY)
        stop.set()
        try:
            await bounded(caller, TIMEOUT + OPERATION_LIMIT)
        except Hung:
            result.notes.append("the caller hung")
    result.outage = ready - began
    done = list(calls)
    ok_after = [c.ended for c in done if c.error is None and c.ended >= ready]
    result.first_ok = min(ok_after) - ready if ok_after else None
    result.errors = sum(1 for c in done if c.error is not None and c.started >= ready)
    result.longest = max((c.seconds for c in done), default=None)
    return result


def blackhole_result(call: Call, finished: bool) -> Result:
    """What one call did under the blackhole (the network came back when it still ran)."""
    if not finished:
        return Result(outcome="hung")
    result = Result(checkout=call.checked_out - call.started)
    if call.error is not None and call.checked_out >= call.ended:
        result.outcome = call.error
        result.query = "n/a"
        return result
    result.outcome = "a connection"
    query_time = call.ended - call.checked_out
    if call.error is not None:
        result.query = f"{call.error} after {query_time:.1f} s"
    elif query_time <= QUERY_PATIENCE:
        result.query = f"answered in {query_time * 1000:.0f} ms"
    else:
        result.query = f"no answer for {query_time:.1f} s (until the network came back)"
    return result


async def blackhole_round(
    contenders: list[Contender], dsn: str, upstream: tuple[str, int], limit: float
) -> dict[str, Result]:
    """All contenders at once through one proxy: one blackhole, one call each.

    The network comes back when every checkout has returned and every SELECT 1 on what it
    lent has answered or waited `QUERY_PATIENCE`, or after `limit`, whichever is first.
    """
    with FaultProxy(upstream) as proxy:
        via_proxy = make_conninfo(dsn, host=upstream[0], hostaddr=None, port=proxy.port)
        async with contextlib.AsyncExitStack() as stack:
            for contender in contenders:
                await stack.enter_async_context(opened(contender, via_proxy))
            await asyncio.sleep(IDLE_BEFORE_BLACKHOLE)
            await in_thread(proxy.blackhole)
            blackholed = clock()
            calls = {c.name: Call(clock(), 0.0) for c in contenders}
            tasks: dict[str, asyncio.Future[Call]] = {}
            for c in contenders:
                if isinstance(c, SyncContender):
                    tasks[c.name] = asyncio.ensure_future(
                        in_thread(c.call, TIMEOUT, True, calls[c.name], limit=OPERATION_LIMIT)
                    )
                else:
                    tasks[c.name] = asyncio.ensure_future(
                        bounded(c.call(TIMEOUT, True, calls[c.name]), OPERATION_LIMIT)
                    )

            def settled(call: Call) -> bool:
                return bool(call.ended) or (
                    bool(call.checked_out) and clock() - call.checked_out >= QUERY_PATIENCE
                )

            while clock() - blackholed < limit and not all(map(settled, calls.values())):
                await asyncio.sleep(0.01)
            await in_thread(proxy.passthrough)
            done, _ = await asyncio.wait(set(tasks.values()), timeout=OPERATION_LIMIT)
            return {
                name: blackhole_result(calls[name], task in done and task.exception() is None)
                for name, task in tasks.items()
            }


# --------------------------------------------------------------------------------------------
# Report


def ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.0f} ms"


def med(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if len(known) == len(values) and known else None


def fmt_median(values: list[float | None]) -> str:
    if not values:
        return "n/a"
    median = med(values)
    if median is None:
        return "never (" + ", ".join(ms(v) for v in values) + ")"
    return ms(median)


def errors_list(results: list[Result]) -> str:
    return "/".join(str(r.errors) for r in results) if results else "n/a"


def report(
    names: list[str],
    idle: dict[str, list[Result]],
    busy: dict[str, list[Result]],
    blackhole: dict[str, list[Result]],
    limit: float,
) -> str:
    lines = [
        "| pool | idle restart: first OK after ready | errors | busy restart: first OK after"
        " ready | errors | longest call | blackhole: checkout (timeout=2) | ≤ 2.2 s | SELECT 1"
        " on what it lent |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | :---: | --- |",
    ]
    for name in names:
        holes = blackhole.get(name, [])
        checkouts = [r.checkout for r in holes]
        if holes and all(c is not None for c in checkouts):
            took = statistics.median([c for c in checkouts if c is not None])
            within = all(c is not None and c <= BLACKHOLE_BOUND for c in checkouts)
            verdict = "yes" if within else "**no**"
            shown = f"{took:.2f} s → {holes[0].outcome}"
            if took >= limit:
                shown = f"≥ {limit:.0f} s (until the network came back) → {holes[0].outcome}"
            query = holes[0].query
        else:
            shown, verdict, query = ("hung" if holes else "n/a"), ("**no**" if holes else ""), ""
        busy_runs = busy.get(name, [])
        lines.append(
            f"| {name} | {fmt_median([r.first_ok for r in idle.get(name, [])])}"
            f" | {errors_list(idle.get(name, []))}"
            f" | {fmt_median([r.first_ok for r in busy_runs])}"
            f" | {errors_list(busy_runs)}"
            f" | {fmt_median([r.longest for r in busy_runs])}"
            f" | {shown} | {verdict} | {query} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Main


@contextlib.contextmanager
def database(dsn: str | None) -> Iterator[tuple[str, Server | None]]:
    """`dsn` (no server control), or a throwaway cluster's (destroyed on exit)."""
    if dsn is not None:
        yield dsn, None
        return
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise SystemExit("no PostgreSQL binaries found: set PG_BIN or pass --dsn")
    cluster = PgCluster(bin_dir)
    try:
        with cluster:
            log(f"throwaway cluster {cluster.base_dir} (from {bin_dir}) started")
            yield cluster.conninfo(), Server(cluster)
    finally:
        log("throwaway cluster destroyed")


def upstream_of(dsn: str) -> tuple[str, int]:
    info = conninfo_to_dict(dsn)
    host = str(info.get("hostaddr") or info.get("host") or "127.0.0.1")
    if host.startswith("/"):
        raise SystemExit("the blackhole scenario needs a TCP server (host=... in --dsn)")
    return host, int(info.get("port") or 5432)


async def run(args: argparse.Namespace) -> str:
    names = [cls.name for cls in CONTENDERS]
    idle: dict[str, list[Result]] = {name: [] for name in names}
    busy: dict[str, list[Result]] = {name: [] for name in names}
    blackhole: dict[str, list[Result]] = {name: [] for name in names}
    outages: list[float] = []
    with database(args.dsn) as (dsn, server):
        for repeat in range(args.repeat):
            order = list(
                CONTENDERS[repeat % len(CONTENDERS) :] + CONTENDERS[: repeat % len(CONTENDERS)]
            )
            if server is not None:
                for cls in order:
                    result = await idle_restart(cls(), server)
                    idle[cls.name].append(result)
                    log(
                        f"[{repeat + 1}] idle restart  {cls.name}: first OK {ms(result.first_ok)},"
                        f" {result.errors} errors {' '.join(result.notes)}"
                    )
                for cls in order:
                    result = await busy_restart(cls(), server)
                    busy[cls.name].append(result)
                    if result.outage is not None:
                        outages.append(result.outage)
                    log(
                        f"[{repeat + 1}] busy restart  {cls.name}: first OK {ms(result.first_ok)},"
                        f" {result.errors} errors, longest {ms(result.longest)}"
                        f" {' '.join(result.notes)}"
                    )
            round_results = await blackhole_round(
                [cls() for cls in order], dsn, upstream_of(dsn), args.blackhole_limit
            )
            for name, result in round_results.items():
                blackhole[name].append(result)
                log(
                    f"[{repeat + 1}] blackhole     {name}: checkout {ms(result.checkout)}"
                    f" → {result.outcome}; SELECT 1 {result.query}"
                )
    table = report(names, idle, busy, blackhole, args.blackhole_limit)
    notes = [
        f"Medians of {args.repeat} interleaved run(s); errors per run. Busy restart outage:"
        f" {ms(statistics.median(outages)) if outages else 'n/a'} from `pg_ctl stop -m fast`"
        f" to the server ready again (target: no call longer than the outage + 100 ms, or its"
        " 2 s timeout). Blackhole: pools idle"
        f" {IDLE_BEFORE_BLACKHOLE} s, then the proxy forwards nothing; checkouts watched up to"
        f" {args.blackhole_limit:.0f} s.",
    ]
    if server is None:
        notes.append("Restart scenarios skipped: --dsn given (they need the throwaway cluster).")
    return table + "\n\n" + "\n".join(notes)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/outage_bench.py",
        description="How pgfleet and its peers live through restarts and blackholes.",
    )
    parser.add_argument("--dsn", help="server to use: only the blackhole scenario then runs")
    parser.add_argument("--repeat", type=int, default=3, metavar="N", help="runs per cell")
    parser.add_argument("--quick", action="store_true", help="one run per cell")
    parser.add_argument("--verbose", action="store_true", help="show the pools' own logs")
    parser.add_argument(
        "--blackhole-limit",
        type=float,
        default=8.0,
        metavar="S",
        help="how long to wait for a blackholed checkout before letting the network flow",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat = 1
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if not BLACKHOLE_BOUND < args.blackhole_limit <= 60:
        parser.error("--blackhole-limit must be within (2.2, 60]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The peers log every failed reconnect (asyncpg with a traceback): quiet unless asked.
    level = logging.INFO if args.verbose else logging.CRITICAL
    logging.basicConfig(level=level, force=True)
    for name in ("psycopg", "psycopg.pool", "asyncpg", "sqlalchemy", "pgfleet"):
        logging.getLogger(name).setLevel(level)
    signal.signal(signal.SIGTERM, _interrupt)
    started = clock()
    try:
        table = asyncio.run(run(args))
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    print(f"Command: `{shlex.join(sys.orig_argv)}` ({clock() - started:.0f} s)")
    print(
        f"Machine: {os.cpu_count()} CPUs, load average"
        f" {' '.join(f'{x:.2f}' for x in os.getloadavg())}, Python {sys.version.split()[0]},"
        f" psycopg {psycopg.__version__} (libpq {psycopg.pq.version()}), pgfleet"
        f" {pgfleet.__version__}, psycopg_pool {psycopg_pool.__version__}, asyncpg"
        f" {asyncpg.__version__}, SQLAlchemy {sqlalchemy.__version__}"
    )
    print()
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
