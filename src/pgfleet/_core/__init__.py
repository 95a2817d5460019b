"""The sans-IO pool engine: events in, actions and deadlines out. No clock, no locks, no I/O."""

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
from pgfleet._core.state import CoreSettings, Entry, PoolCore, Waiter
from pgfleet._core.stats import Histogram, PoolStats

__all__ = [
    "WAKEUP",
    "Action",
    "Backoff",
    "Check",
    "Close",
    "Connect",
    "CoreSettings",
    "Entry",
    "Fail",
    "HandOff",
    "Histogram",
    "PoolCore",
    "PoolStats",
    "ReportLeak",
    "Waiter",
    "Wakeup",
]
