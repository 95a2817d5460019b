"""Which connection errors waiting cannot heal.

libpq reports connection failures without a SQLSTATE (``sqlstate`` is None), so
they are recognised by libpq's and the server's text. Transient failures
(refused, timed out, too many clients, starting up, shutting down) are not listed:
waiting for those is the point. What to tell the user about each failure is
`pgfleet.tls.connect_error_hint`'s job; this only answers "retry or not".
"""

from __future__ import annotations

import psycopg

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
    "may not be used with sslrootcert=system",
    "server does not support SSL, but SSL was required",
    "channel binding",
    # Client certificates.
    "certificate authentication failed",
    "connection requires a valid client certificate",
    "alert unknown ca",
    "certificate present, but not private key",
    "private key file",
)


def is_permanent_error(error: BaseException) -> bool:
    """True when retrying the connection cannot help (a bad password, an unknown database...)."""
    if not isinstance(error, psycopg.OperationalError):
        return False
    text = str(error)
    return any(fragment in text for fragment in PERMANENT_ERROR_TEXTS)
