"""`BasePool`: what both pool flavours share and never awaits.

The asyncio `AsyncPool` (``_async/pool.py``) and its generated threaded twin `Pool`
(``_sync/pool.py``) inherit from it: settings checks, ``from_env``, ``repr``, stats,
the error texts, leak reports and the fork bookkeeping are written once here. What
awaits, and what builds flavour-specific objects (locks, events, workers, managers),
stays in the flavour files.
"""

from __future__ import annotations

import logging
import os
import warnings
import weakref
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self

import psycopg
from typing_extensions import TypeVar

from pgfleet._config import PoolSettings
from pgfleet._core import Entry, FailReason, PoolCore, PoolStats, Refusal, ReportLeak
from pgfleet._text import describe
from pgfleet.errors import DatabaseUnavailable, PoolClosed, PoolError, PoolTimeout, TooManyRequests

if TYPE_CHECKING:  # a type only: the pool never imports an exporter
    from pgfleet.metrics._observer import PoolObserver

logger = logging.getLogger("pgfleet")

ConnT = TypeVar("ConnT", default=psycopg.AsyncConnection[Any])

_pool_numbers = iter(range(1, 1 << 62))
#: Every open pool of either flavour, for the fork hook.
_live_pools: weakref.WeakSet[BasePool[Any]] = weakref.WeakSet()
#: Connections inherited from a parent process: never closed, never collected.
_ORPHANS: list[Any] = []


def _forget_parent_connections() -> None:
    for pool in list(_live_pools):
        pool._forget_after_fork()


os.register_at_fork(after_in_child=_forget_parent_connections)

#: The counters of psycopg_pool's stats (the other keys are measures): `pop_stats` resets them.
_PSYCOPG_POOL_COUNTERS = (
    "requests_num",
    "requests_queued",
    "requests_wait_ms",
    "requests_errors",
    "usage_ms",
    "returns_bad",
    "connections_num",
    "connections_ms",
    "connections_errors",
    "connections_lost",
)


