"""`pgfleet.tls_info` on sync and async connections, over TLS, TCP and Unix sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import FrozenInstanceError
from typing import Any

import psycopg
import pytest

from pgfleet import TLSInfo, tls_info
from pgfleet.tls import is_local
from support.cluster import PgCluster
from support.tls import TlsServer, tls_server


@pytest.fixture(scope="module")
def server(pg_template: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    with tls_server(pg_template, tmp_path_factory.mktemp("tls-info")) as running:
        running.configure(cert="valid")
        yield running


def test_sync_and_async_connections_report_the_same(server: TlsServer) -> None:
    conninfo = server.conninfo(sslmode="verify-full", host="db.test", hostaddr="127.0.0.1")
    with psycopg.connect(conninfo) as conn:
        sync_info = tls_info(conn)

    async def async_info() -> TLSInfo:
        async with await psycopg.AsyncConnection.connect(conninfo) as aconn:
            return tls_info(aconn)

    assert asyncio.run(async_info()) == sync_info
    assert sync_info.encrypted
    assert sync_info.identity_verified
    assert sync_info.host == "db.test"
    assert sync_info.root_certificate == str(server.lab.ca_file)
    text = str(sync_info)
    assert text.startswith("TLSv1.")
    assert "sslmode=verify-full" in text
    assert "'db.test'" in text


def test_as_dict_is_json_and_the_info_is_frozen(server: TlsServer) -> None:
    with psycopg.connect(server.conninfo(sslmode="require")) as conn:
        info = tls_info(conn)
    data = json.loads(json.dumps(info.as_dict()))
    assert data["encrypted"] is True
    assert data["sslmode"] == "require"
    assert data["ca_verified"] is True  # sslrootcert names our CA: require checks the chain
    assert data["hostname_verified"] is False
    assert data["identity_verified"] is False
    assert "host name is not checked" in data["guarantee"]
    with pytest.raises(FrozenInstanceError):
        info.encrypted = False  # type: ignore[misc]


def test_plaintext_over_a_unix_socket(server: TlsServer) -> None:
    with psycopg.connect(server.cluster.superuser_conninfo()) as conn:  # sslmode=prefer
        info = tls_info(conn)
    assert not info.encrypted
    assert info.local
    assert info.sslmode == "prefer"  # libpq's default, reported as in force
    assert info.host.startswith("/")
    assert (info.protocol, info.cipher, info.key_bits) == (None, None, None)
    assert str(info).startswith("no TLS (sslmode=prefer): not encrypted")


def test_sslmode_from_the_environment_is_the_one_reported(
    server: TlsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGSSLMODE", "verify-ca")
    with psycopg.connect(server.conninfo()) as conn:
        info = tls_info(conn)
    assert info.sslmode == "verify-ca"
    assert info.ca_verified
    assert not info.hostname_verified


def test_a_closed_connection_raises(server: TlsServer) -> None:
    conn = psycopg.connect(server.conninfo(sslmode="require"))
    conn.close()
    with pytest.raises(psycopg.OperationalError):
        tls_info(conn)


class FakePGconn:
    def __init__(self, host: bytes, hostaddr: bytes) -> None:
        self.host = host
        self.hostaddr = hostaddr


@pytest.mark.parametrize(
    ("host", "hostaddr", "local"),
    [
        ("/var/run/postgresql", "", True),
        ("@abstract", "", True),
        ("", "", True),
        ("localhost", "127.0.0.1", True),
        ("db.test", "127.0.0.1", True),  # hostaddr is where the packets go
        ("127.0.0.2", "127.0.0.2", True),
        ("::1", "::1", True),
        ("localhost", "", True),
        ("db.example.com", "192.0.2.7", False),
        ("10.1.2.3", "10.1.2.3", False),
        ("db.example.com", "fd00::5", False),
        ("localhost", "192.0.2.7", False),  # a "localhost" that resolves elsewhere
    ],
)
def test_what_counts_as_local(host: str, hostaddr: str, local: bool) -> None:
    fake: Any = FakePGconn(host.encode(), hostaddr.encode())
    assert is_local(fake) is local
