"""``pgfleet check``: end to end in a subprocess (live, stopped, late and bad input), and
in-process for the finer points (authentication methods, hints, the status line)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgfleet._async.manager import AsyncPostgresManager
from pgfleet.cli import check as check_module
from pgfleet.cli import main as cli_main
from support.cluster import HOST, SUPERUSER, SUPERUSER_PASSWORD, ClusterFactory, PgCluster
from support.libpq_env import isolate_libpq_environment
from support.timing import deadline_bound
from support.tls import TlsServer, tls_server


@pytest.fixture(autouse=True)
def isolated_libpq_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No PG* variables, no DATABASE_URL; HOME is an empty directory (no ~/.postgresql)."""
    return isolate_libpq_environment(monkeypatch, tmp_path)


HBA = (
    "hostssl all app 127.0.0.1/32 cert",
    "hostssl all all 127.0.0.1/32 scram-sha-256",
    "host all all 127.0.0.1/32 scram-sha-256",
)


@pytest.fixture(scope="module")
def server(pg_template: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    with tls_server(pg_template, tmp_path_factory.mktemp("tls-check")) as running:
        running.configure(cert="valid", hba=HBA, ssl_ca_file=running.files["client_ca"][0])
        yield running


def app(server: TlsServer, **params: Any) -> str:
    """TCP conninfo for ``app``, trusting our CA, verify-full by default.

    Only sslrootcert is named: the autouse fixture keeps ~/.postgresql out of the way, and
    `pgfleet check` reports TLS files that are named but missing.
    """
    params = {"sslmode": "verify-full", "sslrootcert": str(server.lab.ca_file), **params}
    return server.cluster.conninfo(**params)


def superuser(server: TlsServer, **params: Any) -> str:
    """TCP conninfo for the superuser (SCRAM), verify-full by default."""
    params = {"user": SUPERUSER, "password": SUPERUSER_PASSWORD, "dbname": "postgres", **params}
    return app(server, **params)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m pgfleet`` in a subprocess, with the test's (isolated) environment."""
    return subprocess.run(
        [sys.executable, "-m", "pgfleet", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env if env is not None else dict(os.environ),
        check=False,
    )


# -- end to end ----------------------------------------------------------------------------


def test_a_live_server_json(server: TlsServer) -> None:
    result = run_cli("check", superuser(server), "--json", "--timeout", "10")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["exit_code"] == 0
    assert report["target"] == f"{SUPERUSER}@{HOST}:{server.cluster.port}/postgres"
    assert report["attempts"] == 1
    assert report["server_version"].startswith(str(report["server_version_num"] // 10000))
    assert report["auth_method"] == "scram-sha-256"
    assert report["tls"]["encrypted"] is True
    assert report["tls"]["identity_verified"] is True
    assert report["tls"]["sslmode"] == "verify-full"
    assert report["tls"]["protocol"].startswith("TLSv1.")
    assert report["connect_ms"] > 0
    assert report["pooled_query_ms"] > 0
    assert report["warnings"] == []
    assert SUPERUSER_PASSWORD not in result.stdout + result.stderr


def test_the_console_script_prints_a_report(server: TlsServer) -> None:
    script = shutil.which("pgfleet", path=str(Path(sys.executable).parent))
    assert script is not None, "the pgfleet console script is not installed"
    result = subprocess.run(
        [script, "check", superuser(server, sslmode="require"), "--timeout", "10"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "is reachable" in lines[0]
    labels = [line.split()[0] for line in lines[1:]]
    assert labels[:5] == ["server", "auth", "tls", "connect", "pooled"]
    assert "sslmode=require" in result.stdout


def test_a_stopped_server_exits_1_within_the_timeout() -> None:
    started = time.monotonic()
    result = run_cli(
        "check", f"host={HOST} port={closed_port()} user=u", "--json", "--timeout", "1"
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["attempts"] >= 2  # it waited, with back-off
    assert 0.9 <= report["waited_s"] < deadline_bound(1.0)
    assert "Connection refused" in report["error"]
    assert "attempt 1 failed" in result.stderr  # the status line (one per attempt off a TTY)
    assert "not reachable within 1 s" in result.stderr
    assert elapsed < 15  # interpreter start-up included, on a loaded machine


def test_it_waits_for_a_server_that_comes_up(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster()
    cluster.stop()
    with subprocess.Popen(
        [sys.executable, "-m", "pgfleet", "check", cluster.conninfo(), "--json", "--timeout", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stderr is not None
        first = process.stderr.readline()  # blocks until the first attempt has failed
        assert "attempt 1 failed" in first, first
        cluster.start()
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    report = json.loads(out)
    assert report["ok"] is True
    assert report["attempts"] >= 2


def test_bad_input_exits_2_with_the_reason() -> None:
    result = run_cli("check", "host=db.test sslmode=verify-everything")
    assert result.returncode == 2
    assert "sslmode='verify-everything' is not valid" in result.stderr
    assert "expected one of disable, allow" in result.stderr


# -- in process ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["not a conninfo"], "invalid conninfo"),
        (["postgresql://u@[::1/db"], "invalid conninfo"),
        (["host=a", "host=b"], "expected at most one CONNINFO"),
        (["host=a", "--timeout", "-1"], "must be > 0"),
        (["host=a", "--timeout", "soon"], "expected a number of seconds: 'soon'"),
        (["host=a", "--json"], None),  # the reason goes to stderr, the JSON to stdout
    ],
)
def test_bad_input_in_process(
    argv: list[str], reason: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    if reason is None:
        argv = ["host=a channel_binding=always", "--json"]
        reason = "channel_binding='always' is not valid"
    assert cli_main(["check", *argv]) == 2
    captured = capsys.readouterr()
    assert reason in captured.err
    if "--json" in argv:
        assert json.loads(captured.out) == {
            "ok": False,
            "exit_code": 2,
            "error": captured.err.split("error: ", 1)[1].strip(),
        }


def test_errors_waiting_cannot_heal_stop_at_once(
    server: TlsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    conninfo = superuser(server, host="elsewhere.test", hostaddr="127.0.0.1")
    assert cli_main(["check", conninfo, "--timeout", "30"]) == 1
    err = capsys.readouterr().err
    assert "waiting will not help (1 attempt(s)" in err
    assert "does not match host name" in err
    assert "hint: sslmode=verify-full checks that the server's certificate names" in err


def test_retry_all_errors_keeps_waiting(
    server: TlsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    conninfo = superuser(server, password="wrong")
    argv = ["check", conninfo, "--timeout", "0.5", "--retry-all-errors", "--json"]
    assert cli_main(argv) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["attempts"] >= 2
    assert "password authentication failed" in report["error"]


@pytest.mark.parametrize(
    ("hba_method", "client_cert", "expected"),
    [
        ("scram-sha-256", False, "scram-sha-256"),
        ("password", False, "password (cleartext"),
        ("cert", True, "cert (or trust)"),
        ("trust", False, "trust"),
    ],
)
def test_the_authentication_method(
    server: TlsServer,
    capsys: pytest.CaptureFixture[str],
    hba_method: str,
    client_cert: bool,
    expected: str,
) -> None:
    hba = (f"hostssl all app 127.0.0.1/32 {hba_method}",)
    server.configure(cert="valid", hba=hba, ssl_ca_file=server.files["client_ca"][0])
    try:
        params: dict[str, Any] = {}
        if client_cert:
            cert, key = server.lab.client_certs["app"]
            params.update(sslcert=str(cert), sslkey=str(key), password=None)
        assert cli_main(["check", app(server, **params), "--json", "--timeout", "5"]) == 0
        report = json.loads(capsys.readouterr().out)
    finally:
        server.configure(cert="valid", hba=HBA, ssl_ca_file=server.files["client_ca"][0])
    assert report["auth_method"].startswith(expected), report["auth_method"]
    assert report["auth_method_source"] in {"system_user", "libpq require_auth probe"}


def test_missing_tls_files_are_reported(
    server: TlsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # libpq skips a missing root file under sslmode=require: verification silently off.
    conninfo = superuser(server, sslmode="require", sslrootcert="/nonexistent/root.crt")
    assert cli_main(["check", conninfo, "--json", "--timeout", "5"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["tls"]["ca_verified"] is False
    assert any(
        "sslrootcert='/nonexistent/root.crt' does not exist" in w for w in report["warnings"]
    )
    assert "warning: sslrootcert=" in captured.err


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_status_line_is_redrawn_in_place_on_a_terminal() -> None:
    out, err = io.StringIO(), Terminal()
    report = check_module.Report(json_output=False, quiet=False, out=out, err=err)
    manager = AsyncPostgresManager(f"host={HOST} port={closed_port()} user=u password=hunter2")
    checker = check_module.Checker(manager, 0.5, False, report)
    assert asyncio.run(checker.run()) == 1
    text = err.getvalue()
    assert "\r\x1b[K" in text  # redrawn, not scrolled
    assert "next try in" in text
    assert "not reachable within 0.5 s" in text
    assert "hunter2" not in text
