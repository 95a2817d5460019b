"""psycopg_pool's pool classes on pgfleet's engine: the drop-in (issue #16).

``from pgfleet import AsyncConnectionPool`` (or ``import pgfleet as psycopg_pool``) gives
code written for psycopg_pool 3.3 what it expects. The decision: the psycopg_pool names are
pgfleet pools that carry psycopg_pool's defaults and open semantics, while `AsyncPool` keeps
pgfleet's. Every difference between the two is written here, and only here:

- the defaults: ``conninfo=""``, ``min_size=4``, ``max_size`` None meaning ``min_size``,
  ``num_workers=3`` (pgfleet's ``max_connecting``), ``fail_fast=False`` (a checkout waits
  for the database within its timeout instead of failing at once while it is down) and
  ``retry_all_errors=True`` (`wait` sits out its timeout whatever the connect error);
- ``open``: None opens in the constructor (with psycopg_pool's warning at first use);
  ``async with`` and `open` do not wait for the database (`open` waits only with
  ``wait=True``); `wait` failing closes the pool;
- `close` leaves lent connections usable: each is closed when it comes back;
- the size rules: ``min_size=0, max_size=None`` is a ValueError (a pool that could never
  hold a connection); the null pools take ``min_size=0`` only, and ``max_size=0`` (their
  default) means no limit.

The null pools keep no idle connection (``_keeps_idle``): each checkout gets a new
connection unless a returned one is handed straight to a waiting caller; ``max_size``
bounds how many are open at once, and callers beyond it queue (in FIFO order, with
pgfleet's deadlines). pgfleet's other behaviours stay on: idle connections pinged before
they are lent, jittered lifetimes, bounded rollbacks, secrets redacted (see
``docs/psycopg_pool.md`` for the list of differences, each with its reason).

This file is the source of truth for the threaded classes: ``tools/gen_sync.py`` writes
``_sync/compat.py`` (`ConnectionPool`, `NullConnectionPool`) from it.
"""

from __future__ import annotations

import functools
import inspect  # async-only
import warnings
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Generic

import psycopg
from typing_extensions import TypeVar

from pgfleet._acompat import AsyncOpenDefaultWarning
from pgfleet._async.pool import AsyncConnectionGuard, AsyncPool
from pgfleet._async.postgres import ConnectionCallback
from pgfleet._core.state import UNBOUNDED
from pgfleet.errors import PoolTimeout

__all__ = ["AsyncConnectionPool", "AsyncNullConnectionPool"]

ConnT = TypeVar("ConnT", default=psycopg.AsyncConnection[Any])

#: psycopg_pool's defaults, where they differ from `AsyncPool`'s or have no pgfleet name.
MIN_SIZE = 4
TIMEOUT = 30.0
MAX_WAITING = 0
MAX_LIFETIME = 3600.0
MAX_IDLE = 600.0
RECONNECT_TIMEOUT = 300.0
NUM_WORKERS = 3


def _without_connect_timeout(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in kwargs.items() if key != "connect_timeout"}


def _kwargs_function_without_connect_timeout(kwargs: Callable[[], Any]) -> Callable[[], Any]:
    """`kwargs` (a function) whose results lose ``connect_timeout``: each attempt is
    bounded by the pool's ``connect_timeout`` instead (docs/psycopg_pool.md)."""

    @functools.wraps(kwargs)  # its name in messages is the user's function's
    async def pgfleet_kwargs() -> Any:
        value = kwargs()
        if inspect.isawaitable(value):  # async-only
            value = await value  # async-only
        if isinstance(value, Mapping) and "connect_timeout" in value:
            return _without_connect_timeout(value)
        return value

    return pgfleet_kwargs


