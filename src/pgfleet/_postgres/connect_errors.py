"""Which connection errors waiting cannot heal.

libpq reports connection failures without a SQLSTATE (``sqlstate`` is None), so
they are recognised by libpq's and the server's text. Transient failures
(refused, timed out, too many clients, starting up, shutting down) are not listed:
waiting for those is the point. What to tell the user about each failure is
`pgfleet.tls.connect_error_hint`'s job; this only answers "retry or not", and whether
the fault is in the connection settings themselves.
"""

from __future__ import annotations

import psycopg

#: libpq's (and psycopg's) refusals of the connection settings themselves, before any
#: network traffic: a value only libpq checks, and only when it connects.
INVALID_SETTINGS_TEXTS: tuple[str, ...] = (
    "invalid integer value",  # port=abc, keepalives=x: `invalid integer value "abc" for ...`
    "invalid port number",  # port=0, port=99999
    "could not match",  # host, hostaddr and port lists of different lengths
    "definition of service",  # service=name that no service file defines
    "invalid SSL protocol version range",
    'invalid "ssl_min_protocol_version" value',
    'invalid "ssl_max_protocol_version" value',
    "require_auth method",  # mixed negative and positive methods, or one given twice
    "may not be used with sslrootcert=system",
    "may not be used with sslnegotiation=direct",
    # libpq's `invalid %s value: "%s"` for its enumerated settings.
    *(
        f"invalid {key} value"
        for key in (
            "sslmode",
            "gssencmode",
            "channel_binding",
            "sslcertmode",
            "sslnegotiation",
            "target_session_attrs",
            "load_balance_hosts",
            "require_auth",
            "min_protocol_version",
            "max_protocol_version",
        )
    ),
)

#: Fragments of the messages of errors that retrying cannot fix.
PERMANENT_ERROR_TEXTS: tuple[str, ...] = (
    # Credentials and names.
    "password authentication failed",
    "does not exist",  # the database or the role
    "no pg_hba.conf entry",
    "pg_hba.conf rejects connection",
    # Server identity (TLS verification).
    "certificate verify failed",
    "does not match host name",
    "root certificate file",
    "server does not support SSL, but SSL was required",
    "channel binding",
    # Client certificates.
    "certificate authentication failed",
    "connection requires a valid client certificate",
    "alert unknown ca",
    "certificate present, but not private key",
    "private key file",
    # The settings themselves.
    *INVALID_SETTINGS_TEXTS,
)


def is_permanent_error(error: BaseException) -> bool:
    """True when retrying the connection cannot help (a bad password, an unknown database...)."""
    if not isinstance(error, psycopg.OperationalError):
        return False
    text = str(error)
    return any(fragment in text for fragment in PERMANENT_ERROR_TEXTS)


def is_invalid_settings_error(error: BaseException) -> bool:
    """True when libpq refused the connection settings themselves (bad input, not an outage)."""
    if not isinstance(error, psycopg.OperationalError):
        return False
    text = str(error)
    return any(fragment in text for fragment in INVALID_SETTINGS_TEXTS)
