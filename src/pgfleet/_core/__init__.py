"""The sans-IO pool engine: events in, actions and deadlines out. No clock, no locks, no I/O.

Everything here is the engine of one pool and nothing else: its state machine
(`state`), the actions it asks for (`actions`), the reasons it gives (`reasons`),
its counters (`stats`) and reconnect back-off (`backoff`). It imports nothing but
the standard library's pure parts, and never psycopg or the rest of pgfleet (a test
holds it to that): outcomes leave it as data, and the shells turn them into errors.
"""

from pgfleet._core.actions import (
    WAKEUP,
    Action,
    Check,
    Close,
    Connect,
    Fail,
    HandOff,
    ReportLeak,
    Wakeup,
)
from pgfleet._core.backoff import Backoff
from pgfleet._core.reasons import (
    CLOSE_REASONS,
    CloseReason,
    DiscardReason,
    FailReason,
    Refusal,
)
from pgfleet._core.state import CoreSettings, Entry, PoolCore, Waiter
from pgfleet._core.stats import Counters, Histogram, PoolStats

__all__ = [
    "CLOSE_REASONS",
    "WAKEUP",
    "Action",
    "Backoff",
    "Check",
    "Close",
    "CloseReason",
    "Connect",
    "CoreSettings",
    "Counters",
    "DiscardReason",
    "Entry",
    "Fail",
    "FailReason",
    "HandOff",
    "Histogram",
    "PoolCore",
    "PoolStats",
    "Refusal",
    "ReportLeak",
    "Waiter",
    "Wakeup",
]
