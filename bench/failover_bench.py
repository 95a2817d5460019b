"""Failover benchmark: pools under write load while the primary crashes and a standby takes over.

Run from the repository root::

    .venv/bin/python bench/failover_bench.py            # 5 trials per pool, about 2 minutes
    .venv/bin/python bench/failover_bench.py --quick    # 1 trial per pool, about 40 seconds

Every trial builds its own primary and streaming standby (``pg_basebackup -R -X stream``, from
``tests/support/replication.py``) and destroys them at the end, also on Ctrl-C or SIGTERM.
The pools are given the multi-host conninfo ``host=127.0.0.1,127.0.0.1 port=P1,P2
target_session_attrs=read-write connect_timeout=2`` (the old primary listed first; asyncpg:
the same hosts, ``target_session_attrs="read-write"``, ``timeout=2``), 4 connections, a 2 s
checkout timeout, autocommit, their defaults otherwise. 8 writers loop over the pool: one
call is checkout + a write of the acknowledged-write ledger (``tests/support/ledger.py``: an
``INSERT ... RETURNING`` of the server's port, timeline and WAL position, in its own
transaction with ``synchronous_commit=on``) + return; a writer pauses 10 ms after a failed call.

Scenarios, one after the other in each trial:

1. **crash + promote** -- after 0.3 s of load the primary is crashed (SIGQUIT to the
   postmaster, as ``pg_ctl stop -m immediate``) and the standby promoted at once
   (``pg_promote(wait => false)`` on a superuser connection opened beforehand). The same
   connection then probes a write (``pg_current_xact_id()``) about every millisecond: the new
   primary is *writable* from the moment the first successful probe was sent. Reported: the
   time from then to the first write acknowledged through the pool (it can be slightly
   negative: a pool may win the race against the probe), and the calls that failed from the
   crash until 0.3 s after that first write.
2. **stale primary** -- the old primary is started again as it was: writable, on its old
   timeline (a fenced node restarted by mistake). Once it accepts writes, every connection to
   the new primary is terminated (``pg_terminate_backend`` of every backend of the ``app``
   database: fair to all pools, as each must then remake its connections by the conninfo's
   rules, and none is told more than the others), and the load runs 1 s more. Reported: the
   writes acknowledged by the old primary, checked against the servers by the ledger (they
   are absent from the new primary, off its timeline history), their share of the writes
   acknowledged after the terminate, and the calls that failed in this phase.

Contenders: psycopg_pool's ``ConnectionPool``, asyncpg's ``create_pool``, SQLAlchemy's
``create_engine(pool_pre_ping=True)`` on psycopg (``QueuePool``), pgfleet ``Pool`` and
``AsyncPool``, and pgfleet's cluster pools ``ClusterPool`` / ``AsyncClusterPool`` when this
pgfleet has them. The trials are interleaved: trial k of every pool runs before trial k + 1
of any, in an order rotated by one at each trial. Cells are medians; ratios are against
psycopg_pool within the same run. Every wait is bounded (a trial's load stops after
``MAX_WRITES`` attempts or ``LOAD_LIMIT`` seconds at the latest). The Markdown report goes to
stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import shlex
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]
import psycopg
import psycopg_pool
import sqlalchemy
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy.pool import QueuePool

import pgfleet

ROOT: Final = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "tests"):  # the repository (bench.*) and the test helpers (support.*)
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench.outage_bench import Hung, bounded, clock, in_thread, log  # noqa: E402
from bench.pool_bench import _interrupt, machine, markdown_table, median, section  # noqa: E402

from support.cluster import APP_DBNAME, PgCluster, find_pg_bin  # noqa: E402
from support.ledger import Ack, Attempt, Ledger, Outcome  # noqa: E402
from support.replication import (  # noqa: E402
    PATIENCE,
    PgNode,
    Replication,
    build_replication_template,
    parse_lsn,
)

SIZE: Final = 4
WRITERS: Final = 8
#: Checkout timeout of every pool (SQLAlchemy: ``pool_timeout``).
TIMEOUT: Final = 2.0
#: libpq's ``connect_timeout`` (asyncpg: ``timeout``).
CONNECT_TIMEOUT: Final = 2
PAUSE_AFTER_ERROR: Final = 0.01
#: Bounds of one trial's load: attempts, and seconds.
MAX_WRITES: Final = 50_000
LOAD_LIMIT: Final = 60.0
#: Interval of the write probe on the promoted standby.
PROBE_INTERVAL: Final = 0.001
TABLE: Final = "pgfleet_ledger"
AUTOCOMMIT: Final[dict[str, Any]] = {"autocommit": True}
#: pgfleet's cluster pools (issue #12), benched when this pgfleet has them.
ClusterPool: Any = getattr(pgfleet, "ClusterPool", None)
AsyncClusterPool: Any = getattr(pgfleet, "AsyncClusterPool", None)


@dataclass(frozen=True)
class Budget:
    """How long each phase of a trial lasts (seconds) and how many trials run."""

    repeat: int
    #: Load before the crash.
    steady: float
    #: How long to wait for the first write on the new primary.
    recover_limit: float
    #: Load after that first write, before the old primary comes back.
    settle: float
    #: Load after the terminate.
    stale_window: float

    @classmethod
    def for_args(cls, quick: bool, repeat: int) -> Budget:
        if quick:
            return cls(repeat, steady=0.3, recover_limit=5.0, settle=0.3, stale_window=0.5)
        return cls(repeat, steady=0.3, recover_limit=10.0, settle=0.3, stale_window=1.0)


# --------------------------------------------------------------------------------------------
# Contenders. `call` is one checkout + one ledger write + return; it raises when it fails.


class SyncContender:
    """A threaded pool, driven from the writer threads."""

    key = ""
    name = ""

    def open(self, conninfo: str) -> None:
        raise NotImplementedError

    def acquire(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def call(self, ledger: Ledger, writer: int) -> Attempt:
        with self.acquire() as conn:
            return ledger.write(conn, writer)

    def warm(self) -> None:
        """Make every connection exist (all lent at once)."""
        with contextlib.ExitStack() as stack:
            for _ in range(SIZE):
                stack.enter_context(self.acquire())


class AsyncContender:
    """An asyncio pool, driven from the benchmark's event loop."""

    key = ""
    name = ""

    async def open(self, conninfo: str) -> None:
        raise NotImplementedError

    def acquire(self) -> AbstractAsyncContextManager[Any]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def call(self, ledger: Ledger, writer: int) -> Attempt:
        async with self.acquire() as conn:
            return await ledger.awrite(conn, writer)

    async def warm(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(SIZE):
                await stack.enter_async_context(self.acquire())


class PsycopgPool(SyncContender):
    key = "psycopg_pool"
    name = "psycopg_pool ConnectionPool"

    def open(self, conninfo: str) -> None:
        self.pool = psycopg_pool.ConnectionPool(
            conninfo, min_size=SIZE, max_size=SIZE, timeout=TIMEOUT, kwargs=AUTOCOMMIT, open=False
        )
        self.pool.open(wait=True, timeout=PATIENCE)

    def acquire(self) -> AbstractContextManager[Any]:
        return self.pool.connection(timeout=TIMEOUT)

    def close(self) -> None:
        self.pool.close(timeout=TIMEOUT)


class SqlAlchemyPrePing(SyncContender):
    key = "sqlalchemy"
    name = "SQLAlchemy pre_ping"

    def open(self, conninfo: str) -> None:
        self.engine = sqlalchemy.create_engine(
            "postgresql+psycopg://",
            creator=lambda: psycopg.connect(conninfo, autocommit=True),
            poolclass=QueuePool,
            pool_size=SIZE,
            max_overflow=0,
            pool_timeout=TIMEOUT,
            pool_pre_ping=True,
        )

    def acquire(self) -> AbstractContextManager[Any]:
        return self.engine.connect()

    def call(self, ledger: Ledger, writer: int) -> Attempt:
        with self.engine.connect() as conn:
            driver = conn.connection.driver_connection
            assert isinstance(driver, psycopg.Connection)
            try:
                return ledger.write(driver, writer)
            except psycopg.Error:
                # The write bypassed SQLAlchemy's execute, which would have invalidated a
                # connection lost under it (its is_disconnect): do what it would have done.
                if driver.broken or driver.closed:
                    conn.invalidate()
                raise

    def close(self) -> None:
        self.engine.dispose()


class PgfleetPool(SyncContender):
    key = "pgfleet"
    name = "pgfleet Pool"

    def make(self, conninfo: str) -> Any:
        return pgfleet.Pool(
            conninfo, min_size=SIZE, max_size=SIZE, timeout=TIMEOUT, kwargs=AUTOCOMMIT
        )

    def open(self, conninfo: str) -> None:
        self.pool = self.make(conninfo)
        self.pool.open(wait=True, timeout=PATIENCE)

    def acquire(self) -> AbstractContextManager[Any]:
        return self.pool.connection(timeout=TIMEOUT)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.pool.close(timeout=TIMEOUT)


class PgfleetClusterPool(PgfleetPool):
    """The cluster pool on the same conninfo: sizes are per host, defaults otherwise."""

    key = "cluster"
    name = "pgfleet ClusterPool"

    def make(self, conninfo: str) -> Any:
        return ClusterPool(
            conninfo, min_size=SIZE, max_size=SIZE, timeout=TIMEOUT, kwargs=AUTOCOMMIT
        )


class Asyncpg(AsyncContender):
    key = "asyncpg"
    name = "asyncpg pool"

    async def open(self, conninfo: str) -> None:
        self.ids = itertools.count(1)
        self.pool = await asyncpg.create_pool(
            min_size=SIZE, max_size=SIZE, **asyncpg_multi_host(conninfo)
        )

    def acquire(self) -> AbstractAsyncContextManager[Any]:
        return self.pool.acquire(timeout=TIMEOUT)  # type: ignore[no-any-return]

    async def call(self, ledger: Ledger, writer: int) -> Attempt:
        async with self.acquire() as conn:
            return await self.write(ledger, conn, writer)

    async def write(self, ledger: Ledger, conn: Any, writer: int) -> Attempt:
        """`Ledger.awrite` in asyncpg's words: the same statements, recorded the same way."""
        wid = next(self.ids)  # this ledger serves this contender alone
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL synchronous_commit = on")
                row = await conn.fetchrow(
                    f"INSERT INTO {TABLE} (id, writer) VALUES ($1, $2)"
                    " RETURNING port, timeline, lsn::text",
                    wid,
                    writer,
                )
        except Exception as exc:
            # As the ledger does: only a refusal on a usable connection is known rolled back.
            outcome: Outcome = "unknown" if conn.is_closed() else "failed"
            sqlstate = getattr(exc, "sqlstate", None)
            ledger.attempts.append(Attempt(wid, writer, outcome, None, sqlstate, str(exc)))
            raise
        port, tli, lsn = row
        ack = Ack(wid, writer, int(port), int(tli), parse_lsn(lsn), clock())
        attempt = Attempt(wid, writer, "acked", ack)
        ledger.attempts.append(attempt)
        return attempt

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.pool.close(), TIMEOUT)
        except (TimeoutError, OSError, asyncpg.PostgresError):
            self.pool.terminate()


