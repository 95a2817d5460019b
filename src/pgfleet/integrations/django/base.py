"""`DatabaseWrapper`: Django's PostgreSQL backend with pgfleet's pool in place of psycopg_pool's.

Django (5.1+) pools connections when ``DATABASES[alias]["OPTIONS"]["pool"]`` is set: its
backend builds a ``psycopg_pool.ConnectionPool`` per alias, calls ``pool.open()`` before every
new connection, borrows with ``getconn`` and gives back with ``putconn`` when Django closes
the connection (at the end of each request, as ``CONN_MAX_AGE`` must be 0). This backend
keeps all of that and overrides only what names the pool class:

- `DatabaseWrapper.pool` builds a `DjangoPool` (a `pgfleet.Pool`) from the same options,
  mapping psycopg_pool's names that pgfleet spells differently, and refuses a wrong option
  with `ImproperlyConfigured` naming it and the accepted ones;
- `DatabaseWrapper.get_new_connection` remembers which pool lent the connection, and
  `DatabaseWrapper._close` gives it back there (psycopg_pool marks its connections with
  ``conn._pool``; pgfleet's pool does not);
- `DatabaseWrapper.close_pool` does not build a pool only to close it.

Without ``OPTIONS["pool"]`` the backend is Django's, unchanged.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql.base import DatabaseWrapper as PostgresDatabaseWrapper

from pgfleet._sync.pool import Pool

__all__ = ["DatabaseWrapper", "DjangoPool"]

Connection = psycopg.Connection[Any]

#: Pool arguments the backend builds from ``DATABASES`` itself.
BUILT_BY_THE_BACKEND: Mapping[str, str] = {
    "conninfo": "the connection comes from NAME, USER, PASSWORD, HOST, PORT and OPTIONS",
    "kwargs": "the connection comes from NAME, USER, PASSWORD, HOST, PORT and OPTIONS",
    "manager": "this backend pools psycopg connections",
    "open": "Django opens the pool on the first connection",
}


class DjangoPool(Pool[Connection]):
    """The `pgfleet.Pool` a `DatabaseWrapper` builds; `open` does not wait by default.

    Django calls ``pool.open()`` before every new connection, as psycopg_pool's
    ``open(wait=False)`` is cheap and idempotent. `pgfleet.Pool.open` waits for
    ``min_size`` connections by default; here it only starts the pool (once), and the
    checkout that follows waits, bounded by the pool's ``timeout`` (or fails at once
    with `pgfleet.DatabaseUnavailable` while the database is known down).
    """

    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Start the pool if it is not started; with `wait`, wait for ``min_size``."""
        super().open(wait=wait, timeout=timeout)


def _pool_parameters() -> tuple[frozenset[str], bool]:
    """The keyword names `DjangoPool` takes, and whether it takes any (``**kwargs``)."""
    signature = inspect.signature(DjangoPool.__init__)
    names = frozenset(
        name
        for name, parameter in signature.parameters.items()
        if name != "self"
        and parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD)
    )
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    return names, takes_any


def pool_arguments(options: Mapping[str, Any] | bool, *, alias: str = "default") -> dict[str, Any]:
    """`DjangoPool` keyword arguments for ``OPTIONS["pool"]`` (a dict, or True for defaults).

    Raises `ImproperlyConfigured` for an option the pool does not take, naming it and
    the accepted ones.
    """
    if options is True:
        return {}
    where = f"DATABASES[{alias!r}]['OPTIONS']['pool']"
    if not isinstance(options, Mapping):
        raise ImproperlyConfigured(
            f"{where} must be True or a dict of pool options, got {type(options).__name__}"
        )
    names, takes_any = _pool_parameters()
    accepted = sorted(names - BUILT_BY_THE_BACKEND.keys())
    arguments: dict[str, Any] = {}
    for key, value in options.items():
        if key in BUILT_BY_THE_BACKEND:
            raise ImproperlyConfigured(
                f"{where}: {key!r} is set by the backend ({BUILT_BY_THE_BACKEND[key]})"
            )
        if not (key in names or takes_any):
            raise ImproperlyConfigured(
                f"{where}: unknown option {key!r} for pgfleet's pool; "
                f"accepted: {', '.join(accepted)}"
            )
        arguments[key] = value
    return arguments


