"""Load and bookkeeping for the fault tests: one class per flavour, the same interface.

``tests/faults/_async/*.py`` use the ``Async*`` names; ``tools/gen_sync.py`` renames them
(``AsyncLoad`` -> ``Load``, ``AsyncFaults`` -> ``Faults``) when it writes
``tests/faults/_sync/``. The concurrency differs (tasks against threads), so both halves are
written by hand here.

A load is N workers looping over ``with pool.connection(timeout) as conn: conn.execute(q)``
until told to stop (or a cap on checkouts is reached). Every checkout is recorded as an
`Outcome`: it succeeded; or the checkout raised a pool error (`PoolTimeout`,
`DatabaseUnavailable`, `PoolClosed`); or the *query* raised `psycopg.OperationalError` (a
query in flight when the fault hit); or something else happened, which is always a bug.
`Report.assert_sound` turns those rules, plus "no checkout outlived its deadline", into
assertions.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import psycopg

from pgfleet import AsyncPool, Pool, PoolClosed, PoolTimeout

T = TypeVar("T")

#: A checkout may overrun its timeout by this much before it counts as hung (generous: the
#: machine is small and shared).
HANG_SLACK = 1.5
#: How long a load waits for its workers after `stop` beyond the checkout deadline.
STOP_GRACE = 5.0
#: Default bound of a `wait_for` on the load.
PATIENCE = 15.0

Kind = Literal["ok", "pool_error", "in_flight", "unexpected"]
#: Errors a checkout may raise (`DatabaseUnavailable` is a `PoolTimeout`).
CHECKOUT_ERRORS: tuple[type[BaseException], ...] = (PoolTimeout, PoolClosed)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One checkout (and the query run on what it lent)."""

    worker: int
    started: float
    #: Seconds from the call to the connection (or to the checkout's error).
    checkout: float
    #: Seconds from the call to the end of the block.
    total: float
    kind: Kind
    error: BaseException | None = None

    def describe(self) -> str:
        error = f" {type(self.error).__name__}: {self.error}" if self.error else ""
        return f"worker {self.worker}: {self.kind} after {self.checkout:.3f}s{error}"


def classify(in_body: bool, error: BaseException | None) -> Kind:
    """The rules of the fault tests, in one place."""
    if error is None:
        return "ok"
    if not in_body:
        return "pool_error" if isinstance(error, CHECKOUT_ERRORS) else "unexpected"
    return "in_flight" if isinstance(error, psycopg.OperationalError) else "unexpected"


@dataclass
class Report:
    """What a load saw."""

    timeout: float
    outcomes: list[Outcome]
    #: Workers still running when the load gave up on them.
    hung: list[str] = field(default_factory=list)

    def of(self, kind: Kind, *, since: float = float("-inf")) -> list[Outcome]:
        """Outcomes of this kind among the checkouts that began at or after `since`."""
        return [o for o in self.outcomes if o.kind == kind and o.started >= since]

    def errors(self, *, since: float = float("-inf")) -> list[Outcome]:
        """Every failed checkout (of any kind) that began at or after `since`."""
        return [o for o in self.outcomes if o.kind != "ok" and o.started >= since]

    def assert_no_errors_since(self, since: float) -> None:
        """Every checkout that began at or after `since` succeeded, and some did begin then
        (else the check would prove nothing: make the load run past `since`)."""
        began = [o for o in self.outcomes if o.started >= since]
        assert began, f"no checkout began after the given moment: {self.summary()}"
        failed = [o for o in began if o.kind != "ok"]
        assert not failed, f"{len(failed)} of {len(began)} failed:\n" + "\n".join(
            o.describe() for o in failed[:10]
        )

    def summary(self) -> str:
        counts = {kind: len(self.of(kind)) for kind in ("ok", "pool_error", "in_flight")}
        slowest = max((o.checkout for o in self.outcomes), default=0.0)
        return f"{counts}, slowest checkout {slowest:.3f}s"

    def assert_sound(
        self, *, pool_errors: bool = True, in_flight: bool = True, min_ok: int = 1
    ) -> None:
        """Nothing unexpected, nothing hung, no checkout past its deadline, some progress."""
        assert not self.hung, f"workers hung: {self.hung}"
        unexpected = self.of("unexpected")
        assert not unexpected, "unexpected errors:\n" + "\n".join(
            o.describe() for o in unexpected[:10]
        )
        late = [o for o in self.outcomes if o.checkout > self.timeout + HANG_SLACK]
        assert not late, "checkouts past their deadline:\n" + "\n".join(
            o.describe() for o in late[:10]
        )
        if not pool_errors:
            found = self.of("pool_error")
            assert not found, "pool errors:\n" + "\n".join(o.describe() for o in found[:10])
        if not in_flight:
            found = self.of("in_flight")
            assert not found, "query errors:\n" + "\n".join(o.describe() for o in found[:10])
        assert len(self.of("ok")) >= min_ok, f"too little progress: {self.summary()}"


