"""Passwords never appear in logs, errors, reprs, stats or CLI output.

Each test gives a pool (or ``pgfleet check``) a password through one of the ways libpq
accepts one, captures everything a user could see (log records of every logger at DEBUG,
stdout and stderr, exceptions as ``traceback`` renders them with their causes, reprs and
strs, stats), and searches it for the password. The passwords are random, so a match
can only be a leak.
"""

from __future__ import annotations

import logging
import socket
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgfleet import AsyncPool, DatabaseUnavailable, Pool, PoolError
from pgfleet.cli import main as cli_main
from support.cluster import APP_DBNAME, HOST, PgCluster

ROLE = "keeper"
#: The role's real password.
SECRET = f"pw-{uuid.uuid4().hex}"
#: A password the server will refuse (it may be a real one somewhere else).
WRONG = f"wrong-{uuid.uuid4().hex}"

SOURCES = ["url", "key=value", "kwargs", "PGPASSWORD", "pgpass", "DATABASE_URL"]


@pytest.fixture(scope="module")
def cluster(pg_template: PgCluster) -> Iterator[PgCluster]:
    with PgCluster.from_template(pg_template) as running:
        running.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(ROLE), sql.Literal(SECRET)
            )
        )
        running.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(APP_DBNAME), sql.Identifier(ROLE)
            )
        )
        yield running


def closed_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Target:
    """How one test hands the password over: a conninfo (or None) and kwargs."""

    conninfo: str | None
    kwargs: dict[str, Any]

    def pool_args(self) -> dict[str, Any]:
        return {"kwargs": self.kwargs} if self.kwargs else {}

    def argv(self) -> list[str]:
        """``pgfleet check`` arguments (kwargs folded into the conninfo)."""
        if self.conninfo is None:
            return []
        return [make_conninfo(self.conninfo, **self.kwargs)]


def give_password(
    source: str, password: str, port: int, monkeypatch: pytest.MonkeyPatch, home: Path
) -> Target:
    """Hand `password` to libpq the way `source` says."""
    where: dict[str, Any] = {"host": HOST, "port": port, "user": ROLE, "dbname": APP_DBNAME}
    url = f"postgresql://{ROLE}:{password}@{HOST}:{port}/{APP_DBNAME}"
    if source == "url":
        return Target(url, {})
    if source == "key=value":
        return Target(make_conninfo("", **where, password=password), {})
    if source == "kwargs":
        return Target(make_conninfo("", **where), {"password": password})
    if source == "PGPASSWORD":
        monkeypatch.setenv("PGPASSWORD", password)
        return Target(make_conninfo("", **where), {})
    if source == "pgpass":
        pgpass = home / ".pgpass"  # HOME is a private directory (see conftest.py)
        pgpass.write_text(f"{HOST}:{port}:*:{ROLE}:{password}\n")
        pgpass.chmod(0o600)
        return Target(make_conninfo("", **where), {})
    if source == "DATABASE_URL":
        monkeypatch.setenv("DATABASE_URL", url)
        return Target(None, {})
    raise AssertionError(source)