def asyncpg_multi_host(conninfo: str) -> dict[str, Any]:
    """asyncpg's arguments for a multi-host libpq conninfo (hosts, ports, credentials,
    ``target_session_attrs``, ``connect_timeout``)."""
    info = conninfo_to_dict(conninfo)
    return {
        "host": str(info["host"]).split(","),
        "port": [int(p) for p in str(info["port"]).split(",")],
        "user": info["user"],
        "password": info["password"],
        "database": info["dbname"],
        "target_session_attrs": info["target_session_attrs"],
        "timeout": float(str(info["connect_timeout"])),
    }


class PgfleetAsyncPool(AsyncContender):
    key = "pgfleet-async"
    name = "pgfleet AsyncPool"

    def make(self, conninfo: str) -> Any:
        return pgfleet.AsyncPool(
            conninfo, min_size=SIZE, max_size=SIZE, timeout=TIMEOUT, kwargs=AUTOCOMMIT
        )

    async def open(self, conninfo: str) -> None:
        self.pool = self.make(conninfo)
        await self.pool.open(wait=True, timeout=PATIENCE)

    def acquire(self) -> AbstractAsyncContextManager[Any]:
        return self.pool.connection(timeout=TIMEOUT)  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self.pool.close(timeout=TIMEOUT)


