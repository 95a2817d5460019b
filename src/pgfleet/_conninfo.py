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

_SECRET_KEYS = ("password",)


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
                f"invalid {source}: {redact(str(exc), secrets)}; expected a postgresql:// URL"
                " or key=value pairs (see libpq's connection strings)"
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
        try:
            composed = make_conninfo("", **params)
        except psycopg.ProgrammingError as exc:
            raise ValueError(f"invalid connection parameter: {exc}") from None
        secrets = tuple(
            s
            for s in (params.get("password"), env.get("PGPASSWORD"))
            if s  # an empty password is no secret worth redacting
        )
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


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """Replace each secret in `text` with ``***``."""
    for secret in secrets:
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
