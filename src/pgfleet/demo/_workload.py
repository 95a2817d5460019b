"""The demo's workload: a small read/write mix run by concurrent client threads."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from pgfleet._text import describe

__all__ = [
    "JOIN_GRACE",
    "SCHEMA",
    "SCHEMA_MARK",
    "SEED_ROWS",
    "TABLE",
    "ClientRecorder",
    "ConnectionSource",
    "LatencyHistogram",
    "PeopleTable",
    "Progress",
    "RunResult",
    "SchemaNotOurs",
    "Workload",
    "create_schema",
    "drop_schema",
    "prepare",
    "run_clients",
]

#: The schema the demo works in (created for the run, dropped at exit unless kept).
SCHEMA = "pgfleet_demo"
#: The demo's table, in its schema.
TABLE = "people"
#: The comment that marks a schema as the demo's own: only such a schema is used and dropped.
SCHEMA_MARK = "pgfleet demo: created by `pgfleet demo`, dropped when it exits"
#: Rows named ``person-0000``... that the reads look up and the updates touch.
SEED_ROWS = 300
#: Shares of the mix: reads, then inserts; updates take the rest.
READ_SHARE = 0.8
INSERT_SHARE = 0.1
#: Seconds a client sleeps after a failed request (no hot loop against a dead server).
ERROR_PAUSE = 0.01
#: Seconds the clients may overrun the run's end before they are abandoned.
JOIN_GRACE = 5.0
#: Seconds the clients get to finish their request when the run is interrupted.
STOP_GRACE = 2.0


class SchemaNotOurs(RuntimeError):
    """The schema exists and was not made by the demo: it is neither used nor dropped."""


@dataclass(frozen=True, slots=True)
class PeopleTable:
    """The people table in its schema, and the statements the demo runs on it (composed
    with `psycopg.sql.Identifier`: a schema name is never pasted into SQL)."""

    schema: str
    table: sql.Identifier
    create: sql.Composed
    index: sql.Composed
    seed: sql.Composed
    seed_ids: sql.Composed
    by_name: sql.Composed
    insert: sql.Composed
    update: sql.Composed

    @classmethod
    def in_schema(cls, schema: str = SCHEMA) -> PeopleTable:
        """The table ``people`` in `schema`."""
        t = sql.Identifier(schema, TABLE)
        return cls(
            schema=schema,
            table=t,
            create=sql.SQL(
                "CREATE TABLE IF NOT EXISTS {t} ("
                " id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
                " name text NOT NULL,"
                " data jsonb)"
            ).format(t=t),
            index=sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} (name)").format(
                i=sql.Identifier(f"{TABLE}_name_idx"), t=t
            ),
            seed=sql.SQL(
                "INSERT INTO {t} (name, data)"
                " SELECT seed.name, jsonb_build_object('seed', seed.n)"
                " FROM unnest(%s::text[]) WITH ORDINALITY AS seed(name, n)"
                " WHERE NOT EXISTS (SELECT 1 FROM {t} AS p WHERE p.name = seed.name)"
            ).format(t=t),
            seed_ids=sql.SQL("SELECT id FROM {t} WHERE name = ANY(%s)").format(t=t),
            by_name=sql.SQL("SELECT id, name, data FROM {t} WHERE name = %s").format(t=t),
            insert=sql.SQL("INSERT INTO {t} (name, data) VALUES (%s, %s)").format(t=t),
            update=sql.SQL(
                "UPDATE {t} SET data = coalesce(data, '{{}}'::jsonb) || %s::jsonb WHERE id = %s"
            ).format(t=t),
        )

    @property
    def qualified_name(self) -> str:
        """``schema.people``, for messages."""
        return f"{self.schema}.{TABLE}"


_SCHEMA_COMMENT = sql.SQL(
    "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = %s"
)


def _schema_comment(conn: psycopg.Connection[Any], schema: str) -> tuple[bool, str | None]:
    """Whether `schema` exists, and its comment."""
    row = conn.execute(_SCHEMA_COMMENT, (schema,)).fetchone()
    return (False, None) if row is None else (True, row[0])


def create_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    """Create `schema` marked as the demo's, or reuse one the demo made before.

    Raises `SchemaNotOurs` when a schema of that name exists without the demo's mark.
    """
    with conn.transaction():
        exists, comment = _schema_comment(conn, schema)
        if exists and comment != SCHEMA_MARK:
            raise SchemaNotOurs(
                f"schema {schema!r} exists and was not created by pgfleet demo: it is left"
                " alone (choose another with --schema)"
            )
        name = sql.Identifier(schema)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(name))
        conn.execute(sql.SQL("COMMENT ON SCHEMA {} IS {}").format(name, sql.Literal(SCHEMA_MARK)))


def drop_schema(conn: psycopg.Connection[Any], schema: str) -> bool:
    """Drop `schema` and everything in it if it carries the demo's mark; whether it did."""
    with conn.transaction():
        exists, comment = _schema_comment(conn, schema)
        if not exists or comment != SCHEMA_MARK:
            return False
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    return True


#: Where a client gets a connection for one request; leaving the block commits.
ConnectionSource = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]


@dataclass(frozen=True, slots=True)
class Workload:
    """What one request may touch: the seeded names and row ids."""

    table: PeopleTable
    names: Sequence[str]
    ids: Sequence[UUID]

    def request(self, conn: psycopg.Connection[Any], rng: random.Random) -> None:
        """One request: mostly a lookup by name, else an insert or a jsonb update."""
        roll = rng.random()
        t = self.table
        if roll < READ_SHARE:
            conn.execute(t.by_name, (rng.choice(self.names),)).fetchall()
        elif roll < READ_SHARE + INSERT_SHARE:
            name = f"visitor-{rng.getrandbits(48):012x}"
            conn.execute(t.insert, (name, Jsonb({"source": "pgfleet-demo"})))
        else:
            conn.execute(t.update, (Jsonb({"touched": rng.getrandbits(16)}), rng.choice(self.ids)))