class Seen:
    """Everything a user could have seen."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def add(self, *things: object) -> None:
        for thing in things:
            if isinstance(thing, BaseException):
                self.parts.append("".join(traceback.format_exception(thing)))
                self.parts.append(repr(thing))
                self.parts.append(repr(thing.args))
            else:
                self.parts.append(str(thing))
                self.parts.append(repr(thing))

    def add_logs(self, caplog: pytest.LogCaptureFixture) -> None:
        self.parts.append(caplog.text)
        for record in caplog.records:
            self.parts.append(record.getMessage())
            self.parts.append(repr(record.args))
            if record.exc_info and record.exc_info[1] is not None:
                self.add(record.exc_info[1])

    def assert_no(self, *secrets: str) -> None:
        text = "\n".join(self.parts)
        assert text, "nothing was captured"
        for secret in secrets:
            assert secret not in text, f"leaked: {text[max(text.find(secret) - 300, 0) :][:600]}"


def add_pool(seen: Seen, pool: Pool[Any] | AsyncPool[Any]) -> None:
    seen.add(pool, pool.manager, pool.settings, pool.stats(), pool.get_stats())
    seen.add(getattr(pool.manager, "target", ""))


@pytest.mark.parametrize("source", SOURCES)
def test_a_working_pool(
    source: str,
    cluster: PgCluster,
    monkeypatch: pytest.MonkeyPatch,
    isolated_libpq_env: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    target = give_password(source, SECRET, cluster.port, monkeypatch, isolated_libpq_env)
    seen = Seen()
    with Pool(target.conninfo, **target.pool_args(), min_size=2, timeout=5, name=None) as pool:
        with pool.connection() as conn:
            assert conn.execute("SELECT current_user").fetchone() == (ROLE,)
            seen.add(conn, conn.info.dsn)
        pool.drain()
        pool.check()
        add_pool(seen, pool)
    add_pool(seen, pool)
    seen.add_logs(caplog)
    seen.assert_no(SECRET)


@pytest.mark.parametrize("source", SOURCES)
async def test_a_pool_that_cannot_reach_the_server(
    source: str,
    monkeypatch: pytest.MonkeyPatch,
    isolated_libpq_env: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    target = give_password(source, SECRET, closed_port(), monkeypatch, isolated_libpq_env)
    seen = Seen()
    pool: AsyncPool[Any] = AsyncPool(
        target.conninfo, **target.pool_args(), min_size=1, timeout=0.2, reconnect_delay=0.01
    )
    with pytest.raises(psycopg.OperationalError) as waiting:
        await pool.open(wait=True, timeout=0.2)
    seen.add(waiting.value)
    with pytest.raises(psycopg.OperationalError) as checkout:
        await pool.getconn()
    seen.add(checkout.value)
    add_pool(seen, pool)
    await pool.close()
    seen.add_logs(caplog)
    seen.assert_no(SECRET)


@pytest.mark.parametrize("source", SOURCES)
def test_a_wrong_password(
    source: str,
    cluster: PgCluster,
    monkeypatch: pytest.MonkeyPatch,
    isolated_libpq_env: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    target = give_password(source, WRONG, cluster.port, monkeypatch, isolated_libpq_env)
    seen = Seen()
    with pytest.raises(PoolError) as caught, Pool(target.conninfo, **target.pool_args(), timeout=5):
        pass
    assert "password authentication failed" in str(caught.value)
    seen.add(caught.value)
    seen.add_logs(caplog)
    seen.assert_no(WRONG, SECRET)


def test_a_secret_in_the_error_text_is_redacted(
    cluster: PgCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """libpq does not echo passwords, but a password that is also, say, the database name
    would be in its message: the pool redacts what it knows to be secret."""
    caplog.set_level(logging.DEBUG)
    conninfo = cluster.conninfo(user=ROLE, password=SECRET, dbname=SECRET)
    seen = Seen()
    with pytest.raises(PoolError) as caught, Pool(conninfo, timeout=5):
        pass
    assert "***" in str(caught.value)
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)
    assert 'database "***" does not exist' in str(caught.value.__cause__)
    seen.add(caught.value)
    # A checkout that fails fast: the engine's message quotes the connection error.
    pool = Pool(conninfo, min_size=0, timeout=5)
    pool.open(wait=False)
    try:
        with pytest.raises(DatabaseUnavailable) as fast:
            pool.getconn()
    finally:
        pool.close()
    assert 'database "***" does not exist' in str(fast.value)
    seen.add(fast.value)
    seen.add_logs(caplog)
    seen.assert_no(SECRET)


@pytest.mark.parametrize("source", SOURCES)
def test_pgfleet_check(
    source: str,
    cluster: PgCluster,
    monkeypatch: pytest.MonkeyPatch,
    isolated_libpq_env: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    target = give_password(source, SECRET, cluster.port, monkeypatch, isolated_libpq_env)
    seen = Seen()
    # Human output for some sources, JSON for the others (the same facts either way).
    json = ["--json"] if SOURCES.index(source) % 2 else []
    assert cli_main(["check", *target.argv(), *json, "--timeout", "5"]) == 0
    captured = capsys.readouterr()
    assert ('"ok": true' if json else "is reachable") in captured.out
    seen.add(captured.out, captured.err)
    seen.add_logs(caplog)
    seen.assert_no(SECRET)


@pytest.mark.parametrize("source", ["url", "key=value", "DATABASE_URL"])
def test_pgfleet_check_failures(
    source: str,
    monkeypatch: pytest.MonkeyPatch,
    isolated_libpq_env: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = give_password(source, SECRET, closed_port(), monkeypatch, isolated_libpq_env)
    seen = Seen()
    assert cli_main(["check", *target.argv(), "--json", "--timeout", "0.3"]) == 1
    # Bad input that holds the password: a broken URL, a misplaced conninfo.
    broken = f"postgresql://{ROLE}:{SECRET}@[::1/app"
    assert cli_main(["check", broken]) == 2
    assert cli_main(["check", "--timeout", f"postgresql://{ROLE}:{SECRET}@h/app"]) == 2
    assert cli_main(["check", "host=a", f"password={SECRET}"]) == 2
    captured = capsys.readouterr()
    seen.add(captured.out, captured.err)
    seen.assert_no(SECRET)
