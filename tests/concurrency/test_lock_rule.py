"""The lock rule: a shell calls the engine under its lock and acts outside it.

Carrying out an action (closing a connection, waking a caller, starting a worker, logging)
while the engine lock is held would, in the threaded pool, start threads and do I/O under
the lock, and re-enter the lock (it is not reentrant) when a woken caller hands its
connection on. These tests swap each pool's lock for one that knows its holder and fail on
any action taken, manager call made or log record emitted while the holder is the caller.

Hand-written per flavour: the asyncio cases are cancellations, which threads do not have.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pgfleet import AsyncPool, Pool, PoolTimeout
from support.flavours import (
    AsyncFakeManager,
    AsyncFlavour,
    FakeConn,
    FakeManager,
    Flavour,
)

#: The shell methods every action goes through, and the manager's doors.
SHELL_METHODS = ("_run", "_run_nowait", "_wake", "_dispatch_background", "_hand_on")
MANAGER_METHODS = ("connect", "check", "commit", "reset", "close", "is_broken")


class WatchedLock:
    """A non-reentrant lock that knows which thread holds it; re-entry is a violation."""

    def __init__(self, violations: list[str]) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._violations = violations

    def held_here(self) -> bool:
        return self._owner == threading.get_ident()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self.held_here():
            self._violations.append("the engine lock was taken again by its holder")
            raise AssertionError("re-entered the engine lock")
        acquired = self._lock.acquire(blocking, timeout)
        if acquired:
            self._owner = threading.get_ident()
        return acquired

    def release(self) -> None:
        self._owner = None
        self._lock.release()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class _LogWatch(logging.Handler):
    def __init__(self, lock: WatchedLock, violations: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self._watched = lock
        self._violations = violations

    def emit(self, record: logging.LogRecord) -> None:
        if self._watched.held_here():
            self._violations.append(f"logged under the lock: {record.getMessage()!r}")


def watch(pool: Any) -> list[str]:
    """Swap `pool`'s lock for a `WatchedLock`; return the list its violations go to."""
    violations: list[str] = []
    lock = WatchedLock(violations)
    pool._lock = lock

    def guarded(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            if lock.held_here():
                violations.append(f"{name} called under the engine lock")
            return fn(*args, **kwargs)

        return call

    for name in SHELL_METHODS:
        setattr(pool, name, guarded(f"pool.{name}", getattr(pool, name)))
    for name in MANAGER_METHODS:
        setattr(pool.manager, name, guarded(f"manager.{name}", getattr(pool.manager, name)))
    handler = _LogWatch(lock, violations)
    logging.getLogger("pgfleet").addHandler(handler)
    _handlers.append(handler)
    return violations


_handlers: list[logging.Handler] = []


@pytest.fixture(autouse=True)
def _remove_log_watches() -> Iterator[None]:
    yield
    while _handlers:
        logging.getLogger("pgfleet").removeHandler(_handlers.pop())


# -- asyncio --------------------------------------------------------------------------


def async_pool(manager: AsyncFakeManager, **kwargs: Any) -> AsyncPool[FakeConn]:
    kwargs.setdefault("min_size", 1)
    kwargs.setdefault("max_size", 1)
    kwargs.setdefault("check_after_idle", None)
    return AsyncPool(manager=manager, **kwargs)


async def test_waiter_cancelled_as_it_is_served_acts_outside_the_lock() -> None:
    pool = async_pool(AsyncFakeManager())
    violations = watch(pool)
    async with pool:
        conn = await pool.getconn()
        waiter = asyncio.create_task(pool.getconn(timeout=10.0))
        await AsyncFlavour.wait_until(lambda: pool.stats().waiting == 1)
        await pool.putconn(conn)  # served...
        waiter.cancel()  # ...and cancelled before it runs again
        try:
            await pool.putconn(await waiter)
        except asyncio.CancelledError:
            pass
        await AsyncFlavour.wait_until(lambda: pool.stats().idle == 1)
    assert violations == []


async def test_cancelled_while_closing_expired_acts_outside_the_lock() -> None:
    manager = AsyncFakeManager()
    pool = async_pool(manager, min_size=2, max_size=2)
    violations = watch(pool)
    async with pool:
        pool._core.idle[-1].expires_at = 0.0  # the top idle connection is past its lifetime
        gate = asyncio.Event()
        closing = asyncio.Event()
        close = pool.manager.close

        async def slow_close(conn: FakeConn) -> None:
            closing.set()
            await gate.wait()
            await close(conn)

        pool.manager.close = slow_close  # type: ignore[method-assign]
        checkout = asyncio.create_task(pool.getconn(timeout=10.0))
        await asyncio.wait_for(closing.wait(), 5.0)  # lent the other one, closing this one
        checkout.cancel()
        with pytest.raises(asyncio.CancelledError):
            await checkout
        gate.set()
        await AsyncFlavour.wait_until(lambda: pool.stats().in_use == 0)
    assert violations == []


async def test_async_workload_acts_outside_the_lock() -> None:
    pool = async_pool(AsyncFakeManager(), min_size=1, max_size=3, max_waiting=0)
    violations = watch(pool)
    async with pool:

        async def worker() -> None:
            for _ in range(20):
                try:
                    async with pool.connection(timeout=0.05):
                        await asyncio.sleep(0)
                except PoolTimeout:
                    pass

        await asyncio.gather(*(worker() for _ in range(8)))
        await pool.resize(1, 2)
        await pool.drain()
        await pool.check()
    assert violations == []


# -- threads --------------------------------------------------------------------------


def test_thread_workload_acts_outside_the_lock() -> None:
    pool = Pool(manager=FakeManager(), min_size=1, max_size=3, check_after_idle=None)
    violations = watch(pool)
    with pool:

        def worker() -> None:
            for _ in range(50):
                try:
                    with pool.connection(timeout=0.05):
                        pass
                except PoolTimeout:
                    pass

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        pool.resize(1, 2)
        pool.drain()
        pool.check()
        Flavour.wait_until(lambda: pool.stats().connecting == 0)
    assert violations == []