class PgfleetAsyncClusterPool(PgfleetAsyncPool):
    key = "cluster-async"
    name = "pgfleet AsyncClusterPool"

    def make(self, conninfo: str) -> Any:
        return AsyncClusterPool(
            conninfo, min_size=SIZE, max_size=SIZE, timeout=TIMEOUT, kwargs=AUTOCOMMIT
        )


Contender = SyncContender | AsyncContender
#: psycopg_pool first: the ratios are against it.
CONTENDERS: Final[tuple[type[SyncContender] | type[AsyncContender], ...]] = (
    PsycopgPool,
    Asyncpg,
    SqlAlchemyPrePing,
    PgfleetPool,
    PgfleetAsyncPool,
    *((PgfleetClusterPool,) if ClusterPool is not None else ()),
    *((PgfleetAsyncClusterPool,) if AsyncClusterPool is not None else ()),
)
REFERENCE: Final = PsycopgPool.name


async def c_open(contender: Contender, conninfo: str) -> None:
    if isinstance(contender, SyncContender):
        await in_thread(contender.open, conninfo, limit=PATIENCE)
        await in_thread(contender.warm, limit=PATIENCE)
    else:
        await bounded(contender.open(conninfo), PATIENCE)
        await bounded(contender.warm(), PATIENCE)


