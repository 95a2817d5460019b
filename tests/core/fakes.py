"""Test doubles for the engine tests: fake connections and small action helpers.

The engine never touches a connection, so any object will do; these carry a
number so failures read well. Entries are keyed by ``id(conn)``, which is why
each fake is a distinct live object (never a small int, which Python interns).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from pgfleet._core import (
    Action,
    Check,
    Close,
    Connect,
    CoreSettings,
    Entry,
    Fail,
    FailReason,
    HandOff,
    PoolCore,
)

A = TypeVar("A")

_numbers = itertools.count(1)


class FakeConn:
    """A stand-in for a database connection."""

    __slots__ = ("number",)

    def __init__(self) -> None:
        self.number = next(_numbers)

    def __repr__(self) -> str:
        return f"<FakeConn {self.number}>"


def make_core(*, seed: int = 1, **settings: Any) -> PoolCore[FakeConn]:
    """A seeded engine with these `CoreSettings` (the rest at their defaults)."""
    return PoolCore(CoreSettings(**settings), name="test", seed=seed)


#: What an engine event returns: its actions, or (`enqueue`, `open`) a refusal.
Outcome = Iterable[Action] | str


def acted(outcome: Outcome) -> Iterable[Action]:
    """The actions of an event that must not have been refused."""
    assert not isinstance(outcome, str), f"the engine refused: {outcome}"
    return outcome


def of_type(actions: Outcome, kind: type[A]) -> list[A]:
    """The actions of one kind, in order."""
    return [action for action in acted(actions) if isinstance(action, kind)]


def connects(actions: Outcome) -> int:
    """How many `Connect` actions there are."""
    return len(of_type(actions, Connect))


def checked_entries(actions: Outcome) -> list[Entry[Any]]:
    """The entries of the `Check` actions."""
    return [action.entry for action in of_type(actions, Check)]


def closes(actions: Outcome) -> list[tuple[Entry[Any], str]]:
    """``(entry, reason)`` of the `Close` actions."""
    return [(action.entry, action.reason) for action in of_type(actions, Close)]


def handoffs(actions: Outcome) -> list[tuple[Any, Entry[Any]]]:
    """``(waiter, entry)`` of the `HandOff` actions, in order."""
    return [(action.waiter, action.entry) for action in of_type(actions, HandOff)]


def fails(actions: Outcome) -> list[tuple[Any, FailReason]]:
    """``(waiter, reason)`` of the `Fail` actions, in order."""
    return [(action.waiter, action.reason) for action in of_type(actions, Fail)]


def complete_connects(
    core: PoolCore[FakeConn], outcome: Sequence[Action] | str, now: float
) -> list[Action]:
    """Play the shell: answer every `Connect` (and those they lead to) with a new connection.

    Returns every other action produced on the way.
    """
    actions = acted(outcome)
    pending = connects(actions)
    produced: list[Action] = [action for action in actions if not isinstance(action, Connect)]
    while pending:
        pending -= 1
        more = core.connected(FakeConn(), now, 0.01)
        pending += connects(more)
        produced.extend(action for action in more if not isinstance(action, Connect))
    return produced


def open_filled(now: float = 0.0, **settings: Any) -> PoolCore[FakeConn]:
    """An open engine whose ``min_size`` floor is filled, all connected at `now`."""
    core = make_core(**settings)
    complete_connects(core, core.open(now), now)
    assert len(core.idle) == core.settings.min_size
    return core


def served(waiter: Any) -> Entry[Any]:
    """The entry a waiter was handed (fails the test when it got none)."""
    outcome = waiter.outcome
    assert isinstance(outcome, Entry), f"{waiter!r} was not served: {outcome!r}"
    return outcome
