"""Behind PgBouncer: pgfleet against psycopg_pool and psycopg_pool's null pool, side by side.

Run from the repository root::

    .venv/bin/python -m bench.pooler_bench            # full run, about a minute
    .venv/bin/python -m bench.pooler_bench --quick    # smoke run, about 20 seconds

A throwaway PostgreSQL cluster and a private PgBouncer in transaction mode in front of it
are started (``tests/support/cluster.py``, ``tests/support/pgbouncer.py``; PgBouncer from
``apt-get install pgbouncer``) and destroyed at the end, also on Ctrl-C or SIGTERM. Every
contender goes through PgBouncer with psycopg's automatic prepared statements off, which a
transaction pooler needs: ``pgfleet.Pool(transaction_pooler=True)``,
``psycopg_pool.ConnectionPool(kwargs={"prepare_threshold": None})`` and
``psycopg_pool.NullConnectionPool`` (a new client connection per checkout: the usual
advice behind PgBouncer, whose server sessions are the pool). All run in autocommit mode,
as in ``pool_bench.py``.

Scenarios (sync flavour):

- ``checkout``: checkout + return, no query, 1 worker, pools of 1;
- ``select_8x4``: 8 threads over pools of 4 running ``SELECT %s::int`` (parameterised, so
  that psycopg would prepare it were that on), PgBouncer with 4 server sessions.

The contenders are open at once and take turns slice by slice (A, B, C, A, B, C...), as in
``pool_bench.py``; a cell is the median of ``--repeat`` runs. The Markdown report goes to
stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final

import psycopg
import psycopg_pool

import pgfleet

ROOT: Final = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: bench/ is on the path, the root is not
    sys.path.insert(0, str(ROOT))

from bench.pool_bench import (  # noqa: E402
    Acquire,
    CheckoutRun,
    Entrant,
    LoadRun,
    LoadSlice,
    Plan,
    Row,
    StopFlag,
    WorkerResult,
    _interrupt,
    clock,
    first_failure,
    interleave,
    log,
    markdown_table,
    median,
    pg_version,
    ratio,
    section,
)

SCENARIOS: Final = ("checkout", "select_8x4")
QUERY: Final = "SELECT %s::int"
#: What every contender passes to psycopg.connect.
KWARGS: Final[dict[str, Any]] = {"autocommit": True, "prepare_threshold": None}
#: PgBouncer's server sessions (default_pool_size) for the app database.
SERVER_SESSIONS: Final = 4
PGFLEET: Final = "pgfleet.Pool(transaction_pooler=True)"
PSYCOPG_POOL: Final = "psycopg_pool.ConnectionPool"
NULL_POOL: Final = "psycopg_pool.NullConnectionPool"
#: A checkout run reads the clock once per batch; batches grow until one lasts this long.
BATCH_SECONDS: Final = 0.01


@dataclass(frozen=True)
class Budget:
    repeat: int
    warmup: float
    checkout_seconds: float
    duration: float
    slices: int

    @classmethod
    def for_args(cls, quick: bool, repeat: int) -> Budget:
        if quick:
            return cls(repeat, warmup=0.1, checkout_seconds=0.2, duration=0.5, slices=2)
        return cls(repeat, warmup=0.3, checkout_seconds=1.0, duration=2.0, slices=4)

    def plan(self, seconds: float) -> Plan:
        return Plan(self.repeat, self.warmup, seconds, self.slices)


# --------------------------------------------------------------------------------------------
# Contenders


@contextmanager
def open_pgfleet(dsn: str, size: int) -> Iterator[Acquire]:
    with pgfleet.Pool(
        dsn, min_size=size, max_size=size, kwargs={"autocommit": True}, transaction_pooler=True
    ) as pool:
        yield pool.connection


@contextmanager
def open_psycopg_pool(dsn: str, size: int) -> Iterator[Acquire]:
    pool = psycopg_pool.ConnectionPool(dsn, min_size=size, max_size=size, kwargs=KWARGS, open=False)
    try:
        pool.open(wait=True, timeout=30)
        yield pool.connection
    finally:
        pool.close()


@contextmanager
def open_null_pool(dsn: str, size: int) -> Iterator[Acquire]:
    pool = psycopg_pool.NullConnectionPool(dsn, max_size=size, kwargs=KWARGS, open=False)
    try:
        pool.open(wait=True, timeout=30)
        yield pool.connection
    finally:
        pool.close()


def contenders(dsn: str, size: int) -> list[Entrant[Acquire]]:
    return [
        Entrant(PGFLEET, partial(open_pgfleet, dsn, size)),
        Entrant(PSYCOPG_POOL, partial(open_psycopg_pool, dsn, size)),
        Entrant(NULL_POOL, partial(open_null_pool, dsn, size)),
    ]


# --------------------------------------------------------------------------------------------
# Measurements


def time_checkouts(acquire: Acquire, seconds: float) -> CheckoutRun:
    """Checkout + return cycles for `seconds`, in batches that grow until one lasts
    `BATCH_SECONDS` (a null pool's cycle is a connection: milliseconds, not microseconds)."""
    with acquire():
        pass  # warm: the first cycle may connect
    done, batch = 0, 1
    started = clock()
    deadline = started + seconds
    while True:
        batch_started = clock()
        for _ in range(batch):
            with acquire():
                pass
        done += batch
        now = clock()
        if now >= deadline:
            break
        if now - batch_started < BATCH_SECONDS:
            batch *= 2
    return CheckoutRun(cycles=done, seconds=clock() - started)


def select_worker(acquire: Acquire, number: int, stop: StopFlag) -> WorkerResult:
    waits: list[float] = []
    while not stop.stopped:
        started = clock()
        with acquire() as conn:
            waits.append(clock() - started)
            conn.execute(QUERY, (number,)).fetchone()
    return WorkerResult(len(waits), waits)


def run_select(acquire: Acquire, seconds: float, *, workers: int) -> LoadSlice:
    """`workers` threads running `select_worker` at once for `seconds`."""
    stop = StopFlag()
    start_line = threading.Barrier(workers + 1)
    outcomes: list[WorkerResult | BaseException | None] = [None] * workers

    def body(number: int) -> None:
        try:
            start_line.wait()
            outcomes[number] = select_worker(acquire, number, stop)
        except BaseException as exc:
            outcomes[number] = exc

    threads = [threading.Thread(target=body, args=(n,), daemon=True) for n in range(workers)]
    for thread in threads:
        thread.start()
    try:
        start_line.wait()
        started = clock()
        cpu_started = time.process_time()
        time.sleep(seconds)
    finally:
        stop.stopped = True
        start_line.abort()
        for thread in threads:
            thread.join(15)
    return LoadSlice(clock() - started, first_failure(outcomes), time.process_time() - cpu_started)


def bench_checkout(dsn: str, budget: Budget) -> list[Row[CheckoutRun]]:
    return interleave(
        "checkout",
        contenders(dsn, 1),
        time_checkouts,
        CheckoutRun.merge,
        budget.plan(budget.checkout_seconds),
    )


def bench_select(dsn: str, budget: Budget) -> list[Row[LoadRun]]:
    return interleave(
        "select_8x4",
        contenders(dsn, 4),
        partial(run_select, workers=8),
        LoadRun.merge,
        budget.plan(budget.duration),
    )


# --------------------------------------------------------------------------------------------
# Report


def named(rows: Sequence[Row[Any]], name: str) -> Row[Any]:
    return next(row for row in rows if row.name == name)


def small_ratio(value: float) -> str:
    """`ratio`, with two significant digits for the tiny ones (pool against null pool)."""
    return ratio(value) if value >= 0.1 else f"{value:.2g}x"


def report_checkout(rows: Sequence[Row[CheckoutRun]], repeat: int) -> str:
    def cell(row: Row[CheckoutRun]) -> float:
        return median([run.us_per_cycle for run in row.runs])

    ours = cell(named(rows, PGFLEET))
    table = [
        [
            row.name,
            f"{cell(row):,.2f}",
            "—" if row.name == PGFLEET else small_ratio(ours / cell(row)),
            " / ".join(f"{run.us_per_cycle:,.2f}" for run in row.runs),
        ]
        for row in rows
    ]
    return section(
        "checkout: checkout + return through PgBouncer, no query, 1 worker, pools of 1",
        markdown_table(["pool", "µs per cycle", "pgfleet's time ÷ pool's", "runs (µs)"], table, 1),
        [
            f"Median of {repeat} runs per cell; below 1x, pgfleet takes less time per cycle."
            " A null pool's cycle opens and closes a client connection to PgBouncer (a SCRAM"
            " login; PgBouncer keeps the server session).",
        ],
    )


def report_select(rows: Sequence[Row[LoadRun]], repeat: int) -> str:
    def qps(row: Row[LoadRun]) -> float:
        return median([run.qps for run in row.runs])

    ours = qps(named(rows, PGFLEET))
    table = [
        [
            row.name,
            f"{qps(row):,.0f}",
            "—" if row.name == PGFLEET else ratio(ours / qps(row)),
            f"{median([run.wait_p99_ms or 0.0 for run in row.runs]):.2f}",
            f"{median([run.jain for run in row.runs]):.3f}",
            " / ".join(f"{run.qps:,.0f}" for run in row.runs),
        ]
        for row in rows
    ]
    header = ["pool", "queries/s", "pgfleet's q/s ÷ pool's", "wait p99 ms", "Jain", "runs (q/s)"]
    return section(
        f"select_8x4: 8 threads, pools of 4, `{QUERY}`, PgBouncer with"
        f" {SERVER_SESSIONS} server sessions",
        markdown_table(header, table, 1),
        [f"Median of {repeat} runs per cell; above 1x, pgfleet serves more queries per second."],
    )


# --------------------------------------------------------------------------------------------
# Environment


def machine(dsn: str, bouncer_version: str) -> dict[str, str]:
    with psycopg.connect(dsn, prepare_threshold=None) as conn:
        server = pg_version(conn.info.server_version)
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": sys.version.split()[0],
        "psycopg": f"{psycopg.__version__} ({psycopg.pq.__impl__})",
        "libpq": pg_version(psycopg.pq.version()),
        "server": f"PostgreSQL {server}",
        "pooler": f"{bouncer_version}, pool_mode=transaction, default_pool_size={SERVER_SESSIONS}",
        "pgfleet": pgfleet.__version__,
        "psycopg_pool": psycopg_pool.__version__,
    }


