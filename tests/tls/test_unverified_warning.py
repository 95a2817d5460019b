"""One WARNING per pool that reaches a remote host without verifying it.

The server of this module also listens on a non-loopback address of this machine, which
stands for "a database across the network": libpq reports it as the connection's
``hostaddr``, and that is what pgfleet judges.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from pgfleet import AsyncPool, Pool, PostgresManager
from support.cluster import APP_PASSWORD, PgCluster
from support.tls import TlsServer, non_loopback_address, tls_server

TLS_LOGGER = "pgfleet.tls"


@pytest.fixture(scope="module")
def remote_address() -> str:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    return address


@pytest.fixture(scope="module")
def server(
    pg_template: PgCluster, tmp_path_factory: pytest.TempPathFactory, remote_address: str
) -> Iterator[TlsServer]:
    listen = {"listen_addresses": f"127.0.0.1,{remote_address}"}
    with tls_server(pg_template, tmp_path_factory.mktemp("tls-warn"), listen) as running:
        running.configure(
            cert="valid",
            hba=(
                "host all all 127.0.0.1/32 scram-sha-256",
                f"host all all {remote_address}/32 scram-sha-256",
            ),
        )
        yield running


def warnings_from_tls(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == TLS_LOGGER and r.levelno == logging.WARNING]


def remote(server: TlsServer, address: str, **params: Any) -> str:
    return server.conninfo(host=address, **params)


def test_require_to_a_remote_host_warns_once_per_pool(
    server: TlsServer, remote_address: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    conninfo = remote(server, remote_address, sslmode="require", sslrootcert=str(server.lab.absent))
    with Pool(conninfo, min_size=3, max_size=3, timeout=5) as pool:
        pool.drain()  # three more connections: still one warning
        with pool.connection() as conn:
            conn.execute("SELECT 1")
    [record] = warnings_from_tls(caplog)
    message = record.getMessage()
    assert remote_address in message
    assert "sslmode=require" in message
    assert "impersonate the server" in message
    assert "sslmode=verify-full" in message  # how to fix it
    assert "warn_unverified=False" in message  # how to silence it
    assert APP_PASSWORD not in caplog.text


async def test_plaintext_to_a_remote_host_warns_once_per_async_pool(
    server: TlsServer, remote_address: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    conninfo = remote(server, remote_address, sslmode="disable")
    for _ in range(2):  # each pool warns once
        async with AsyncPool(conninfo, min_size=2, timeout=5) as pool:
            await pool.drain()
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")
    records = warnings_from_tls(caplog)
    assert len(records) == 2
    assert "WITHOUT TLS" in records[0].getMessage()
    assert "read every query" in records[0].getMessage()


def test_a_found_root_file_is_no_guarantee(
    server: TlsServer, remote_address: str, caplog: pytest.LogCaptureFixture
) -> None:
    # require with our CA as sslrootcert does verify the chain, but nothing requires it.
    caplog.set_level(logging.WARNING)
    with Pool(remote(server, remote_address, sslmode="require"), min_size=1, timeout=5):
        pass
    [record] = warnings_from_tls(caplog)
    assert "only because that file happens to exist" in record.getMessage()


@pytest.mark.parametrize(
    ("params", "where"),
    [
        pytest.param({"sslmode": "verify-full", "host": "db.test"}, "remote", id="verify-full"),
        pytest.param({"sslmode": "verify-ca"}, "remote", id="verify-ca"),
        pytest.param({"sslmode": "require", "warn": False}, "remote", id="warn_unverified=False"),
        pytest.param({"sslmode": "disable"}, "loopback", id="loopback-plaintext"),
        pytest.param({"sslmode": "disable"}, "socket", id="unix-socket-plaintext"),
    ],
)
def test_no_warning(
    server: TlsServer,
    remote_address: str,
    caplog: pytest.LogCaptureFixture,
    params: dict[str, Any],
    where: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    params = dict(params)
    warn = params.pop("warn", True)
    if where == "remote":
        params.setdefault("host", remote_address)
        params["hostaddr"] = remote_address
        conninfo = server.conninfo(**params)
    elif where == "loopback":
        conninfo = server.conninfo(**params)
    else:
        conninfo = server.cluster.superuser_conninfo(**params)
    with (
        Pool(conninfo, min_size=2, timeout=5, warn_unverified=warn) as pool,
        pool.connection() as conn,
    ):
        conn.execute("SELECT 1")
    assert warnings_from_tls(caplog) == []


def test_a_logging_filter_silences_it_too(
    server: TlsServer, remote_address: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tls_logger = logging.getLogger(TLS_LOGGER)
    tls_logger.setLevel(logging.ERROR)
    try:
        with Pool(remote(server, remote_address, sslmode="disable"), min_size=1, timeout=5):
            pass
    finally:
        tls_logger.setLevel(logging.NOTSET)
    assert warnings_from_tls(caplog) == []


def test_warn_unverified_with_a_custom_manager_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="warn_unverified"):
        Pool(manager=PostgresManager("host=x"), warn_unverified=False)
