"""What the engine asks a shell to do. Each action is a small value, never changed once made.

Plain classes with ``__slots__``, not dataclasses: building seven dataclasses was the
largest part of what ``from pgfleet import Pool`` adds to ``import psycopg`` (issue #15),
and a plain ``__init__`` is also cheaper on the queued path (a `HandOff` per queued
checkout) than a frozen dataclass's ``object.__setattr__`` per field. The fields are
``Final`` for type checkers; equality, hashing and ``repr`` are a value's (`_Action`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Final

from pgfleet._core.reasons import CloseReason, FailReason

if TYPE_CHECKING:
    from pgfleet._core.state import Entry, Waiter


class _Action:
    """An action's value semantics: equal to an action of its type with equal fields."""

    __slots__ = ()
    #: The fields that equality and hashing compare (by default, every slot).
    _compared: ClassVar[tuple[str, ...]] = ()

    def _key(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._compared)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Action) or type(other) is not type(self):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((type(self), self._key()))

    def __repr__(self) -> str:
        names: tuple[str, ...] = self.__slots__
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{type(self).__name__}({fields})"


class Connect(_Action):
    """Open one new connection, then report `connected` or `connect_failed`."""

    __slots__ = ()


class Check(_Action):
    """Check this idle connection (taken out of the idle set), then report `checked`."""

    __slots__ = ("entry",)
    _compared = __slots__

    def __init__(self, entry: Entry[Any]) -> None:
        self.entry: Final = entry


class Close(_Action):
    """Close this connection; the engine has already forgotten it."""

    __slots__ = ("entry", "reason")
    _compared = __slots__

    def __init__(self, entry: Entry[Any], reason: CloseReason) -> None:
        self.entry: Final = entry
        self.reason: Final = reason


class HandOff(_Action):
    """Wake this waiter: its outcome (``waiter.outcome``) is now this entry."""

    __slots__ = ("waiter", "entry")
    _compared = __slots__

    def __init__(self, waiter: Waiter, entry: Entry[Any]) -> None:
        self.waiter: Final = waiter
        self.entry: Final = entry


class Fail(_Action):
    """Wake this waiter: its outcome (``waiter.outcome``) is now this reason.

    The shell turns the reason into the exception its caller raises.
    """

    __slots__ = ("waiter", "reason")
    _compared = __slots__

    def __init__(self, waiter: Waiter, reason: FailReason) -> None:
        self.waiter: Final = waiter
        self.reason: Final = reason


class ReportLeak(_Action):
    """This connection has been lent for longer than ``leak_timeout`` (or, with
    ``returned``, a connection reported so has come back after ``held`` seconds)."""

    __slots__ = ("entry", "returned", "held")
    # Not compared: `returned` and `held`. A report is identified by its entry.
    _compared = ("entry",)

    def __init__(self, entry: Entry[Any], returned: bool = False, held: float = 0.0) -> None:
        self.entry: Final = entry
        # Decided by the engine, not read from the entry by the shell: by the time the
        # shell logs, a late return may already have been handed to a waiter (lent again,
        # lent_at reset), and it was logged as a fresh leak "held for 0.0 s" instead of
        # "came back".
        self.returned: Final = returned
        self.held: Final = held


class Wakeup(_Action):
    """The next deadline moved earlier: the maintenance loop should tick now."""

    __slots__ = ()


#: The one `Wakeup` instance (it carries nothing).
WAKEUP = Wakeup()

Action = Connect | Check | Close | HandOff | Fail | ReportLeak | Wakeup
