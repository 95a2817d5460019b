"""TLS inspection, the unverified-remote warning and hints for failed connections.

The public face is `pgfleet.tls` (the guarantees of each ``sslmode`` are tabled there);
this module is its implementation, beside the rest of the PostgreSQL door. The
PostgreSQL managers use `unverified_warning` and `connect_error_hint`; ``pgfleet check``
uses the rest.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import ipaddress
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import pq

__all__ = ["SSLMODES", "TLSInfo", "connect_error_hint", "tls_info"]

logger = logging.getLogger("pgfleet.tls")

#: libpq's sslmodes, weakest first.
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_VERIFYING = ("verify-ca", "verify-full")
#: libpq's default sslmode (also when PGSSLMODE is unset).
DEFAULT_SSLMODE = "prefer"


@dataclass(frozen=True, slots=True)
class TLSInfo:
    """What one connection's transport security is, and what it guarantees.

    Attributes:
        encrypted: the connection uses TLS.
        protocol: the TLS version (``"TLSv1.3"``), None when not encrypted or unknown.
        cipher: the cipher suite, None when not encrypted or unknown.
        key_bits: the cipher's key size in bits, None when not encrypted or unknown.
        sslmode: the sslmode in force (from the conninfo, ``PGSSLMODE`` or libpq's
            default, ``prefer``).
        root_certificate: the root certificates the server was checked against: a file,
            ``"system"``, or None (no root file in force, or no TLS).
        ca_verified: the server's certificate chain was verified against
            `root_certificate` (``verify-ca``, ``verify-full``, or a weaker mode that
            found a root file).
        hostname_verified: the certificate was also checked to name the host
            (``verify-full`` only).
        host: the host connected to (a name, an address, or a Unix socket directory).
        local: the connection is over a Unix socket or a loopback address, where no
            network attacker can sit.
    """

    encrypted: bool
    protocol: str | None
    cipher: str | None
    key_bits: int | None
    sslmode: str
    root_certificate: str | None
    ca_verified: bool
    hostname_verified: bool
    host: str
    local: bool

    @property
    def identity_verified(self) -> bool:
        """The server proved it is the host asked for: chain and host name verified."""
        return self.ca_verified and self.hostname_verified

    @property
    def guarantee(self) -> str:
        """What this connection's sslmode and root certificates guarantee, in words."""
        if not self.encrypted:
            return (
                "not encrypted: queries, results and credentials cross the network in"
                " plaintext, and the server is not verified"
            )
        if self.hostname_verified:
            return (
                f"encrypted; the server is verified: its certificate chains to"
                f" {self._roots()} and names {self.host!r}"
            )
        if self.ca_verified:
            why = (
                ""
                if self.sslmode in _VERIFYING
                else f" (sslmode={self.sslmode} verified it only because that file exists)"
            )
            return (
                f"encrypted; the server's certificate chains to {self._roots()}{why}, but its"
                " host name is not checked: any server with a certificate from that CA"
                " could stand in for it"
            )
        return (
            "encrypted, but the server is not verified (no root certificate): whoever"
            " answers on the network path could impersonate it"
        )

    def _roots(self) -> str:
        if self.root_certificate == "system":
            return "the system's trusted CAs"
        return repr(self.root_certificate)

    def as_dict(self) -> dict[str, Any]:
        """The fields plus `identity_verified` and `guarantee`, for JSON."""
        data = asdict(self)
        data["identity_verified"] = self.identity_verified
        data["guarantee"] = self.guarantee
        return data

    def __str__(self) -> str:
        if self.encrypted:
            suite = ", ".join(
                part
                for part in (
                    self.protocol or "TLS",
                    self.cipher,
                    f"{self.key_bits}-bit" if self.key_bits else None,
                )
                if part
            )
            head = f"{suite} (sslmode={self.sslmode})"
        else:
            head = f"no TLS (sslmode={self.sslmode})"
        where = " [local connection]" if self.local else ""
        return f"{head}: {self.guarantee}{where}"


