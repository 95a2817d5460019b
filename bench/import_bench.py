"""What importing pgfleet costs, next to importing psycopg.

Run from the repository root::

    .venv/bin/python -m bench.import_bench              # 21 interleaved runs of each
    .venv/bin/python -m bench.import_bench --runs 51

Each statement runs in a fresh interpreter (``python -X importtime -c STATEMENT``), the
statements taking turns (psycopg, pgfleet, psycopg, pgfleet...) so that they share the
machine's noise. Reported: the median over the runs of the import time that
``-X importtime`` gives for everything the statement imports (the sum of its top-level
imports' cumulative times, interpreter start-up excluded), and its ratio to
``import psycopg``. Target (issue #15): ``import pgfleet`` at most 1.1x ``import psycopg``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from collections.abc import Sequence
from typing import Final

#: What a program writes, and what it costs; the first is the yardstick.
STATEMENTS: Final = (
    "import psycopg",
    "import pgfleet",
    "from pgfleet import Pool",
    "from pgfleet import AsyncPool",
    "import psycopg_pool",
)
#: Modules already imported when ``-c`` runs (start-up), whose lines are not the statement's.
_STARTUP: Final = frozenset({"encodings", "site", "codecs", "io", "abc", "os", "stat"})


def import_time(statement: str) -> float:
    """Seconds the statement's imports took in a fresh interpreter (``-X importtime``)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        capture_output=True,
        text=True,
        check=True,
    )
    total = 0
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:") :].split("|")
        # Top-level imports only (their cumulative time holds their own imports).
        if not name.startswith("  ") and name.strip() not in _STARTUP:
            total += int(cumulative)
    return total / 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.import_bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=21, help="runs of each statement")
    args = parser.parse_args(argv)
    times: dict[str, list[float]] = {s: [] for s in STATEMENTS}
    for _ in range(args.runs):
        for statement in STATEMENTS:  # interleaved: each round runs every statement once
            times[statement].append(import_time(statement))
    yardstick = statistics.median(times[STATEMENTS[0]])
    print("| statement | import ms (median) | ÷ `import psycopg` |")
    print("| --- | ---: | ---: |")
    for statement, seconds in times.items():
        value = statistics.median(seconds)
        print(f"| `{statement}` | {value * 1e3:.1f} | {value / yardstick:.2f}x |")
    print()
    print(
        f"Median of {args.runs} interleaved runs, each in a fresh interpreter"
        " (`python -X importtime -c ...`, start-up excluded)."
        " Target: `import pgfleet` ≤ 1.1x `import psycopg`."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
