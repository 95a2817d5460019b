"""Smoke test of bench/failover_bench.py: one quick trial per pool, so the benchmark cannot rot.

It runs the benchmark as its README says (a subprocess, ``--quick``), then reads its raw
trials (``--json``). It asserts what makes the numbers mean something, not the numbers: every
pool wrote, saw the primary crash and recovered on the promoted standby; the stale primary
really took writes from a pool that cannot tell it from the new one (psycopg_pool); and the
report has both tables and the command that reproduces it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.requirements import unavailable

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "failover_bench.py"


@pytest.mark.pg
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_failover_bench_quick_run(pg_bin: Path, tmp_path: Path) -> None:
    missing = [
        m for m in ("asyncpg", "psycopg_pool", "sqlalchemy") if not importlib.util.find_spec(m)
    ]
    if missing:
        unavailable(f"needs the bench extra ({', '.join(missing)}): pip install -e '.[bench]'")
    raw = tmp_path / "trials.json"
    env = {**os.environ, "PG_BIN": str(pg_bin)}
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(raw)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out = done.stdout
    assert "Command: `" in out
    assert "--quick" in out
    assert "## crash + promote" in out
    assert "## stale primary" in out

    trials = json.loads(raw.read_text())["trials"]
    expected = {
        "psycopg_pool ConnectionPool",
        "asyncpg pool",
        "SQLAlchemy pre_ping",
        "pgfleet Pool",
        "pgfleet AsyncPool",
    }
    assert expected <= set(trials), sorted(trials)
    for name, runs in trials.items():
        assert len(runs) == 1, name
        [trial] = runs
        assert trial["writes"] > 0, (name, trial)
        # Every pool wrote on the promoted standby: the crash and promotion happened.
        assert trial["first_write"] is not None, (name, trial)
        # Writes went on after the terminate: the stale-primary phase measured something.
        assert trial["acks_after_terminate"] > 0, (name, trial)
        assert f"| {name} |" in out
    # The old primary came back writable and took writes: the scenario does what it says.
    assert trials["psycopg_pool ConnectionPool"][0]["stale_acks"] > 0
