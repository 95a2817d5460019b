"""Every sslmode against a TLS server in every state, checked against libpq's documentation.

https://www.postgresql.org/docs/current/libpq-ssl.html ("Protection Provided in Different
Modes"). One server serves the whole module: its certificate is swapped live (ALTER SYSTEM
+ pg_reload_conf) and TLS switched on and off between cases. Connections are made by
pgfleet's `PostgresManager`, the pool's only door to the server, so the matrix checks that
pgfleet hands every setting to libpq untouched, that `tls_info` reports what happened, and
that each failure names the setting to look at.

Legend: PLAIN connected without TLS; TLS_* connected with TLS, with the server's
certificate chain (CA) and host name verified or not; the rest are failures, each with a
piece of libpq's message and the setting the error (message or hint) must name.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgfleet import PostgresManager, tls_info
from pgfleet.tls import SSLMODES
from support.cluster import PgCluster
from support.tls import HBA_TLS_ONLY, OTHER_NAME, TlsServer, tls_server


@dataclass(frozen=True)
class Connects:
    encrypted: bool
    ca_verified: bool = False
    hostname_verified: bool = False


@dataclass(frozen=True)
class Fails:
    #: Part of libpq's own message (kept untouched by pgfleet).
    libpq_says: str
    #: The setting the error's message or hint must name.
    names: str


PLAIN = Connects(encrypted=False)
TLS_UNVERIFIED = Connects(encrypted=True)
TLS_CA = Connects(encrypted=True, ca_verified=True)
TLS_FULL = Connects(encrypted=True, ca_verified=True, hostname_verified=True)
SERVER_TLS_OFF = Fails("server does not support SSL, but SSL was required", "sslmode")
UNTRUSTED = Fails("certificate verify failed", "sslrootcert")
HOST_MISMATCH = Fails("does not match host name", f"host={OTHER_NAME!r}")
NO_ROOT_FILE = Fails("root certificate file", "sslrootcert")
TLS_REQUIRED = Fails("no encryption", "sslmode=verify-full")
WEAK_WITH_SYSTEM = Fails("may not be used with sslrootcert=system", "sslmode=verify-full")
UNTRUSTED_BY_SYSTEM = Fails("certificate verify failed", "sslrootcert=system")

#: Server states: TLS on/off, which certificate it presents, which pg_hba.conf.
STATES: dict[str, dict[str, Any]] = {
    "tls-off": {"tls": False},
    "valid": {"cert": "valid"},
    "wrong-host": {"cert": "valid"},  # the client asks for OTHER_NAME (hostaddr=127.0.0.1)
    "other-ca": {"cert": "other_ca"},
    "expired": {"cert": "expired"},
    "tls-only": {"cert": "valid", "hba": HBA_TLS_ONLY},  # hostnossl ... reject
}

# fmt: off
#: The client trusts our CA (sslrootcert=<the test CA>).
WITH_ROOT: dict[str, tuple[Connects | Fails, ...]] = {
    #             disable       allow   prefer  require         verify-ca       verify-full
    "tls-off":    (PLAIN,       PLAIN,  PLAIN,  SERVER_TLS_OFF, SERVER_TLS_OFF, SERVER_TLS_OFF),
    "valid":      (PLAIN,       PLAIN,  TLS_CA, TLS_CA,         TLS_CA,         TLS_FULL),
    "wrong-host": (PLAIN,       PLAIN,  TLS_CA, TLS_CA,         TLS_CA,         HOST_MISMATCH),
    # prefer: the failed verification silently falls back to plaintext.
    "other-ca":   (PLAIN,       PLAIN,  PLAIN,  UNTRUSTED,      UNTRUSTED,      UNTRUSTED),
    "expired":    (PLAIN,       PLAIN,  PLAIN,  UNTRUSTED,      UNTRUSTED,      UNTRUSTED),
    # allow: plaintext first, rejected, then TLS.
    "tls-only":   (TLS_REQUIRED, TLS_CA, TLS_CA, TLS_CA,        TLS_CA,         TLS_FULL),
}
#: No root file (sslrootcert names a missing file): require encrypts but verifies nothing.
WITHOUT_ROOT: dict[str, tuple[Connects | Fails, ...]] = {
    #             disable  allow  prefer          require         verify-ca     verify-full
    "valid":      (PLAIN,  PLAIN, TLS_UNVERIFIED, TLS_UNVERIFIED, NO_ROOT_FILE, NO_ROOT_FILE),
    "other-ca":   (PLAIN,  PLAIN, TLS_UNVERIFIED, TLS_UNVERIFIED, NO_ROOT_FILE, NO_ROOT_FILE),
    "expired":    (PLAIN,  PLAIN, TLS_UNVERIFIED, TLS_UNVERIFIED, NO_ROOT_FILE, NO_ROOT_FILE),
}
#: sslrootcert=system: the operating system's CAs, which do not know the test CA.
SYSTEM_ROOTS: dict[str, tuple[Connects | Fails, ...]] = {
    "valid": (*(WEAK_WITH_SYSTEM,) * 5, UNTRUSTED_BY_SYSTEM),
}
# fmt: on


def cases(table: dict[str, tuple[Connects | Fails, ...]]) -> list[Any]:
    return [
        pytest.param(state, sslmode, expected, id=f"{state}-{sslmode}")
        for state, row in table.items()
        for sslmode, expected in zip(SSLMODES, row, strict=True)
    ]


@pytest.fixture(scope="module")
def server(pg_template: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    with tls_server(pg_template, tmp_path_factory.mktemp("tls-matrix")) as running:
        yield running


def attempt(
    server: TlsServer, state: str, sslmode: str, expected: Connects | Fails, **params: Any
) -> None:
    """Put the server in `state`, connect through pgfleet's manager, check the outcome."""
    server.configure(**STATES[state])
    if state == "wrong-host":
        params.update(host=OTHER_NAME, hostaddr="127.0.0.1")
    manager = PostgresManager(server.conninfo(sslmode=sslmode, **params))
    if isinstance(expected, Fails):
        with pytest.raises(psycopg.OperationalError) as caught:
            manager.connect(5.0)
        assert expected.libpq_says in str(caught.value)  # libpq's message, untouched
        # What a user sees: the message and pgfleet's hint note (as traceback renders them).
        seen = "".join(traceback.format_exception_only(caught.value))
        assert expected.names in seen, seen
        return
    conn = manager.connect(5.0)
    try:
        info = tls_info(conn)
        assert (info.encrypted, info.ca_verified, info.hostname_verified) == (
            expected.encrypted,
            expected.ca_verified,
            expected.hostname_verified,
        ), str(info)
        assert info.sslmode == sslmode
        assert info.local
        # The server agrees about encryption.
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert row == (expected.encrypted,)
        if info.encrypted:
            assert info.protocol is not None
            assert info.protocol.startswith("TLSv1.")
            assert info.cipher
            assert info.key_bits
            assert info.key_bits >= 128
            assert f"sslmode={sslmode}" in str(info)
        else:
            assert (info.protocol, info.cipher, info.key_bits) == (None, None, None)
            assert "no TLS" in str(info)
    finally:
        manager.close(conn)


