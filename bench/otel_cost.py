"""What the OpenTelemetry histograms cost on the checkout path.

A checkout and return through ``with pool.connection(): pass`` (no query; one connection,
always idle) is run in three builds of the same source tree:

- ``no-hooks``: the pool with its observer call sites stripped out (a copy of ``src/`` in a
  temporary directory, the ``_observer`` lines of ``_async/pool.py`` and ``_sync/pool.py``
  removed), i.e. pgfleet as if the histograms did not exist;
- ``off``: this tree, the pool not instrumented (what every user without OpenTelemetry runs);
- ``on``: this tree, the pool instrumented with `pgfleet.metrics.otel.instrument` on an SDK
  ``MeterProvider`` with an in-memory reader: two ``Histogram.record`` per cycle, the wait
  and the use (no span is current, so no exemplar is kept).

Two measures:

- instructions per cycle, with ``valgrind --tool=callgrind``: each build runs the loop for
  ``--cycles`` cycles and for 0 cycles in fresh interpreters, and the difference divided by
  the cycles is the cost of one cycle (start-up cancels out; stable to about 1%);
- wall-clock time per cycle: the builds run in turn, round after round (no-hooks, off, on,
  no-hooks, ...), each in a fresh interpreter, and the report gives the median of each build
  and the median of the per-round ratios to ``no-hooks``.

    .venv/bin/python bench/otel_cost.py                  # about 4 minutes
    .venv/bin/python bench/otel_cost.py --no-callgrind   # the clock only, about 30 seconds
    .venv/bin/python bench/otel_cost.py --flavour async --dsn postgresql://...

Without ``--dsn`` (or ``DATABASE_URL``) a throwaway cluster from ``tests/support/cluster.py``
is started and destroyed at the end. The report (Markdown) goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
BUILDS: Final = ("no-hooks", "off", "on")
#: A line of the pool shells that exists for the observer alone.
_HOOK_LINE: Final = re.compile(
    r"^\s*(?:if (?:self|pool)\._observer is not None:|started = .*_observer)"
)

#: The loop each measurement runs, in a fresh interpreter (argv: build flavour cycles; the
#: server in DATABASE_URL, not in argv, where any user's ``ps`` would show its password).
CHILD: Final = r"""
import asyncio, json, os, sys, time
build, flavour, cycles = sys.argv[1], sys.argv[2], int(sys.argv[3])
dsn = os.environ["DATABASE_URL"]
import pgfleet

def instrument(pool):
    if build != "on":
        return None
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from pgfleet.metrics.otel import instrument
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()], shutdown_on_exit=False)
    instrument(pool, meter_provider=provider)
    return provider

WARM_UP = 200
SLICES = 5

def run_sync():
    with pgfleet.Pool(dsn, name="bench", min_size=1, max_size=1, timeout=10) as pool:
        provider = instrument(pool)
        for _ in range(WARM_UP if cycles else 0):
            with pool.connection():
                pass
        times = []
        per_slice = cycles // SLICES
        for _ in range(SLICES if cycles else 0):
            started = time.perf_counter()
            for _ in range(per_slice):
                with pool.connection():
                    pass
            times.append((time.perf_counter() - started) / per_slice)
        assert (pool._observer is not None) == (build == "on")
    return times, provider

async def run_async():
    async with pgfleet.AsyncPool(dsn, name="bench", min_size=1, max_size=1, timeout=10) as pool:
        provider = instrument(pool)
        for _ in range(WARM_UP if cycles else 0):
            async with pool.connection():
                pass
        times = []
        per_slice = cycles // SLICES
        for _ in range(SLICES if cycles else 0):
            started = time.perf_counter()
            for _ in range(per_slice):
                async with pool.connection():
                    pass
            times.append((time.perf_counter() - started) / per_slice)
        assert (pool._observer is not None) == (build == "on")
    return times, provider

times, provider = run_sync() if flavour == "sync" else asyncio.run(run_async())
if provider is not None:
    provider.shutdown()
print(json.dumps({"pgfleet": pgfleet.__file__, "times": times}))
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def strip_hooks(source: Path, into: Path) -> Path:
    """A copy of `source` (``src/``) without the observer call sites; returns its root."""
    target = into / "src"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    for flavour in ("_async", "_sync"):
        path = target / "pgfleet" / flavour / "pool.py"
        lines = path.read_text().splitlines(keepends=True)
        kept: list[str] = []
        skip_next = False
        for line in lines:
            if skip_next:
                skip_next = False
                continue
            if _HOOK_LINE.match(line):
                skip_next = line.lstrip().startswith("if ")  # the call under the test
                continue
            kept.append(line)
        text = "".join(kept)
        if "_observer" in text:
            raise SystemExit(f"{path.name} ({flavour}): an observer call site of an unknown shape")
        path.write_text(text)
    return target


def child_command(build: str, flavour: str, cycles: int) -> list[str]:
    return [sys.executable, "-c", CHILD, build, flavour, str(cycles)]


