"""A reference point, not a pool to use: the least a first-come-first-served pool can do.

A lock, an idle stack and a queue of parked callers, with direct hand-over to the
oldest one. No health checks, no reset, no stats, no timeouts, no growth, no leak
tracking, no close. It shows how much of a pool's cost in these benchmarks is the
price of fairness in CPython (parking and waking threads, the GIL), which no
pure-Python pool that serves callers in order can avoid, and how much is features.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg


class FifoPool:
    """Threads: a lock, an idle stack, parked callers woken in arrival order."""

    def __init__(self, conns: list[Any]) -> None:
        self.idle = list(conns)
        self.lock = threading.Lock()
        self.parked: deque[_Parked] = deque()

    def connection(self) -> _Lend:
        return _Lend(self)


class _Parked:
    __slots__ = ("conn", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()  # released by the hand-over
        self.conn: Any = None


class _Lend:
    __slots__ = ("conn", "pool")

    def __init__(self, pool: FifoPool) -> None:
        self.pool = pool

    def __enter__(self) -> Any:
        pool = self.pool
        with pool.lock:
            if pool.idle and not pool.parked:
                self.conn = pool.idle.pop()
                return self.conn
            parked = _Parked()
            pool.parked.append(parked)
        parked.lock.acquire()
        self.conn = parked.conn
        return self.conn

    def __exit__(self, *exc: object) -> None:
        pool = self.pool
        with pool.lock:
            if pool.parked:
                parked = pool.parked.popleft()
                parked.conn = self.conn
                parked.lock.release()
            else:
                pool.idle.append(self.conn)


class AsyncFifoPool:
    """asyncio: an idle stack, queued futures completed in arrival order."""

    def __init__(self, conns: list[Any]) -> None:
        self.idle = list(conns)
        self.queued: deque[asyncio.Future[Any]] = deque()

    def connection(self) -> _AsyncLend:
        return _AsyncLend(self)


class _AsyncLend:
    __slots__ = ("conn", "pool")

    def __init__(self, pool: AsyncFifoPool) -> None:
        self.pool = pool

    async def __aenter__(self) -> Any:
        pool = self.pool
        if pool.idle and not pool.queued:
            self.conn = pool.idle.pop()
        else:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            pool.queued.append(future)
            self.conn = await future
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        pool = self.pool
        if pool.queued:
            pool.queued.popleft().set_result(self.conn)
        else:
            pool.idle.append(self.conn)


@contextmanager
def open_fifo_pool(dsn: str, size: int) -> Iterator[Any]:
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(size)]
    try:
        yield FifoPool(conns).connection
    finally:
        for conn in conns:
            conn.close()


@asynccontextmanager
async def open_fifo_pool_async(dsn: str, size: int) -> AsyncIterator[Any]:
    conns = [await psycopg.AsyncConnection.connect(dsn, autocommit=True) for _ in range(size)]
    try:
        yield AsyncFifoPool(conns).connection
    finally:
        for conn in conns:
            await conn.close()