@pytest.mark.parametrize(("state", "sslmode", "expected"), cases(WITH_ROOT))
def test_with_our_root_certificate(
    server: TlsServer, state: str, sslmode: str, expected: Connects | Fails
) -> None:
    attempt(server, state, sslmode, expected)


@pytest.mark.parametrize(("state", "sslmode", "expected"), cases(WITHOUT_ROOT))
def test_without_a_root_certificate(
    server: TlsServer, state: str, sslmode: str, expected: Connects | Fails
) -> None:
    attempt(server, state, sslmode, expected, sslrootcert=str(server.lab.absent))


@pytest.mark.parametrize(("state", "sslmode", "expected"), cases(SYSTEM_ROOTS))
def test_with_the_system_roots(
    server: TlsServer, state: str, sslmode: str, expected: Connects | Fails
) -> None:
    attempt(server, state, sslmode, expected, sslrootcert="system")


def test_the_system_roots_are_the_ones_openssl_is_told_about(
    server: TlsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # sslrootcert=system is OpenSSL's default store, which SSL_CERT_FILE replaces.
    monkeypatch.setenv("SSL_CERT_FILE", str(server.lab.ca_file))
    attempt(server, "valid", "verify-full", TLS_FULL, sslrootcert="system")


@pytest.mark.parametrize(
    ("state", "expected"), [("valid", TLS_CA), ("expired", UNTRUSTED)], ids=["valid", "expired"]
)
def test_require_verifies_with_the_default_root_file(
    server: TlsServer, isolated_libpq_env: Path, state: str, expected: Connects | Fails
) -> None:
    """Without sslrootcert, libpq uses ~/.postgresql/root.crt, and then even require checks
    the chain (the testing notes: "with a root file present it verifies the CA")."""
    default_root = isolated_libpq_env / ".postgresql" / "root.crt"
    default_root.parent.mkdir()
    default_root.write_bytes(server.lab.ca_file.read_bytes())
    server.configure(**STATES[state])
    params = server.lab.client_params(sslmode="require")
    del params["sslrootcert"]
    manager = PostgresManager(server.cluster.conninfo(**params))
    if isinstance(expected, Fails):
        with pytest.raises(psycopg.OperationalError, match=expected.libpq_says):
            manager.connect(5.0)
        return
    conn = manager.connect(5.0)
    try:
        info = tls_info(conn)
        assert info.root_certificate == str(default_root)
        assert info.ca_verified
        assert not info.hostname_verified
        assert "only because that file exists" in info.guarantee
    finally:
        manager.close(conn)


@pytest.mark.parametrize(
    ("crl", "expected"),
    [("crl_empty", TLS_FULL), ("crl_revoking_server", UNTRUSTED)],
    ids=["empty-crl", "revoked"],
)
def test_sslcrl_reaches_libpq(server: TlsServer, crl: str, expected: Connects | Fails) -> None:
    attempt(server, "valid", "verify-full", expected, sslcrl=str(getattr(server.lab, crl)))


def test_channel_binding_require_over_tls(server: TlsServer) -> None:
    # libpq succeeds with channel_binding=require only when SCRAM-SHA-256-PLUS bound the
    # authentication to this TLS channel.
    attempt(server, "valid", "verify-full", TLS_FULL, channel_binding="require")


@pytest.mark.parametrize(("state", "sslmode"), [("valid", "disable"), ("tls-off", "prefer")])
def test_channel_binding_require_without_tls(server: TlsServer, state: str, sslmode: str) -> None:
    failure = Fails("channel binding required, but SSL not in use", "channel_binding=require")
    attempt(server, state, sslmode, failure, channel_binding="require")
