"""What the engine asks a shell to do. Each action is a small frozen value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pgfleet._core.reasons import CloseReason, FailReason

if TYPE_CHECKING:
    from pgfleet._core.state import Entry, Waiter


@dataclass(frozen=True, slots=True)
class Connect:
    """Open one new connection, then report `connected` or `connect_failed`."""


@dataclass(frozen=True, slots=True)
class Check:
    """Check this idle connection (taken out of the idle set), then report `checked`."""

    entry: Entry[Any]


@dataclass(frozen=True, slots=True)
class Close:
    """Close this connection; the engine has already forgotten it."""

    entry: Entry[Any]
    reason: CloseReason


@dataclass(frozen=True, slots=True)
class HandOff:
    """Wake this waiter: its outcome (``waiter.outcome``) is now this entry."""

    waiter: Waiter
    entry: Entry[Any]


@dataclass(frozen=True, slots=True)
class Fail:
    """Wake this waiter: its outcome (``waiter.outcome``) is now this reason.

    The shell turns the reason into the exception its caller raises.
    """

    waiter: Waiter
    reason: FailReason


@dataclass(frozen=True, slots=True)
class ReportLeak:
    """This connection has been lent for longer than ``leak_timeout`` (or, with
    ``returned``, a connection reported so has come back after ``held`` seconds)."""

    entry: Entry[Any]
    # Decided by the engine, not read from the entry by the shell: by the time the shell
    # logs, a late return may already have been handed to a waiter (lent again, lent_at
    # reset), and it was logged as a fresh leak "held for 0.0 s" instead of "came back".
    # Not compared: a report is identified by its entry.
    returned: bool = field(default=False, compare=False)
    held: float = field(default=0.0, compare=False)


@dataclass(frozen=True, slots=True)
class Wakeup:
    """The next deadline moved earlier: the maintenance loop should tick now."""


#: The one `Wakeup` instance (it carries nothing).
WAKEUP = Wakeup()

Action = Connect | Check | Close | HandOff | Fail | ReportLeak | Wakeup