class AsyncConnectionPool(AsyncPool[ConnT], Generic[ConnT]):
    """psycopg_pool's ``AsyncConnectionPool``: a pgfleet pool (`AsyncPool`) with
    psycopg_pool's defaults and open semantics (see the module docstring).

    Every psycopg_pool 3.3 parameter has the same default and meaning; pgfleet's own
    settings (``check_after_idle``, ``leak_timeout``, ``connect_timeout``,
    ``fail_fast``...) are accepted by keyword too.
    """

    _closes_lent = False

    def __init__(
        self,
        conninfo: Any = "",
        *,
        connection_class: type[psycopg.AsyncConnection[Any]] = psycopg.AsyncConnection,
        kwargs: Mapping[str, Any] | Callable[..., Any] | None = None,
        min_size: int = MIN_SIZE,
        max_size: int | None = None,
        open: bool | None = None,
        configure: ConnectionCallback | None = None,
        check: ConnectionCallback | None = None,
        reset: ConnectionCallback | None = None,
        name: str | None = None,
        close_returns: bool = False,
        timeout: float = TIMEOUT,
        max_waiting: int = MAX_WAITING,
        max_lifetime: float = MAX_LIFETIME,
        max_idle: float = MAX_IDLE,
        reconnect_timeout: float = RECONNECT_TIMEOUT,
        reconnect_failed: Callable[[Any], Any] | None = None,
        num_workers: int = NUM_WORKERS,
        **options: Any,
    ) -> None:
        min_size, engine_max_size = self._check_sizes(min_size, max_size)
        options.setdefault("fail_fast", False)
        options.setdefault("retry_all_errors", True)
        if num_workers == NUM_WORKERS and "max_connecting" in options:
            num_workers = options.pop("max_connecting")  # pgfleet's name (from_env, say)
        engine_kwargs = kwargs
        # psycopg_pool passes connect_timeout to connect(); pgfleet bounds each attempt
        # itself (its own connect_timeout) and refuses libpq's in kwargs.
        if isinstance(kwargs, Mapping) and "connect_timeout" in kwargs:
            options.setdefault("connect_timeout", float(kwargs["connect_timeout"]))
            engine_kwargs = _without_connect_timeout(kwargs)
        elif callable(kwargs):
            engine_kwargs = _kwargs_function_without_connect_timeout(kwargs)
        super().__init__(
            conninfo,
            kwargs=engine_kwargs,
            connection_class=connection_class,
            min_size=min_size,
            max_size=engine_max_size,
            timeout=timeout,
            max_waiting=max_waiting,
            max_lifetime=max_lifetime,
            max_idle=max_idle,
            configure=configure,
            reset=reset,
            check=check,
            name=name,
            open=False,
            num_workers=num_workers,
            reconnect_timeout=reconnect_timeout,
            reconnect_failed=reconnect_failed,
            close_returns=close_returns,
            **options,
        )
        self.kwargs = kwargs  # as given
        #: Opened by default (``open`` not given): warn at first use, as psycopg_pool does.
        self._open_implicit = False
        if open:  # async-only
            self._warn_open_default(2)  # async-only
        if open is None:
            open = self._open_implicit = True
        if open:
            self._open_now()

    @classmethod
    def _check_sizes(cls, min_size: int, max_size: int | None) -> tuple[int, int]:
        """psycopg_pool's size rules; returns the sizes the engine is given."""
        if max_size is None:
            max_size = min_size
        if isinstance(min_size, int) and isinstance(max_size, int) and min_size == max_size == 0:
            raise ValueError(
                "min_size=0 needs a max_size > 0 (None means min_size): such a pool could"
                " never hold a connection"
            )
        return min_size, max_size

    def _open_default_message(self) -> str:
        kind = type(self).__name__
        return (
            f"{kind} was opened in the constructor because its 'open' parameter was not"
            " given: that default is deprecated and will become False. Pass open=True or"
            f" open=False explicitly, or use the pool as a context manager: `async with"
            f" {kind}(...) as pool: ...`"
        )

    def _warn_open_default(self, stacklevel: int) -> None:
        # `stacklevel` counts from the caller of this method.
        warnings.warn(
            self._open_default_message(), AsyncOpenDefaultWarning, stacklevel=stacklevel + 1
        )

    def _warn_if_opened_by_default(self) -> None:
        """Warn once, at first use, about a pool opened by default (the user's line is
        two frames up: it called the public method that calls this one)."""
        if self._open_implicit:
            self._open_implicit = False
            self._warn_open_default(3)

    async def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Open the pool: it fills up to ``min_size`` in the background. With `wait`,
        return when it is full, or close it and raise `PoolTimeout` after `timeout`.
        A closed pool cannot be reopened (`PoolClosed`)."""
        await super().open(wait=wait, timeout=timeout)

    async def wait(self, timeout: float = 30.0) -> None:
        """Wait until ``min_size`` connections are ready; on `PoolTimeout`, close the
        pool first (as psycopg_pool does)."""
        if not self._opened and not self._forked:
            raise self._refused("closed" if self._closed else "not_open")
        self._warn_if_opened_by_default()
        try:
            await self._wait_ready(timeout)
        except PoolTimeout:
            await self.close()
            raise

    async def _wait_ready(self, timeout: float) -> None:
        await super().wait(timeout)

    async def _open_for_with(self) -> None:
        # psycopg_pool's ``async with``: opens without waiting, and never warns.
        self._open_implicit = False
        await self.open()

    def connection(self, timeout: float | None = None) -> AsyncConnectionGuard[ConnT]:
        """A context manager that lends a connection and gives it back (see `AsyncPool`)."""
        self._warn_if_opened_by_default()
        return super().connection(timeout)

    async def getconn(self, timeout: float | None = None) -> ConnT:
        """Borrow a connection; give it back with `putconn`."""
        self._warn_if_opened_by_default()
        return await super().getconn(timeout)

    async def resize(self, min_size: int, max_size: int | None = None) -> None:
        """Change the size bounds (psycopg_pool's rules: ``max_size`` None means ``min_size``)."""
        min_size, engine_max_size = self._check_sizes(min_size, max_size)
        await super().resize(min_size, engine_max_size)


class AsyncNullConnectionPool(AsyncConnectionPool[ConnT], Generic[ConnT]):
    """psycopg_pool's ``AsyncNullConnectionPool``: keeps no idle connection.

    Each checkout gets a new connection, unless one given back is handed straight to
    a queued caller; ``max_size`` bounds the connections open at once (0, the default:
    no bound) and callers beyond it queue, first come first served. For a pooler such
    as PgBouncer in front of the database. ``min_size`` must be 0.
    """

    _keeps_idle: ClassVar[bool] = False

    def __init__(self, conninfo: Any = "", *, min_size: int = 0, **options: Any) -> None:
        super().__init__(conninfo, min_size=min_size, **options)

    @classmethod
    def _check_sizes(cls, min_size: int, max_size: int | None) -> tuple[int, int]:
        if min_size != 0:
            raise ValueError("null pools must have min_size = 0")
        if max_size is None:
            max_size = 0
        if isinstance(max_size, int) and max_size < 0:
            raise ValueError("max_size must be greater or equal than 0")
        return 0, max_size or UNBOUNDED

    @property
    def max_size(self) -> int:
        """The most connections open at once; 0: no limit."""
        size = super().max_size
        return 0 if size == UNBOUNDED else size

    @staticmethod
    def _since(stats: dict[str, Any], popped: dict[str, int]) -> dict[str, Any]:
        # `get_stats` and `pop_stats` under psycopg_pool's names: ``pool_max`` 0, no limit.
        if stats["pool_max"] == UNBOUNDED:
            stats["pool_max"] = 0
        return AsyncConnectionPool._since(stats, popped)

    async def _wait_ready(self, timeout: float) -> None:
        # A null pool's `wait` checks that a connection can be made (it is closed at
        # once: a null pool keeps none).
        await self.putconn(await self.getconn(timeout))

    async def check(self) -> None:
        """Nothing to check: a null pool keeps no idle connection."""