async def c_close(contender: Contender) -> None:
    try:
        if isinstance(contender, SyncContender):
            await in_thread(contender.close, limit=PATIENCE)
        else:
            await bounded(contender.close(), PATIENCE)
    except Hung:
        log(f"  {contender.name}: close() did not return within {PATIENCE} s")


# --------------------------------------------------------------------------------------------
# The write load


@dataclass(frozen=True)
class WriteCall:
    """One call of a writer: when, and the port of the server that acknowledged it."""

    started: float
    ended: float
    port: int | None = None
    error: str | None = None


@dataclass
class Load:
    """The calls of a trial's writers (appended in the order they end)."""

    calls: list[WriteCall] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    deadline: float = 0.0
    budget: Iterator[int] = field(default_factory=itertools.count)

    def more(self) -> bool:
        return not self.stop.is_set() and clock() < self.deadline and next(self.budget) < MAX_WRITES

    def record(self, started: float, outcome: Attempt | BaseException) -> None:
        if isinstance(outcome, Attempt) and outcome.ack is not None:
            self.calls.append(WriteCall(started, clock(), port=outcome.ack.port))
        else:
            self.calls.append(WriteCall(started, clock(), error=type(outcome).__name__))


def sync_writer(contender: SyncContender, ledger: Ledger, load: Load, writer: int) -> None:
    while load.more():
        started = clock()
        outcome: Attempt | BaseException
        try:
            outcome = contender.call(ledger, writer)
        except Exception as exc:
            outcome = exc
        load.record(started, outcome)
        if isinstance(outcome, BaseException):
            load.stop.wait(PAUSE_AFTER_ERROR)


async def async_writer(contender: AsyncContender, ledger: Ledger, load: Load, writer: int) -> None:
    while load.more():
        started = clock()
        outcome: Attempt | BaseException
        try:
            outcome = await contender.call(ledger, writer)
        except Exception as exc:
            outcome = exc
        load.record(started, outcome)
        await asyncio.sleep(PAUSE_AFTER_ERROR if isinstance(outcome, BaseException) else 0)


def start_load(contender: Contender, ledger: Ledger, load: Load) -> asyncio.Future[Any]:
    """`WRITERS` writers (threads or tasks); the future ends when all have stopped."""
    load.deadline = clock() + LOAD_LIMIT
    if isinstance(contender, SyncContender):
        threads = [
            threading.Thread(target=sync_writer, args=(contender, ledger, load, n), daemon=True)
            for n in range(WRITERS)
        ]
        for thread in threads:
            thread.start()

        def join() -> None:
            for thread in threads:
                thread.join(LOAD_LIMIT + PATIENCE)

        return asyncio.ensure_future(in_thread(join, limit=LOAD_LIMIT + PATIENCE))
    return asyncio.ensure_future(
        asyncio.gather(*(async_writer(contender, ledger, load, n) for n in range(WRITERS)))
    )


