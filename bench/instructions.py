"""Instructions per checkout + return, counted with callgrind: the figure to track.

Run from the repository root (needs ``valgrind``; ``apt-get install valgrind``)::

    .venv/bin/python -m bench.instructions                  # every contender, ~3 minutes
    .venv/bin/python -m bench.instructions --only pgfleet.Pool --cycles 5000
    .venv/bin/python -m bench.instructions --opcodes        # bytecodes per cycle, by function
    .venv/bin/python -m bench.instructions --queued --query "SELECT 1" --real-clock

Each contender runs in its own Python process under ``valgrind --tool=callgrind``: open a
pool of one connection, warm it up, run ``with pool.connection(): pass`` N times, close.
The same process with 0 cycles counts everything else (start-up, imports, connecting,
closing); the difference divided by N is the cost of one checkout + return, stable to
about 1 % whatever else the machine does (unlike the clock). Without ``--dsn`` a throwaway
cluster is started (``tests/support/cluster.py``) and destroyed at the end.

The yardstick is ``bench/reference_pool.py``, the least a first-come-first-served pool can
do; the target (issue #15) is pgfleet at most 1.5x its instructions, in both flavours.

``--queued`` counts the path every checkout takes under oversubscription (64 workers on 8
connections): two workers share the one connection, each yielding inside its block, so
every checkout queues and every return hands the connection over. ``--query "SELECT 1"``
runs a query in each block instead, so that the count takes in the driver too: the
client's whole cost per query, the figure behind the oversubscribed throughput. Add
``--real-clock`` for the probes a loaded machine makes (under callgrind every lend then
lasts longer than 1 ms); the count then moves by a few percent from run to run.

``--opcodes`` runs the loops without valgrind under a bytecode tracer instead and prints
the bytecodes executed per cycle in each Python function: the profile by function that
callgrind cannot give (it sees the interpreter's C functions, not Python's).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: bench/ is on the path, the root is not
    sys.path.insert(0, str(ROOT))

#: The child reads the server's conninfo here (not from its command line: no password in ps).
DSN_VARIABLE: Final = "PGFLEET_BENCH_DSN"
#: Untimed cycles before the counted ones, in both runs (fills caches, specialises bytecode).
WARM_CYCLES: Final = 500
#: "1": the child runs pgfleet on `steady_clock` (the default; ``--real-clock`` sets "0").
STEADY_VARIABLE: Final = "PGFLEET_BENCH_STEADY_CLOCK"
#: "1": the child runs `QUEUED_WORKERS` workers on the one connection (``--queued``).
QUEUED_VARIABLE: Final = "PGFLEET_BENCH_QUEUED"
#: Workers sharing the one connection in ``--queued``: all but one are always queued.
QUEUED_WORKERS: Final = 2
#: The query each ``--queued`` holder runs (``--query``), instead of only yielding.
QUERY_VARIABLE: Final = "PGFLEET_BENCH_QUERY"
DEFAULT_CYCLES: Final = 20_000

Acquire = Callable[[], AbstractContextManager[Any]]
AsyncAcquire = Callable[[], AbstractAsyncContextManager[Any]]


# --------------------------------------------------------------------------------------------
# The contenders: each opens a pool of one autocommit connection and yields its `connection`


@contextmanager
def _pgfleet(dsn: str) -> Iterator[Acquire]:
    import pgfleet

    with pgfleet.Pool(dsn, min_size=1, max_size=1, kwargs={"autocommit": True}) as pool:
        yield pool.connection


@asynccontextmanager
async def _pgfleet_async(dsn: str) -> AsyncIterator[AsyncAcquire]:
    import pgfleet

    async with pgfleet.AsyncPool(dsn, min_size=1, max_size=1, kwargs={"autocommit": True}) as pool:
        yield pool.connection


@contextmanager
def _reference(dsn: str) -> Iterator[Acquire]:
    from bench.reference_pool import open_fifo_pool

    with open_fifo_pool(dsn, 1) as acquire:
        yield acquire


@asynccontextmanager
async def _reference_async(dsn: str) -> AsyncIterator[AsyncAcquire]:
    from bench.reference_pool import open_fifo_pool_async

    async with open_fifo_pool_async(dsn, 1) as acquire:
        yield acquire


@contextmanager
def _psycopg_pool(dsn: str) -> Iterator[Acquire]:
    import psycopg_pool

    with psycopg_pool.ConnectionPool(
        dsn, min_size=1, max_size=1, kwargs={"autocommit": True}, open=False
    ) as pool:
        pool.wait(30)
        yield pool.connection


@asynccontextmanager
async def _psycopg_pool_async(dsn: str) -> AsyncIterator[AsyncAcquire]:
    import psycopg_pool

    async with psycopg_pool.AsyncConnectionPool(
        dsn, min_size=1, max_size=1, kwargs={"autocommit": True}, open=False
    ) as pool:
        await pool.wait(30)
        yield pool.connection


@dataclass(frozen=True)
class Contender:
    name: str
    flavour: str  # "sync" or "async"
    open: Callable[[str], Any]
    #: Its yardstick's name (None: it is one).
    reference: str | None


REFERENCE: Final = {"sync": "reference FifoPool", "async": "reference AsyncFifoPool"}
CONTENDERS: Final = {
    c.name: c
    for c in (
        Contender("pgfleet.Pool", "sync", _pgfleet, REFERENCE["sync"]),
        Contender(REFERENCE["sync"], "sync", _reference, None),
        Contender("psycopg_pool.ConnectionPool", "sync", _psycopg_pool, REFERENCE["sync"]),
        Contender("pgfleet.AsyncPool", "async", _pgfleet_async, REFERENCE["async"]),
        Contender(REFERENCE["async"], "async", _reference_async, None),
        Contender(
            "psycopg_pool.AsyncConnectionPool", "async", _psycopg_pool_async, REFERENCE["async"]
        ),
    )
}


# --------------------------------------------------------------------------------------------
# The child: the loop that is counted


def cycles_sync(acquire: Acquire, n: int) -> None:
    for _ in range(n):
        with acquire():
            pass


async def cycles_async(acquire: AsyncAcquire, n: int) -> None:
    for _ in range(n):
        async with acquire():
            pass


def queued_sync(acquire: Acquire, n: int) -> None:
    """`n` cycles by `QUEUED_WORKERS` threads on one connection: every checkout queues.

    Each holder gives up the GIL inside its block (``time.sleep(0)``, or the query's
    wait), so the other thread runs, finds the connection lent and parks; the return
    hands it over.
    """
    query = os.environ.get(QUERY_VARIABLE)

    def worker(count: int) -> None:
        for _ in range(count):
            with acquire() as conn:
                if query:
                    conn.execute(query)
                else:
                    time.sleep(0)

    threads = [
        threading.Thread(target=worker, args=(n // QUEUED_WORKERS,)) for _ in range(QUEUED_WORKERS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


async def queued_async(acquire: AsyncAcquire, n: int) -> None:
    """`n` cycles by `QUEUED_WORKERS` tasks on one connection: every checkout queues.

    Each holder yields to the loop inside its block (``asyncio.sleep(0)``, or the
    query's wait), so the other task runs, finds the connection lent and queues; the
    return hands it over.
    """
    query = os.environ.get(QUERY_VARIABLE)

    async def worker(count: int) -> None:
        for _ in range(count):
            async with acquire() as conn:
                if query:
                    await conn.execute(query)
                else:
                    await asyncio.sleep(0)

    await asyncio.gather(*(worker(n // QUEUED_WORKERS) for _ in range(QUEUED_WORKERS)))


def steady_clock() -> None:
    """Give pgfleet's shells a clock that advances 1 µs per read, whatever the real time.

    Under callgrind (about 50x slower) or the bytecode tracer (slower still), a cycle of a
    few microseconds takes a millisecond or more, and pgfleet's decisions by the clock
    (probe a connection held longer than 1 ms, check one idle longer than 1 s) would take
    paths they never take at full speed. This clock keeps the paths those of full speed;
    it is C code (``next`` on ``itertools.count``), as cheap to call as `time.monotonic`.
    """
    import pgfleet._async.pool
    import pgfleet._sync.pool

    tick = functools.partial(next, itertools.count(time.monotonic(), 1e-6))
    pgfleet._async.pool.monotonic = tick  # type: ignore[assignment]
    pgfleet._sync.pool.monotonic = tick  # type: ignore[assignment]


def run_child(name: str, dsn: str, cycles: int, around: Callable[[], Any] | None = None) -> Any:
    """Warm up, then run `cycles` cycles (inside ``around()``, a context manager, if given)."""
    contender = CONTENDERS[name]
    if os.environ.get(STEADY_VARIABLE) == "1":
        steady_clock()
    queued = os.environ.get(QUEUED_VARIABLE) == "1"
    if contender.flavour == "sync":
        run_sync = queued_sync if queued else cycles_sync
        with contender.open(dsn) as acquire:
            run_sync(acquire, WARM_CYCLES)
            if around is None:
                run_sync(acquire, cycles)
                return None
            with around() as result:
                run_sync(acquire, cycles)
            return result

    run_async = queued_async if queued else cycles_async

    async def main() -> Any:
        async with contender.open(dsn) as acquire:
            await run_async(acquire, WARM_CYCLES)
            if around is None:
                await run_async(acquire, cycles)
                return None
            with around() as result:
                await run_async(acquire, cycles)
            return result

    return asyncio.run(main())


# --------------------------------------------------------------------------------------------
# Counting instructions


_TOTAL = re.compile(rb"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


def callgrind_total(name: str, dsn: str, cycles: int, *, steady: bool = True) -> int:
    """Instructions of one child process under callgrind (all its threads)."""
    with tempfile.TemporaryDirectory(prefix="pgfleet-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            name,
            "--cycles",
            str(cycles),
        ]
        env = {
            **os.environ,
            DSN_VARIABLE: dsn,
            STEADY_VARIABLE: "1" if steady else "0",
            "PYTHONHASHSEED": "0",
        }
        done = subprocess.run(command, env=env, capture_output=True, timeout=1800, check=False)
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace")[-2000:]
            raise RuntimeError(f"{name} under callgrind failed ({done.returncode}):\n{tail}")
        match = _TOTAL.search(out.read_bytes())
        if match is None:
            raise RuntimeError(f"no totals in the callgrind output of {name}")
        return int(match.group(1))


@dataclass(frozen=True)
class Count:
    name: str
    flavour: str
    cycles: int
    with_cycles: int
    without: int

    @property
    def per_cycle(self) -> float:
        return (self.with_cycles - self.without) / self.cycles


def count(
    names: Sequence[str], dsn: str, cycles: int, jobs: int, *, steady: bool = True
) -> dict[str, Count]:
    """Instructions per cycle of each contender (2 callgrind runs each, `jobs` at a time)."""
    runs = [(name, n) for name in names for n in (cycles, 0)]

    def total(run: tuple[str, int]) -> int:
        return callgrind_total(run[0], dsn, run[1], steady=steady)

    with ThreadPoolExecutor(max_workers=jobs) as executor:
        totals = list(executor.map(total, runs))
    found = dict(zip(runs, totals, strict=True))
    return {
        name: Count(name, CONTENDERS[name].flavour, cycles, found[name, cycles], found[name, 0])
        for name in names
    }


def report(counts: dict[str, Count], *, queued: bool = False) -> str:
    """A Markdown table: instructions per cycle, and the ratio to the flavour's yardstick.

    The 1.5x target is the uncontended cycle's; a `queued` count has none of its own.
    """
    lines = [
        "| flavour | pool | instructions per cycle | ÷ reference |",
        "| --- | --- | ---: | ---: |",
    ]
    notes = []
    for result in counts.values():
        contender = CONTENDERS[result.name]
        yardstick = counts.get(contender.reference or "")
        share = "—" if yardstick is None else f"{result.per_cycle / yardstick.per_cycle:.2f}x"
        lines.append(f"| {result.flavour} | {result.name} | {result.per_cycle:,.0f} | {share} |")
        if result.name.startswith("pgfleet.") and yardstick is not None and not queued:
            ratio = result.per_cycle / yardstick.per_cycle
            verdict = "met" if ratio <= 1.5 else f"missed, {ratio / 1.5 - 1:.0%} over"
            notes.append(f"- {result.flavour}: {ratio:.2f}x the reference ({verdict})")
    cycles = next(iter(counts.values())).cycles if counts else 0
    target = (
        f" Every checkout queued ({QUEUED_WORKERS} workers on one connection): no target of"
        " its own; it is the path of the oversubscribed throughput."
        if queued
        else " Target: pgfleet ≤ 1.5x the reference pool's instructions per cycle."
    )
    return "\n".join(
        [
            *lines,
            "",
            f"callgrind, {cycles:,} cycles minus 0 cycles, divided by {cycles:,}.{target}",
            "",
            *notes,
        ]
    )


# --------------------------------------------------------------------------------------------
# Bytecodes by function (the profile callgrind cannot give)


@contextmanager
def opcode_counter() -> Iterator[Counter[str]]:
    """Count the bytecodes executed by function, while inside (threads started inside too)."""
    counts: Counter[str] = Counter()

    def trace(frame: FrameType, event: str, arg: object) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            where = f"{Path(code.co_filename).name}:{code.co_firstlineno} {code.co_qualname}"
            counts[where] += 1
        return trace

    sys.settrace(trace)
    threading.settrace(trace)  # the ``--queued`` workers' threads, started inside
    try:
        yield counts
    finally:
        threading.settrace(None)  # type: ignore[arg-type]
        sys.settrace(None)


def opcodes(name: str, dsn: str, cycles: int) -> str:
    counts: Counter[str] = run_child(name, dsn, cycles, around=opcode_counter)
    total = sum(counts.values())
    lines = [f"{name}: {total / cycles:.1f} bytecodes per cycle"]
    for where, n in counts.most_common():
        if n / cycles >= 0.5:
            lines.append(f"  {n / cycles:8.1f}  {where}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.instructions",
        description="Instructions per checkout + return under callgrind, pgfleet and peers.",
    )
    parser.add_argument("--dsn", help="server to use (default: a throwaway cluster)")
    parser.add_argument("--cycles", type=int, default=DEFAULT_CYCLES, metavar="N")
    parser.add_argument(
        "--only", action="append", choices=list(CONTENDERS), metavar="POOL", help="repeatable"
    )
    parser.add_argument("--jobs", type=int, default=2, help="callgrind runs at once")
    parser.add_argument("--json", type=Path, metavar="PATH", help="save the counts here")
    parser.add_argument(
        "--opcodes", action="store_true", help="bytecodes per cycle by function (no valgrind)"
    )
    parser.add_argument(
        "--queued",
        action="store_true",
        help=f"{QUEUED_WORKERS} workers on the one connection: every checkout queues",
    )
    parser.add_argument(
        "--query",
        metavar="SQL",
        help="with --queued: each holder runs this query (the count then takes in the driver)",
    )
    parser.add_argument(
        "--real-clock",
        action="store_true",
        help="leave pgfleet on the real clock (see steady_clock: slow paths then show)",
    )
    parser.add_argument("--child", choices=list(CONTENDERS), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.query and not args.queued:
        raise SystemExit("--query goes with --queued")
    if args.child is not None:
        run_child(args.child, os.environ[DSN_VARIABLE], args.cycles)
        return 0
    if not args.opcodes and shutil.which("valgrind") is None:
        raise SystemExit("valgrind not found (apt-get install valgrind)")
    from bench.pool_bench import database

    names = args.only or list(CONTENDERS)
    with database(args.dsn) as dsn:
        os.environ[STEADY_VARIABLE] = "0" if args.real_clock else "1"
        os.environ[QUEUED_VARIABLE] = "1" if args.queued else "0"
        os.environ[QUERY_VARIABLE] = args.query or ""
        if args.opcodes:
            for name in names:
                print(opcodes(name, dsn, min(args.cycles, 2000)))
            return 0
        counts = count(names, dsn, args.cycles, args.jobs, steady=not args.real_clock)
    print(report(counts, queued=args.queued))
    if args.json is not None:
        document = {name: vars(c) | {"per_cycle": c.per_cycle} for name, c in counts.items()}
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
