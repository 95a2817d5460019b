"""The engine's reasons: why it closed a connection, failed a waiter or refused a caller.

Closed sets of names (`Literal` types), so that mypy checks every place that makes
one or reads one: the metric labels (``connections_closed`` keys) and the errors the
shells build from the engine's outcomes.
"""

from __future__ import annotations

from typing import Literal, get_args

CloseReason = Literal[
    "expired",  # past max_lifetime
    "retired",  # came back after drain() or a shrinking resize() marked it
    "idle",  # idle longer than max_idle above min_size
    "surplus",  # connected or checked while the pool was already at max_size
    "resized",  # idle above a new, smaller max_size
    "drained",  # idle at drain()
    "check_failed",  # failed a health check
    "broken",  # came back broken, or was found broken before use
    "pool_closed",  # the pool closed
    "not_kept",  # came back or connected with nobody queued, in a pool that keeps none idle
]
"""Why the engine closed a connection (the keys of ``PoolStats.connections_closed``)."""

#: Every `CloseReason`, in the order above.
CLOSE_REASONS: tuple[CloseReason, ...] = get_args(CloseReason)

DiscardReason = Literal["check_failed", "broken"]
"""Why the shell found a lent connection unusable before use (`PoolCore.discard`)."""

FailReason = Literal[
    "closed",  # the pool closed while the caller was queued
    "database_unavailable",  # fail_fast: a connect failed and nothing else can serve it
]
"""Why the engine failed a queued caller (a `Fail` action, and the caller's outcome)."""

Refusal = Literal[
    "closed",  # the pool is closed
    "not_open",  # the pool was never opened
    "queue_full",  # max_waiting callers are already queued
]
"""Why the engine refused to queue a caller (`PoolCore.enqueue`, `PoolCore.open`)."""
