"""Transactions that retry safely: the types behind the pools' transaction methods.

``pool.run_transaction(fn, *args, **options)``, the ``@pool.transactional(**options)``
decorator and the ``for attempt in pool.transactions(**options)`` loop (``async for``
with `AsyncPool`) share one set of rules, explained in `pgfleet._retry`:
an attempt is replayed only when the server rolled it back (a SQLSTATE in
``retry_on``, `RETRY_SQLSTATES` by default) or the connection broke before COMMIT
was sent; a connection lost while COMMIT is in flight raises
`pgfleet.CommitOutcomeUnknown`.
"""

from pgfleet._async.tx import AsyncAttempt, AsyncAttempts, AsyncTransactional
from pgfleet._retry import RETRY_SQLSTATES, TransactionOptions
from pgfleet._sync.tx import Attempt, Attempts, Transactional

__all__ = [
    "RETRY_SQLSTATES",
    "AsyncAttempt",
    "AsyncAttempts",
    "AsyncTransactional",
    "Attempt",
    "Attempts",
    "TransactionOptions",
    "Transactional",
]
