"""A write ledger: writes under load, every acknowledged one checked against the servers.

Failover scenarios ask two questions of a pool: was every write the application saw
acknowledged really kept, and did any write go to a server that was not the primary's line of
history (a stale primary restarted writable)? The ledger answers both:

- writers insert rows with unique ids (one row per write, its own transaction) and record
  each attempt's outcome: *acked* (the commit returned), *failed* (the server refused it, so it
  was rolled back) or *unknown* (the connection broke with the commit's outcome unknown);
- each row records, by column defaults, the server that took it: ``inet_server_port()``,
  the timeline (``pg_walfile_name(pg_current_wal_insert_lsn())``, callable by an ordinary
  role) and the WAL insert position; ``RETURNING`` hands them back with the acknowledgement;
- :meth:`Ledger.check` reads the table on the final primary and its timeline history
  (``NNNNNNNN.history``: the LSN at which each ancestor timeline was left), and reports the
  acknowledged writes that are *lost* (absent) and those *off history* (taken by a server on
  a timeline, or past the fork point of a timeline, the final primary does not descend from:
  writes of a stale primary).

Writes use ``SET LOCAL synchronous_commit`` (``on`` by default, overriding the harness's
``off``): an acknowledgement then means "flushed on the primary", and with a synchronous
standby (:meth:`support.replication.Replication.set_synchronous`) "flushed on a standby too".

Bounded: :meth:`Ledger.run` / :meth:`Ledger.arun` stop at ``max_writes`` attempts, at
``duration`` seconds, or when ``stop`` is set, whichever comes first::

    ledger = Ledger()
    ledger.create(rs.primary)
    stop = threading.Event()
    load = threading.Thread(target=ledger.run, args=(lambda: pool.connection(timeout=2),),
                            kwargs={"writers": 4, "stop": stop, "duration": 10})
    load.start(); ...fail over...; stop.set(); load.join()
    ledger.check(rs.primary).assert_ok()
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from psycopg import sql

from support.cluster import APP_DBNAME
from support.replication import PgNode, format_lsn, parse_lsn

__all__ = ["Ack", "Attempt", "Ledger", "LedgerReport"]

Outcome = Literal["acked", "failed", "unknown"]
#: Default cap on the writes of one run (a failover scenario needs hundreds, not more).
MAX_WRITES = 5000


@dataclass(frozen=True)
class Ack:
    """An acknowledged write and the server that took it."""

    id: int
    writer: int
    port: int
    timeline: int
    lsn: int
    #: ``time.monotonic()`` when the commit returned.
    at: float


@dataclass(frozen=True)
class Attempt:
    """One write attempt: its outcome and, when not acked, the error."""

    id: int
    writer: int
    outcome: Outcome
    ack: Ack | None = None
    sqlstate: str | None = None
    error: str | None = None


@dataclass
class LedgerReport:
    """What :meth:`Ledger.check` found on the final primary."""

    final_port: int
    final_timeline: int
    #: ``(ancestor timeline, LSN where it was left)``, oldest first.
    history: list[tuple[int, int]]
    attempts: int
    acked: int
    #: Acknowledged writes absent from the final primary.
    lost: list[Ack] = field(default_factory=list)
    #: Acknowledged writes taken off the final primary's line of history.
    off_history: list[Ack] = field(default_factory=list)
    #: Writes whose commit outcome was unknown, found committed / not found.
    unknown_committed: int = 0
    unknown_absent: int = 0
    #: Rows present that were never acknowledged nor in doubt (a refused write that
    #: committed anyway: always a bug somewhere).
    phantoms: list[int] = field(default_factory=list)
    #: Acknowledged writes per ``(port, timeline)`` of the server that took them.
    acked_by_server: Counter[tuple[int, int]] = field(default_factory=Counter)
    #: Refused writes per SQLSTATE (``25006``: sent to a standby).
    failed_by_sqlstate: Counter[str | None] = field(default_factory=Counter)
    #: Failed connects/checkouts of the load (no write sent), by exception class.
    connect_errors: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        """No acknowledged write lost or off history, no phantom."""
        return not (self.lost or self.off_history or self.phantoms)

    def assert_ok(self) -> None:
        """Raise ``AssertionError`` with the summary unless :attr:`ok`."""
        if not self.ok:
            raise AssertionError(f"write ledger: {self}")

    def __str__(self) -> str:
        history = " <- ".join(
            [f"tl{self.final_timeline}"] + [f"tl{t}@{format_lsn(x)}" for t, x in self.history[::-1]]
        )
        parts = [
            f"final primary port {self.final_port} ({history})",
            f"{self.attempts} attempts, {self.acked} acked "
            f"(by port/timeline: {dict(sorted(self.acked_by_server.items()))})",
            f"failed by SQLSTATE {dict(self.failed_by_sqlstate)}",
            f"connect errors {dict(self.connect_errors)}",
            f"unknown outcome: {self.unknown_committed} committed, {self.unknown_absent} not",
            f"LOST {len(self.lost)}: {_sample(self.lost)}",
            f"OFF HISTORY {len(self.off_history)}: {_sample(self.off_history)}",
            f"PHANTOMS {len(self.phantoms)}: {self.phantoms[:5]}",
        ]
        return "; ".join(parts)


def _sample(acks: list[Ack]) -> str:
    return ", ".join(
        f"id {a.id} on port {a.port} tl{a.timeline} @{format_lsn(a.lsn)}" for a in acks[:5]
    ) + (" ..." if len(acks) > 5 else "")


def _outcome(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> Outcome:
    # The server refused the write (and rolled it back) only if the connection is still
    # usable; a connection that broke may have lost the answer to a COMMIT that happened.
    return "unknown" if conn.closed or conn.broken else "failed"


def _require_idle(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    # Inside an open transaction `conn.transaction()` is a savepoint: its end commits
    # nothing, and an "ack" would be a lie.
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        status = conn.info.transaction_status.name
        raise ValueError(f"a ledger write needs an idle connection, not {status}")


class Ledger:
    """Unique-id writes, their outcomes, and the check against the final primary.

    Thread-safe; one ledger may also serve asyncio tasks. ``table`` is created in the
    ``app`` database, owned by the ``app`` role.
    """

    def __init__(self, table: str = "pgfleet_ledger", *, synchronous_commit: str = "on") -> None:
        self.table = table
        self.synchronous_commit = synchronous_commit
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.attempts: list[Attempt] = []
        #: Failed ``connect()`` calls of :meth:`run` / :meth:`arun` (no write was sent), by
        #: exception class name: ``OperationalError`` (refused, read-only...), ``PoolTimeout``.
        self.connect_errors: Counter[str] = Counter()
        ident = sql.Identifier(table)
        self._insert = sql.SQL(
            "INSERT INTO {} (id, writer) VALUES (%s, %s) RETURNING port, timeline, lsn::text"
        ).format(ident)
        self._set_sync = sql.SQL("SET LOCAL synchronous_commit = {}").format(
            sql.Literal(synchronous_commit)
        )

    # ---- setup -----------------------------------------------------------------------------

    def create(self, primary: PgNode) -> None:
        """Create the table on ``primary`` (as the ``app`` role, which owns it)."""
        ddl = sql.SQL(
            """
            CREATE TABLE {table} (
                id bigint PRIMARY KEY,
                writer int NOT NULL,
                port int NOT NULL DEFAULT inet_server_port(),
                -- Callable by any role; errors on a standby, where the insert fails anyway.
                timeline int NOT NULL DEFAULT
                    ('x' || left(pg_walfile_name(pg_current_wal_insert_lsn()), 8))::bit(32)::int,
                lsn pg_lsn NOT NULL DEFAULT pg_current_wal_insert_lsn(),
                at timestamptz NOT NULL DEFAULT clock_timestamp()
            )
            """
        ).format(table=sql.Identifier(self.table))
        with psycopg.connect(primary.conninfo(), autocommit=True) as conn:
            conn.execute(ddl)

    # ---- writes ----------------------------------------------------------------------------

    def _next(self) -> int:
        with self._lock:
            return next(self._ids)

    def _record(self, attempt: Attempt) -> Attempt:
        with self._lock:
            self.attempts.append(attempt)
        return attempt

    def _connect_error(self, exc: psycopg.Error) -> None:
        with self._lock:
            self.connect_errors[type(exc).__name__] += 1

    def _acked(self, wid: int, writer: int, row: tuple[Any, ...] | None) -> Attempt:
        assert row is not None
        port, tli, lsn = row
        ack = Ack(wid, writer, int(port), int(tli), parse_lsn(lsn), time.monotonic())
        return self._record(Attempt(wid, writer, "acked", ack))

    def write(self, conn: psycopg.Connection[Any], writer: int = 0) -> Attempt:
        """One write in its own transaction on ``conn`` (autocommit or idle). Returns the
        recorded attempt; a ``psycopg.Error`` is recorded, then raised."""
        _require_idle(conn)
        wid = self._next()
        try:
            with conn.transaction():
                conn.execute(self._set_sync)
                row = conn.execute(self._insert, (wid, writer)).fetchone()
        except psycopg.Error as exc:
            self._record(Attempt(wid, writer, _outcome(conn), None, exc.sqlstate, str(exc)))
            raise
        return self._acked(wid, writer, row)

    async def awrite(self, conn: psycopg.AsyncConnection[Any], writer: int = 0) -> Attempt:
        """:meth:`write` on an asyncio connection."""
        _require_idle(conn)
        wid = self._next()
        try:
            async with conn.transaction():
                await conn.execute(self._set_sync)
                cur = await conn.execute(self._insert, (wid, writer))
                row = await cur.fetchone()
        except psycopg.Error as exc:
            self._record(Attempt(wid, writer, _outcome(conn), None, exc.sqlstate, str(exc)))
            raise
        return self._acked(wid, writer, row)

    # ---- load ------------------------------------------------------------------------------

    def run(
        self,
        connect: Callable[[], AbstractContextManager[psycopg.Connection[Any]]],
        *,
        writers: int = 4,
        max_writes: int = MAX_WRITES,
        duration: float = 10.0,
        stop: threading.Event | None = None,
        pause_after_error: float = 0.01,
    ) -> None:
        """``writers`` threads loop ``with connect() as conn: write(conn)`` until
        ``max_writes`` attempts, ``duration`` seconds or ``stop``. An error (a refused or
        broken write, a failed checkout) is recorded and the writer goes on after
        ``pause_after_error`` (waiting on ``stop``, so a stop is seen at once)."""
        stop = stop if stop is not None else threading.Event()
        deadline = time.monotonic() + duration
        budget = itertools.count()
        errors: list[BaseException] = []

        def writer(number: int) -> None:
            while not stop.is_set() and time.monotonic() < deadline:
                if next(budget) >= max_writes:
                    return
                failed = False
                try:
                    with connect() as conn:
                        try:
                            self.write(conn, number)
                        except psycopg.Error:
                            failed = True  # recorded by write()
                except psycopg.Error as exc:
                    # A failed connect or checkout (pool errors subclass OperationalError).
                    failed = True
                    self._connect_error(exc)
                except BaseException as exc:  # a bug in the scenario: end the run loudly
                    errors.append(exc)
                    stop.set()
                    return
                if failed:
                    stop.wait(pause_after_error)

        threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()) + 30)
        if any(t.is_alive() for t in threads):
            stop.set()
            raise AssertionError("ledger writers still running 30 s after the deadline")
        if errors:
            raise errors[0]

    async def arun(
        self,
        connect: Callable[[], AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]],
        *,
        writers: int = 4,
        max_writes: int = MAX_WRITES,
        duration: float = 10.0,
        stop: asyncio.Event | None = None,
        pause_after_error: float = 0.01,
    ) -> None:
        """:meth:`run` with asyncio tasks (``connect`` is e.g. ``lambda:
        pool.connection(timeout=2)`` of an ``AsyncPool``)."""
        stop = stop if stop is not None else asyncio.Event()
        deadline = time.monotonic() + duration
        budget = itertools.count()

        async def pause() -> None:
            try:
                await asyncio.wait_for(stop.wait(), pause_after_error)
            except TimeoutError:
                pass

        async def writer(number: int) -> None:
            while not stop.is_set() and time.monotonic() < deadline:
                if next(budget) >= max_writes:
                    return
                failed = False
                try:
                    async with connect() as conn:
                        try:
                            await self.awrite(conn, number)
                        except psycopg.Error:
                            failed = True  # recorded by awrite()
                except psycopg.Error as exc:
                    failed = True
                    self._connect_error(exc)
                if failed:
                    await pause()

        tasks = [asyncio.create_task(writer(i)) for i in range(writers)]
        try:
            await asyncio.wait_for(
                asyncio.gather(*tasks), max(0.0, deadline - time.monotonic()) + 30
            )
        finally:
            for t in tasks:
                t.cancel()

    # ---- results ---------------------------------------------------------------------------

    def acks(self) -> list[Ack]:
        """Every acknowledged write, in acknowledgement order."""
        with self._lock:
            return [a.ack for a in self.attempts if a.ack is not None]

    def check(self, primary: PgNode) -> LedgerReport:
        """Compare the ledger with the table on the final ``primary``."""
        final_tli = primary.timeline()
        history = primary.timeline_history()
        left_at = dict(history)
        with primary.connect_superuser(APP_DBNAME) as conn:
            present = {
                row[0]
                for row in conn.execute(
                    sql.SQL("SELECT id FROM {}").format(sql.Identifier(self.table))
                )
            }
        with self._lock:
            attempts = list(self.attempts)
        with self._lock:
            connect_errors = Counter(self.connect_errors)
        report = LedgerReport(
            final_port=primary.port,
            final_timeline=final_tli,
            history=history,
            attempts=len(attempts),
            acked=0,
            connect_errors=connect_errors,
        )
        expected: set[int] = set()
        for attempt in attempts:
            if attempt.outcome == "acked":
                ack = attempt.ack
                assert ack is not None
                expected.add(ack.id)
                report.acked += 1
                report.acked_by_server[(ack.port, ack.timeline)] += 1
                if ack.id not in present:
                    report.lost.append(ack)
                on_history = ack.timeline == final_tli or (
                    ack.timeline in left_at and ack.lsn < left_at[ack.timeline]
                )
                if not on_history:
                    report.off_history.append(ack)
            elif attempt.outcome == "unknown":
                expected.add(attempt.id)
                if attempt.id in present:
                    report.unknown_committed += 1
                else:
                    report.unknown_absent += 1
            else:
                report.failed_by_sqlstate[attempt.sqlstate] += 1
        report.phantoms = sorted(present - expected)
        return report