class BasePool(Generic[ConnT]):
    """The flavour-independent half of a pool (no I/O, nothing awaited)."""

    #: False: keep no idle connection (the null pools): a returned connection goes to
    #: the oldest waiter, else it closes; ``min_size`` must be 0 (see `pgfleet._core.state`).
    _keeps_idle: ClassVar[bool] = True

    # Set by the flavour's constructor (`_setup`, `_new_machinery` and the manager's hooks).
    settings: PoolSettings
    manager: Any
    name: str
    timeout: float
    #: As given to the constructor (psycopg_pool's public attributes).
    conninfo: Any
    kwargs: Any
    connection_class: Any
    #: True: ``conn.close()`` on a connection from `getconn` gives it back (`putconn`)
    #: instead of closing it, as psycopg (3.3) does for a connection whose ``_pool`` is
    #: set: what SQLAlchemy's ``creator=pool.getconn`` recipe needs (docs/sqlalchemy.md).
    close_returns: bool
    #: Seconds of failing background connects before `reconnect_failed` is called.
    reconnect_timeout: float
    _reconnect_failed_callback: Callable[[Any], Any] | None
    _core: PoolCore[ConnT]
    _lock: AbstractContextManager[Any]
    _redact: Callable[[str], str]
    _is_permanent: Callable[[BaseException], bool]
    #: The manager's ``probe_after_idle``: a connection unseen for longer is probed
    #: (`is_broken`) before it is lent.
    _probe_after_idle: float
    _checkout_stacks: dict[int, str]
    _borrowed: dict[int, Entry[ConnT]]

    def _setup(self, name: str | None, retry_all_errors: bool) -> None:
        """The state common to both flavours; the caller then calls `_new_machinery`."""
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str, got {name!r}")
        self.name = name or f"pool-{next(_pool_numbers)}"
        self.timeout = self.settings.timeout
        if not isinstance(retry_all_errors, bool):
            raise TypeError(f"retry_all_errors must be a bool, got {retry_all_errors!r}")
        self._retry_all_errors = retry_all_errors
        #: A connect error that waiting cannot heal (see `retry_all_errors`), until a success.
        self._permanent_error: BaseException | None = None
        self._opened_at = 0.0
        self._ready_logged = False
        self._core = self._new_core()
        #: The psycopg_pool counters at the last `pop_stats` (what `get_stats` subtracts).
        self._popped: dict[str, int] = {}
        #: When the current run of failed background connects began (None: no failure),
        #: and whether `reconnect_failed` was called for it.
        self._failing_since: float | None = None
        self._reconnect_reported = False
        self._checkout_stacks = {}
        #: What `getconn` lent, by ``id(conn)``, for `putconn` to find.
        self._borrowed = {}
        self._forked = False
        self._opened = False
        self._closed = False
        #: Told of each checkout, return and connect (set by `pgfleet.metrics.otel`).
        self._observer: PoolObserver | None = None

    def _new_core(self) -> PoolCore[ConnT]:
        """The engine, in the mode the class asks for (`_keeps_idle`), probing as the
        manager asks (`_probe_after_idle`)."""
        settings = replace(
            self.settings.core(), keep_idle=self._keeps_idle, probe_after=self._probe_after_idle
        )
        return PoolCore(settings, name=self.name)

    def _new_machinery(self) -> None:
        """Create the flavour's lock, queue clock, workers and events."""
        raise NotImplementedError

    def _set_compat_attributes(
        self,
        conninfo: Any,
        kwargs: Any,
        connection_class: Any,
        close_returns: bool,
        reconnect_timeout: float,
        reconnect_failed: Callable[[Any], Any] | None,
    ) -> None:
        """Keep psycopg_pool's public attributes, as given."""
        if not isinstance(close_returns, bool):
            raise TypeError(f"close_returns must be a bool, got {close_returns!r}")
        if (
            isinstance(reconnect_timeout, bool)
            or not isinstance(reconnect_timeout, int | float)
            or not reconnect_timeout >= 0
        ):
            raise ValueError(f"reconnect_timeout must be >= 0 seconds, got {reconnect_timeout!r}")
        if reconnect_failed is not None and not callable(reconnect_failed):
            raise TypeError(f"reconnect_failed must be callable, got {reconnect_failed!r}")
        self.conninfo = conninfo
        self.kwargs = kwargs
        self.connection_class = connection_class
        self.close_returns = close_returns
        self.reconnect_timeout = float(reconnect_timeout)
        self._reconnect_failed_callback = reconnect_failed

    def _register(self) -> None:
        _live_pools.add(self)

    def _unregister(self) -> None:
        _live_pools.discard(self)

    @classmethod
    def from_env(
        cls,
        conninfo: str | Callable[[], Any] | None = None,
        *,
        prefix: str = "PGFLEET_",
        environ: Mapping[str, str] | None = None,
        **settings: Any,
    ) -> Self:
        """A pool configured from the environment (12-factor).

        Where to connect: `conninfo`, else ``DATABASE_URL``, else libpq's ``PG*``
        variables. Pool settings: ``{prefix}{SETTING}`` variables such as
        ``PGFLEET_MAX_SIZE=20`` or ``PGFLEET_MAX_IDLE=none``; keyword arguments win
        over the environment. A bad value raises ValueError naming the variable.
        """
        found = PoolSettings.env_overrides(prefix, environ, explicit=settings)
        if conninfo is None and environ is not None:
            conninfo = environ.get("DATABASE_URL", "")  # not os.environ's
        build: Callable[..., Self] = cls  # the flavour's constructor
        return build(conninfo, **{**found, **settings})

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._opened else "new"
        return f"<{type(self).__name__} {self.name!r} {state} {self.manager!r}>"

    @property
    def closed(self) -> bool:
        """True before `open` and once `close` was called (as in psycopg_pool)."""
        return self._closed or not (self._opened or self._forked)

    # psycopg_pool's read-only view of the settings (`resize` changes the sizes).

    @property
    def min_size(self) -> int:
        """The connections kept open even when idle."""
        return self.settings.min_size

    @property
    def max_size(self) -> int:
        """The most connections open at once."""
        assert self.settings.max_size is not None
        return self.settings.max_size

    @property
    def max_waiting(self) -> int:
        """The most callers queued at once (0: unbounded)."""
        return self.settings.max_waiting

    @property
    def max_lifetime(self) -> float | None:
        """Seconds after which a connection is replaced."""
        return self.settings.max_lifetime

    @property
    def max_idle(self) -> float | None:
        """Seconds an idle connection above ``min_size`` is kept."""
        return self.settings.max_idle

    @property
    def num_workers(self) -> int:
        """psycopg_pool's name for ``max_connecting``: the most connection attempts at once.

        pgfleet has no fixed set of workers: returns, checks and expiry run as they
        come; connection attempts are the background work bounded by this number.
        """
        return self.settings.max_connecting

    def stats(self) -> PoolStats:
        """A consistent snapshot of the pool's state, counters and histograms."""
        with self._lock:
            return self._core.stats()

    def get_stats(self) -> dict[str, Any]:
        """The stats under psycopg_pool's key names (for drop-in users).

        The counters count from the last `pop_stats` (the measures are the current
        ones); `stats` counts from the pool's creation.
        """
        with self._lock:
            stats = self._core.stats().as_psycopg_pool_dict()
            popped = self._popped
        return self._since(stats, popped)

    def pop_stats(self) -> dict[str, Any]:
        """Like `get_stats`, then reset its counters (not `stats`, which never resets)."""
        with self._lock:
            stats = self._core.stats().as_psycopg_pool_dict()
            popped = self._popped
            self._popped = {key: stats[key] for key in _PSYCOPG_POOL_COUNTERS if key in stats}
        return self._since(stats, popped)

    @staticmethod
    def _since(stats: dict[str, Any], popped: dict[str, int]) -> dict[str, Any]:
        for key, value in popped.items():
            stats[key] -= value
        return stats

    # -- reconnect_failed ---------------------------------------------------------------

    def _connect_streak(self, ok: bool, now: float) -> bool:
        """Track failing background connects; True once per run of failures that has
        lasted `reconnect_timeout` (then `reconnect_failed` is due; the pool keeps trying)."""
        if ok:
            self._failing_since = None
            self._reconnect_reported = False
            return False
        if self._failing_since is None:
            self._failing_since = now
        if self._reconnect_reported or now - self._failing_since < self.reconnect_timeout:
            return False
        self._reconnect_reported = True
        return True

    # -- what the pool writes ----------------------------------------------------------

    def _describe_error(self, error: BaseException) -> str:
        """The first line of an error with its hints, with known secrets redacted."""
        return describe(error, redact=self._redact, with_type=True, with_hints=True)

    def _describe_short(self, error: BaseException) -> str:
        """The first line of an error, with known secrets redacted (for log lines)."""
        return describe(error, redact=self._redact, with_type=True)

    def _note_connect_failure(self, error: Exception, attempt: int, delay: float) -> None:
        """Log a failed attempt once; remember it when waiting cannot heal it."""
        if not self._retry_all_errors and self._is_permanent(error):
            self._permanent_error = error
        # A long outage repeats itself: INFO at attempts 1, 2, 4, 8..., DEBUG between.
        level = logging.INFO if attempt & (attempt - 1) == 0 else logging.DEBUG
        logger.log(
            level,
            "pool %r: connection attempt %d failed: %s; next attempt in %.2f s",
            self.name,
            attempt,
            self._describe_error(error),
            delay,
        )

    def _report_leak(self, action: ReportLeak) -> None:
        # The engine says which report this is: the entry may have changed hands since.
        entry, held = action.entry, action.held
        if not action.returned:
            stack = self._checkout_stacks.get(entry.number, "(stack not recorded)")
            logger.warning(
                "pool %r: connection #%d held for %.1f s (leak_timeout=%s); checked out at:\n%s",
                self.name,
                entry.number,
                held,
                self.settings.leak_timeout,
                stack,
            )
        else:
            logger.info(
                "pool %r: leaked connection #%d came back after %.1f s",
                self.name,
                entry.number,
                held,
            )

    def _refused(self, refusal: Refusal, *, opening: bool = False) -> PoolError:
        """The error for a caller the engine refused to queue (or a pool it will not open)."""
        if refusal == "queue_full":
            max_waiting = self._core.settings.max_waiting
            return TooManyRequests(
                f"pool {self.name!r} already has {max_waiting} requests waiting"
                f" (max_waiting={max_waiting})"
            )
        if refusal == "not_open":
            return PoolClosed(f"pool {self.name!r} is not open (call open() first)")
        if opening:
            return PoolClosed(f"pool {self.name!r} was closed and cannot be reopened")
        return PoolClosed(f"pool {self.name!r} is closed")

    def _failed(self, reason: FailReason) -> PoolError:
        """The error for a queued caller the engine failed."""
        if reason == "closed":
            return self._refused("closed")
        error = self._core.last_error  # what made the engine give up on the database
        described = "" if error is None else f" ({self._describe_error(error)})"
        failure = DatabaseUnavailable(
            f"pool {self.name!r}: the database is unavailable{described};"
            " the checkout failed fast instead of waiting"
        )
        failure.__cause__ = error
        return failure

    def _timeout_error(self, timeout: float, what: str) -> PoolTimeout:
        stats = self._core.stats()
        error = PoolTimeout(
            f"pool {self.name!r}: no connection within {timeout:.3g} s ({what}; size={stats.size}"
            f" idle={stats.idle} in_use={stats.in_use} waiting={stats.waiting}"
            f" connecting={stats.connecting} max_size={stats.max_size})"
            + (
                f"; last connection error: {self._describe_error(self._core.last_error)}"
                if self._core.last_error is not None
                else ""
            )
        )
        error.__cause__ = self._core.last_error
        return error

    # -- fork --------------------------------------------------------------------------

    def _forget_after_fork(self) -> None:
        """In a forked child: drop the parent's connections and machinery, untouched.

        The parent's connections are kept referenced forever (`_ORPHANS`): if they
        were garbage-collected, libpq would send a Terminate message on the parent's
        sockets. The child opens its own connections on its next checkout.
        """
        _ORPHANS.extend(entry.conn for entry in self._core.forget_all())
        self._core = self._new_core()
        self._new_machinery()
        self._checkout_stacks = {}
        self._borrowed = {}
        self._forked = self._opened and not self._closed
        self._opened = False

    def _leave_orphan(self, entry: Entry[ConnT]) -> None:
        """A connection lent before ``os.fork()`` came back in the child: the parent's
        session, so nothing is sent on it (no commit, no rollback, not even a look)."""
        logger.warning(
            "pool %r: a connection lent before os.fork() was given back in the child process;"
            " it belongs to the parent and was left untouched (nothing committed or rolled"
            " back)",
            self.name,
        )

    def _count_transaction_retry(self) -> None:
        with self._lock:
            self._core.counters.transaction_retries += 1

    def __del__(self) -> None:
        if getattr(self, "_opened", False) and not getattr(self, "_closed", True):
            warnings.warn(
                f"{self!r} was never closed; call close() or use it as a context manager",
                ResourceWarning,
                stacklevel=2,
            )
