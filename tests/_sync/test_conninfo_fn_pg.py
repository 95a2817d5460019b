# WARNING: this file is generated from tests/_async/test_conninfo_fn_pg.py by tools/gen_sync.py.
# Do not edit it: edit the source and run `python tools/gen_sync.py`.

"""``conninfo`` and ``kwargs`` given as functions (psycopg_pool 3.3: called at each connection
attempt, how teams rotate short-lived credentials), against a real server.

The async file is the source, the threaded one is generated (``python tools/gen_sync.py``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgfleet import Pool, PostgresManager
from support.cluster import PgCluster
from support.timing import well_under

TIMEOUT = 10.0


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def role(pg: PgCluster) -> Iterator[str]:
    """A login role of its own (its password changes in the tests), dropped afterwards."""
    name = unique("rot")
    pg.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(name), sql.Literal(unique("first"))
        )
    )
    yield name
    pg.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", name)
    pg.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def set_password(pg: PgCluster, role: str, password: str) -> None:
    pg.execute(
        sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
    )


def everything_said(error: BaseException | None, caplog: pytest.LogCaptureFixture) -> str:
    """The text of an error, its notes and its causes, and of every log record."""
    parts = [record.getMessage() for record in caplog.records]
    while error is not None:
        parts += [repr(error), str(error), *getattr(error, "__notes__", ())]
        error = error.__cause__ or error.__context__
    return "\n".join(parts)


def manager_of(pool: Pool[Any]) -> PostgresManager:
    manager = pool.manager
    assert isinstance(manager, PostgresManager)
    return manager


def backend_pid(pool: Pool[Any]) -> int:
    with pool.connection() as conn:
        cur = conn.execute("SELECT pg_backend_pid()")
        row = cur.fetchone()
        assert row is not None
        return int(row[0])


def test_a_conninfo_function_follows_a_rotating_password(pg: PgCluster, role: str) -> None:
    password = [unique("pw1")]
    set_password(pg, role, password[0])
    calls: list[str] = []

    def conninfo() -> str:
        calls.append(password[0])
        return make_conninfo(pg.conninfo(), user=role, password=password[0])

    pool = Pool(conninfo, min_size=1, max_size=1, timeout=TIMEOUT)
    assert manager_of(pool).conninfo is conninfo  # stored as given
    with pool:
        first = backend_pid(pool)
        old = password[0]
        password[0] = unique("pw2")
        set_password(pg, role, password[0])  # the open connection stays logged in
        assert backend_pid(pool) == first
        pool.drain()  # the next connection logs in anew: with the new password
        second = backend_pid(pool)
        assert second != first
        assert calls == [old, password[0]]
        # Both passwords stay secret in what the pool writes, and in its repr.
        assert manager_of(pool).redact(f"was {old}, is {password[0]}") == "was ***, is ***"
        for text in (repr(pool), repr(pool.manager), str(pool.stats())):
            assert old not in text
            assert password[0] not in text
        stats = pool.stats()
        assert stats.connect_errors == 0
        assert stats.connections_created == 2


def test_a_kwargs_function_is_called_at_each_attempt(pg: PgCluster, role: str) -> None:
    password = [unique("pw1")]
    set_password(pg, role, password[0])
    app = unique("app")

    def kwargs() -> dict[str, Any]:
        return {"user": role, "password": password[0], "application_name": app}

    with Pool(pg.conninfo(), kwargs=kwargs, min_size=1, timeout=TIMEOUT) as pool:
        assert manager_of(pool).kwargs is kwargs
        with pool.connection() as conn:
            cur = conn.execute("SELECT current_user, current_setting('application_name')")
            assert cur.fetchone() == (role, app)
        password[0] = unique("pw2")
        set_password(pg, role, password[0])
        pool.drain()
        with pool.connection() as conn:
            cur = conn.execute("SELECT current_user")
            assert cur.fetchone() == (role,)
        assert pool.stats().connections_created == 2


def test_a_failing_function_fails_the_checkout_clearly(
    pg: PgCluster, caplog: pytest.LogCaptureFixture
) -> None:
    secret = unique("leaked")
    broken = [True]

    def token_conninfo() -> str:
        if broken[0]:
            # A message quoting a connection string: its password must not get out.
            raise RuntimeError(
                f"token service down for {make_conninfo(pg.conninfo(), password=secret)}"
            )
        return pg.conninfo()

    caplog.set_level(logging.DEBUG, logger="pgfleet")
    with Pool(token_conninfo, min_size=0, max_size=2, timeout=TIMEOUT) as pool:
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as caught:
            backend_pid(pool)
        assert time.monotonic() - started < well_under(TIMEOUT)  # failed, not hung
        said = everything_said(caught.value, caplog)
        assert "token_conninfo" in said
        assert "token service down" in said
        assert secret not in said
        broken[0] = False  # the token service is back: so is the pool
        assert backend_pid(pool) > 0


def test_a_wrong_password_from_a_function_stays_secret(
    pg: PgCluster, role: str, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = unique("wrong")

    def conninfo() -> str:
        return make_conninfo(pg.conninfo(), user=role, password=wrong)

    caplog.set_level(logging.DEBUG, logger="pgfleet")
    with Pool(conninfo, min_size=0, max_size=1, timeout=TIMEOUT) as pool:
        with pytest.raises(psycopg.OperationalError) as caught:
            backend_pid(pool)
        said = everything_said(caught.value, caplog)
        assert "password authentication failed" in said
        assert wrong not in said
        assert manager_of(pool).redact(f"x {wrong} y") == "x *** y"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (42, "conninfo must be a str, got int"),
        ("sslmode=bogus", "sslmode='bogus' is not valid"),
    ],
)
def test_a_bad_value_from_a_function_is_refused_like_a_bad_string(value: Any, message: str) -> None:
    def conninfo() -> Any:
        return value

    with Pool(conninfo, min_size=0, max_size=1, timeout=TIMEOUT) as pool:
        with pytest.raises(psycopg.OperationalError) as caught:
            backend_pid(pool)
        cause = caught.value.__cause__
        assert cause is not None
        assert "conninfo()" in str(cause)
        assert message in str(cause)


def test_values_given_with_a_function_are_still_checked() -> None:
    def conninfo() -> str:
        return ""

    with pytest.raises(TypeError, match="kwargs must be a Mapping"):
        Pool(conninfo, kwargs=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sslmode"):
        Pool(conninfo, kwargs={"sslmode": "bogus"})
    pool = Pool(conninfo, kwargs={"application_name": "x"})
    assert "conninfo()" in repr(pool)
