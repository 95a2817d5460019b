"""Where to connect: conninfo resolution, safe composition and redaction.

Connection strings are only ever composed by `psycopg.conninfo.make_conninfo`,
which quotes each value: concatenation would let a value such as a database
name ``"app sslmode=disable"`` smuggle in a parameter and downgrade TLS.
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias
from urllib.parse import unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

#: What a ``conninfo`` function returns in each flavour (psycopg_pool 3.3 calls it at each
#: connection attempt; the asyncio pools also await what it returns when awaitable).
ConninfoResult: TypeAlias = str
AsyncConninfoResult: TypeAlias = str | Awaitable[str]
#: The same for a ``kwargs`` function.
KwargsResult: TypeAlias = Mapping[str, Any]
AsyncKwargsResult: TypeAlias = Mapping[str, Any] | Awaitable[Mapping[str, Any]]

#: psycopg ``connect()`` arguments that are not libpq connection parameters.
PSYCOPG_ARGUMENTS = frozenset(
    {"autocommit", "prepare_threshold", "context", "row_factory", "cursor_factory"}
)

#: Applied unless the user sets them: notice dead peers instead of waiting for the kernel.
TCP_DEFAULTS: Mapping[str, str] = {
    "keepalives": "1",
    "keepalives_idle": "15",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "15000",
    "fallback_application_name": "pgfleet",
}

#: Parameters whose values are secrets: redacted from every message pgfleet writes.
SECRET_KEYS = ("password", "sslpassword", "oauth_client_secret", "scram_client_key")

#: Parameters with a closed set of values: a typo fails at construction, naming the
#: parameter, instead of at every connection attempt. The values go to libpq untouched.
ENUMERATED: Mapping[str, tuple[str, ...]] = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "channel_binding": ("disable", "prefer", "require"),
    "sslcertmode": ("disable", "allow", "require"),
    "sslnegotiation": ("postgres", "direct"),
}
#: The libpq environment variable behind each enumerated parameter.
_ENUMERATED_ENV = {
    "sslmode": "PGSSLMODE",
    "channel_binding": "PGCHANNELBINDING",
    "sslcertmode": "PGSSLCERTMODE",
    "sslnegotiation": "PGSSLNEGOTIATION",
}


@dataclass(frozen=True, slots=True)
class ConnTarget:
    """A validated connection target: the composed conninfo plus psycopg arguments."""

    conninfo: str = field(repr=False)
    connect_kwargs: Mapping[str, Any] = field(repr=False)
    params: Mapping[str, str] = field(repr=False)
    secrets: tuple[str, ...] = field(repr=False)

    @classmethod
    def resolve(
        cls,
        conninfo: str | None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        tcp_defaults: bool = True,
    ) -> ConnTarget:
        """Resolve `conninfo` (None: ``DATABASE_URL``, else libpq's ``PG*`` environment)."""
        env = os.environ if environ is None else environ
        source = "conninfo"
        if conninfo is None:
            conninfo = env.get("DATABASE_URL", "")
            source = "DATABASE_URL"
        if not isinstance(conninfo, str):
            raise TypeError(f"conninfo must be a str or None, got {type(conninfo).__name__}")
        try:
            parsed = conninfo_to_dict(conninfo)
        except psycopg.ProgrammingError as exc:
            raise ValueError(
                f"invalid {source}: {redact(str(exc).strip(), secrets_in(conninfo))}; expected a"
                " postgresql:// URL or key=value pairs (see libpq's connection strings)"
            ) from None
        connect_kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in (kwargs or {}).items():
            if key in PSYCOPG_ARGUMENTS:
                connect_kwargs[key] = value
            elif key == "connect_timeout":
                raise ValueError("set connect_timeout on the pool, not in kwargs")
            else:
                extra[key] = value
        params = {
            key: str(value) for key, value in {**parsed, **extra}.items() if value is not None
        }
        if tcp_defaults:
            for key, value in TCP_DEFAULTS.items():
                params.setdefault(key, value)
        params.pop("connect_timeout", None)  # the pool bounds each attempt itself
        secrets = known_secrets(params, env)
        check_params(params, env)
        try:
            composed = make_conninfo("", **params)
        except psycopg.ProgrammingError as exc:
            raise ValueError(
                f"invalid connection parameter: {redact(str(exc).strip(), secrets)}"
            ) from None
        return cls(composed, connect_kwargs, params, secrets)

    def describe(self) -> str:
        """Where this connects, without secrets: ``user@host:port/dbname``."""
        return describe_params(self.params)

    def redact(self, text: str) -> str:
        """`text` with every known secret replaced by ``***``."""
        return redact(text, self.secrets)

    def __str__(self) -> str:
        return self.describe()


def describe_params(params: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> str:
    """Where `params` connect, without secrets: ``user@host:port/dbname``.

    Unset parts come from libpq's ``PG*`` variables in `environ` (default: ``os.environ``).
    """
    env = os.environ if environ is None else environ
    host = params.get("host") or params.get("hostaddr") or env.get("PGHOST") or "local"
    port = params.get("port") or env.get("PGPORT") or "5432"
    user = params.get("user") or env.get("PGUSER") or ""
    dbname = params.get("dbname") or env.get("PGDATABASE") or user
    return f"{user + '@' if user else ''}{host}:{port}/{dbname}"


def known_secrets(params: Mapping[str, Any], environ: Mapping[str, str]) -> tuple[str, ...]:
    """The secrets among parsed connection `params`, plus ``PGPASSWORD`` from `environ`."""
    return tuple(
        str(s)
        for s in (*(params.get(key) for key in SECRET_KEYS), environ.get("PGPASSWORD"))
        if s  # an empty password is no secret worth redacting
    )


def check_params(params: Mapping[str, Any], environ: Mapping[str, str]) -> None:
    """Refuse, naming the parameter, values libpq would refuse at every connection attempt.

    The enumerated parameters (`ENUMERATED`) and the port, from `params` or else from
    their libpq environment variable in `environ`. Raises `ValueError`.
    """
    _check_enumerated(params, environ)
    _check_ports(params, environ)


def _check_enumerated(params: Mapping[str, Any], env: Mapping[str, str]) -> None:
    for key, allowed in ENUMERATED.items():
        if params.get(key) is not None:
            value, origin = str(params[key]), key
        elif env.get(_ENUMERATED_ENV[key]):
            value, origin = env[_ENUMERATED_ENV[key]], _ENUMERATED_ENV[key]
        else:
            continue
        if value not in allowed:
            raise ValueError(
                f"{origin}={value!r} is not valid: expected one of {', '.join(allowed)}"
            )


#: libpq's integer syntax (``strtol``, then nothing but white space), ASCII digits only.
_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*")


def _check_ports(params: Mapping[str, Any], env: Mapping[str, str]) -> None:
    """libpq finds a bad port only when it connects, and then at every attempt."""
    if params.get("port") is not None:
        value, origin = str(params["port"]), "port"
    elif env.get("PGPORT"):
        value, origin = env["PGPORT"], "PGPORT"
    else:
        return
    for port in value.split(","):  # one per host; an empty one means the default
        if port and not (_INTEGER.fullmatch(port) and 1 <= int(port) <= 65535):
            raise ValueError(
                f"{origin}={value!r} is not valid: expected a port number from 1 to 65535"
                " (with several hosts: one per host, separated by commas)"
            )


_SECRET_KEY = "(?:" + "|".join(SECRET_KEYS) + ")"
#: A secret's value in key=value text: quoted (to the closing quote, or to the end when it
#: is missing) or bare. The look-behind keeps a key from matching inside another word.
_SECRET_VALUE = re.compile(
    rf"(?<![\w?&]){_SECRET_KEY}\s*=\s*(?:'(?P<quoted>(?:[^'\\]|\\.?)*)|(?P<bare>[^\s']+))"
)
#: The same in a URL's query, where ``&`` ends a value.
_SECRET_QUERY = re.compile(rf"[?&]{_SECRET_KEY}=(?P<value>[^&#\s']+)")
#: A password in a URL's user information (``scheme://user:password@``), up to the last
#: ``@`` of the word: libpq wants an ``@`` in a password percent-encoded, but a typo must
#: not leak either.
_URL_PASSWORD = re.compile(r"://[^\s:/@]*:(?P<value>\S+)@")


def secrets_in(text: str) -> tuple[str, ...]:
    """The passwords `text` shows the way a conninfo string or URL holds them.

    For text that may not even parse: a command line, a parser's error message. Each is
    given as written and, where that differs, decoded (percent-encoding in a URL,
    backslash escapes in a quoted value), as a message may quote either.
    """
    found: list[str] = []
    for match in _SECRET_VALUE.finditer(text):
        quoted = match.group("quoted")
        if quoted is not None:
            found += [quoted, re.sub(r"\\(.)", r"\1", quoted)]
        else:
            found.append(match.group("bare"))
    for pattern in (_SECRET_QUERY, _URL_PASSWORD):
        for match in pattern.finditer(text):
            value = match.group("value")
            found += [value, unquote(value)]
    return tuple(dict.fromkeys(s for s in found if s))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with each secret replaced by ``***``: the `secrets` given, and those that
    `text` itself shows in a conninfo string or URL (`secrets_in`).

    pgfleet's one redaction function: every message that may quote a connection string,
    a command line or a libpq error goes through it.
    """
    # Longest first: a secret may contain another.
    for secret in sorted({*secrets, *secrets_in(text)}, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text