def tls_info(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> TLSInfo:
    """Report what `conn`'s TLS is and guarantees (no round trip; sync or async).

    Raises `psycopg.OperationalError` when the connection is closed.
    """
    pgconn = conn.pgconn
    options = connection_options(pgconn)
    encrypted = bool(pgconn.ssl_in_use)
    sslmode = options.get("sslmode") or DEFAULT_SSLMODE
    # Without TLS no certificate was checked, whatever root file exists.
    root = root_certificate_in_force(options.get("sslrootcert")) if encrypted else None
    if encrypted:
        protocol, cipher, bits = _ssl_attributes(pgconn)
    else:
        protocol = cipher = bits = None
    key_bits = int(bits) if bits and bits.isdigit() else None
    host = pgconn.host.decode(errors="replace") if pgconn.host else ""
    return TLSInfo(
        encrypted=encrypted,
        protocol=protocol,
        cipher=cipher,
        key_bits=key_bits,
        sslmode=sslmode,
        root_certificate=root,
        ca_verified=encrypted and (sslmode in _VERIFYING or root is not None),
        hostname_verified=encrypted and sslmode == "verify-full",
        host=host,
        local=is_local(pgconn),
    )


def connection_options(pgconn: pq.abc.PGconn) -> dict[str, str | None]:
    """The libpq options in force on a connection (``PQconninfo``), as text."""
    return {
        option.keyword.decode(): None if option.val is None else option.val.decode(errors="replace")
        for option in pgconn.info
    }


def root_certificate_in_force(sslrootcert: str | None) -> str | None:
    """The root certificates libpq verifies against: ``"system"``, a file, or None.

    Without ``sslrootcert`` libpq looks for ``~/.postgresql/root.crt``.
    """
    if sslrootcert == "system":
        return "system"
    path = sslrootcert or os.path.join(os.path.expanduser("~"), ".postgresql", "root.crt")
    return path if os.path.exists(path) else None


def is_local(pgconn: pq.abc.PGconn) -> bool:
    """True for a Unix socket or a loopback address: no network between the two ends."""
    host = pgconn.host.decode(errors="replace") if pgconn.host else ""
    address = ""
    with contextlib.suppress(psycopg.Error):  # libpq < 12 has no PQhostaddr
        raw = pgconn.hostaddr
        address = raw.decode(errors="replace") if raw else ""
    if host.startswith(("/", "@")):  # a socket directory or an abstract socket
        return True
    if not host and not address:  # libpq's default: its Unix socket directory
        return True
    for candidate in (address, host):
        try:
            return ipaddress.ip_address(candidate.split("%", 1)[0]).is_loopback
        except ValueError:
            continue
    return host == "localhost"


# -- the unverified-remote warning --------------------------------------------------------


def unverified_warning(conn: Any, where: str) -> str | None:
    """The warning for a connection to a remote host whose sslmode does not verify it.

    None when the connection is local or its sslmode is ``verify-ca``/``verify-full``.
    """
    if is_local(conn.pgconn):
        return None
    info = tls_info(conn)
    if info.sslmode in _VERIFYING:
        return None
    fix = (
        "Fix: connect with sslmode=verify-full and sslrootcert=<the CA file that signed the"
        " server's certificate> (sslrootcert=system for a public CA)."
    )
    silence = " Silence: warn_unverified=False, or a logging filter on 'pgfleet.tls'."
    if not info.encrypted:
        return (
            f"connected to {where} WITHOUT TLS (sslmode={info.sslmode}): anyone on the network"
            " path can read every query and result, alter them, and impersonate the server."
            f" Enable ssl on the server, then: {fix}{silence}"
        )
    if info.ca_verified:
        return (
            f"connected to {where} with sslmode={info.sslmode}, which does not require a"
            f" verified server: the certificate was checked against {info.root_certificate!r}"
            " only because that file happens to exist, and the host name was not checked, so"
            " an attacker on the network path with any certificate from that CA (or, once the"
            f" file is gone, any certificate) can impersonate the server. {fix}{silence}"
        )
    return (
        f"connected to {where} over TLS WITHOUT verifying the server (sslmode={info.sslmode},"
        " no root certificate): an attacker on the network path can impersonate the server"
        " (man in the middle), read and alter every query and result, and capture passwords"
        f" not protected by SCRAM channel binding. {fix}{silence}"
    )


# -- hints for failed connections ---------------------------------------------------------


def effective_settings(params: Mapping[str, str]) -> dict[str, str | None]:
    """The settings libpq will use: `params` over its defaults and ``PG*`` variables."""
    settings: dict[str, str | None] = {
        option.keyword.decode(): None if option.val is None else option.val.decode(errors="replace")
        for option in pq.Conninfo.get_defaults()
    }
    settings.update(params)
    return settings


def _root_name(settings: Mapping[str, str | None]) -> str:
    root = settings.get("sslrootcert")
    return f"sslrootcert={root!r}" if root else "sslrootcert (unset: ~/.postgresql/root.crt)"


def _hint_verify_failed(settings: Mapping[str, str | None]) -> str:
    if settings.get("sslrootcert") == "system":
        return (
            "the server's certificate is not signed by a CA the operating system trusts"
            " (sslrootcert=system): for a private CA, set sslrootcert to that CA's certificate"
            " file"
        )
    return (
        f"the server's certificate did not verify against {_root_name(settings)}: it is"
        " signed by a CA not in that file, has expired or is not yet valid, or is revoked"
        f" (sslcrl={settings.get('sslcrl') or ''!r}). Check sslrootcert against the CA that"
        " signed the server's ssl_cert_file, and the certificate's dates"
    )


def _hint_host_mismatch(settings: Mapping[str, str | None]) -> str:
    return (
        f"sslmode=verify-full checks that the server's certificate names the host you asked"
        f" for (host={settings.get('host') or ''!r}): connect with a name the certificate"
        " lists, or reissue the certificate with this name in its subjectAltName"
    )


def _hint_tls_off(settings: Mapping[str, str | None]) -> str:
    return (
        f"sslmode={settings.get('sslmode')} requires TLS but the server has ssl=off: turn ssl"
        " on in the server's postgresql.conf (ssl_cert_file, ssl_key_file)"
    )


def _hint_tls_required(settings: Mapping[str, str | None]) -> str:
    return (
        f"the server's pg_hba.conf admits this connection only over TLS, and"
        f" sslmode={settings.get('sslmode') or DEFAULT_SSLMODE} did not use it: set"
        " sslmode=verify-full (or at least require)"
    )


def _hint_channel_binding_no_tls(settings: Mapping[str, str | None]) -> str:
    return (
        f"channel_binding=require needs TLS, and sslmode={settings.get('sslmode')} did not use"
        " it: set sslmode=verify-full (or require)"
    )


def _hint_channel_binding_method(settings: Mapping[str, str | None]) -> str:
    return (
        "channel_binding=require needs SCRAM authentication over TLS, and the server asked"
        " for another method: use scram-sha-256 in the server's pg_hba.conf (and a SCRAM"
        " password), or relax channel_binding"
    )


def _hint_client_cert_missing(settings: Mapping[str, str | None]) -> str:
    return (
        "the server requires a client certificate (pg_hba.conf 'cert' or clientcert=): set"
        f" sslcert and sslkey (now sslcert={settings.get('sslcert') or ''!r},"
        f" sslkey={settings.get('sslkey') or ''!r})"
    )


def _hint_client_cert_rejected(settings: Mapping[str, str | None]) -> str:
    return (
        f"the client certificate (sslcert={settings.get('sslcert') or ''!r}) was accepted as"
        f" genuine but does not authenticate user={settings.get('user') or ''!r}: its common"
        " name (CN) must be the user name, or be mapped to it in pg_ident.conf"
    )


def _hint_client_ca_unknown(settings: Mapping[str, str | None]) -> str:
    return (
        f"the server does not trust the CA that signed the client certificate"
        f" (sslcert={settings.get('sslcert') or ''!r}): the server's ssl_ca_file must hold"
        " that CA"
    )


def _hint_root_missing(settings: Mapping[str, str | None]) -> str:
    return (
        f"set sslrootcert to the CA certificate file that signed the server's certificate"
        f" (now: {_root_name(settings)})"
    )


def _hint_weak_system(settings: Mapping[str, str | None]) -> str:
    return "sslrootcert=system is only accepted with sslmode=verify-full"


def _hint_key_missing(settings: Mapping[str, str | None]) -> str:
    return f"set sslkey to the private key of sslcert={settings.get('sslcert') or ''!r}"


def _hint_no_slots(settings: Mapping[str, str | None]) -> str:
    return (
        "the server has no free connection slots (max_connections); see `pgfleet check"
        " --replicas N --max-size M` for the budget: every replica's pool may open max_size"
        " connections"
    )


def _hint_pooler_full(settings: Mapping[str, str | None]) -> str:
    return (
        "the pooler accepts no more clients (PgBouncer's max_client_conn): raise it, or"
        " lower replicas x max_size; see `pgfleet check --replicas N --max-size M` for the"
        " budget"
    )


def _hint_startup_parameter(settings: Mapping[str, str | None]) -> str:
    return (
        "a pooler (PgBouncer) refused a connection parameter it does not pass on (often"
        " options='-c ...'): drop it and set the value per transaction (SET LOCAL) or on"
        " the server role (ALTER ROLE ... SET), or list it in PgBouncer's"
        " ignore_startup_parameters (the server then never sees it)"
    )


#: (text in libpq's message, hint builder). First match wins: specific before generic.
_HINTS: tuple[tuple[str, Callable[[Mapping[str, str | None]], str]], ...] = (
    ("does not match host name", _hint_host_mismatch),
    ("certificate verify failed", _hint_verify_failed),
    ("server does not support SSL, but SSL was required", _hint_tls_off),
    ("channel binding required, but SSL not in use", _hint_channel_binding_no_tls),
    ("channel binding required but not supported", _hint_channel_binding_method),
    ("channel binding is required, but", _hint_channel_binding_method),
    ("no encryption", _hint_tls_required),
    ("connection requires a valid client certificate", _hint_client_cert_missing),
    ("certificate authentication failed", _hint_client_cert_rejected),
    ("alert unknown ca", _hint_client_ca_unknown),
    ("root certificate file", _hint_root_missing),
    ("may not be used with sslrootcert=system", _hint_weak_system),
    ("certificate present, but not private key", _hint_key_missing),
    ("too many clients already", _hint_no_slots),
    ("remaining connection slots are reserved", _hint_no_slots),
    ("no more connections allowed (max_client_conn)", _hint_pooler_full),
    ("unsupported startup parameter", _hint_startup_parameter),
)


def connect_error_hint(error: BaseException, params: Mapping[str, str]) -> str | None:
    """Which setting to look at for a failed connection, or None when there is no hint.

    `params` are the connection parameters given (libpq's defaults and ``PG*``
    variables fill in the rest).
    """
    text = str(error)
    for needle, build in _HINTS:
        if needle in text:
            return build(effective_settings(params))
    return None


# -- libpq's TLS attributes ---------------------------------------------------------------


def _ssl_attributes(pgconn: pq.abc.PGconn) -> tuple[str | None, str | None, str | None]:
    """(protocol, cipher, key_bits) from libpq's ``PQsslAttribute``; Nones when unknown."""
    pointer: int | None = getattr(pgconn, "pgconn_ptr", None)  # not in the PGconn protocol
    function = _ssl_attribute_function()
    if function is None or pointer is None:
        return None, None, None

    def attribute(name: bytes) -> str | None:
        value: bytes | None = function(pointer, name)
        return value.decode(errors="replace") if value else None

    return attribute(b"protocol"), attribute(b"cipher"), attribute(b"key_bits")


@functools.cache
def _ssl_attribute_function() -> Any:
    """libpq's ``PQsslAttribute`` from the very libpq psycopg uses, or None.

    psycopg does not wrap it. Calling another libpq's copy with this connection's
    pointer would crash, so this only answers when the library is certain.
    """
    library = _psycopg_libpq()
    if library is None:
        return None
    try:
        function = library.PQsslAttribute
    except AttributeError:
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    function.restype = ctypes.c_char_p
    return function


def _psycopg_libpq() -> ctypes.CDLL | None:
    impl = pq.__impl__
    try:
        if impl == "python":
            from psycopg.pq import _pq_ctypes  # already imported: it is the implementation

            library: ctypes.CDLL = getattr(_pq_ctypes, "pq")  # noqa: B009 (untyped module)
            return library
        if impl == "binary":
            import psycopg_binary  # type: ignore[import-not-found,unused-ignore]

            root = os.path.dirname(os.path.dirname(psycopg_binary.__file__))
            found = sorted(
                glob.glob(os.path.join(root, "psycopg_binary.libs", "libpq*"))
                + glob.glob(os.path.join(root, "psycopg_binary", ".dylibs", "libpq*"))
            )
            return ctypes.CDLL(found[0]) if len(found) == 1 else None
        # The C implementation links the system libpq: trust it only when exactly one
        # libpq is mapped into this process.
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/libpq" in line}
        return ctypes.CDLL(paths.pop()) if len(paths) == 1 else None
    except (OSError, ImportError, IndexError):
        return None