def prepare(conn: psycopg.Connection[Any], table: PeopleTable) -> Workload:
    """Create the table and its index if missing, seed it, and return the workload.

    The schema must exist (`create_schema`).
    """
    names = [f"person-{n:04d}" for n in range(SEED_ROWS)]
    with conn.transaction():
        conn.execute(table.create)
        conn.execute(table.index)
        conn.execute(table.seed, (names,))
        ids = [row[0] for row in conn.execute(table.seed_ids, (names,))]
    if not ids:
        raise RuntimeError(f"table {table.qualified_name!r} holds none of the seeded rows")
    return Workload(table=table, names=names, ids=ids)


class LatencyHistogram:
    """Durations in log-spaced buckets (2% wide): bounded memory, quantiles within 2%."""

    __slots__ = ("counts", "count", "total", "maximum")

    FLOOR = 1e-6
    RATIO = 1.02

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.total = 0.0
        self.maximum = 0.0

    def record(self, seconds: float) -> None:
        """Add one duration."""
        if seconds <= self.FLOOR:
            index = 0
        else:
            index = math.ceil(math.log(seconds / self.FLOOR, self.RATIO))
        self.counts[index] = self.counts.get(index, 0) + 1
        self.count += 1
        self.total += seconds
        self.maximum = max(self.maximum, seconds)

    def merge(self, other: LatencyHistogram) -> None:
        """Add all of `other`'s durations."""
        for index, n in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + n
        self.count += other.count
        self.total += other.total
        self.maximum = max(self.maximum, other.maximum)

    def quantile(self, q: float) -> float:
        """An upper bound (within 2%) of the `q` quantile in seconds; 0 when empty."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                return min(self.FLOOR * self.RATIO**index, self.maximum)
        return self.maximum


@dataclass(slots=True)
class ClientRecorder:
    """One client's tally (written by its thread, read for progress by the main thread)."""

    requests: int = 0
    errors: int = 0
    first_error: str | None = None
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)

    def succeeded(self, seconds: float) -> None:
        """Count one successful request."""
        self.latency.record(seconds)
        self.requests += 1

    def failed(self, exc: Exception) -> None:
        """Count one failed request, keeping the first error's message."""
        if self.first_error is None:
            self.first_error = describe(exc, with_type=True)
        self.errors += 1


@dataclass(frozen=True, slots=True)
class RunResult:
    """The outcome of one mode's run."""

    mode: str
    requests: int
    errors: int
    elapsed: float
    latency: LatencyHistogram
    first_error: str | None
    abandoned: int

    @property
    def rate(self) -> float:
        """Successful requests per second."""
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Progress:
    """A progress report while a run is under way."""

    mode: str
    elapsed: float
    seconds: float
    requests: int
    errors: int


def _client(
    source: ConnectionSource,
    workload: Workload,
    deadline: float,
    stop: threading.Event,
    recorder: ClientRecorder,
    seed: int,
) -> None:
    rng = random.Random(seed)
    while not stop.is_set() and time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            with source() as conn:
                workload.request(conn, rng)
        except Exception as exc:
            recorder.failed(exc)
            stop.wait(ERROR_PAUSE)
        else:
            recorder.succeeded(time.perf_counter() - started)


def run_clients(
    mode: str,
    source: ConnectionSource,
    workload: Workload,
    *,
    clients: int,
    seconds: float,
    report: Callable[[Progress], None] | None = None,
    report_every: float = 0.25,
) -> RunResult:
    """Run `clients` threads issuing requests through `source` for `seconds`.

    Each client stops at the deadline (or when interrupted); a client still busy
    `JOIN_GRACE` seconds later is abandoned (it is a daemon thread) and counted.
    """
    stop = threading.Event()
    recorders = [ClientRecorder() for _ in range(clients)]
    base_seed = random.SystemRandom().getrandbits(32)
    started = time.perf_counter()
    deadline = started + seconds
    threads = [
        threading.Thread(
            target=_client,
            args=(source, workload, deadline, stop, recorder, base_seed + n),
            name=f"pgfleet-demo-client-{n}",
            daemon=True,
        )
        for n, recorder in enumerate(recorders)
    ]
    give_up = deadline + JOIN_GRACE
    try:
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            now = time.perf_counter()
            if now >= give_up:
                break
            if report is not None:
                report(
                    Progress(
                        mode=mode,
                        elapsed=min(now - started, seconds),
                        seconds=seconds,
                        requests=sum(r.requests for r in recorders),
                        errors=sum(r.errors for r in recorders),
                    )
                )
            time.sleep(min(report_every, max(give_up - now, 0.0)))
    finally:
        stop.set()
        # Interrupted early: the clients get a moment to finish their current request.
        join_until = min(give_up, time.perf_counter() + STOP_GRACE)
        for thread in threads:
            try:
                thread.join(max(0.0, join_until - time.perf_counter()))
            except RuntimeError:
                pass  # never started: the interruption came while starting the clients
    elapsed = time.perf_counter() - started
    latency = LatencyHistogram()
    for recorder in recorders:
        latency.merge(recorder.latency)
    errors = [r.first_error for r in recorders if r.first_error is not None]
    return RunResult(
        mode=mode,
        requests=sum(r.requests for r in recorders),
        errors=sum(r.errors for r in recorders),
        elapsed=elapsed,
        latency=latency,
        first_error=errors[0] if errors else None,
        abandoned=sum(thread.is_alive() for thread in threads),
    )