@contextmanager
def behind_pgbouncer() -> Iterator[tuple[str, str]]:
    """A throwaway cluster and a PgBouncer in front of it: (conninfo, PgBouncer's version)."""
    from tests.support.cluster import PgCluster, find_pg_bin
    from tests.support.pgbouncer import PgBouncer, find_pgbouncer

    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise SystemExit("no PostgreSQL binaries found: set PG_BIN")
    binary = find_pgbouncer()
    if binary is None:
        raise SystemExit("pgbouncer is not installed (apt-get install pgbouncer)")
    with (
        PgCluster(bin_dir) as cluster,
        PgBouncer(
            cluster, pool_mode="transaction", default_pool_size=SERVER_SESSIONS, binary=binary
        ) as bouncer,
    ):
        log(f"cluster {cluster.base_dir} and {bouncer!r} started")
        with psycopg.connect(bouncer.admin_conninfo(), autocommit=True) as admin:
            row = admin.execute("SHOW VERSION").fetchone()
        yield bouncer.conninfo(), str(row[0]) if row else "PgBouncer"
    log("PgBouncer and cluster destroyed")


# --------------------------------------------------------------------------------------------
# CLI

ScenarioRunner = Callable[[str, Budget], tuple[str, list[dict[str, Any]]]]
RUNNERS: Final[dict[str, ScenarioRunner]] = {
    "checkout": lambda dsn, budget: _run(bench_checkout, report_checkout, dsn, budget),
    "select_8x4": lambda dsn, budget: _run(bench_select, report_select, dsn, budget),
}


def _run(
    bench: Callable[[str, Budget], list[Row[Any]]],
    report: Callable[[Sequence[Row[Any]], int], str],
    dsn: str,
    budget: Budget,
) -> tuple[str, list[dict[str, Any]]]:
    rows = bench(dsn, budget)
    return report(rows, budget.repeat), [asdict(row) for row in rows]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pooler_bench",
        description="pgfleet, psycopg_pool and its null pool through PgBouncer, side by side.",
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
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


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
        with behind_pgbouncer() as (dsn, version):
            env = machine(dsn, version)
            for name in chosen:
                report, results[name] = RUNNERS[name](dsn, budget)
                sections.append(report)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    print(f"Command: `{command}` ({clock() - started:.0f} s)")
    print("Machine: " + ", ".join(f"{key} {value}" for key, value in env.items()))
    print()
    print("\n\n".join(sections))
    if args.json is not None:
        document = {"command": command, "machine": env, "budget": asdict(budget)}
        args.json.write_text(json.dumps({**document, "results": results}, indent=2) + "\n")
        log(f"raw results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
