"""Run one function many times at once: asyncio tasks (`AsyncCrowd`) or threads (`Crowd`).

``tests/tx/test_tx_async.py`` uses `AsyncCrowd`; ``tools/gen_sync.py`` renames it to
`Crowd` in the threaded twin, so a stress test is written once and runs as tasks
against `AsyncPool` and as threads against `Pool`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class AsyncCrowd:
    """Concurrent asyncio tasks."""

    @staticmethod
    async def run(
        fn: Callable[[int], Coroutine[Any, Any, T]], n: int, timeout: float = 30.0
    ) -> list[T]:
        """``fn(0)`` ... ``fn(n - 1)`` as tasks; their results, or the first error.

        Fails the test when some are still running after `timeout` (they are cancelled).
        """
        tasks: list[asyncio.Task[T]] = [asyncio.create_task(fn(i)) for i in range(n)]
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        if pending:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=5.0)
            raise AssertionError(f"{len(pending)} of {n} tasks still running after {timeout} s")
        return [task.result() for task in tasks]


class Crowd:
    """Concurrent threads."""

    @staticmethod
    def run(fn: Callable[[int], T], n: int, timeout: float = 30.0) -> list[T]:
        """``fn(0)`` ... ``fn(n - 1)`` in threads; their results, or the first error.

        Fails the test when some are still running after `timeout` (daemon threads:
        they cannot keep the test process alive).
        """
        results: list[Any] = [None] * n
        errors: list[BaseException] = []

        def call(i: int) -> None:
            try:
                results[i] = fn(i)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=call, args=(i,), daemon=True) for i in range(n)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        alive = sum(thread.is_alive() for thread in threads)
        if alive:
            raise AssertionError(f"{alive} of {n} threads still running after {timeout} s")
        if errors:
            raise errors[0]
        return results
