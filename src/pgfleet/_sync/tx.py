# WARNING: this file is generated from src/pgfleet/_async/tx.py by tools/gen_sync.py.
# Do not edit it: edit the source and run `python tools/gen_sync.py`.

"""Transactions that retry safely, for `Pool`.

The pool's ``run_transaction``, ``transactional`` and ``transactions`` methods
are thin doors to this module. One loop serves all three forms: `Attempts`
hands out numbered `Attempt` objects; each one, used as a context manager,
borrows a healthy connection, opens a transaction with the requested modes,
and on a clean exit commits it. A failed attempt is judged by
`pgfleet._retry` (which explains when a replay is safe), its connection
goes back to the pool (rolled back, or discarded when broken), and the loop
either sleeps a jittered back-off and goes round again or raises.

How an attempt opens its transaction: with ``BEGIN <modes>`` sent straight to
libpq (`pgfleet._postgres.wire`, under the checkout's deadline) when there are modes
or the connection is in autocommit mode; psycopg then finds the transaction
open and sends no BEGIN of its own. psycopg has no per-transaction modes, and
its connection attributes (``isolation_level``...) would outlive the attempt on
a pooled connection; ``SET TRANSACTION`` after psycopg's BEGIN would cost a
round trip more. Without modes, psycopg opens the transaction as usual.
"""

from __future__ import annotations

import functools
import logging
import random
import warnings
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar, TypeVarTuple

import psycopg
from psycopg import errors, pq

from pgfleet._acompat import monotonic, sleep, wait_fd
from pgfleet._postgres import wire
from pgfleet._retry import TxSettings, Verdict
from pgfleet._text import describe
from pgfleet.errors import CommitOutcomeUnknown

if TYPE_CHECKING:
    from pgfleet._sync.pool import Pool

__all__ = ["Attempt", "Attempts", "Transactional", "run_transaction"]

logger = logging.getLogger("pgfleet.tx")

TxConnT = TypeVar("TxConnT", bound=psycopg.Connection[Any])
R = TypeVar("R")
Ts = TypeVarTuple("Ts")

# What a transaction function is, and what `transactional` makes of it. The lines
# marked async-only are dropped from the threaded twin, whose functions return R.
TxFunction = Callable[[TxConnT, *Ts], R]
TxCall = Callable[[*Ts], R]

_INERROR = pq.TransactionStatus.INERROR

#: Jitter for the back-off between attempts (thread-safe in CPython).
_jitter = random.Random()


def run_transaction(
    pool: Pool[TxConnT],
    fn: TxFunction[TxConnT, *Ts, R],
    args: tuple[*Ts],
    settings: TxSettings,
) -> R:
    """``fn(conn, *args)`` in a transaction, attempted until committed (see module)."""
    attempts = Attempts(pool, settings)
    for attempt in attempts:
        with attempt as conn:
            result = fn(conn, *args)
        if attempt.committed:
            return result
    # The loop ends after a commit (returned above) or by raising.
    raise AssertionError("unreachable: the attempt loop ended without a commit")


class Transactional(Generic[TxConnT]):
    """A decorator: the function runs as a transaction, retried (``pool.transactional()``)."""

    __slots__ = ("_pool", "_settings")

    def __init__(self, pool: Pool[TxConnT], settings: TxSettings) -> None:
        self._pool = pool
        self._settings = settings

    def __call__(self, fn: TxFunction[TxConnT, *Ts, R]) -> TxCall[*Ts, R]:
        """Wrap ``fn(conn, *args)`` into ``fn(*args)`` that runs it in a retried transaction."""
        pool, settings = self._pool, self._settings

        @functools.wraps(fn)
        def transaction(*args: *Ts) -> R:
            return run_transaction(pool, fn, args, settings)

        return transaction


class Attempts(Generic[TxConnT]):
    """The attempts at one transaction: an iterator of `Attempt` (``pool.transactions()``).

    ``for attempt in pool.transactions(): with attempt as conn: ...``.
    Put the whole transaction inside the ``with`` block and read its
    results after the loop: the loop ends when an attempt commits, and a failed
    COMMIT is only known when the block exits, so a ``return`` or ``break``
    inside the block could skip a retry that was due.
    """

    def __init__(self, pool: Pool[TxConnT], settings: TxSettings) -> None:
        self._pool = pool
        self._settings = settings
        self._number = 0
        #: The last attempt handed out was entered (attempts do not keep each other alive).
        self._entered = False
        self._done = False
        #: The failure of the last attempt while a retry is due (for the leak warning).
        self._retry_due: BaseException | None = None
        self._delay = 0.0

    @property
    def settings(self) -> TxSettings:
        """The validated options."""
        return self._settings

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Attempt[TxConnT]:
        if self._done:
            raise StopIteration
        if self._number:
            if not self._entered:
                raise RuntimeError("use each attempt as a context manager: `with attempt as conn`")
            self._retry_due = None
            sleep(self._delay)
        self._number += 1
        self._entered = False
        return Attempt(self, self._number)

    def __del__(self) -> None:
        failure = getattr(self, "_retry_due", None)
        if failure is not None:
            warnings.warn(
                f"a transaction attempt failed ({type(failure).__name__}: {failure}) and the"
                " attempt loop was left before the retry: keep the transaction inside"
                " `with attempt` and do not return or break out of it",
                RuntimeWarning,
                stacklevel=1,
            )

    # -- verdicts ------------------------------------------------------------------------

    def _committed(self) -> None:
        self._done = True

    def _failed(self, attempt: int, error: BaseException, lost: bool, commit_sent: bool) -> bool:
        """Judge a failure: True to retry; otherwise raise what must be raised, or False."""
        settings = self._settings
        sqlstate = getattr(error, "sqlstate", None)
        verdict = settings.decide(
            attempt=attempt,
            database_error=isinstance(error, psycopg.Error),
            sqlstate=sqlstate,
            lost=lost,
            commit_sent=commit_sent,
        )
        if verdict is Verdict.RETRY:
            self._delay = settings.backoff.delay(attempt, _jitter)
            self._retry_due = error
            self._pool._count_transaction_retry()
            logger.debug(
                "pool %r: transaction attempt %d of %d failed (%s); retrying in %.1f ms",
                self._pool.name,
                attempt,
                settings.max_attempts,
                _reason(error, sqlstate, lost, self._pool._redact),
                self._delay * 1000,
            )
            return True
        self._done = True
        if verdict is Verdict.IN_DOUBT:
            raise CommitOutcomeUnknown(
                f"the connection broke while COMMIT was in flight (attempt {attempt}):"
                " the transaction may or may not have been applied; it was not retried"
            ) from error
        if verdict is Verdict.GIVE_UP:
            error.add_note(
                f"pgfleet: the transaction was attempted {attempt} times"
                f" (max_attempts={settings.max_attempts}); this is the last attempt's error"
            )
        return False