def child_env(build: str, dsn: str, stripped: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONHASHSEED": "0", "DATABASE_URL": dsn}
    env.pop("PYTHONPATH", None)
    if build == "no-hooks":
        env["PYTHONPATH"] = str(stripped)
    return env


def run_child(build: str, flavour: str, dsn: str, cycles: int, stripped: Path) -> list[float]:
    result = subprocess.run(
        child_command(build, flavour, cycles),
        env=child_env(build, dsn, stripped),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"{build}: the loop failed:\n{result.stderr}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    expected = stripped if build == "no-hooks" else ROOT / "src"
    if not report["pgfleet"].startswith(str(expected)):
        raise SystemExit(f"{build}: ran {report['pgfleet']}, not the build under {expected}")
    times: list[float] = report["times"]
    return times


def instructions(build: str, flavour: str, dsn: str, cycles: int, stripped: Path) -> int:
    """Instructions (callgrind's total) of a fresh interpreter running `cycles` cycles."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            *child_command(build, flavour, cycles),
        ]
        result = subprocess.run(
            command,
            env=child_env(build, dsn, stripped),
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        if result.returncode != 0:
            raise SystemExit(f"{build} under callgrind failed:\n{result.stderr[-2000:]}")
        for line in out.read_text().splitlines():
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    raise SystemExit(f"{build}: no totals in callgrind's output")


@contextmanager
def database(dsn: str | None) -> Iterator[str]:
    """`dsn`, or a throwaway cluster's conninfo (the cluster is destroyed on exit)."""
    if dsn is not None:
        yield dsn
        return
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.support.cluster import PgCluster, find_pg_bin

    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise SystemExit("no PostgreSQL binaries found: set PG_BIN or pass --dsn")
    with PgCluster(bin_dir) as cluster:
        log(f"throwaway cluster {cluster.base_dir} started")
        yield cluster.conninfo()
    log("throwaway cluster destroyed")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL"), help="server to use")
    parser.add_argument("--flavour", choices=("sync", "async"), default="sync")
    parser.add_argument("--cycles", type=int, default=20_000, help="cycles per callgrind run")
    parser.add_argument("--clock-cycles", type=int, default=50_000, help="cycles per timed run")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds of the three builds")
    parser.add_argument("--no-callgrind", action="store_true", help="the clock only")
    parser.add_argument(
        "--builds",
        default=",".join(BUILDS),
        help=f"the builds to measure, comma-separated (default: {','.join(BUILDS)})",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    builds = [b for b in BUILDS if b in args.builds.split(",")]
    if "no-hooks" not in builds:
        raise SystemExit("--builds: the ratios need no-hooks")
    if not args.no_callgrind and shutil.which("valgrind") is None:
        raise SystemExit("valgrind not found (apt-get install valgrind), or pass --no-callgrind")
    lines = [
        f"# OpenTelemetry histograms: cost per checkout + return ({args.flavour})",
        "",
        f"`{shlex.join(['python', 'bench/otel_cost.py', *(argv or sys.argv[1:])])}`"
        f" on {os.cpu_count()} CPU(s), load {os.getloadavg()[0]:.2f}",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp, database(args.dsn) as dsn:
        stripped = strip_hooks(ROOT / "src", Path(tmp))
        per_cycle: dict[str, float] = {}
        if not args.no_callgrind:
            for build in builds:
                log(f"callgrind: {build}, {args.cycles} cycles and 0")
                full = instructions(build, args.flavour, dsn, args.cycles, stripped)
                empty = instructions(build, args.flavour, dsn, 0, stripped)
                per_cycle[build] = (full - empty) / args.cycles
        clock: dict[str, list[float]] = {build: [] for build in builds}
        for round_number in range(args.rounds):
            log(f"clock: round {round_number + 1} of {args.rounds}")
            for build in builds:
                times = run_child(build, args.flavour, dsn, args.clock_cycles, stripped)
                clock[build].append(statistics.median(times))
    lines += [
        "| build | instructions per cycle | vs no-hooks | µs per cycle (median) |"
        " vs no-hooks (median of rounds) |",
        "|---|---|---|---|---|",
    ]
    for build in builds:
        ratios = [t / base for t, base in zip(clock[build], clock["no-hooks"], strict=True)]
        instr = per_cycle.get(build)
        base_instr = per_cycle.get("no-hooks")
        lines.append(
            f"| `{build}` | {f'{instr:,.0f}' if instr is not None else '-'} | "
            + (
                f"{instr - base_instr:+,.0f} ({instr / base_instr - 1:+.1%})"
                if instr is not None and base_instr
                else "-"
            )
            + f" | {statistics.median(clock[build]) * 1e6:.2f} | "
            f"{statistics.median(ratios):.3f}x |"
        )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    status = main()
    log(f"done in {time.monotonic() - started:.0f} s")
    sys.exit(status)
