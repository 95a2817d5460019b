"""`AsyncPool`: the shell that drives the pool engine.

This file is the source of truth for the threaded `Pool` too:
``tools/gen_sync.py`` writes ``_sync/pool.py`` from it by renaming. The shell
calls the engine under its lock (a no-op in the async flavour: the engine never yields),
then carries out the returned actions outside the lock.
"""

from __future__ import annotations

import asyncio  # async-only
import logging
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, Unpack

import psycopg
from typing_extensions import TypeVar

from pgfleet import _config as _defaults
from pgfleet._acompat import (
    AsyncCoreLock,
    AsyncEvent,
    AsyncQueueClock,
    AsyncWaiter,
    AsyncWorkers,
    abounded,
    aresolve,
    monotonic,
)
from pgfleet._async.manager import AsyncManagerProtocol, ManagerHooks
from pgfleet._async.postgres import AsyncPostgresManager, ConnectionCallback
from pgfleet._base import BasePool
from pgfleet._config import PoolSettings
from pgfleet._core import (
    Action,
    Check,
    Close,
    Connect,
    DiscardReason,
    Entry,
    Fail,
    HandOff,
    ReportLeak,
    Wakeup,
)
from pgfleet._core.state import NO_ACTIONS, ORPHANED
from pgfleet._postgres.conninfo import AsyncConninfoResult, AsyncKwargsResult
from pgfleet.errors import PoolError

if TYPE_CHECKING:  # imported on first use: a pool that runs no transaction never needs them
    from pgfleet._async import tx as _tx
    from pgfleet._retry import TransactionOptions

logger = logging.getLogger("pgfleet")

ConnT = TypeVar("ConnT", default=psycopg.AsyncConnection[Any])

_new_object = object.__new__

#: The actions that wake a queued caller (a tuple: ``HandOff | Fail`` is rebuilt per use).
_WAKES = (HandOff, Fail)


def _require_running_loop(pool: object) -> None:  # async-only
    # psycopg_pool's error (and message): the pool's tasks need a loop to run on.  # async-only
    try:  # async-only
        asyncio.get_running_loop()  # async-only
    except RuntimeError:  # async-only
        kind = type(pool).__name__  # async-only
        raise RuntimeError(f"{kind} open with no running loop") from None  # async-only


def _clean_status(manager: object) -> int | None:
    """What `AsyncPostgresManager.is_clean` compares, when it is `manager`'s `is_clean`."""
    if (
        isinstance(manager, AsyncPostgresManager)
        and type(manager).is_clean is AsyncPostgresManager.is_clean
        and manager._reset is None
    ):
        return int(psycopg.pq.TransactionStatus.IDLE)
    return None


