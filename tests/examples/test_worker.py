"""The worker example (examples/worker/) runs for real: every job exactly once, failures
recorded, a clean stop on SIGINT. Each test gets a database of its own."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from psycopg import sql

from support.cluster import APP_USER, PgCluster

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "worker" / "worker.py"
WORKER = [sys.executable, "-W", "error", str(EXAMPLE)]


def _load_worker() -> ModuleType:
    name = "pgfleet_example_worker"
    spec = importlib.util.spec_from_file_location(name, EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


worker = _load_worker()


@pytest.fixture
def dbname(pg: PgCluster) -> Iterator[str]:
    name = f"worker_{uuid.uuid4().hex[:8]}"
    pg.execute(
        sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(name), sql.Identifier(APP_USER)
        )
    )
    try:
        yield name
    finally:
        pg.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def expected_result(kind: str, payload: Any) -> dict[str, Any]:
    if kind == "sha256":
        return {"sha256": hashlib.sha256(payload["text"].encode()).hexdigest()}
    assert kind == "sum"
    return {"sum": sum(payload["numbers"])}


def check_table(pg: PgCluster, dbname: str) -> dict[str, int]:
    """Every job is consistent with its effects; return the count of jobs per status."""
    rows = pg.execute(
        "SELECT j.id, j.kind, j.payload, j.status, j.attempts, j.result, j.error, j.done_at,"
        " e.value FROM jobs j LEFT JOIN job_effects e ON e.job_id = j.id ORDER BY j.id",
        dbname=dbname,
    )
    counts: dict[str, int] = {}
    for job_id, kind, payload, status, attempts, result, error, done_at, effect in rows:
        counts[status] = counts.get(status, 0) + 1
        if status == "done":
            want = expected_result(kind, payload)
            assert result == want, job_id
            assert effect == str(next(iter(want.values()))), job_id
            assert (attempts, error) == (1, None), job_id
            assert done_at is not None
        elif status == "failed":
            assert kind == "fail", job_id
            assert attempts == 1, job_id
            assert error.startswith("RuntimeError: this job always fails: demo failure"), error
            assert (result, effect) == (None, None), job_id
        else:
            assert status == "queued", (job_id, status)
            assert (attempts, result, effect, done_at) == (0, None, None, None), job_id
    # One effect per job at most (job_effects.job_id is its primary key), and only done
    # jobs have one.
    [(effects,)] = pg.execute("SELECT count(*) FROM job_effects", dbname=dbname)
    assert effects == counts.get("done", 0)
    return counts


def summary_number(stdout: str, label: str) -> int:
    match = re.search(rf"^{label}: (\d+)$", stdout, re.MULTILINE)
    assert match is not None, stdout
    return int(match.group(1))


def test_drains_every_job_exactly_once_with_a_small_pool(pg: PgCluster, dbname: str) -> None:
    result = subprocess.run(
        [
            *WORKER,
            *shlex.split(
                "--enqueue 200 --enqueue-failing 5 --drain --concurrency 16 --pool-size 4"
            ),
        ],
        env={**os.environ, "DATABASE_URL": pg.url(dbname=dbname)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "enqueued 205 jobs" in out
    assert "consuming with 16 tasks over a pool of 4" in out
    assert summary_number(out, "jobs done") == 200
    assert summary_number(out, "jobs failed") == 5
    per_task = re.search(r"^per task: (.*)$", out, re.MULTILINE)
    assert per_task is not None
    counts = [int(item.split("=")[1]) for item in per_task.group(1).split(", ")]
    assert len(counts) == 16
    assert sum(counts) == 200
    pool = re.search(r"^pool: checkouts=(\d+) waited=(\d+) max_wait=[\d.]+ms", out, re.MULTILINE)
    assert pool is not None, out
    # Sixteen tasks, four connections: tasks queued for one.
    assert int(pool.group(2)) > 0
    assert check_table(pg, dbname) == {"done": 200, "failed": 5}


def test_sigint_stops_claiming_and_finishes_the_jobs_in_flight(pg: PgCluster, dbname: str) -> None:
    proc = subprocess.Popen(
        [
            *WORKER,
            *shlex.split("--enqueue 200 --concurrency 4 --pool-size 2 --job-delay 0.05 --verbose"),
        ],
        env={**os.environ, "DATABASE_URL": pg.url(dbname=dbname)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seen: list[str] = []
        while len([line for line in seen if line.endswith(" done")]) < 10:
            line = proc.stdout.readline()
            assert line, "the worker exited early"
            seen.append(line.rstrip("\n"))
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    out = "\n".join(seen) + "\n" + rest
    assert "stopping: finishing the jobs in flight" in out
    done_lines = len(re.findall(r"^task \d+: job \d+ done$", out, re.MULTILINE))
    assert summary_number(out, "jobs done") == done_lines
    counts = check_table(pg, dbname)
    assert counts["done"] == done_lines
    assert counts["queued"] == 200 - done_lines > 0
    assert set(counts) == {"done", "queued"}


def test_connections_killed_mid_job_lose_nothing_and_apply_nothing_twice(
    pg: PgCluster, dbname: str
) -> None:
    # Jobs sleep inside their transactions, so the kill finds them half-done: each one is
    # rolled back with its session and run_transaction replays it on a new connection.
    proc = subprocess.Popen(
        [
            *WORKER,
            *shlex.split("--enqueue 100 --drain --concurrency 8 --pool-size 4"),
            *shlex.split("--job-delay 0.05 --verbose"),
        ],
        env={**os.environ, "DATABASE_URL": pg.url(dbname=dbname)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        done = 0
        while done < 10:
            line = proc.stdout.readline()
            assert line, "the worker exited early"
            done += line.endswith(" done\n")
        assert pg.terminate_backends(dbname=dbname) > 0
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    pool = re.search(r" retries=(\d+)$", out, re.MULTILINE)
    assert pool is not None, out
    assert int(pool.group(1)) > 0
    # A kill while COMMIT was in flight is reported, never replayed: such a job is done
    # (and counted by no task) or still queued (and claimed again): either way, once.
    assert check_table(pg, dbname) == {"done": 100}


async def test_run_in_process(pg: PgCluster, dbname: str) -> None:
    config = worker.Config(
        conninfo=pg.url(dbname=dbname),
        enqueue=30,
        enqueue_failing=2,
        drain=True,
        concurrency=6,
        pool_size=2,
    )
    summary = await worker.run(config)
    assert (summary.done, summary.failed, summary.in_doubt) == (30, 2, 0)
    assert sorted(summary.per_task) == list(range(6))
    assert sum(summary.per_task.values()) == 30
    assert summary.stats is not None
    assert summary.stats.checkouts >= 32 + 6  # a transaction per job, one per empty claim
    assert summary.stats.max_size == 2
    assert check_table(pg, dbname) == {"done": 30, "failed": 2}


async def test_main_in_process_reports(
    pg: PgCluster, dbname: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--dsn", pg.url(dbname=dbname), "--enqueue", "10", "--drain", "--concurrency", "3"]
    summary = await worker.main(argv)
    out = capsys.readouterr().out
    assert summary.done == 10
    assert "jobs done: 10\njobs failed: 0\n" in out
    assert re.search(r"^per task: 0=\d+, 1=\d+, 2=\d+$", out, re.MULTILINE)
    # A second run finds the queue empty: nothing is done twice.
    again = await worker.main(["--dsn", pg.url(dbname=dbname), "--drain"])
    assert (again.done, again.failed) == (0, 0)
    assert check_table(pg, dbname) == {"done": 10}
