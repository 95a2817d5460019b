"""The psycopg_pool compatibility suite (issue #16): every test runs against psycopg_pool
itself and against pgfleet, through the `impl` fixture.

psycopg_pool is the reference: its column must be green; a test it fails is a wrong test.
Choose the column with ``--compat-impl`` (when running ``pytest tests/compat``) or with the
``PGFLEET_COMPAT_IMPL`` environment variable: ``psycopg_pool``, ``pgfleet`` or ``both`` (the
default: both columns run in CI).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from compat.helpers import Impl, Observer
from support.cluster import APP_DBNAME, APP_USER, PgCluster

IMPL_ENV = "PGFLEET_COMPAT_IMPL"
DEFAULT_IMPL = "both"
IMPLS = ("psycopg_pool", "pgfleet")
CHOICES = (*IMPLS, "both")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--compat-impl",
        choices=CHOICES,
        default=None,
        help=f"the implementation(s) to test (default: ${IMPL_ENV}, else {DEFAULT_IMPL})",
    )


def selected_impls(config: pytest.Config) -> list[str]:
    """The implementations chosen by ``--compat-impl`` or ``PGFLEET_COMPAT_IMPL``."""
    # getoption's default covers runs where this conftest was not an initial one (the
    # option is then unknown); the environment variable works in every case.
    choice = config.getoption("--compat-impl", default=None) or os.environ.get(
        IMPL_ENV, DEFAULT_IMPL
    )
    if choice not in CHOICES:
        raise pytest.UsageError(f"{IMPL_ENV} must be one of {', '.join(CHOICES)}, not {choice!r}")
    return list(IMPLS) if choice == "both" else [choice]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "impl" in metafunc.fixturenames:
        metafunc.parametrize("impl", selected_impls(metafunc.config), indirect=True)


@pytest.fixture
def impl(request: pytest.FixtureRequest) -> Impl:
    """psycopg_pool, or pgfleet under psycopg_pool's names."""
    return Impl(request.param)


@pytest.fixture
def dead_dsn() -> Iterator[str]:
    """A conninfo whose port refuses connections: bound on 127.0.0.1 but not listening,
    so nothing else can take it during the test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        yield make_conninfo(
            "", host="127.0.0.1", port=port, dbname=APP_DBNAME, user=APP_USER, connect_timeout=2
        )


@pytest.fixture
def observer(pg: PgCluster) -> Iterator[Observer]:
    """Looks at the app database from outside the pools (one connection per test, so that
    polling costs no connects and no test depends on another's connection)."""
    info = pg.superuser_conninfo(dbname=APP_DBNAME, application_name="compat-observer")
    with psycopg.connect(info, autocommit=True) as conn:
        yield Observer(conn)


@pytest.fixture
def table(observer: Observer) -> Iterator[str]:
    """A fresh table ``(id int primary key)`` owned by the app user; dropped afterwards."""
    name = f"compat_{uuid.uuid4().hex[:12]}"
    ident = sql.Identifier(name)
    observer.conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY)").format(ident))
    observer.conn.execute(
        sql.SQL("ALTER TABLE {} OWNER TO {}").format(ident, sql.Identifier(APP_USER))
    )
    yield name
    observer.conn.execute(sql.SQL("DROP TABLE {}").format(ident))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A pgfleet test that hangs must not hold the column for the default minute.
    here = os.path.dirname(__file__)
    for item in items:
        if not str(item.path).startswith(here):
            continue
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(10))
