"""`bench/instructions.py --queued` must really queue: its count stands for the path of the
oversubscribed throughput (issue #15), and means nothing if the checkouts it counts took
the uncontended one. Its two loops run here on real pools, and the pools' stats tell.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

import pgfleet

CYCLES = 200


def load_bench() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "bench" / "instructions.py"
    spec = importlib.util.spec_from_file_location("bench_instructions", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


bench = load_bench()


@pytest.mark.pg
async def test_queued_tasks_queue_for_every_checkout_but_the_first(pg_dsn: str) -> None:
    async with pgfleet.AsyncPool(pg_dsn, min_size=1, max_size=1) as pool:
        await bench.queued_async(pool.connection, CYCLES)
        stats = pool.stats()
    assert stats.checkouts == CYCLES
    assert stats.checkouts_waited >= CYCLES - bench.QUEUED_WORKERS


@pytest.mark.pg
def test_queued_threads_queue_for_most_checkouts(pg_dsn: str) -> None:
    with pgfleet.Pool(pg_dsn, min_size=1, max_size=1) as pool:
        bench.queued_sync(pool.connection, CYCLES)
        stats = pool.stats()
    assert stats.checkouts == CYCLES
    # Threads take turns as the interpreter lets them: a holder may take the connection
    # again before the other is scheduled, so not every checkout queues; most do.
    assert stats.checkouts_waited >= CYCLES // 2
