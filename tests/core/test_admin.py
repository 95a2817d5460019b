"""Administration: close, close_lent, drain, resize, check_all, forget_all, stats."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from pgfleet._core import WAKEUP, Action, PoolStats, Waiter

from .fakes import (
    FakeConn,
    checked_entries,
    closes,
    connects,
    fails,
    handoffs,
    make_core,
    open_filled,
    served,
)

# -- close -----------------------------------------------------------------------------


def test_close_fails_the_waiters_oldest_first() -> None:
    core = open_filled(min_size=3, max_size=3)
    lent = [core.lend_idle(0.0)[0], core.lend_idle(0.0)[0]]
    (checking,) = checked_entries(core.check_all())
    waiters = [Waiter(), Waiter()]
    for waiter in waiters:
        assert connects(core.enqueue(waiter, 0.0)) == 0
    actions = core.close(1.0)
    assert core.closed
    failed = fails(actions)
    assert [waiter for waiter, _ in failed] == waiters
    for waiter, reason in failed:
        assert reason == "closed"
        assert waiter.outcome == "closed"
        assert not core.cancel(waiter, 1.0)
    assert closes(actions) == [(checking, "pool_closed")]
    assert core.stats().waiting == 0
    # A late check result is ignored: its connection was closed with the pool.
    assert list(core.checked(checking, 1.5, ok=True)) == []
    # Lent ones close when they come back, clean or not.
    first, second = lent
    assert first is not None
    assert second is not None
    assert closes(core.release(first, 2.0)) == [(first, "pool_closed")]
    assert closes(core.release(second, 2.0, broken=True)) == [(second, "broken")]
    assert core.size == 0
    assert core.close(3.0) == []  # closing twice is a no-op


def test_close_closes_idle_and_checking_connections() -> None:
    core = open_filled(min_size=3, max_size=3)
    lent, _, _ = core.lend_idle(0.0)
    first, second = checked_entries(core.check_all())
    core.checked(first, 0.5, ok=True)
    actions = core.close(1.0)
    assert set(closes(actions)) == {(first, "pool_closed"), (second, "pool_closed")}
    assert fails(actions) == []
    assert connects(actions) == 0
    assert core.idle == []
    assert core.checking == set()
    assert lent is not None
    assert core.lent == {lent.number: lent}
    assert core.stats().connections_closed == {"pool_closed": 2}


def test_close_then_connects_in_flight_are_closed() -> None:
    core = make_core(min_size=2, max_size=2)
    assert connects(core.open(0.0)) == 2
    core.close(0.5)
    actions = core.connected(FakeConn(), 1.0, 1.0)
    ((_, reason),) = closes(actions)
    assert reason == "pool_closed"
    assert connects(actions) == 0
    actions = core.connect_failed(OSError("refused"), 1.0)
    assert fails(actions) == []
    assert connects(actions) == 0
    assert core.size == 0


def test_close_lent_closes_what_is_still_out() -> None:
    core = open_filled(min_size=2, max_size=2)
    first, _, _ = core.lend_idle(0.0)
    second, _, _ = core.lend_idle(0.0)
    core.close(1.0)
    actions = core.close_lent()
    assert {entry for entry, _ in closes(actions)} == {first, second}
    assert core.lent == {}
    assert core.size == 0
    # Returned after all: already forgotten.
    assert first is not None
    assert list(core.release(first, 2.0)) == []
    assert core.stats().connections_closed == {"pool_closed": 2}


def test_forget_all_drops_everything_without_closing() -> None:
    core = open_filled(min_size=3, max_size=3)
    lent, _, _ = core.lend_idle(0.0)
    checked_entries(core.check_all())
    core.enqueue(Waiter(), 0.0)
    entries = core.forget_all()
    assert len(entries) == 3
    assert lent in entries
    assert all(entry.state == "orphaned" for entry in entries)  # never to be touched
    assert core.size == 0
    # The queued caller stays queued, to time out: the shell drops this engine, not the
    # deadlines of the callers in it (see tests/concurrency/test_tasks.py).
    assert core.stats().waiting == 1
    assert core.stats().connections_closed == {}


# -- drain -----------------------------------------------------------------------------


def test_drain_replaces_idle_now_and_lent_on_return() -> None:
    core = open_filled(min_size=3, max_size=3, max_connecting=3)
    lent, _, _ = core.lend_idle(0.0)
    back, checking = checked_entries(core.check_all())
    core.checked(back, 0.5, ok=True)
    idle = list(core.idle)
    assert idle == [back]
    actions: Sequence[Action] = core.drain(1.0)
    assert closes(actions) == [(idle[0], "drained")]
    assert connects(actions) == 1  # the lent and checking ones still count
    assert lent is not None
    assert lent.retired
    assert checking.retired

    actions = core.release(lent, 2.0)
    assert closes(actions) == [(lent, "retired")]
    assert connects(actions) == 1
    actions = core.checked(checking, 2.0, ok=True)
    assert closes(actions) == [(checking, "retired")]
    assert connects(actions) == 1
    # The replacements are not retired.
    for _ in range(3):
        core.connected(FakeConn(), 3.0, 0.1)
    assert len(core.idle) == 3
    assert not any(entry.retired for entry in core.idle)
    entry, _, _ = core.lend_idle(4.0)
    assert entry is not None
    assert closes(core.release(entry, 4.0)) == []


def test_drain_with_waiters_serves_them_with_new_connections() -> None:
    core = open_filled(min_size=1, max_size=1)
    lent, _, _ = core.lend_idle(0.0)
    assert lent is not None
    waiter = Waiter()
    core.enqueue(waiter, 0.0)
    core.drain(1.0)
    actions = core.release(lent, 2.0)
    assert handoffs(actions) == []
    assert connects(actions) == 1
    actions = core.connected(FakeConn(), 2.5, 0.5)
    assert [w for w, _ in handoffs(actions)] == [waiter]


# -- resize ----------------------------------------------------------------------------


def test_resize_grows_at_once() -> None:
    core = open_filled(min_size=1, max_size=2, max_connecting=5)
    actions = core.resize(4, 6, 1.0)
    assert connects(actions) == 3
    stats = core.stats()
    assert (stats.min_size, stats.max_size, stats.size) == (4, 6, 4)


def test_resize_shrinks_the_least_recently_used_idle_first() -> None:
    core = open_filled(min_size=4, max_size=4, max_connecting=4)
    lent, _, _ = core.lend_idle(0.0)
    assert lent is not None
    # Release order makes the stack [e0, e1, e2(most recent)].
    idle = list(core.idle)
    actions = core.resize(1, 2, 1.0)
    assert closes(actions) == [(idle[0], "resized"), (idle[1], "resized")]
    assert core.idle == [idle[2]]
    assert core.size == 2
    assert connects(actions) == 0
    assert closes(core.release(lent, 2.0)) == []  # size is back within max_size


def test_resize_below_what_is_lent_retires_the_surplus_on_return() -> None:
    core = open_filled(min_size=3, max_size=3, max_connecting=3)
    lent = [core.lend_idle(0.0)[0] for _ in range(3)]
    actions = core.resize(0, 1, 1.0)
    assert closes(actions) == []
    assert core.size == 3  # a transient excess: nothing idle to close yet
    closed = []
    for entry in lent:
        assert entry is not None
        closed += closes(core.release(entry, 2.0))
        assert core.size <= 3
    assert len(closed) == 2
    assert core.size == 1


def test_resize_below_what_is_checking_closes_the_surplus_after_the_check() -> None:
    core = open_filled(min_size=2, max_size=2)
    entries = checked_entries(core.check_all())
    core.resize(1, 1, 1.0)
    assert core.size == 2  # a transient excess: both are out for a check
    closed = []
    for entry in entries:
        closed += closes(core.checked(entry, 2.0, ok=True))
    assert len(closed) == 1
    assert core.size == len(core.idle) == 1


def test_resize_lowering_min_size_lets_idle_connections_expire_on_time() -> None:
    core = open_filled(min_size=3, max_size=3, max_idle=10.0, max_lifetime=None)
    _, deadline = core.tick(9.0)  # at the floor: no idle deadline (maybe a periodic one)
    actions = core.resize(1, 3, 9.5)
    # Two connections are now above the floor and have been idle since 0: they are due
    # at 10.0, so maintenance must wake by then.
    assert WAKEUP in actions or deadline <= 10.0
    actions, _ = core.tick(10.0)
    assert len(closes(actions)) == 2


# -- stats -----------------------------------------------------------------------------


def test_stats_snapshot_and_psycopg_pool_keys() -> None:
    core = open_filled(min_size=2, max_size=3)
    a, _, _ = core.lend_idle(1.0)
    core.lend_idle(1.0)
    waiter = Waiter()
    core.enqueue(waiter, 1.0)
    core.connected(FakeConn(), 1.5, 0.25)
    core.release(served(waiter), 2.0)
    assert a is not None
    core.release(a, 3.0, broken=True)
    stats = core.stats()
    assert isinstance(stats, PoolStats)
    assert stats.name == "test"
    assert (stats.min_size, stats.max_size) == (2, 3)
    assert stats.in_use == 1
    assert stats.idle == 0  # marked suspect: out for a check
    assert stats.checking == 1
    assert stats.size == stats.idle + stats.in_use + stats.checking + stats.connecting
    assert stats.checkouts == 3
    assert stats.checkouts_waited == 1
    assert stats.returns_broken == 1
    assert stats.connections_created == 3
    assert stats.connections_closed == {"broken": 1}
    assert stats.wait_time.count == 3
    assert stats.wait_time.maximum == pytest.approx(0.5)
    assert stats.usage_time.count == 2
    assert stats.connect_time.count == 3

    as_dict = stats.as_psycopg_pool_dict()
    assert set(as_dict) == {
        "pool_min",
        "pool_max",
        "pool_size",
        "pool_available",
        "requests_waiting",
        "requests_num",
        "requests_queued",
        "requests_wait_ms",
        "requests_errors",
        "usage_ms",
        "returns_bad",
        "connections_num",
        "connections_ms",
        "connections_errors",
        "connections_lost",
    }
    assert as_dict["pool_min"] == 2
    assert as_dict["pool_max"] == 3
    assert as_dict["pool_size"] == stats.size
    assert as_dict["pool_available"] == 0
    assert as_dict["requests_num"] == 3
    assert as_dict["requests_queued"] == 1
    assert as_dict["requests_wait_ms"] == 500
    assert as_dict["usage_ms"] == round(stats.usage_time.total * 1000)
    assert as_dict["returns_bad"] == 1
    assert as_dict["connections_num"] == 3
    assert as_dict["connections_ms"] == 270
    assert as_dict["connections_errors"] == 0


def test_stats_is_a_frozen_snapshot() -> None:
    core = open_filled(min_size=1, max_size=1)
    before = core.stats()
    core.lend_idle(0.0)
    assert before.in_use == 0
    assert core.stats().in_use == 1
    with pytest.raises(AttributeError):
        before.idle = 5  # type: ignore[misc]
    before.connections_closed["expired"] = 1
    assert core.stats().connections_closed == {}


def test_stats_counts_errors() -> None:
    core = make_core(min_size=0, max_size=1, max_waiting=1, fail_fast=True)
    core.open(0.0)
    core.enqueue(Waiter(), 0.0)
    assert core.enqueue(Waiter(), 0.0) == "queue_full"
    core.connect_failed(OSError("refused"), 0.5)
    timed_out = Waiter()
    core.enqueue(timed_out, 1.0)
    core.cancel(timed_out, 2.0)
    stats = core.stats()
    assert (stats.rejected, stats.failed_fast, stats.timeouts) == (1, 1, 1)
    assert stats.connect_errors == 1
    assert stats.database_down
    as_dict = stats.as_psycopg_pool_dict()
    assert as_dict["requests_errors"] == 3
    assert as_dict["connections_errors"] == 1
    assert as_dict["connections_num"] == 1