class DatabaseWrapper(PostgresDatabaseWrapper):  # type: ignore[misc]  # Django is untyped
    """Django's PostgreSQL `DatabaseWrapper` whose pool is a `DjangoPool` (pgfleet's)."""

    # Our own registry: an alias on Django's stock backend keeps psycopg_pool's.
    _connection_pools: ClassVar[dict[str, DjangoPool]] = {}
    _pools_lock: ClassVar[threading.Lock] = threading.Lock()
    #: The psycopg connection Django holds (its attribute, typed here).
    connection: Connection | None
    #: The pool that lent `connection` (None: not pooled).
    _lender: DjangoPool | None = None

    @property
    def pool(self) -> DjangoPool | None:
        """This alias's pgfleet pool (built on first use), or None without ``OPTIONS["pool"]``."""
        pool_options = self.settings_dict["OPTIONS"].get("pool")
        if self.alias == NO_DB_ALIAS or not pool_options:
            return None
        pool = self._connection_pools.get(self.alias)
        if pool is not None:
            return pool
        # Django's rule, and its words: a pooled connection goes back after each request.
        if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
            raise ImproperlyConfigured("Pooling doesn't support persistent connections.")
        arguments = pool_arguments(pool_options, alias=self.alias)
        connect_kwargs = self.get_connection_params()
        # Ensure we run in autocommit, Django properly sets it later on (as Django does).
        connect_kwargs["autocommit"] = True
        if self.settings_dict["CONN_HEALTH_CHECKS"]:
            # psycopg_pool's check_connection pings at every checkout: so does pgfleet
            # with check_after_idle=0 (without it, only connections idle for a second).
            arguments.setdefault("check_after_idle", 0.0)
        arguments["configure"] = _configure(self._configure_connection, arguments)
        arguments.setdefault("name", f"django-{self.alias}")
        try:
            # OPTIONS["connect_timeout"] is libpq's; pgfleet bounds each attempt itself.
            connect_timeout = connect_kwargs.pop("connect_timeout", None)
            if connect_timeout is not None:
                arguments.setdefault("connect_timeout", float(connect_timeout))
            # conninfo="": the settings are the whole target (not DATABASE_URL).
            new_pool = DjangoPool("", kwargs=connect_kwargs, **arguments)
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(
                f"DATABASES[{self.alias!r}]['OPTIONS']['pool']: {exc}"
            ) from exc
        with self._pools_lock:
            # Threads racing at start-up each built one; the first stored wins and the
            # others were never opened, so closing them costs nothing.
            pool = self._connection_pools.setdefault(self.alias, new_pool)
        if pool is not new_pool:
            new_pool.close(timeout=0)
        return pool

    def close_pool(self) -> None:
        """Close this alias's pool (if built); the next connection builds a new one."""
        with self._pools_lock:
            pool = self._connection_pools.pop(self.alias, None)
        if pool is not None:
            pool.close()

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        """Django's, remembering which pool lent the connection."""
        lender = self.pool
        connection = super().get_new_connection(conn_params)
        self._lender = lender
        return connection

    def _close(self) -> None:
        lender = self._lender
        if lender is None or self.connection is None:
            super()._close()
            return
        connection, self.connection, self._lender = self.connection, None, None
        with self.wrap_database_errors:
            # To the pool that lent it, even if close_pool() replaced it since (Django's
            # own backend does the same through conn._pool).
            lender.putconn(connection)


def _configure(
    django_configure: Callable[[Connection], object], arguments: Mapping[str, Any]
) -> Callable[[Connection], None]:
    """Django's per-connection set-up (time zone, role), then the user's ``configure``."""
    user_configure: Callable[[Connection], object] | None = arguments.get("configure")

    def configure(conn: Connection) -> None:
        django_configure(conn)
        if user_configure is not None:
            user_configure(conn)

    return configure
