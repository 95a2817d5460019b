"""The few test helpers that differ between the asyncio and the threaded pool tests.

``tests/_async/*.py`` use the ``Async*`` names; ``tools/gen_sync.py`` renames them to the
plain names when it writes ``tests/_sync/*.py`` (``AsyncFakeManager`` -> ``FakeManager``,
``AsyncTask`` -> ``Task``, ``AsyncFlavour`` -> ``Flavour``). Each pair has the same interface,
one with coroutines, the other with blocking calls.

`AsyncFakeManager` / `FakeManager` are scripted managers over `FakeConn` objects: no sockets,
every decision (fail the next connects, fail a check, block the connects...) is a plain
attribute the test sets, and every call is counted so that a test can wait for it. They
subclass `pgfleet.AsyncManager` / `pgfleet.Manager` and keep its optional hooks' defaults
(the stress fakes in ``tests/concurrency/fakes.py`` are duck-typed: both ways stay tested).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from pgfleet import AsyncManager, Manager

T = TypeVar("T")

#: How long a helper waits for something that should happen "at once" before failing.
PATIENCE = 5.0


class FakeError(Exception):
    """What the scripted managers raise when told to fail."""


class FakeConn:
    """A pretend connection: flags the test flips, and what the manager did to it."""

    def __init__(self, number: int) -> None:
        self.number = number
        #: `is_broken` reports it (like a connection whose socket died).
        self.broken = False
        #: Its next `check` raises.
        self.check_fails = False
        #: Its next `reset` raises.
        self.reset_fails = False
        #: Its next `commit` raises.
        self.commit_fails = False
        self.closed = False
        self.checks = 0
        self.commits = 0
        self.resets = 0

    def __repr__(self) -> str:
        return f"<FakeConn #{self.number}{' closed' if self.closed else ''}>"


class _Script:
    """The state shared by both fake managers: knobs and counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: Raised by every connect attempt while set (the same instance each time).
        self.connect_error: BaseException | None = None
        #: How many of the next checks fail (whatever the connection).
        self.fail_checks = 0
        #: Cleared: connect attempts block until it is set again (or their timeout).
        self.connect_gate = threading.Event()
        self.connect_gate.set()
        self.connections: list[FakeConn] = []
        self.connect_attempts = 0
        self.connect_failures = 0
        self.checks = 0
        self.commits = 0
        self.resets = 0
        self.closes = 0

    @property
    def connects(self) -> int:
        """Successful connects."""
        return len(self.connections)

    def _connect_result(self) -> FakeConn:
        with self._lock:
            error = self.connect_error
            if error is not None:
                self.connect_failures += 1
                raise error
            conn = FakeConn(len(self.connections) + 1)
            self.connections.append(conn)
            return conn

    def _begin_connect(self) -> None:
        with self._lock:
            self.connect_attempts += 1

    def _check(self, conn: FakeConn) -> None:
        with self._lock:
            self.checks += 1
            conn.checks += 1
            fail = conn.check_fails or self.fail_checks > 0
            if self.fail_checks > 0:
                self.fail_checks -= 1
        if fail:
            raise FakeError(f"{conn!r} failed its check")

    def _commit(self, conn: FakeConn) -> None:
        with self._lock:
            self.commits += 1
            conn.commits += 1
        if conn.commit_fails:
            raise FakeError(f"{conn!r} failed its commit")

    def _reset(self, conn: FakeConn) -> None:
        with self._lock:
            self.resets += 1
            conn.resets += 1
        # Like PostgresManager.reset: a connection that came back unusable raises, since
        # the pool relies on reset (not on is_broken) to judge a returned connection.
        if self.is_broken(conn):
            raise FakeError(f"{conn!r} came back broken")
        if conn.reset_fails:
            raise FakeError(f"{conn!r} failed its reset")

    def _close(self, conn: FakeConn) -> None:
        with self._lock:
            self.closes += 1
            conn.closed = True

    def is_broken(self, conn: FakeConn) -> bool:
        """Cheap: the connection's own flags."""
        return conn.broken or conn.closed