class Attempt(Generic[TxConnT]):
    """One attempt at a transaction: ``with attempt as conn`` (see `Attempts`)."""

    __slots__ = ("_attempts", "_conn", "committed", "number", "used")

    def __init__(self, attempts: Attempts[TxConnT], number: int) -> None:
        self._attempts = attempts
        self._conn: TxConnT | None = None
        #: The attempt's number, from 1.
        self.number = number
        #: The block was entered.
        self.used = False
        #: The transaction was committed when the block exited.
        self.committed = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.number} of {self._attempts.settings.max_attempts}>"

    def __enter__(self) -> TxConnT:
        if self.used:
            raise RuntimeError("an attempt can be used once")
        self.used = True
        attempts = self._attempts
        attempts._entered = True
        pool, settings = attempts._pool, attempts._settings
        # Bounded: each failed start uses up an attempt, and the last one raises.
        while True:
            conn = pool.getconn(settings.timeout)
            try:
                _begin(conn, settings.modes, settings.timeout or pool.timeout)
            except Exception as exc:
                lost = pool.manager.is_broken(conn)
                _give_back(pool, conn, exc)
                if not attempts._failed(self.number, exc, lost, commit_sent=False):
                    raise
                # Nothing to hand to the block yet: retry the start within this block.
                attempts._retry_due = None
                sleep(attempts._delay)
                self.number = attempts._number = self.number + 1
                continue
            except BaseException:
                pool.putconn(conn)
                raise
            self._conn = conn
            return conn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        conn, self._conn = self._conn, None
        if conn is None:
            return False
        attempts = self._attempts
        pool = attempts._pool
        commit_sent = False
        lost = False
        failure = exc
        try:
            if failure is None:
                if conn.pgconn.transaction_status == _INERROR:
                    failure = errors.InFailedSqlTransaction(
                        "the transaction failed inside the block (an error was caught and not"
                        " re-raised); it was rolled back"
                    )
                elif pool.manager.is_broken(conn):
                    # Judged once: the probe may consume the news it saw.
                    lost = True
                    failure = psycopg.OperationalError(
                        "the connection broke before COMMIT was sent"
                    )
                else:
                    commit_sent = True
                    try:
                        conn.commit()
                    except Exception as commit_error:
                        failure = commit_error
                    else:
                        self.committed = True
                        attempts._committed()
                        return False
            # Judge the connection before the pool's reset changes its state.
            lost = lost or pool.manager.is_broken(conn)
        finally:
            _give_back(pool, conn, failure)
        if attempts._failed(self.number, failure, lost, commit_sent):
            return True  # suppress: the loop goes round again
        if failure is not exc:
            raise failure  # the block succeeded; its COMMIT (or its state) did not
        return False


def _give_back(pool: Pool[TxConnT], conn: TxConnT, failure: BaseException | None) -> None:
    """Return an attempt's connection. A pool that judges failures (a cluster pool, whose
    server may have been demoted under the attempt: 25006, 57P01...) hears what failed."""
    judge = getattr(pool, "_putconn_failed", None) if failure is not None else None
    if judge is not None:
        judge(conn, failure)
    else:
        pool.putconn(conn)


def _begin(conn: psycopg.Connection[Any], modes: str, timeout: float) -> None:
    """Open the attempt's transaction with `modes` (see the module docstring)."""
    if not (modes or conn.autocommit):
        return  # psycopg sends BEGIN before the first statement
    pgconn = conn.pgconn
    deadline = monotonic() + timeout
    exchange = wire.exchange(pgconn, b"BEGIN " + modes.encode() if modes else b"BEGIN")
    try:
        want = next(exchange)
        while True:
            remaining = deadline - monotonic()
            if remaining <= 0:
                # Left mid-exchange: the connection is judged broken and discarded.
                raise psycopg.OperationalError(f"no answer to BEGIN within {timeout:.3g} s")
            ready = wait_fd(pgconn.socket, want, remaining)
            if ready:
                want = exchange.send(ready)
    except StopIteration:
        return


def _reason(
    error: BaseException, sqlstate: str | None, lost: bool, redact: Callable[[str], str]
) -> str:
    what = f"SQLSTATE {sqlstate}" if sqlstate else "connection lost" if lost else "error"
    return f"{what}: {describe(error, redact=redact, with_type=True)}"
