"""The errors pgfleet raises.

Every pool error is a `psycopg.OperationalError`, so code that already handles
database outages keeps working. Misuse (a bad setting) is `ValueError` or
`TypeError`, raised at construction and naming the parameter.
"""

from __future__ import annotations

import psycopg

__all__ = [
    "CommitOutcomeUnknown",
    "DatabaseUnavailable",
    "PoolClosed",
    "PoolError",
    "PoolTimeout",
    "TooManyRequests",
    "TransactionPoolerError",
]


class PoolError(psycopg.OperationalError):
    """Base class of the errors raised by a pool."""


class PoolClosed(PoolError):
    """The pool is closed (or was never opened): it lends nothing."""


class PoolTimeout(PoolError, TimeoutError):
    """No connection could be lent within the timeout.

    The message names the pool, how long the caller waited and the pool's state;
    ``__cause__`` is the last connection error, when there was one.
    """


class DatabaseUnavailable(PoolTimeout):
    """The database is known to be down: the checkout failed fast instead of waiting."""


class TooManyRequests(PoolError):
    """The queue of waiting callers is full (``max_waiting``)."""


class CommitOutcomeUnknown(psycopg.OperationalError):
    """The connection broke while COMMIT was in flight: it may or may not have applied.

    pgfleet never retries such a transaction by itself. ``__cause__`` is the
    original error.
    """


class TransactionPoolerError(psycopg.NotSupportedError):
    """A session feature was asked of a pool with ``transaction_pooler=True``, where it
    cannot work: a pooler in transaction mode gives the server session to another client
    after each transaction. Raised before anything is sent (see ``docs/pgbouncer.md``)."""
