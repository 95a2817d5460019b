"""Fakes and bookkeeping shared by the hand-written concurrency stress tests.

`StressConn` is a pretend connection: an id, an ``in_use_by`` marker and a few flags.
The fake managers (`ThreadStressManager`, `AsyncStressManager`) hand them out and can
be told to find some of them dead (``is_broken``/``check``); a returned connection
flagged ``broken`` makes ``reset`` raise, exactly like the PostgreSQL manager, which
judges a returned connection by its state. Every misuse the managers can observe (a
closed connection used, a connection closed twice, a reset of a connection somebody
still holds) is written down as a violation rather than raised, so that a stress run
reports all of them at the end instead of dying on the first one in some thread.

The stress managers are plain classes with the six required methods and none of the
optional hooks: they keep the duck-typed way of writing a manager under load (the pool
takes `pgfleet.AsyncManager`'s defaults for the hooks), while the scripted fakes of
``tests/support/flavours.py`` subclass the base class.

`Ledger` is the workers' side: the check-and-mark on checkout that proves no
connection is ever held by two workers at once, and per-worker progress, waits,
timeouts and cancellations for the liveness and fairness assertions.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

#: Pool size of every stress test, and how many workers share it.
MAX_SIZE = 8
WORKERS = 64


class FakeBroken(Exception):
    """What the fake managers raise for a connection that is dead."""


class StressConn:
    """A pretend connection."""

    __slots__ = ("number", "in_use_by", "broken", "closed", "lends")

    def __init__(self, number: int) -> None:
        self.number = number
        #: The worker holding it (set and cleared by `Ledger`), else None.
        self.in_use_by: int | None = None
        #: Dead: ``is_broken`` reports it, ``check`` and ``reset`` raise.
        self.broken = False
        self.closed = False
        self.lends = 0

    def __repr__(self) -> str:
        flags = " broken" * self.broken + " closed" * self.closed
        return f"<StressConn #{self.number}{flags}>"


class _StressBook:
    """What both fake managers share: randomness, counters and violations (thread-safe)."""

    def __init__(self, *, seed: int, dead_on_probe: float = 0.0, check_fails: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        #: Chance that ``is_broken`` finds a connection dead (its socket died while idle).
        self.dead_on_probe = dead_on_probe
        #: Chance that ``check`` finds a connection dead.
        self.check_fails = check_fails
        self.connections: list[StressConn] = []
        self.open_now = 0
        self.max_open = 0
        self.closes = 0
        self.found_dead = 0
        self.violations: list[str] = []

    def _chance(self, p: float) -> bool:
        if p <= 0.0:
            return False
        with self._lock:
            return self._rng.random() < p

    def _violation(self, text: str) -> None:
        with self._lock:
            self.violations.append(text)

    def _new_conn(self) -> StressConn:
        with self._lock:
            conn = StressConn(len(self.connections) + 1)
            self.connections.append(conn)
            self.open_now += 1
            self.max_open = max(self.max_open, self.open_now)
            return conn

    def _die(self, conn: StressConn) -> None:
        conn.broken = True
        with self._lock:
            self.found_dead += 1

    def is_broken(self, conn: StressConn) -> bool:
        if conn.closed:
            self._violation(f"is_broken() asked about {conn!r}, closed already")
            return True
        if conn.broken:
            return True
        if self._chance(self.dead_on_probe):
            self._die(conn)
            return True
        return False

    def _check(self, conn: StressConn) -> None:
        if conn.closed:
            self._violation(f"check() of {conn!r}, closed already")
        if conn.in_use_by is not None:
            self._violation(f"check() of {conn!r} while worker {conn.in_use_by} holds it")
        if not conn.broken and self._chance(self.check_fails):
            self._die(conn)
        if conn.broken:
            raise FakeBroken(f"{conn!r} failed its check")

    def _commit(self, conn: StressConn) -> None:
        # Nothing to make durable. A connection that died in use is noticed on the way
        # back (is_broken, reset), as the PostgreSQL manager notices it.
        if conn.closed:
            self._violation(f"commit() of {conn!r}, closed already")

    def _reset(self, conn: StressConn) -> None:
        if conn.closed:
            self._violation(f"reset() of {conn!r}, closed already")
        if conn.in_use_by is not None:
            self._violation(f"reset() of {conn!r} while worker {conn.in_use_by} holds it")
        if conn.broken:
            raise FakeBroken(f"{conn!r} came back broken")

    def _close(self, conn: StressConn) -> None:
        with self._lock:
            if conn.closed:
                self.violations.append(f"{conn!r} closed twice")
                return
            if conn.in_use_by is not None:
                self.violations.append(f"{conn!r} closed while worker {conn.in_use_by} holds it")
            conn.closed = True
            self.open_now -= 1
            self.closes += 1


class ThreadStressManager(_StressBook):
    """A `pgfleet.Manager` of `StressConn`; connects take a little while, like real ones."""

    def connect(self, timeout: float) -> StressConn:
        time.sleep(0.0005)
        return self._new_conn()

    def check(self, conn: StressConn, timeout: float) -> None:
        self._check(conn)

    def commit(self, conn: StressConn) -> None:
        self._commit(conn)

    def reset(self, conn: StressConn, timeout: float) -> None:
        self._reset(conn)

    def close(self, conn: StressConn) -> None:
        self._close(conn)


class AsyncStressManager(_StressBook):
    """A `pgfleet.AsyncManager` of `StressConn`.

    Every method yields to the loop at least once, as real I/O would: that is where a
    cancellation can land, and the pool must survive it landing anywhere.
    """

    async def connect(self, timeout: float) -> StressConn:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return self._new_conn()

    async def check(self, conn: StressConn, timeout: float) -> None:
        await asyncio.sleep(0)
        self._check(conn)

    async def commit(self, conn: StressConn) -> None:
        await asyncio.sleep(0)
        self._commit(conn)

    async def reset(self, conn: StressConn, timeout: float) -> None:
        await asyncio.sleep(0)
        self._reset(conn)

    async def close(self, conn: StressConn) -> None:
        await asyncio.sleep(0)
        self._close(conn)


@dataclass
class WorkerReport:
    """What one worker did."""

    index: int
    done: int = 0
    timeouts: int = 0
    cancelled: int = 0
    waits: int = 0
    max_wait: float = 0.0
    total_wait: float = 0.0

    def waited(self, seconds: float) -> None:
        self.waits += 1
        self.total_wait += seconds
        self.max_wait = max(self.max_wait, seconds)


@dataclass
class Ledger:
    """The workers' shared bookkeeping (thread-safe)."""

    workers: int
    iterations: int
    reports: list[WorkerReport] = field(init=False)
    violations: list[str] = field(default_factory=list)
    #: Every worker's ``done`` at the moment the first worker finished.
    progress_at_first_finish: list[int] | None = None
    finished: int = 0
    _holders: dict[int, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.reports = [WorkerReport(i) for i in range(self.workers)]

    def take(self, conn: Any, worker: int) -> None:
        """Mark `conn` as held by `worker`; note a violation if anybody else holds it."""
        with self._lock:
            holder = self._holders.get(id(conn))
            if holder is not None:
                self.violations.append(f"worker {worker} got {conn!r}, held by worker {holder}")
            self._holders[id(conn)] = worker
            if isinstance(conn, StressConn):
                if conn.in_use_by is not None:
                    self.violations.append(
                        f"worker {worker} got {conn!r}, marked in use by {conn.in_use_by}"
                    )
                if conn.closed or conn.broken:
                    self.violations.append(f"worker {worker} was lent {conn!r}")
                conn.in_use_by = worker
                conn.lends += 1

    def give_back(self, conn: Any, worker: int) -> None:
        """Clear the mark set by `take` (just before the connection goes back)."""
        with self._lock:
            holder = self._holders.pop(id(conn), None)
            if holder != worker:
                self.violations.append(f"worker {worker} gave back {conn!r} held by {holder}")
            if isinstance(conn, StressConn):
                if conn.in_use_by != worker:
                    self.violations.append(
                        f"worker {worker} gave back {conn!r} marked for {conn.in_use_by}"
                    )
                conn.in_use_by = None

    def finish(self, worker: int) -> None:
        """`worker` ran all its iterations."""
        with self._lock:
            self.finished += 1
            if self.progress_at_first_finish is None:
                self.progress_at_first_finish = [r.done for r in self.reports]

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._holders)

    def total(self, what: str) -> int:
        return sum(getattr(r, what) for r in self.reports)

    def max_wait(self) -> float:
        return max(r.max_wait for r in self.reports)


def check_stats_invariants(stats: Any, max_size: int = MAX_SIZE) -> None:
    """What must hold in any snapshot, under load or not."""
    parts = stats.idle + stats.in_use + stats.checking + stats.connecting
    assert stats.size == parts, stats
    assert stats.size <= max_size, stats
    assert stats.in_use <= max_size, stats
    assert min(stats.idle, stats.in_use, stats.checking, stats.connecting, stats.waiting) >= 0


def check_quiet_stats(stats: Any, max_size: int = MAX_SIZE) -> None:
    """What must hold once every worker is done: nothing lent, nobody queued."""
    check_stats_invariants(stats, max_size)
    assert stats.in_use == 0, stats
    assert stats.waiting == 0, stats
    assert stats.idle + stats.connecting <= max_size, stats


class GatedCloseManager(AsyncStressManager):
    """An `AsyncStressManager` whose closes wait at a gate: a test can cancel a task there."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.gate = asyncio.Event()
        self.gate.set()
        #: Set when a close reaches the closed gate.
        self.close_waiting = asyncio.Event()

    async def close(self, conn: StressConn) -> None:
        if not self.gate.is_set():
            self.close_waiting.set()
        await self.gate.wait()
        self._close(conn)
