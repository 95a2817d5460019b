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
from typing import TYPE_CHECKING, Any, Generic, Self

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


class BasePool(Generic[ConnT]):
    """The flavour-independent half of a pool (no I/O, nothing awaited)."""

    # Set by the flavour's constructor (`_setup`, `_new_machinery` and the manager's hooks).
    settings: PoolSettings
    manager: Any
    name: str
    timeout: float
    _core: PoolCore[ConnT]
    _lock: AbstractContextManager[Any]
    _redact: Callable[[str], str]
    _is_permanent: Callable[[BaseException], bool]
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
        self._core = PoolCore(self.settings.core(), name=self.name)
        self._checkout_stacks = {}
        #: What `getconn` lent, by ``id(conn)``, for `putconn` to find.
        self._borrowed = {}
        self._forked = False
        self._opened = False
        self._closed = False
        #: Told of each checkout, return and connect (set by `pgfleet.metrics.otel`).
        self._observer: PoolObserver | None = None

    def _new_machinery(self) -> None:
        """Create the flavour's lock, queue clock, workers and events."""
        raise NotImplementedError

    def _register(self) -> None:
        _live_pools.add(self)

    def _unregister(self) -> None:
        _live_pools.discard(self)

    @classmethod
    def from_env(
        cls,
        conninfo: str | None = None,
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
        """True once `close` was called."""
        return self._closed

    def stats(self) -> PoolStats:
        """A consistent snapshot of the pool's state, counters and histograms."""
        with self._lock:
            return self._core.stats()

    def get_stats(self) -> dict[str, Any]:
        """The stats under psycopg_pool's key names (for drop-in users)."""
        return self.stats().as_psycopg_pool_dict()

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
        self._core = PoolCore(self.settings.core(), name=self.name)
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