async def first_write_on(load: Load, port: int, after: float, limit: float) -> float | None:
    """When the first write acknowledged by `port` that began after `after` ended (polled)."""
    seen = 0
    deadline = clock() + limit
    while clock() < deadline:
        calls = load.calls[seen:]
        seen += len(calls)
        for call in calls:
            if call.port == port and call.ended >= after:
                return call.ended
        await asyncio.sleep(0.002)
    return None


# --------------------------------------------------------------------------------------------
# The servers


def promote_and_probe(conn: psycopg.Connection[Any]) -> float:
    """Promote the standby `conn` is connected to, then probe a write on it every
    `PROBE_INTERVAL`: the moment the first successful probe was sent."""
    conn.execute("SELECT pg_promote(wait => false)")
    deadline = clock() + PATIENCE
    while clock() < deadline:
        sent = clock()
        try:
            conn.execute("SELECT pg_current_xact_id()")  # refused during recovery
        except psycopg.Error:
            if conn.broken:
                raise
            threading.Event().wait(PROBE_INTERVAL)
            continue
        return sent
    raise TimeoutError(f"the promoted standby was not writable within {PATIENCE} s")


@dataclass
class Trial:
    """One pool's numbers in one trial (seconds; None: not reached)."""

    name: str
    #: Scenario 1: promoted-writable to the first write through the pool; failed calls.
    first_write: float | None = None
    failed_switch: int = 0
    #: Failed calls before the crash (there should be none).
    failed_before: int = 0
    #: Scenario 2: writes acknowledged by the old primary (ledger-checked), all writes
    #: acknowledged after the terminate, failed calls.
    stale_acks: int = 0
    #: Of the writes acknowledged after the terminate returned: all, and the stale ones.
    acks_after_terminate: int = 0
    stale_after_terminate: int = 0
    failed_stale: int = 0
    #: Acknowledged before the crash, then lost with it (asynchronous replication).
    lost_in_crash: int = 0
    writes: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def brief(self) -> str:
        first = "never" if self.first_write is None else f"{self.first_write * 1000:.0f} ms"
        return (
            f"first write {first}, {self.failed_switch} failed; stale primary: "
            f"{self.stale_acks} acked by it ({self.stale_after_terminate} of"
            f" {self.acks_after_terminate} after the terminate), {self.failed_stale}"
            f" failed; {self.writes} calls {' '.join(self.notes)}"
        )


async def trial(
    cls: type[SyncContender] | type[AsyncContender], template: PgNode, b: Budget
) -> Trial:
    """Both scenarios for one pool on a fresh primary and standby."""
    result = Trial(cls.name)
    rs = Replication(template, standbys=1)
    try:
        old, new = rs.primary, rs.standbys[0]
        ledger = Ledger(TABLE)
        ledger.create(old)
        rs.wait_replayed(new)
        conninfo = rs.conninfo(
            [old, new], target_session_attrs="read-write", connect_timeout=CONNECT_TIMEOUT
        )
        probe = new.connect_superuser()
        contender = cls()
        load = Load()
        await c_open(contender, conninfo)
        try:
            writers = start_load(contender, ledger, load)
            try:
                await asyncio.sleep(b.steady)
                # 1. crash + promote
                crashed = clock()
                await in_thread(old.crash)
                writable = await in_thread(promote_and_probe, probe)
                first = await first_write_on(load, new.port, crashed, b.recover_limit)
                if first is not None:
                    result.first_write = first - writable
                    await asyncio.sleep(b.settle)
                else:
                    result.notes.append(f"no write on the new primary in {b.recover_limit} s")
                switch_over = clock()
                # 2. the old primary back, writable; every connection to the new one cut
                await in_thread(rs.start_old_primary_as_writable, old)
                await in_thread(new.terminate_backends, None, APP_DBNAME)
                terminated = clock()  # the backends are gone: every later write is remade
                await asyncio.sleep(b.stale_window)
            finally:
                load.stop.set()
                try:
                    await bounded(writers, LOAD_LIMIT + PATIENCE)
                except Hung:
                    result.notes.append("the writers did not stop")
        finally:
            probe.close()
            await c_close(contender)
        report = await in_thread(ledger.check, new)
    finally:
        rs.destroy()
    calls = list(load.calls)
    result.writes = len(calls)
    for call in calls:
        if call.error is not None:
            result.errors[call.error] = result.errors.get(call.error, 0) + 1
    failed = [c for c in calls if c.error is not None]
    # A call in flight at the crash began before it: a call counts where it ended.
    result.failed_before = sum(1 for c in failed if c.ended < crashed)
    result.failed_switch = sum(1 for c in failed if c.ended >= crashed and c.started < switch_over)
    result.failed_stale = sum(1 for c in failed if c.started >= switch_over)
    result.acks_after_terminate = sum(
        1 for c in calls if c.port is not None and c.ended >= terminated
    )
    # Acknowledged by the old primary once it was back (it is started after `switch_over`),
    # and not on the new primary's history: the server had a write the real primary never
    # saw. (An ack stamped between `crashed` and the server's death, while SIGQUIT is on
    # its way, is the crash's loss, not a stale primary's write.)
    stale = [a for a in report.off_history if a.port == old.port and a.at > switch_over]
    result.stale_acks = len(stale)
    result.stale_after_terminate = sum(1 for a in stale if a.at >= terminated)
    result.lost_in_crash = sum(1 for a in report.lost if a.at <= crashed)
    if result.failed_before:
        result.notes.append(f"{result.failed_before} calls failed before the crash")
    return result


