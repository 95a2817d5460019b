"""A value cannot smuggle in a parameter: ``dbname="app sslmode=disable"`` is a database name.

The server of this module rejects plaintext (``hostnossl ... reject``) and has a database
literally named ``app sslmode=disable``. Were pgfleet to build connection strings by
concatenation, that name would turn TLS off and the server would refuse the connection (the
control test shows it). pgfleet composes with ``make_conninfo``, so the connection is
encrypted and lands in the oddly named database.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from pgfleet import AsyncPool, Pool, PostgresManager, tls_info
from support.cluster import APP_PASSWORD, APP_USER, HOST, PgCluster
from support.tls import HBA_TLS_ONLY, TlsServer, tls_server

HOSTILE = "app sslmode=disable"


@pytest.fixture(scope="module")
def server(pg_template: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    with tls_server(pg_template, tmp_path_factory.mktemp("tls-downgrade")) as running:
        running.configure(cert="valid", hba=HBA_TLS_ONLY)
        running.cluster.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(HOSTILE), sql.Identifier(APP_USER)
            )
        )
        yield running


def test_control_concatenation_would_downgrade(server: TlsServer) -> None:
    naive = f"{server.conninfo(sslmode='require', dbname=None)} dbname={HOSTILE}"
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(naive)  # sslmode=disable won: plaintext, which the server refuses


def test_a_hostile_database_name_in_kwargs(server: TlsServer) -> None:
    conninfo = server.conninfo(sslmode="require", dbname=None)
    with (
        Pool(conninfo, kwargs={"dbname": HOSTILE}, min_size=1, timeout=5) as pool,
        pool.connection() as conn,
    ):
        assert conn.execute("SELECT current_database()").fetchone() == (HOSTILE,)
        assert tls_info(conn).encrypted


async def test_a_hostile_database_name_in_database_url(
    server: TlsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = (
        f"postgresql://{APP_USER}:{quote(APP_PASSWORD, safe='')}@{HOST}:{server.cluster.port}"
        f"/{quote(HOSTILE, safe='')}?sslmode=require&sslrootcert={quote(str(server.lab.ca_file))}"
    )
    monkeypatch.setenv("DATABASE_URL", url)
    async with AsyncPool.from_env(min_size=1, timeout=5) as pool, pool.connection() as conn:
        cursor = await conn.execute("SELECT current_database()")
        assert await cursor.fetchone() == (HOSTILE,)
        assert tls_info(conn).encrypted


def test_a_hostile_database_name_in_pgdatabase(
    server: TlsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGDATABASE", HOSTILE)
    conninfo = server.conninfo(sslmode="require", dbname=None)
    with Pool(conninfo, min_size=1, timeout=5) as pool, pool.connection() as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (HOSTILE,)
        assert tls_info(conn).encrypted


def test_a_hostile_value_cannot_smuggle_a_password_either(server: TlsServer) -> None:
    # A "user" that carries "password=...": quoted, it stays part of the role name, so
    # libpq has no password to answer the server's SCRAM request with.
    conninfo = server.conninfo(sslmode="require", user=None, password=None)
    manager = PostgresManager(conninfo, kwargs={"user": f"app password={APP_PASSWORD}"})
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        manager.connect(5.0)