class _LoadBase:
    def __init__(
        self,
        pool: Any,
        *,
        workers: int = 32,
        timeout: float = 2.0,
        query: str = "SELECT 1",
        max_checkouts: int = 20_000,
        timeouts: tuple[float, ...] = (),
        pause_after_error: float = 0.01,
    ) -> None:
        self.pool = pool
        self.workers = workers
        #: Each checkout's timeout: `timeout`, or one of `timeouts` at random.
        self.timeouts = timeouts or (timeout,)
        self.timeout = max(self.timeouts)
        self.query = query
        self.max_checkouts = max_checkouts
        #: A worker that failed waits this long before its next checkout, as a client would.
        self.pause_after_error = pause_after_error
        self.outcomes: list[Outcome] = []
        self.hung: list[str] = []
        self._begun = 0

    def _record(self, number: int, started: float, got: float, in_body: bool, error: Any) -> float:
        """Record one checkout; how long the worker should pause (-1: stop, the pool closed)."""
        ended = time.monotonic()
        checkout = (got if in_body else ended) - started
        kind = classify(in_body, error)
        self.outcomes.append(Outcome(number, started, checkout, ended - started, kind, error))
        if error is None:
            return 0.0
        return -1.0 if isinstance(error, PoolClosed) else self.pause_after_error

    def _claim(self) -> bool:
        """Count one more checkout, or False when the cap is reached."""
        if self._begun >= self.max_checkouts:
            return False
        self._begun += 1
        return True

    def count(self, kind: Kind = "ok", *, since: float = float("-inf")) -> int:
        """How many checkouts of this kind began at or after `since` (and have ended)."""
        return sum(1 for o in list(self.outcomes) if o.kind == kind and o.started >= since)

    def report(self) -> Report:
        return Report(self.timeout, list(self.outcomes), list(self.hung))

    def _stop_bound(self) -> float:
        return self.timeout + HANG_SLACK + STOP_GRACE


class AsyncLoad(_LoadBase):
    """`workers` asyncio tasks looping over checkouts of an `AsyncPool`."""

    pool: AsyncPool[Any]

    async def __aenter__(self) -> AsyncLoad:
        self._stop = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._worker(number), name=f"load-{number}")
            for number in range(self.workers)
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> Report:
        """Tell the workers to stop and wait for them (bounded); the report."""
        self._stop.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=self._stop_bound())
            for task in pending:
                self.hung.append(task.get_name())
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2.0)
            self._tasks = []
        return self.report()

    async def wait_for(self, n: int, kind: Kind = "ok", *, since: float = float("-inf")) -> None:
        """Wait until `n` checkouts of `kind` that began at or after `since` have ended."""
        deadline = time.monotonic() + PATIENCE
        while self.count(kind, since=since) < n:
            assert time.monotonic() < deadline, f"load stalled: {self.report().summary()}"
            assert any(not t.done() for t in self._tasks), "every worker has stopped"
            await asyncio.sleep(0.005)

    async def _worker(self, number: int) -> None:
        while not self._stop.is_set() and self._claim():
            pause = await self._one(number)
            if pause < 0:
                return
            await asyncio.sleep(pause)  # sleep(0) lets the others in when all is instant

    async def _one(self, number: int) -> float:
        started = time.monotonic()
        got = started
        in_body = False
        error: BaseException | None = None
        try:
            async with self.pool.connection(timeout=random.choice(self.timeouts)) as conn:
                got = time.monotonic()
                in_body = True
                await conn.execute(self.query)
        except Exception as exc:
            error = exc
        return self._record(number, started, got, in_body, error)


class Load(_LoadBase):
    """`workers` threads looping over checkouts of a `Pool`."""

    pool: Pool[Any]

    def __enter__(self) -> Load:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._worker, args=(n,), name=f"load-{n}", daemon=True)
            for n in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _claim(self) -> bool:
        with self._lock:
            return super()._claim()

    def stop(self) -> Report:
        """Tell the workers to stop and wait for them (bounded); the report."""
        self._stop.set()
        deadline = time.monotonic() + self._stop_bound()
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
            if thread.is_alive():
                self.hung.append(thread.name)  # a thread cannot be cancelled: reported
        self._threads = []
        return self.report()

    def wait_for(self, n: int, kind: Kind = "ok", *, since: float = float("-inf")) -> None:
        """Wait until `n` checkouts of `kind` that began at or after `since` have ended."""
        deadline = time.monotonic() + PATIENCE
        while self.count(kind, since=since) < n:
            assert time.monotonic() < deadline, f"load stalled: {self.report().summary()}"
            assert any(t.is_alive() for t in self._threads), "every worker has stopped"
            time.sleep(0.005)

    def _worker(self, number: int) -> None:
        while not self._stop.is_set() and self._claim():
            pause = self._one(number)
            if pause < 0:
                return
            if pause:
                time.sleep(pause)

    def _one(self, number: int) -> float:
        started = time.monotonic()
        got = started
        in_body = False
        error: BaseException | None = None
        try:
            with self.pool.connection(timeout=random.choice(self.timeouts)) as conn:
                got = time.monotonic()
                in_body = True
                conn.execute(self.query)
        except Exception as exc:
            error = exc
        return self._record(number, started, got, in_body, error)


