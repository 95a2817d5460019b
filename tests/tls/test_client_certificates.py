"""Client-certificate authentication (``hostssl ... cert``), SCRAM channel binding, and the
hints a pool's errors carry when TLS settings are wrong.

The server of this module rejects plaintext (``hostnossl ... reject``), authenticates the
``app`` role by certificate (its CN must be ``app``) and everyone else by SCRAM.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgfleet import (
    AsyncPool,
    DatabaseUnavailable,
    Pool,
    PoolError,
    PoolTimeout,
    PostgresManager,
    tls_info,
)
from support.cluster import SUPERUSER, SUPERUSER_PASSWORD, PgCluster
from support.tls import TlsServer, tls_server

HBA = (
    "hostnossl all all 127.0.0.1/32 reject",
    "hostssl all app 127.0.0.1/32 cert",
    "hostssl all all 127.0.0.1/32 scram-sha-256",
)


@pytest.fixture(scope="module")
def server(pg_template: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    with tls_server(pg_template, tmp_path_factory.mktemp("tls-client-certs")) as running:
        running.configure(cert="valid", hba=HBA, ssl_ca_file=running.files["client_ca"][0])
        yield running


def app_conninfo(server: TlsServer, client_cert: str | None = "app", **params: Any) -> str:
    """conninfo for ``app`` with verify-full, no password, and the named client certificate."""
    if client_cert is not None:
        cert, key = server.lab.client_certs[client_cert]
        params = {"sslcert": str(cert), "sslkey": str(key), **params}
    return server.conninfo(sslmode="verify-full", password=None, **params)


def rendered(error: BaseException) -> str:
    """The error as a traceback shows it: message, notes and the cause chain."""
    return "".join(traceback.format_exception(error))


def test_a_client_certificate_authenticates(server: TlsServer) -> None:
    manager = PostgresManager(app_conninfo(server))
    conn = manager.connect(5.0)
    try:
        assert not conn.pgconn.used_password
        row = conn.execute(
            "SELECT ssl, client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone()
        assert row is not None
        assert row[0] is True
        assert "CN=app" in row[1]
        assert tls_info(conn).identity_verified
    finally:
        manager.close(conn)


def test_client_certificate_paths_pass_through_pool_kwargs(server: TlsServer) -> None:
    cert, key = server.lab.client_certs["app"]
    kwargs = {"sslcert": str(cert), "sslkey": str(key)}
    with (
        Pool(app_conninfo(server, None), kwargs=kwargs, min_size=1, timeout=5) as pool,
        pool.connection() as conn,
    ):
        assert conn.execute("SELECT current_user").fetchone() == ("app",)


async def test_client_certificate_through_an_async_pool(server: TlsServer) -> None:
    async with (
        AsyncPool(app_conninfo(server), min_size=1, timeout=5) as pool,
        pool.connection() as conn,
    ):
        cursor = await conn.execute("SELECT current_user")
        assert await cursor.fetchone() == ("app",)
        assert tls_info(conn).identity_verified


@pytest.mark.parametrize(
    ("client_cert", "params", "libpq_says", "hint_names"),
    [
        pytest.param(
            None, {}, "connection requires a valid client certificate", "sslcert", id="no-cert"
        ),
        pytest.param(
            "bob", {}, 'certificate authentication failed for user "app"', "(CN)", id="wrong-cn"
        ),
        pytest.param("app_other_ca", {}, "unknown ca", "ssl_ca_file", id="cert-from-another-ca"),
        pytest.param(
            "app",
            {"sslkey": "absent"},
            "certificate present, but not private key",
            "sslkey",
            id="no-key",
        ),
    ],
)
def test_rejected_client_certificates_name_the_setting(
    server: TlsServer,
    client_cert: str | None,
    params: dict[str, str],
    libpq_says: str,
    hint_names: str,
) -> None:
    if params.get("sslkey") == "absent":
        params = {"sslkey": str(server.lab.absent)}
    manager = PostgresManager(app_conninfo(server, client_cert, **params))
    with pytest.raises(psycopg.OperationalError) as caught:
        manager.connect(5.0)
    assert libpq_says in str(caught.value)
    notes = getattr(caught.value, "__notes__", [])
    assert any(note.startswith("hint: ") and hint_names in note for note in notes), notes


def test_scram_with_channel_binding_required(server: TlsServer) -> None:
    # The superuser authenticates with SCRAM here: channel_binding=require succeeds only
    # when SCRAM-SHA-256-PLUS bound the exchange to this TLS connection.
    manager = PostgresManager(
        server.conninfo(
            sslmode="verify-full",
            user=SUPERUSER,
            password=SUPERUSER_PASSWORD,
            dbname="postgres",
            channel_binding="require",
        )
    )
    conn = manager.connect(5.0)
    try:
        assert conn.pgconn.used_password
        assert tls_info(conn).identity_verified
    finally:
        manager.close(conn)


def test_channel_binding_required_but_the_server_uses_certificates(server: TlsServer) -> None:
    manager = PostgresManager(app_conninfo(server, channel_binding="require"))
    with pytest.raises(psycopg.OperationalError) as caught:
        manager.connect(5.0)
    assert "channel binding" in str(caught.value)
    assert "channel_binding" in rendered(caught.value)


def test_plaintext_is_rejected_and_the_hint_says_sslmode(server: TlsServer) -> None:
    manager = PostgresManager(server.conninfo(sslmode="disable", user=SUPERUSER, dbname="postgres"))
    with pytest.raises(psycopg.OperationalError) as caught:
        manager.connect(5.0)
    assert "no encryption" in str(caught.value)
    assert "hint: " in rendered(caught.value)
    assert "sslmode=verify-full" in rendered(caught.value)


def test_a_pool_that_cannot_connect_says_which_setting_to_look_at(server: TlsServer) -> None:
    """`with Pool(...)` fails at once on an error waiting cannot heal; the message carries
    the hint, and the cause stays libpq's own error."""
    with (
        pytest.raises(PoolError) as caught,
        Pool(app_conninfo(server, None), min_size=1, timeout=5),
    ):
        pass
    message = str(caught.value)
    assert "hint: " in message
    assert "sslcert" in message
    cause = caught.value.__cause__
    assert isinstance(cause, psycopg.OperationalError)
    assert "connection requires a valid client certificate" in str(cause)


async def test_pool_timeout_message_carries_the_last_error_and_its_hint(
    server: TlsServer,
) -> None:
    pool: AsyncPool[Any] = AsyncPool(
        app_conninfo(server, "bob"), min_size=1, timeout=0.3, fail_fast=False
    )
    await pool.open(wait=False)
    try:
        with pytest.raises(PoolTimeout) as caught:
            await pool.getconn()
    finally:
        await pool.close()
    message = str(caught.value)
    assert "last connection error" in message
    assert 'certificate authentication failed for user "app"' in message
    assert "hint: " in message
    assert "(CN)" in message
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)
    assert "hint: " in rendered(caught.value)  # the cause's note, as traceback renders it


def test_a_checkout_that_fails_fast_carries_the_hint(server: TlsServer) -> None:
    pool = Pool(app_conninfo(server, None), min_size=0, timeout=5)
    pool.open(wait=False)
    try:
        with pytest.raises(DatabaseUnavailable) as caught:
            pool.getconn()
    finally:
        pool.close()
    assert "connection requires a valid client certificate" in str(caught.value)
    assert "hint: the server requires a client certificate" in str(caught.value)