# --------------------------------------------------------------------------------------------
# Report


def ms(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds * 1000:.0f} ms"


def times_of(values: Sequence[float], reference: Sequence[float]) -> str:
    """Median of `values` ÷ median of `reference`, as pool_bench writes ratios."""
    if not values or not reference:
        return "n/a"
    ref = median(reference)
    if ref == 0:
        return "n/a (psycopg_pool: 0)"
    return f"{median(values) / ref:.2f}x"


def recovery(trials: Sequence[Trial]) -> list[float]:
    return [t.first_write for t in trials if t.first_write is not None]


def shares(trials: Sequence[Trial]) -> list[float]:
    """Per trial, the stale primary's share of the writes acknowledged after the terminate."""
    return [
        t.stale_after_terminate / t.acks_after_terminate for t in trials if t.acks_after_terminate
    ]


def report(names: Sequence[str], trials: dict[str, list[Trial]]) -> str:
    ref = trials[REFERENCE]
    rows_1: list[list[str]] = []
    rows_2: list[list[str]] = []
    for name in names:
        runs = trials[name]
        times = recovery(runs)
        never = len(runs) - len(times)
        time_cell = ms(median(times)) if times else "never"
        if never and times:
            time_cell += f" ({never} never)"
        failed = [float(t.failed_switch) for t in runs]
        rows_1.append(
            [
                name,
                time_cell,
                times_of(times, recovery(ref)),
                f"{median(failed):.0f}",
                times_of(failed, [float(t.failed_switch) for t in ref]),
                " / ".join(f"{ms(t.first_write)}, {t.failed_switch}" for t in runs),
            ]
        )
        stale = [float(t.stale_acks) for t in runs]
        rows_2.append(
            [
                name,
                f"{median(stale):.0f}",
                f"{median(shares(runs)) * 100:.0f}%" if shares(runs) else "n/a",
                times_of(shares(runs), shares(ref)),
                f"{median([float(t.failed_stale) for t in runs]):.0f}",
                " / ".join(
                    f"{t.stale_after_terminate} of {t.acks_after_terminate}, {t.failed_stale}"
                    for t in runs
                ),
            ]
        )
    repeat = len(ref)
    first = section(
        "crash + promote: 8 writers over 4 connections, primary crashed, standby promoted at once",
        markdown_table(
            [
                "pool",
                "promoted writable → first write",
                "÷ psycopg_pool",
                "failed calls",
                "÷ psycopg_pool",
                "trials (time, failed)",
            ],
            rows_1,
            numeric=1,
        ),
        [
            f"Median of {repeat} trial(s). The time runs from the first successful write probe"
            " on the promoted standby (probed every ms on a connection opened before the"
            " crash) to the first write acknowledged through the pool; failed calls are those"
            " that ended after the crash and began before 0.3 s after that first write (the 4"
            " in flight at the crash must fail; a writer pauses 10 ms after a failure).",
        ],
    )
    second = section(
        "stale primary: the old primary back writable, every connection to the new one terminated",
        markdown_table(
            [
                "pool",
                "writes acked by the stale primary",
                "share of acked writes",
                "÷ psycopg_pool",
                "failed calls",
                "trials (stale of acked, failed)",
            ],
            rows_2,
            numeric=1,
        ),
        [
            f"Median of {repeat} trial(s) of {WRITERS} writers during the 1 s (0.5 s with"
            " --quick) after `pg_terminate_backend` of every `app` backend on the new primary."
            " A stale write is one the old primary acknowledged once back (after its restart)"
            " and the ledger did not find on the new primary's timeline history; the share is"
            " of all writes acknowledged after the terminate returned (the ratio is of shares:"
            " the counts follow each pool's write rate).",
        ],
    )
    return first + "\n\n" + second