# -- the side of the test that is not the pool ---------------------------------------------


class AsyncFaults:
    """What an asyncio fault test does around its pool."""

    @staticmethod
    async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking call (a server restart...) without stopping the event loop."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    @staticmethod
    async def sleep(seconds: float) -> None:
        """Let the load run for a while."""
        await asyncio.sleep(seconds)

    @staticmethod
    async def timed(
        fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any
    ) -> tuple[float, T | Exception]:
        """Seconds ``fn(*args, **kwargs)`` took, and its result or its exception."""
        started = time.monotonic()
        try:
            result: T | Exception = await fn(*args, **kwargs)
        except Exception as exc:
            result = exc
        return time.monotonic() - started, result

    @staticmethod
    async def wait_until(predicate: Callable[[], object], timeout: float = PATIENCE) -> None:
        """Poll a cheap `predicate` (the pool's state...) until true; fail after `timeout`."""
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"condition not met within {timeout} s"
            await asyncio.sleep(0.002)

    @staticmethod
    async def poll_server(predicate: Callable[[], object], timeout: float = PATIENCE) -> None:
        """Poll a `predicate` that queries the server (off the loop) until true."""
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(predicate):
            assert time.monotonic() < deadline, f"condition not met within {timeout} s"
            await asyncio.sleep(0.005)

    @staticmethod
    def background() -> set[Any]:
        """The background work alive now (asyncio tasks but the current one)."""
        return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}

    @staticmethod
    def spawn(fn: Callable[..., Awaitable[T]], *args: Any) -> asyncio.Task[T]:
        """Run ``fn(*args)`` concurrently; `join` it."""
        return asyncio.get_running_loop().create_task(_call(fn, *args))

    @staticmethod
    async def join(task: asyncio.Task[T], timeout: float = PATIENCE) -> T:
        """The result of a spawned call (its exception is raised); fails after `timeout`."""
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            task.cancel()
            raise AssertionError(f"task still running after {timeout} s")
        return task.result()


async def _call(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    return await fn(*args)


class _Thread(threading.Thread):
    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        super().__init__(daemon=True)
        self._fn = fn
        self._args = args
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._fn(*self._args)
        except BaseException as exc:
            self.error = exc


class Faults:
    """What a threaded fault test does around its pool."""

    @staticmethod
    def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking call (the load runs in other threads)."""
        return fn(*args, **kwargs)

    @staticmethod
    def sleep(seconds: float) -> None:
        """Let the load run for a while."""
        time.sleep(seconds)

    @staticmethod
    def timed(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[float, T | Exception]:
        """Seconds ``fn(*args, **kwargs)`` took, and its result or its exception."""
        started = time.monotonic()
        try:
            result: T | Exception = fn(*args, **kwargs)
        except Exception as exc:
            result = exc
        return time.monotonic() - started, result

    @staticmethod
    def wait_until(predicate: Callable[[], object], timeout: float = PATIENCE) -> None:
        """Poll a cheap `predicate` (the pool's state...) until true; fail after `timeout`."""
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"condition not met within {timeout} s"
            time.sleep(0.002)

    @staticmethod
    def poll_server(predicate: Callable[[], object], timeout: float = PATIENCE) -> None:
        """Poll a `predicate` that queries the server until true; fail after `timeout`."""
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"condition not met within {timeout} s"
            time.sleep(0.005)

    @staticmethod
    def background() -> set[Any]:
        """The background work alive now (threads but the current one)."""
        return {t for t in threading.enumerate() if t is not threading.current_thread()}

    @staticmethod
    def spawn(fn: Callable[..., T], *args: Any) -> _Thread:
        """Run ``fn(*args)`` in a thread; `join` it."""
        thread = _Thread(fn, *args)
        thread.start()
        return thread

    @staticmethod
    def join(thread: _Thread, timeout: float = PATIENCE) -> Any:
        """The result of a spawned call (its exception is raised); fails after `timeout`."""
        thread.join(timeout)
        if thread.is_alive():
            raise AssertionError(f"thread still running after {timeout} s")
        if thread.error is not None:
            raise thread.error
        return thread.result