class AsyncPool(BasePool[ConnT], Generic[ConnT]):
    """A pool of connections for asyncio programs.

    Args:
        conninfo: where to connect (URL or ``key=value``); None reads ``DATABASE_URL``,
            else libpq's ``PG*`` environment. Or a function returning it, called at each
            connection attempt (see `AsyncPostgresManager`).
        kwargs: more `psycopg.AsyncConnection.connect` arguments, or a function returning them.
        manager: pool anything: an `AsyncManager` replaces the PostgreSQL manager.
        min_size: connections kept open even when idle.
        max_size: the most connections open at once (default: ``min_size``).
        timeout: seconds a checkout may wait by default.
        max_waiting: the most callers queued at once (0: unbounded); beyond it,
            `TooManyRequests`.
        max_lifetime: seconds after which a connection is replaced (with up to 10%
            jitter, never later).
        max_idle: seconds an idle connection above ``min_size`` is kept.
        check_after_idle: ping a connection at checkout only if it sat idle longer
            than this (0: always; None: never).
        configure, reset: ``async fn(conn)`` callbacks, as in psycopg_pool.
        check: ``async fn(conn)`` run on every checkout, as in psycopg_pool: when it
            raises, the connection is dropped and the caller gets another within its
            timeout (`check_connection` is a ready-made one).
        connection_class: the class whose ``connect`` makes the connections.
        num_workers: psycopg_pool's name for `max_connecting` (pgfleet has no fixed
            set of workers: connection attempts are its background work).
        reconnect_timeout: seconds of failing background connects after which
            `reconnect_failed` is called; the pool keeps trying afterwards.
        reconnect_failed: ``fn(pool)`` (or an ``async`` one) called then.
        close_returns: psycopg_pool's ``close_returns``: ``conn.close()`` on a lent
            connection gives it back to the pool.
        leak_timeout: warn (with the checkout stack) about a connection held longer.
        name: the pool's name in logs, errors and metrics.
        open: open at construction, starting the background work at once (prefer ``async with``).
        connect_timeout: seconds one connection attempt may take.
        reset_timeout: seconds the rollback of a returned connection may take.
        max_connecting: the most connection attempts at once.
        fail_fast: while the database is known down, fail checkouts at once with
            `DatabaseUnavailable` instead of waiting out the timeout.
        reconnect_delay, reconnect_max_delay: back-off bounds between attempts.
        retry_all_errors: keep waiting even on errors that waiting cannot heal (a
            bad password, an unknown database, a TLS verification failure): for a
            database that is still being provisioned. By default `wait` and ``with``
            fail at once on them.
        warn_unverified: log one WARNING when the pool reaches a remote host without
            verifying it (sslmode not ``verify-ca``/``verify-full``); see `pgfleet.tls`.
        transaction_pooler: the database is reached through a pooler in transaction mode
            (PgBouncer ``pool_mode=transaction``, pgcat, PgDog, Supavisor, Odyssey; also
            ``PGFLEET_TRANSACTION_POOLER`` with `from_env`): no automatic prepared
            statements, no `reset` callback (ValueError), a `configure` that runs a
            session statement (``SET`` without ``LOCAL``, ``LISTEN``...) fails with
            `TransactionPoolerError` before sending it, and nothing is sent on a
            returned connection but the rollback of a transaction left open. Off, a
            pool that meets a transaction pooler logs one WARNING (logger
            ``pgfleet.pooler``). See `AsyncPostgresManager` and ``docs/pgbouncer.md``.
    """

    _lock: AsyncCoreLock
    manager: AsyncManagerProtocol[ConnT]
    #: True: `close` waits its timeout for lent connections, then closes them. False
    #: (the psycopg_pool classes): they stay usable and are closed when given back.
    _closes_lent: ClassVar[bool] = True

    def __init__(
        self,
        conninfo: str | Callable[[], AsyncConninfoResult] | None = None,
        *,
        kwargs: Mapping[str, Any] | Callable[[], AsyncKwargsResult] | None = None,
        manager: AsyncManagerProtocol[ConnT] | None = None,
        min_size: int = _defaults.MIN_SIZE,
        max_size: int | None = None,
        timeout: float = _defaults.TIMEOUT,
        max_waiting: int = _defaults.MAX_WAITING,
        max_lifetime: float | None = _defaults.MAX_LIFETIME,
        max_idle: float | None = _defaults.MAX_IDLE,
        check_after_idle: float | None = _defaults.CHECK_AFTER_IDLE,
        configure: ConnectionCallback | None = None,
        reset: ConnectionCallback | None = None,
        check: ConnectionCallback | None = None,
        leak_timeout: float | None = _defaults.LEAK_TIMEOUT,
        name: str | None = None,
        open: bool = False,
        connect_timeout: float = _defaults.CONNECT_TIMEOUT,
        reset_timeout: float = _defaults.RESET_TIMEOUT,
        max_connecting: int = _defaults.MAX_CONNECTING,
        fail_fast: bool = _defaults.FAIL_FAST,
        reconnect_delay: float = _defaults.RECONNECT_DELAY,
        reconnect_max_delay: float = _defaults.RECONNECT_MAX_DELAY,
        retry_all_errors: bool = False,
        warn_unverified: bool = True,
        transaction_pooler: bool = False,
        connection_class: type[psycopg.AsyncConnection[Any]] | None = None,
        num_workers: int | None = None,
        reconnect_timeout: float = _defaults.RECONNECT_TIMEOUT,
        reconnect_failed: Callable[[Any], Any] | None = None,
        close_returns: bool = False,
    ) -> None:
        if num_workers is not None:
            if isinstance(num_workers, bool) or not isinstance(num_workers, int):
                raise TypeError(f"num_workers must be an int, got {num_workers!r}")
            if num_workers < 1:
                raise ValueError(f"num_workers must be >= 1, got {num_workers}")
            if max_connecting not in (_defaults.MAX_CONNECTING, num_workers):
                raise TypeError("pass num_workers or max_connecting (its pgfleet name), not both")
            max_connecting = num_workers
        self.settings = PoolSettings(
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            max_waiting=max_waiting,
            max_lifetime=max_lifetime,
            max_idle=max_idle,
            check_after_idle=check_after_idle,
            leak_timeout=leak_timeout,
            connect_timeout=connect_timeout,
            reset_timeout=reset_timeout,
            max_connecting=max_connecting,
            fail_fast=fail_fast,
            reconnect_delay=reconnect_delay,
            reconnect_max_delay=reconnect_max_delay,
            transaction_pooler=transaction_pooler,
        )
        if manager is not None:
            if (
                conninfo is not None
                or kwargs
                or configure
                or reset
                or check
                or not warn_unverified
                or transaction_pooler
                or connection_class is not None
            ):
                raise TypeError(
                    "pass either a manager or conninfo/kwargs/configure/reset/check/"
                    "warn_unverified/transaction_pooler/connection_class, not both"
                )
            self.manager = manager
            connection_class = getattr(manager, "connection_class", None)
        else:
            if connection_class is None:
                connection_class = psycopg.AsyncConnection
            self.manager = AsyncPostgresManager(  # type: ignore[assignment]
                conninfo,
                kwargs=kwargs,
                connection_class=connection_class,
                configure=configure,
                reset=reset,
                connect_timeout=connect_timeout,
                warn_unverified=warn_unverified,
                transaction_pooler=self.settings.transaction_pooler,
            )
        # The one place the manager's optional hooks are read (its own, else the defaults
        # of `AsyncManager`); a manager without the six required methods fails here.
        hooks = ManagerHooks.of(self.manager)
        #: `is_broken` is skipped for connections known good more recently than this.
        self._probe_after_idle = hooks.probe_after_idle
        #: True: a returned connection needs neither commit nor reset.
        self._is_clean = hooks.is_clean
        #: The stock manager's `is_clean` as data, for the guard to inline (a call fewer
        #: on every return, ~600 instructions): the transaction status of a clean
        #: connection, or None when another `is_clean` must be called.
        self._clean_status = _clean_status(self.manager)
        #: True: waiting cannot heal this connect error.
        self._is_permanent = hooks.is_permanent
        #: Hides the manager's secrets in what the pool writes.
        self._redact = hooks.redact
        if check is not None and not callable(check):
            raise TypeError(f"check must be callable, got {check!r}")
        #: Run on every checkout (psycopg_pool's ``check``); the manager's own ping
        #: still checks connections that sat idle.
        self._check_callback: Callable[[Any], Awaitable[None]] | None = check
        #: True: the pool's connections carry ``conn._pool`` from their connect to their
        #: close, as psycopg_pool sets it: psycopg's ``with conn:`` then leaves a lent
        #: connection open, its close() returns it with close_returns on, and the pre-3.3
        #: SQLAlchemy recipe (a close() override calling ``self._pool.putconn``) works.
        #: Set once per connection, not per lend: the hot path stays free of it. Only on
        #: the PostgreSQL manager's connections (a custom manager's may take no attribute).
        self._marks_connections = isinstance(self.manager, AsyncPostgresManager)
        self._set_compat_attributes(
            conninfo,
            kwargs,
            connection_class,
            close_returns,
            reconnect_timeout,
            reconnect_failed,
        )
        self._setup(name, retry_all_errors)
        self._new_machinery()
        self._register()
        if open:
            self._open_now()

    def _new_machinery(self) -> None:
        self._lock = AsyncCoreLock()
        # This engine's queue, read when a deadline passes (a forked child makes a new
        # engine and a new clock; the old clock still times out the old queue).
        self._queue_clock = AsyncQueueClock(self._core.waiters)
        self._workers = AsyncWorkers(self.name)
        self._wakeup = AsyncEvent()
        self._state_changed = AsyncEvent()

    # -- lifecycle -------------------------------------------------------------------

    async def open(self, wait: bool = True, timeout: float = 30.0) -> None:
        """Start the pool; with `wait`, until ``min_size`` connections are ready.

        Raises `PoolTimeout` (chaining the last connection error) when the pool
        is not filled within `timeout`; the pool stays open and keeps trying.
        """
        self._open_now()
        if wait:
            await self.wait(timeout)

    def _open_now(self) -> None:
        if self._closed:
            raise self._refused("closed", opening=True)
        if self._opened:
            return
        _require_running_loop(self)  # async-only
        self._opened_at = monotonic()
        with self._lock:
            actions = self._core.open(self._opened_at)
        if isinstance(actions, str):
            raise self._refused(actions, opening=True)
        self._opened = True
        self._workers.spawn(self._maintain)
        self._run_nowait(actions)

    async def wait(self, timeout: float = 30.0) -> None:
        """Wait until ``min_size`` connections are ready, or raise `PoolTimeout`."""
        deadline = monotonic() + timeout
        while True:
            with self._lock:
                ready = len(self._core.idle) + len(self._core.lent)
                enough = ready >= self.settings.min_size
                closed = self._core.closed
            if closed:
                raise self._refused("closed")
            if enough:
                if not self._ready_logged:  # once: a later wait() is no news
                    self._ready_logged = True
                    logger.info(
                        "pool %r: ready, %d connection(s) in %.3f s",
                        self.name,
                        ready,
                        monotonic() - self._opened_at,
                    )
                return
            permanent = self._permanent_error
            if permanent is not None:
                error = PoolError(
                    f"pool {self.name!r}: cannot connect ({self._describe_error(permanent)});"
                    " waiting will not help: check the credentials, the database name and"
                    " the TLS settings (or pass retry_all_errors=True to keep waiting)"
                )
                raise error from permanent
            remaining = deadline - monotonic()
            if remaining <= 0:
                raise self._timeout_error(timeout, f"{ready} of {self.settings.min_size} ready")
            self._state_changed.clear()
            await self._state_changed.wait(min(remaining, 0.5))

    async def close(self, timeout: float = 5.0) -> None:
        """Stop lending, fail the waiters, wait up to `timeout` for lent connections, close all.

        Idempotent. Leaves no background task behind.
        """
        if self._closed:
            return
        self._closed = True
        with self._lock:
            actions = self._core.close(monotonic())
        await self._run(actions)
        self._wakeup.set()
        deadline = monotonic() + timeout
        while self._closes_lent:
            with self._lock:
                lent = len(self._core.lent)
            remaining = deadline - monotonic()
            if not lent or remaining <= 0:
                break
            self._state_changed.clear()
            await self._state_changed.wait(min(remaining, 0.1))
        if not self._closes_lent:
            # psycopg_pool's way: a lent connection stays usable; it is closed on return.
            await self._workers.join(max(deadline - monotonic(), 1.0))
            self._unregister()
            return
        with self._lock:
            actions = self._core.close_lent()
        self._borrowed.clear()  # a late putconn finds nothing: quiet on a closed pool
        if actions:
            logger.warning(
                "pool %r: closing %d connection(s) still lent after %.3g s",
                self.name,
                len(actions),
                timeout,
            )
        await self._run(actions)
        await self._workers.join(max(deadline - monotonic(), 1.0))
        self._unregister()

    async def __aenter__(self) -> Self:
        try:
            await self._open_for_with()
        except BaseException:
            await self.close(timeout=0)  # nobody will call __aexit__
            raise
        return self

    async def _open_for_with(self) -> None:
        """What ``async with pool`` does first: open, and wait for ``min_size``."""
        await self.open(wait=True, timeout=self.timeout)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- lending ---------------------------------------------------------------------

    def connection(self, timeout: float | None = None) -> AsyncConnectionGuard[ConnT]:
        """A context manager that lends a connection and always gives it back.

        ``async with pool.connection() as conn: ...``. As with psycopg_pool, a block
        that ends cleanly commits the transaction it left open; one that raises is
        rolled back (or the connection discarded when it was left mid-query), and
        the exception passes through unchanged.
        """
        # What ``AsyncConnectionGuard(self, timeout)`` does, without the call to its
        # ``__init__``: CPython 3.11 calls a class's Python ``__init__`` through C
        # (``type_call``), which costs more than setting three slots here (callgrind:
        # ~500 instructions a checkout).
        guard: AsyncConnectionGuard[ConnT] = _new_object(AsyncConnectionGuard)
        guard._pool = self
        guard._timeout = timeout
        guard._entry = None
        return guard

    async def getconn(self, timeout: float | None = None) -> ConnT:
        """Borrow a connection; give it back with `putconn`."""
        started = monotonic() if self._observer is not None else 0.0
        entry = await self._checkout(timeout)
        conn = entry.conn
        self._borrowed[id(conn)] = entry
        if self.close_returns and not self._marks_connections:
            conn._pool = self  # type: ignore[attr-defined]  # a custom manager's: per lend
        if self._observer is not None:  # the OpenTelemetry histograms, when enabled
            self._observer.checked_out(monotonic() - started)
        return conn

    async def putconn(self, conn: ConnT) -> None:
        """Give back a connection borrowed with `getconn`."""
        entry = self._borrowed.pop(id(conn), None)
        if entry is None or entry.conn is not conn or not self._core.is_lent(entry):
            if self._closed:
                # close() already closed what was still lent after its timeout; a late
                # ``finally: putconn()`` during shutdown is not an error (psycopg_pool agrees).
                return
            if self.close_returns and any(e.conn is conn for e in self._core.lent.values()):
                # Lent by connection() and closed in its block (psycopg's close() calls
                # putconn): closed for real; the block's end replaces it quietly. (A rare
                # path: the scan of the lent connections costs nothing on the hot one.)
                await self.manager.close(conn)
                return
            raise ValueError(f"{conn!r} is not lent by pool {self.name!r}")
        if self.close_returns and not self._marks_connections:
            conn._pool = None  # type: ignore[attr-defined]  # from now on, close() closes it
        await self._checkin(entry)

    async def _checkout(
        self, timeout: float | None, broken: Entry[ConnT] | None = None
    ) -> Entry[ConnT]:
        """The slow path of a checkout: queueing, checks, replacing broken connections.

        `broken` is an entry the fast path lent and found broken: dropped first.
        """
        if broken is not None:
            await self._discard(broken, "broken")
        if self._forked:
            self._start_after_fork()
        if timeout is None:
            timeout = self.timeout
        started = monotonic()
        deadline = started + timeout
        actions: Sequence[Action]
        while True:
            core = self._core
            if core.waiters or not core.idle:
                # Others are queued (lend_idle would refuse: first come, first served), or
                # nothing is idle: queue at once, without lend_idle's lock round. Read
                # unlocked, so only a hint: enqueue decides (and serves from the idle
                # stack what came back meanwhile).
                entry, needs_check, actions = None, False, NO_ACTIONS
            else:
                with self._lock:
                    entry, needs_check, actions = core.lend_idle(started)
            if actions:
                try:
                    await self._run(actions)  # closes expired connections
                except BaseException:
                    # Cancelled meanwhile: the entry lent with these actions is ours,
                    # unused, and goes back (else its slot is lost for good).
                    if entry is not None:
                        with self._lock:
                            actions = self._core.give_back(entry, monotonic())
                        self._run_nowait(actions)
                    raise
            if entry is None:
                # Queue (here, not in a function of its own: a frame fewer on every
                # queued checkout). What the engine hands over is known good (checked,
                # or just back clean), or seen too long ago: then probed just below.
                waiter, actions = self._enqueue(started)
                try:
                    # Inside the try: cancelled while these actions run (a close takes
                    # time), the waiter must still leave the queue, not stay a ghost.
                    if actions:
                        await self._run(actions)
                    await waiter.wait(deadline - monotonic())
                except BaseException:
                    self._withdraw(waiter)
                    raise
                outcome = waiter.outcome  # written once, under the lock, before the wake-up
                entry = outcome if isinstance(outcome, Entry) else self._unserved(waiter, timeout)
            if needs_check:
                ok = await self._check_before_lending(entry, deadline)
            elif (
                monotonic() - entry.seen_at <= self._probe_after_idle  # seen a moment ago
                or not self.manager.is_broken(entry.conn)
            ):
                ok = True
            else:
                await self._discard(entry, "broken")
                ok = False
            if ok and (
                self._check_callback is None or await self._passes_check_callback(entry, deadline)
            ):
                break
            started = monotonic()
        if self.settings.leak_timeout is not None:
            # Drop this frame and its one caller (getconn or the guard's __aenter__): the
            # innermost frame left is the user's line that took the connection.
            self._checkout_stacks[entry.number] = "".join(traceback.format_stack(limit=12)[:-2])
        return entry

    def _enqueue(self, now: float) -> tuple[AsyncWaiter, Sequence[Action]]:
        """Queue the caller: its waiter, and the actions to run (connects to start).

        Raises the engine's refusal (closed, not open, queue full) as its error.
        """
        waiter = AsyncWaiter(self._queue_clock)
        with self._lock:
            actions = self._core.enqueue(waiter, now)
        if isinstance(actions, str):
            raise self._refused(actions)
        return waiter, actions

    def _withdraw(self, waiter: AsyncWaiter) -> None:
        """Cancelled (or interrupted) while queued: leave the queue. The engine may have
        served the waiter at the same moment: then the entry is ours, unused and clean,
        and goes back."""
        given_back: Sequence[Action] = NO_ACTIONS
        with self._lock:
            withdrawn = self._core.cancel(waiter, monotonic(), timed_out=False)
            outcome = waiter.outcome
            if not withdrawn and isinstance(outcome, Entry):
                given_back = self._core.give_back(outcome, monotonic())
        self._run_nowait(given_back)  # outside the lock, as every action

    def _unserved(self, waiter: AsyncWaiter, timeout: float) -> Entry[ConnT]:
        """A queued caller woken without a connection: timed out (it leaves the queue,
        unless served meanwhile: then its entry) or failed. Raises the caller's error."""
        outcome = waiter.outcome
        if outcome is None:
            with self._lock:
                self._core.cancel(waiter, monotonic())
            outcome = waiter.outcome
        if isinstance(outcome, Entry):
            return outcome
        if outcome is not None:
            raise self._failed(outcome)
        raise self._timeout_error(timeout, "waited in the queue")

    async def _check_before_lending(self, entry: Entry[ConnT], deadline: float) -> bool:
        """Ping an entry that sat idle (or is suspect); drop it when it fails."""
        conn = entry.conn
        ok = False
        try:
            if not self.manager.is_broken(conn):
                await self.manager.check(conn, max(deadline - monotonic(), 0.001))
                ok = True
        except Exception as exc:
            logger.info(
                "pool %r: connection failed its check: %s", self.name, self._describe_short(exc)
            )
        finally:
            if not ok:
                await self._discard(entry, "check_failed")
        if ok:
            with self._lock:
                self._core.check_passed(entry, monotonic())
        return ok

    async def _passes_check_callback(self, entry: Entry[ConnT], deadline: float) -> bool:
        """Run the ``check`` callback on a connection about to be lent (psycopg_pool runs
        it on every checkout); drop the connection when it raises."""
        assert self._check_callback is not None
        try:
            await abounded(self._check_callback(entry.conn), max(deadline - monotonic(), 0.001))
        except Exception as exc:
            logger.info(
                "pool %r: connection failed the check callback: %s",
                self.name,
                self._describe_short(exc),
            )
        else:
            return True
        await self._discard(entry, "check_failed")
        return False

    async def _checked_or_another(self, entry: Entry[ConnT], timeout: float | None) -> Entry[ConnT]:
        """The guard's fast path with a ``check`` callback: `entry` if it passes, else
        another connection (from the slow path, checked the same way)."""
        started = monotonic()
        wait = self.timeout if timeout is None else timeout
        if await self._passes_check_callback(entry, started + wait):
            return entry
        return await self._checkout(max(wait - (monotonic() - started), 0.0))

    async def _discard(self, entry: Entry[ConnT], reason: DiscardReason) -> None:
        """Drop a lent connection found unusable before use; its elders become suspect."""
        with self._lock:
            actions = self._core.discard(entry, monotonic(), reason)
        await self._run(actions)

    async def _checkin(self, entry: Entry[ConnT]) -> None:
        """Reset a returned connection, then give it back (or drop it).

        No probe: a connection that died while lent (terminated backend, restart) and
        came back unused looks IDLE, and only its socket knows; but one lent longer
        than `_probe_after_idle` comes back unseen (`Entry.seen_at`), and is probed
        before it is lent again, whoever takes it (one probe per lend, not two under
        load: a return and a hand-over).
        """
        if entry.state == ORPHANED:
            self._leave_orphan(entry)
            return
        broken = reset = False
        now = monotonic()
        try:
            if not self._is_clean(entry.conn):
                await self.manager.reset(entry.conn, self.settings.reset_timeout)
                reset = True
                now = monotonic()
        except Exception as exc:
            logger.info(
                "pool %r: discarding a returned connection: %s",
                self.name,
                self._describe_short(exc),
            )
            broken = True
        except BaseException:
            # Cancelled in the middle of the rollback: the connection is mid-exchange.
            with self._lock:
                actions = self._core.release(entry, monotonic(), broken=True)
            self._run_nowait(actions)
            raise
        if self._observer is not None:  # before the release: then it may be lent again
            self._observer.returned(now - entry.lent_at)
        with self._lock:
            actions = self._core.release(entry, now, broken=broken, reset=reset)
        await self._after_release(actions)

    async def _after_release(self, actions: Sequence[Action]) -> None:
        """Carry out what a release asked for; tell a closing pool one more came back."""
        if actions:
            await self._run(actions)
        if self._closed:
            self._state_changed.set()

    # -- administration ---------------------------------------------------------------

    async def resize(self, min_size: int, max_size: int | None = None) -> None:
        """Change the pool's size bounds."""
        settings = replace(self.settings, min_size=min_size, max_size=max_size)
        assert settings.max_size is not None
        with self._lock:  # raises (changing nothing) on sizes the engine's mode refuses
            actions = self._core.resize(settings.min_size, settings.max_size, monotonic())
        self.settings = settings
        await self._run(actions)

    async def check(self) -> None:
        """Check every idle connection now; replace the ones that fail."""
        with self._lock:
            actions = self._core.check_all()
        for action in actions:
            if isinstance(action, Check):
                await self._check_idle(action.entry)

    async def drain(self) -> None:
        """Replace every connection: idle ones now, lent ones when they come back."""
        with self._lock:
            actions = self._core.drain(monotonic())
        await self._run(actions)

    # -- actions ---------------------------------------------------------------------

    async def _run(self, actions: Sequence[Action]) -> None:
        """Carry out the engine's actions (outside the lock)."""
        for index, action in enumerate(actions):
            if isinstance(action, _WAKES):
                # `_wake`, inlined: a hand-over is every queued checkout's action.
                if not action.waiter.wake() and isinstance(action, HandOff):
                    self._hand_on(action.entry)
            elif isinstance(action, Close):
                try:
                    await self.manager.close(action.entry.conn)
                except BaseException:
                    # Cancelled while closing: the engine already counts on every action
                    # being done (an undone Connect would hold its slot forever, an
                    # unwoken waiter would sit out its timeout), so finish this close and
                    # the rest without waiting. Found by tests/concurrency/test_tasks.py.
                    self._run_nowait(actions[index:])
                    raise
                self._checkout_stacks.pop(action.entry.number, None)
            else:
                self._dispatch_background(action)

    def _run_nowait(self, actions: Sequence[Action]) -> None:
        """Like `_run`, with the closes in the background (for sync contexts)."""
        for action in actions:
            if isinstance(action, _WAKES):
                self._wake(action)
            elif isinstance(action, Close):
                self._workers.spawn(self.manager.close, action.entry.conn)
                self._checkout_stacks.pop(action.entry.number, None)
            else:
                self._dispatch_background(action)

    def _wake(self, action: HandOff | Fail) -> None:
        """Wake a served (or failed) caller; pass its connection on if it cannot take it."""
        if not action.waiter.wake() and isinstance(action, HandOff):
            self._hand_on(action.entry)

    def _hand_on(self, entry: Entry[ConnT]) -> None:
        """A connection handed to a caller that can never take it (`AsyncWaiter.wake`
        returned False): give it back, to the next caller in line or the idle stack."""
        with self._lock:
            actions = self._core.give_back(entry, monotonic())
        self._run_nowait(actions)

    def _dispatch_background(self, action: Action) -> None:
        if isinstance(action, Connect):
            self._workers.spawn(self._connect)
        elif isinstance(action, Check):
            self._workers.spawn(self._check_idle, action.entry)
        elif isinstance(action, Wakeup):
            self._wakeup.set()
        elif isinstance(action, ReportLeak):
            self._report_leak(action)

    async def _connect(self) -> None:
        started = monotonic()
        try:
            conn = await self.manager.connect(self.settings.connect_timeout)
            if self._marks_connections:
                conn._pool = self  # type: ignore[attr-defined]  # see _marks_connections
        except Exception as exc:
            now = monotonic()
            with self._lock:
                actions = self._core.connect_failed(exc, now)
                attempt = self._core.consecutive_failures
                delay = max(self._core.retry_at - now, 0.0)
            self._note_connect_failure(exc, attempt, delay)
            give_up = self._connect_streak(False, now)
        else:
            now = monotonic()
            with self._lock:
                actions = self._core.connected(conn, now, now - started)
            self._permanent_error = None
            give_up = self._connect_streak(True, now)
            if self._observer is not None:
                self._observer.created(now - started)
        self._state_changed.set()
        await self._run(actions)
        if give_up:
            logger.warning(
                "pool %r: connection attempts failed for %.3g s (reconnect_timeout);"
                " calling reconnect_failed and trying on",
                self.name,
                self.reconnect_timeout,
            )
            await self.reconnect_failed()

    async def reconnect_failed(self) -> None:
        """Called when background connects have failed for `reconnect_timeout` seconds:
        calls the ``reconnect_failed`` callback (psycopg_pool's hook). Unlike psycopg_pool,
        the pool keeps trying to connect afterwards."""
        callback = self._reconnect_failed_callback
        if callback is None:
            return
        try:
            await aresolve(callback(self))
        except Exception:
            logger.exception("pool %r: the reconnect_failed callback raised", self.name)

    @staticmethod
    async def check_connection(conn: psycopg.AsyncConnection[Any]) -> None:
        """psycopg_pool's health check: an empty query in autocommit (restored after).

        Raises when the connection does not work; fit as a pool's ``check`` callback.
        """
        if conn.autocommit:
            await conn.execute("")
            return
        await conn.set_autocommit(True)
        try:
            await conn.execute("")
        finally:
            # A closed connection refuses the restore: keep the error that said why.
            with suppress(Exception):
                await conn.set_autocommit(False)

    async def _check_idle(self, entry: Entry[ConnT]) -> None:
        ok = False
        try:
            if not self.manager.is_broken(entry.conn):
                await self.manager.check(entry.conn, self.settings.connect_timeout)
                ok = True
        except Exception as exc:
            logger.info(
                "pool %r: idle connection failed its check: %s",
                self.name,
                self._describe_short(exc),
            )
        with self._lock:
            actions = self._core.checked(entry, monotonic(), ok=ok)
        await self._run(actions)

    async def _maintain(self) -> None:
        """Sleep until the engine's next deadline (or a wakeup), then tick."""
        while True:
            self._wakeup.clear()
            now = monotonic()
            with self._lock:
                if self._core.closed:
                    return
                actions, deadline = self._core.tick(now)
            await self._run(actions)
            await self._wakeup.wait(None if deadline == float("inf") else deadline - now)

    def _start_after_fork(self) -> None:
        self._forked = False
        self._open_now()

    # -- transactions (pgfleet._async.tx) ---------------------------------------------

    async def run_transaction(
        self: AsyncPool[_tx.TxConnT],
        fn: _tx.AsyncTxFunction[_tx.TxConnT, *_tx.Ts, _tx.R],
        *args: *_tx.Ts,
        **options: Unpack[TransactionOptions],
    ) -> _tx.R:
        """Run ``await fn(conn, *args)`` in a transaction; retry it while that is safe.

        Each attempt runs in a fresh transaction on a healthy connection and commits
        when `fn` returns. It is attempted again (after an exponential back-off with
        full jitter) only when the server rolled it back (SQLSTATE in ``retry_on``:
        40001, 40P01) or the connection broke before COMMIT was sent. A connection
        that breaks while COMMIT is in flight raises `CommitOutcomeUnknown`, never
        a retry. After ``max_attempts`` the last error is raised with a note. Do not
        commit inside `fn`. Options: see `pgfleet.tx.TransactionOptions`.
        """
        from pgfleet._async import tx as _tx  # on first use (import time, issue #15)
        from pgfleet._retry import TxSettings

        return await _tx.run_transaction(self, fn, args, TxSettings.build(**options))

    def transactional(
        self: AsyncPool[_tx.TxConnT], **options: Unpack[TransactionOptions]
    ) -> _tx.AsyncTransactional[_tx.TxConnT]:
        """A decorator: ``@pool.transactional()`` over ``async def fn(conn, *args)``
        makes ``fn(*args)`` run as `run_transaction` would run it."""
        from pgfleet._async import tx as _tx  # on first use (import time, issue #15)
        from pgfleet._retry import TxSettings

        return _tx.AsyncTransactional(self, TxSettings.build(**options))

    def transactions(
        self: AsyncPool[_tx.TxConnT], **options: Unpack[TransactionOptions]
    ) -> _tx.AsyncAttempts[_tx.TxConnT]:
        """The attempts at one transaction, for a loop (same rules as `run_transaction`)::

        async for attempt in pool.transactions(isolation_level="serializable"):
            async with attempt as conn:
                ...  # the whole transaction; read its results after the loop
        """
        from pgfleet._async import tx as _tx  # on first use (import time, issue #15)
        from pgfleet._retry import TxSettings

        return _tx.AsyncAttempts(self, TxSettings.build(**options))