# --------------------------------------------------------------------------------------------
# Main


@contextlib.contextmanager
def replication_template() -> Iterator[PgNode]:
    """A stopped primary-to-be (one initdb, one start), destroyed on exit."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise SystemExit("no PostgreSQL binaries found: set PG_BIN")
    base = PgCluster.build_template(bin_dir)
    try:
        template = build_replication_template(base)
        try:
            log(f"replication template {template.base_dir} (from {bin_dir}) built")
            yield template
        finally:
            template.destroy()
    finally:
        base.destroy()
        log("templates destroyed")


async def run(args: argparse.Namespace) -> tuple[str, dict[str, list[Trial]], dict[str, str]]:
    chosen = [
        cls for cls in CONTENDERS if cls is PsycopgPool or not args.only or cls.key in args.only
    ]
    budget = Budget.for_args(args.quick, args.repeat)
    trials: dict[str, list[Trial]] = {cls.name: [] for cls in chosen}
    env: dict[str, str] = {}
    with replication_template() as template:
        with Replication(template, standbys=0) as rs:
            env = machine(rs.primary.conninfo())
        for number in range(budget.repeat):
            shift = number % len(chosen)
            for cls in chosen[shift:] + chosen[:shift]:
                result = await trial(cls, template, budget)
                trials[cls.name].append(result)
                log(f"[{number + 1}] {cls.name}: {result.brief()}")
    return report([cls.name for cls in chosen], trials), trials, env


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    keys = [cls.key for cls in CONTENDERS]
    parser = argparse.ArgumentParser(
        prog="python bench/failover_bench.py",
        description="Pools through a failover and a stale primary, side by side.",
    )
    parser.add_argument("--quick", action="store_true", help="one trial per pool, shorter")
    parser.add_argument("--repeat", type=int, default=5, metavar="N", help="trials per pool")
    parser.add_argument(
        "--only",
        action="append",
        choices=keys,
        metavar="POOL",
        help=f"bench this pool and psycopg_pool only (repeatable): {', '.join(keys)}",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="save the raw trials here")
    parser.add_argument("--verbose", action="store_true", help="show the pools' own logs")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat = 1
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # The peers log every failed reconnect (asyncpg with a traceback): quiet unless asked.
    level = logging.INFO if args.verbose else logging.CRITICAL
    logging.basicConfig(level=level, force=True)
    for name in ("psycopg", "psycopg.pool", "asyncpg", "sqlalchemy", "pgfleet"):
        logging.getLogger(name).setLevel(level)
    signal.signal(signal.SIGTERM, _interrupt)
    command = shlex.join(sys.orig_argv)
    started = clock()
    try:
        table, trials, env = asyncio.run(run(args))
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    print(f"Command: `{command}` ({clock() - started:.0f} s)")
    print("Machine: " + ", ".join(f"{key} {value}" for key, value in env.items()))
    print()
    print(table)
    if args.json is not None:
        document = {
            "command": command,
            "machine": env,
            "trials": {name: [asdict(t) for t in runs] for name, runs in trials.items()},
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        log(f"raw results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
