"""What a connection's TLS really guarantees, and what to fix when it fails.

pgfleet does no TLS of its own: every setting (``sslmode``, ``sslrootcert``, ``sslcert``,
``sslkey``, ``sslpassword``, ``sslcrl``, ``sslcrldir``, ``channel_binding``...) goes to
libpq untouched. This module reads back what libpq did, in the terms of libpq's
documented guarantees:

=============  ===================================  =============================  ===========
``sslmode``    encrypted                            server certificate (CA)        host name
=============  ===================================  =============================  ===========
disable        never                                not checked                    not checked
allow          only if the server insists           if a root file exists [1]      not checked
prefer         if the server offers TLS [2]         if a root file exists [1]      not checked
require        always                               if a root file exists [1]      not checked
verify-ca      always                               always                         not checked
verify-full    always                               always                         always
=============  ===================================  =============================  ===========

[1] The root file is ``sslrootcert``, else ``~/.postgresql/root.crt``. When it exists,
    libpq verifies the chain in every mode that uses TLS; when it does not, ``require``
    encrypts without knowing who is at the other end. ``sslrootcert=system`` (the
    operating system's CAs) is accepted with ``verify-full`` only.
[2] ``prefer`` (libpq's default) and ``allow`` fall back to plaintext *silently*, also
    when a certificate fails verification: an attacker who can block TLS gets plaintext.

`tls_info` reports this for one connection; `AsyncPostgresManager`/`PostgresManager`
log one WARNING per pool that reaches a remote host without ``verify-ca``/``verify-full``
(logger ``pgfleet.tls``; silence it with ``warn_unverified=False``).

The code lives with the rest of the PostgreSQL door, in ``pgfleet._postgres.tls``; this
module is its public face.
"""

# The public names, and (``x as x``) the helpers outside __all__, importable here as before.
from pgfleet._postgres.tls import DEFAULT_SSLMODE as DEFAULT_SSLMODE
from pgfleet._postgres.tls import SSLMODES, TLSInfo, connect_error_hint, tls_info
from pgfleet._postgres.tls import connection_options as connection_options
from pgfleet._postgres.tls import effective_settings as effective_settings
from pgfleet._postgres.tls import is_local as is_local
from pgfleet._postgres.tls import logger as logger
from pgfleet._postgres.tls import root_certificate_in_force as root_certificate_in_force
from pgfleet._postgres.tls import unverified_warning as unverified_warning

__all__ = ["SSLMODES", "TLSInfo", "connect_error_hint", "tls_info"]