class AsyncConnectionGuard(Generic[ConnT]):
    """Lends a connection for one ``async with`` block and always gives it back."""

    __slots__ = ("_entry", "_pool", "_timeout")

    # `AsyncPool.connection` sets the slots itself: keep the two in step.
    def __init__(self, pool: AsyncPool[ConnT], timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._entry: Entry[ConnT] | None = None

    async def __aenter__(self) -> ConnT:
        pool = self._pool
        now = monotonic()
        # No lock round in asyncio (the engine never awaits): see `AsyncCoreLock`.  # async-only
        # sync-only: entry = None
        # sync-only: # Nothing idle (read unlocked: a hint, lend_fast decides): straight to
        # sync-only: # the queue, without the lock round (callgrind: 1.3k instructions a
        # sync-only: # queued checkout, for 0.2k on the others).
        # sync-only: if pool._core.idle:
        # sync-only:     lock = pool._lock
        # sync-only:     lock.acquire()
        # sync-only:     try:
        # sync-only:         entry = pool._core.lend_fast(now)
        # sync-only:     finally:
        # sync-only:         lock.release()
        entry = pool._core.lend_fast(now)  # async-only
        if entry is None or (
            now - entry.seen_at > pool._probe_after_idle and pool.manager.is_broken(entry.conn)
        ):
            entry = await pool._checkout(self._timeout, entry)
        elif pool._check_callback is not None:
            entry = await pool._checked_or_another(entry, self._timeout)
        self._entry = entry
        if pool._observer is not None:  # the OpenTelemetry histograms, when enabled
            pool._observer.checked_out(monotonic() - now)
        return entry.conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        entry, self._entry = self._entry, None
        if entry is None:
            return
        pool = self._pool
        status = pool._clean_status
        if exc_type is not None:
            await pool._checkin(entry)  # the reset rolls back, under a deadline
        elif (  # nothing to commit or undo
            entry.conn.pgconn.transaction_status == status  # type: ignore[attr-defined]
            if status is not None
            else pool._is_clean(entry.conn)
        ):
            now = monotonic()
            if pool._observer is not None:  # before the release: then it may be lent again
                pool._observer.returned(now - entry.lent_at)
            # The fast path, inlined: one call fewer.
            # In asyncio that call is a coroutine, the costlier kind.  # async-only
            # sync-only: lock = pool._lock
            # sync-only: lock.acquire()
            # sync-only: try:
            # sync-only:     actions = pool._core.release(entry, now)
            # sync-only: finally:
            # sync-only:     lock.release()
            actions = pool._core.release(entry, now)  # async-only
            # `_after_release`, inlined: a hand-over to a queued caller is every return
            # under oversubscription.
            if actions:
                await pool._run(actions)
            if pool._closed:
                pool._state_changed.set()
        elif entry.state == ORPHANED:
            pool._leave_orphan(entry)
        else:
            try:
                # As psycopg_pool does: a block that ends cleanly commits its transaction.
                await pool.manager.commit(entry.conn)
            finally:
                await pool._checkin(entry)
