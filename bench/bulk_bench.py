#!/usr/bin/env python3
"""Bulk inserts: ``pgfleet.bulk.copy_rows`` vs psycopg's ``executemany`` vs multi-row VALUES.

    python bench/bulk_bench.py                     # a throwaway local cluster (tests/support)
    python bench/bulk_bench.py --dsn postgresql://...  --rows 50000 --repeats 5

Each method inserts the same rows (a UUID, a name, a nested jsonb document, a bigint and
a timestamptz) into an emptied table and commits; the methods take turns (the order
rotates every round) so that a noisy neighbour hurts them all alike. Prints a Markdown
table of median times and speed-ups over ``executemany`` (psycopg 3 pipelines it).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pgfleet.bulk import copy_rows, insert_values

ROOT = Path(__file__).resolve().parent.parent
TABLE = "bulk_bench"
COLUMNS = ["id", "name", "data", "n", "at"]
DDL = f"""
DROP TABLE IF EXISTS {TABLE};
CREATE TABLE {TABLE} (id uuid PRIMARY KEY, name text NOT NULL, data jsonb, n bigint, at timestamptz)
"""
TARGET = 4.0

Conn = psycopg.Connection[Any]
Rows = list[tuple[Any, ...]]


def make_rows(count: int) -> Rows:
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    return [
        (
            uuid.uuid4(),
            f"person {i}",
            {"email": f"p{i}@example.com", "tags": ["a", "b"], "address": {"city": "Bern"}},
            i,
            start + dt.timedelta(seconds=i),
        )
        for i in range(count)
    ]


def with_copy(conn: Conn, rows: Rows) -> int:
    return copy_rows(conn, TABLE, COLUMNS, rows)


def with_values(conn: Conn, rows: Rows) -> int:
    return insert_values(conn, TABLE, COLUMNS, rows)


def with_executemany(conn: Conn, rows: Rows) -> int:
    # psycopg cannot adapt a dict: wrap the jsonb values first (as its docs say).
    wrapped = [(id, name, Jsonb(data), n, at) for id, name, data, n, at in rows]
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES (%s, %s, %s, %s, %s)", wrapped
        )
    return len(rows)


METHODS: dict[str, Callable[[Conn, Rows], int]] = {
    "executemany": with_executemany,
    "insert_values (multi-row VALUES)": with_values,
    "copy_rows (binary COPY)": with_copy,
}


def run_once(conn: Conn, method: Callable[[Conn, Rows], int], rows: Rows) -> float:
    conn.execute(f"TRUNCATE {TABLE}")
    conn.commit()
    started = time.perf_counter()
    written = method(conn, rows)
    conn.commit()
    elapsed = time.perf_counter() - started
    if written != len(rows):
        raise SystemExit(f"{method.__name__} wrote {written} rows, expected {len(rows)}")
    return elapsed


def bench(dsn: str, count: int, repeats: int) -> dict[str, list[float]]:
    rows = make_rows(count)
    times: dict[str, list[float]] = {name: [] for name in METHODS}
    names = list(METHODS)
    with psycopg.connect(dsn) as conn:
        conn.execute(DDL)
        conn.commit()
        for name in names:  # warm-up: caches, prepared statements, the table's first pages
            run_once(conn, METHODS[name], rows[:1000])
        for round_number in range(repeats):
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                times[name].append(run_once(conn, METHODS[name], rows))
        conn.execute(f"DROP TABLE {TABLE}")
        conn.commit()
    return times


def report(times: dict[str, list[float]], count: int, repeats: int, where: str) -> str:
    baseline = statistics.median(times["executemany"])
    lines = [
        f"Bulk insert of {count:,} rows (uuid, text, jsonb, bigint, timestamptz), median of"
        f" {repeats} interleaved runs; {where}; psycopg {psycopg.__version__},"
        f" Python {sys.version.split()[0]}.",
        "",
        "| method | median | rows/s | speed-up vs executemany |",
        "|---|---:|---:|---:|",
    ]
    for name, samples in times.items():
        median = statistics.median(samples)
        lines.append(
            f"| {name} | {median * 1000:,.0f} ms | {count / median:,.0f}"
            f" | {baseline / median:.1f}x |"
        )
    ratio = baseline / statistics.median(times["copy_rows (binary COPY)"])
    verdict = "met" if ratio >= TARGET else "NOT met"
    lines += ["", f"Target copy_rows >= {TARGET:g}x executemany: {verdict} ({ratio:.1f}x)."]
    return "\n".join(lines)


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[str]:
    """A local cluster from the test harness (tests/support/cluster.py), destroyed after."""
    sys.path.insert(0, str(ROOT / "tests"))
    from support.cluster import (  # type: ignore[import-not-found, unused-ignore]
        PgCluster,
        find_pg_bin,
    )

    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise SystemExit("no PostgreSQL server binaries found: pass --dsn")
    with PgCluster(bin_dir) as cluster:
        yield cluster.conninfo()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dsn", help="where to connect (default: a throwaway local cluster)")
    parser.add_argument("--rows", type=int, default=50_000, help="rows per run (50,000)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (5)")
    args = parser.parse_args(argv)
    if args.rows < 1000 or args.repeats < 1:
        parser.error("need --rows >= 1000 and --repeats >= 1")
    if args.dsn:
        times = bench(args.dsn, args.rows, args.repeats)
        where = "the given server"
    else:
        with throwaway_cluster() as dsn:
            times = bench(dsn, args.rows, args.repeats)
        where = "a local throwaway cluster (fsync off)"
    print(report(times, args.rows, args.repeats, where))
    return 0


if __name__ == "__main__":
    sys.exit(main())