class AsyncFakeManager(_Script, AsyncManager[FakeConn]):
    """A scripted `AsyncManager` of `FakeConn` objects."""

    async def connect(self, timeout: float) -> FakeConn:
        self._begin_connect()
        deadline = time.monotonic() + timeout
        while not self.connect_gate.is_set():
            if time.monotonic() >= deadline:
                raise TimeoutError("fake connect timed out")
            await asyncio.sleep(0.002)
        return self._connect_result()

    async def check(self, conn: FakeConn, timeout: float) -> None:
        self._check(conn)

    async def commit(self, conn: FakeConn) -> None:
        self._commit(conn)

    async def reset(self, conn: FakeConn, timeout: float) -> None:
        self._reset(conn)

    async def close(self, conn: FakeConn) -> None:
        self._close(conn)


class FakeManager(_Script, Manager[FakeConn]):
    """A scripted `Manager` of `FakeConn` objects."""

    def connect(self, timeout: float) -> FakeConn:
        self._begin_connect()
        if not self.connect_gate.wait(timeout):
            raise TimeoutError("fake connect timed out")
        return self._connect_result()

    def check(self, conn: FakeConn, timeout: float) -> None:
        self._check(conn)

    def commit(self, conn: FakeConn) -> None:
        self._commit(conn)

    def reset(self, conn: FakeConn, timeout: float) -> None:
        self._reset(conn)

    def close(self, conn: FakeConn) -> None:
        self._close(conn)


# -- running things concurrently -----------------------------------------------------------


class AsyncTask(Generic[T]):
    """Run ``fn(*args)`` concurrently, as an asyncio task; `join` returns or raises its result."""

    def __init__(self, fn: Callable[..., Awaitable[T]], *args: Any) -> None:
        self._task: asyncio.Task[T] = asyncio.get_running_loop().create_task(_call(fn, *args))

    def done(self) -> bool:
        return self._task.done()

    def cancel(self) -> None:
        self._task.cancel()

    async def join(self, timeout: float = PATIENCE) -> T:
        """The result of ``fn(*args)`` (its exception is raised); fails the test on timeout."""
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        if not done:
            self._task.cancel()
            raise AssertionError(f"task still running after {timeout} s")
        return self._task.result()


async def _call(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    return await fn(*args)


class Task(Generic[T]):
    """Run ``fn(*args)`` concurrently, in a thread; `join` returns or raises its result."""

    def __init__(self, fn: Callable[..., T], *args: Any) -> None:
        self._result: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, *args), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., T], *args: Any) -> None:
        try:
            self._result = fn(*args)
        except BaseException as exc:
            self._error = exc

    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: float = PATIENCE) -> T:
        """The result of ``fn(*args)`` (its exception is raised); fails the test on timeout."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"thread still running after {timeout} s")
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]


# -- waiting -------------------------------------------------------------------------------


class AsyncFlavour:
    """Waiting helpers for asyncio tests."""

    @staticmethod
    async def wait_until(predicate: Callable[[], object], timeout: float = PATIENCE) -> None:
        """Poll `predicate` (yielding to the loop) until true; fail the test after `timeout`."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout} s")
            await asyncio.sleep(0.001)

    @staticmethod
    async def blocking(fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking call (a server's crash, a promotion) off the event loop."""
        return await asyncio.to_thread(fn, *args)


class Flavour:
    """Waiting helpers for threaded tests."""

    @staticmethod
    def wait_until(predicate: Callable[[], object], timeout: float = PATIENCE) -> None:
        """Poll `predicate` until true; fail the test after `timeout`."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout} s")
            time.sleep(0.001)

    @staticmethod
    def blocking(fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking call (a server's crash, a promotion): as is, in threads."""
        return fn(*args)
