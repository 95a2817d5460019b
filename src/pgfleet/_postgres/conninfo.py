"""Where to connect: conninfo resolution, safe composition and redaction.

Connection strings are only ever composed by `psycopg.conninfo.make_conninfo`,
which quotes each value: concatenation would let a value such as a database
name ``"app sslmode=disable"`` smuggle in a parameter and downgrade TLS.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

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
            secrets = _password_in_text(conninfo)
            raise ValueError(
                f"invalid {source}: {redact(str(exc).strip(), secrets)}; expected a"
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
        secrets = tuple(
            s
            for s in (*(params.get(key) for key in SECRET_KEYS), env.get("PGPASSWORD"))
            if s  # an empty password is no secret worth redacting
        )
        _check_enumerated(params, env)
        try:
            composed = make_conninfo("", **params)
        except psycopg.ProgrammingError as exc:
            raise ValueError(
                f"invalid connection parameter: {redact(str(exc).strip(), secrets)}"
            ) from None
        return cls(composed, connect_kwargs, params, secrets)

    def describe(self) -> str:
        """Where this connects, without secrets: ``user@host:port/dbname``."""
        params = self.params
        host = params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST") or "local"
        port = params.get("port") or os.environ.get("PGPORT") or "5432"
        user = params.get("user") or os.environ.get("PGUSER") or ""
        dbname = params.get("dbname") or os.environ.get("PGDATABASE") or user
        return f"{user + '@' if user else ''}{host}:{port}/{dbname}"

    def redact(self, text: str) -> str:
        """`text` with every known secret replaced by ``***``."""
        return redact(text, self.secrets)

    def __str__(self) -> str:
        return self.describe()


def _check_enumerated(params: Mapping[str, str], env: Mapping[str, str]) -> None:
    for key, allowed in ENUMERATED.items():
        if key in params:
            value, origin = params[key], key
        elif env.get(_ENUMERATED_ENV[key]):
            value, origin = env[_ENUMERATED_ENV[key]], _ENUMERATED_ENV[key]
        else:
            continue
        if value not in allowed:
            raise ValueError(
                f"{origin}={value!r} is not valid: expected one of {', '.join(allowed)}"
            )


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """Replace each secret in `text` with ``***``."""
    for secret in sorted(secrets, key=len, reverse=True):  # a secret may contain another
        if secret:
            text = text.replace(secret, "***")
    return text


def _password_in_text(conninfo: str) -> tuple[str, ...]:
    """Best effort for unparsable input: anything after ``password=`` or in ``user:pw@``."""
    found: list[str] = []
    marker = "password="
    index = conninfo.find(marker)
    if index >= 0:
        value = conninfo[index + len(marker) :].split(" ", 1)[0].strip("'\"")
        if value:
            found.append(value)
    if "://" in conninfo and "@" in conninfo:
        userinfo = conninfo.split("://", 1)[1].rsplit("@", 1)[0]
        if ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
    return tuple(found)
