"""Lending: the fast path, the waiter queue, growth on demand, cancellation."""

from __future__ import annotations

from typing import Any

import pytest

from pgfleet._core import WAKEUP, Entry, Waiter

from .fakes import (
    FakeConn,
    checked_entries,
    closes,
    connects,
    handoffs,
    make_core,
    open_filled,
    served,
)

# -- the fast path: lend_idle --------------------------------------------------------


def test_lend_idle_pops_the_most_recently_used_entry() -> None:
    core = open_filled(min_size=3, max_size=3)
    bottom, middle, top = core.idle
    entry, needs_check, actions = core.lend_idle(0.5)
    assert entry is top
    assert list(actions) == []
    assert entry.state == "lent"
    assert core.lent[entry.number] is entry
    assert core.idle == [bottom, middle]
    assert not needs_check

    # Returned ones go on top: the last one back is the first one out.
    second, _, _ = core.lend_idle(0.6)
    assert second is middle
    core.release(entry, 0.7)
    core.release(second, 0.8)
    again, _, _ = core.lend_idle(0.9)
    assert again is second
    assert core.idle == [bottom, entry]


def test_lend_idle_with_nothing_idle_returns_none() -> None:
    core = open_filled(min_size=1, max_size=1)
    entry, _, _ = core.lend_idle(0.0)
    assert entry is not None
    assert core.lend_idle(0.0) == (None, False, ())


def test_lend_idle_does_not_barge_past_queued_waiters() -> None:
    core = open_filled(min_size=1, max_size=1)
    entry, _, _ = core.lend_idle(0.0)
    assert entry is not None
    waiter = Waiter()
    assert connects(core.enqueue(waiter, 0.1)) == 0  # the pool is at max_size
    # The connection comes back: it goes to the queued waiter, not to the idle stack,
    # so a newcomer on the fast path finds nothing.
    actions = core.release(entry, 0.2)
    assert handoffs(actions) == [(waiter, entry)]
    assert waiter.outcome is entry
    assert core.lend_idle(0.2) == (None, False, ())


def test_lend_idle_refuses_while_waiters_are_queued_even_with_idle_entries() -> None:
    # Unreachable through the API (an entry that goes idle is handed to the oldest
    # waiter first), but the guard is what keeps the queue fair: check it directly.
    core = open_filled(min_size=1, max_size=1)
    core.waiters.append(Waiter())
    assert core.lend_idle(0.0) == (None, False, ())
    assert core.lend_fast(0.0) is None
    assert len(core.idle) == 1


@pytest.mark.parametrize(
    ("check_after_idle", "idle_for", "needs_check"),
    [
        (1.0, 0.5, False),
        (1.0, 1.0, False),  # "longer than": exactly check_after_idle is still fresh
        (1.0, 1.5, True),
        (0.0, 0.0, False),
        (0.0, 0.001, True),  # 0: check whenever any time has passed
        (None, 10_000.0, False),  # None: never check for idleness
    ],
)
def test_lend_idle_marks_entries_idle_too_long(
    check_after_idle: float | None, idle_for: float, needs_check: bool
) -> None:
    core = open_filled(
        min_size=1, max_size=1, check_after_idle=check_after_idle, max_lifetime=None, max_idle=None
    )
    entry, _, _ = core.lend_idle(5.0)
    assert entry is not None
    core.release(entry, 5.0)  # back clean at 5.0: verified then
    again, must_check, _ = core.lend_idle(5.0 + idle_for)
    assert again is entry
    assert must_check is needs_check


def test_lend_idle_marks_entries_older_than_the_suspect_mark() -> None:
    # A shell reads its clock before taking its lock, so events can arrive out of
    # order: here a connection comes back clean "at 4.0" after another one was found
    # broken at 5.0. It predates the suspect mark and must be checked before use.
    core = open_filled(min_size=2, max_size=2, check_after_idle=None)
    first, _, _ = core.lend_idle(1.0)
    second, _, _ = core.lend_idle(1.0)
    assert first is not None
    assert second is not None
    core.release(first, 5.0, broken=True)
    assert core.suspect_before == 5.0
    core.release(second, 4.0)
    assert core.lend_fast(6.0) is None  # the fastest path leaves special cases alone
    entry, needs_check, _ = core.lend_idle(6.0)
    assert entry is second
    assert needs_check


def test_check_passed_marks_the_entry_verified() -> None:
    core = open_filled(min_size=1, max_size=1, check_after_idle=1.0)
    entry, needs_check, _ = core.lend_idle(10.0)
    assert entry is not None
    assert needs_check
    checks = core.stats().checks
    core.check_passed(entry, 10.5)
    assert entry.verified_at == 10.5
    assert core.stats().checks == checks + 1


def test_lend_idle_drops_expired_entries_and_refills() -> None:
    core = open_filled(min_size=2, max_size=2, max_lifetime=10.0, check_after_idle=None)
    expires = [entry.expires_at for entry in core.idle]
    entry, _, actions = core.lend_idle(max(expires) + 1)
    assert entry is None
    assert sorted(reason for _, reason in closes(actions)) == ["expired", "expired"]
    assert connects(actions) == 2
    assert core.idle == []


def test_lend_idle_with_leak_tracking_asks_for_a_wakeup() -> None:
    core = open_filled(min_size=1, max_size=1, leak_timeout=5.0, max_lifetime=None, max_idle=None)
    _, deadline = core.tick(0.0)
    assert deadline == float("inf")
    entry, _, actions = core.lend_idle(1.0)
    assert entry is not None
    assert list(actions) == [WAKEUP]  # the leak deadline (6.0) is earlier than "never"


def test_lend_idle_counts_checkouts() -> None:
    core = open_filled(min_size=2, max_size=2)
    core.lend_idle(0.0)
    core.lend_idle(0.0)
    stats = core.stats()
    assert stats.checkouts == 2
    assert stats.checkouts_waited == 0
    assert stats.wait_time.count == 2
    assert stats.wait_time.total == 0.0


# -- the fastest path: lend_fast ------------------------------------------------------


def test_lend_fast_lends_the_top_entry_when_nothing_is_special() -> None:
    core = open_filled(min_size=2, max_size=2)
    top = core.idle[-1]
    entry = core.lend_fast(0.5)
    assert entry is top
    assert entry.state == "lent"
    assert core.lent[entry.number] is entry
    assert core.stats().checkouts == 1
    assert core.stats().wait_time.count == 1


@pytest.mark.parametrize("why", ["check_due", "expired", "leak_tracking", "closed", "empty"])
def test_lend_fast_leaves_special_cases_to_lend_idle(why: str) -> None:
    settings: dict[str, Any] = {"min_size": 1, "max_size": 1, "max_lifetime": 100.0}
    if why == "leak_tracking":
        settings["leak_timeout"] = 10.0
    core = open_filled(**settings)
    now = 0.5
    if why == "check_due":
        now = 2.0  # idle longer than check_after_idle=1.0
    elif why == "expired":
        now = 100.0
    elif why == "closed":
        core.close(0.0)
    elif why == "empty":
        assert core.lend_fast(0.0) is not None
    assert core.lend_fast(now) is None
    assert core.stats().checkouts == (1 if why == "empty" else 0)


# -- the queue -------------------------------------------------------------------------


def test_enqueue_starts_connects_up_to_max_connecting_then_max_size() -> None:
    core = make_core(min_size=0, max_size=3, max_connecting=2)
    assert core.open(0.0) == []
    w1, w2, w3, w4 = Waiter(), Waiter(), Waiter(), Waiter()
    assert connects(core.enqueue(w1, 0.0)) == 1
    assert connects(core.enqueue(w2, 0.0)) == 1
    assert connects(core.enqueue(w3, 0.0)) == 0  # max_connecting reached
    assert core.connecting == 2

    # Each success serves the oldest waiter and lets the next connect start.
    actions = core.connected(FakeConn(), 0.1, 0.1)
    assert [waiter for waiter, _ in handoffs(actions)] == [w1]
    assert connects(actions) == 1
    actions = core.connected(FakeConn(), 0.2, 0.1)
    assert [waiter for waiter, _ in handoffs(actions)] == [w2]
    assert connects(actions) == 0  # size is max_size
    actions = core.connected(FakeConn(), 0.3, 0.1)
    assert [waiter for waiter, _ in handoffs(actions)] == [w3]
    assert core.size == 3

    assert connects(core.enqueue(w4, 0.4)) == 0  # full: w4 waits for a return
    assert w4.outcome is None
    entry = w2.outcome
    assert isinstance(entry, Entry)
    assert handoffs(core.release(entry, 0.5)) == [(w4, entry)]
    stats = core.stats()
    assert stats.checkouts == stats.checkouts_waited == 4
    assert stats.wait_time.count == 4
    assert stats.wait_time.maximum == pytest.approx(0.3)


def test_many_waiters_start_no_more_than_max_connecting() -> None:
    core = make_core(min_size=0, max_size=10, max_connecting=2)
    core.open(0.0)
    started = sum([connects(core.enqueue(Waiter(), 0.0)) for _ in range(6)])
    assert started == 2
    assert core.stats().waiting == 6


def test_waiters_are_served_first_come_first_served_on_release() -> None:
    core = open_filled(min_size=2, max_size=2)
    first, _, _ = core.lend_idle(0.0)
    second, _, _ = core.lend_idle(0.0)
    assert first is not None
    assert second is not None
    waiters = [Waiter() for _ in range(3)]
    for i, waiter in enumerate(waiters):
        core.enqueue(waiter, 1.0 + i)
    served = []
    served += handoffs(core.release(second, 5.0))
    served += handoffs(core.release(first, 5.0))
    assert served == [(waiters[0], second), (waiters[1], first)]
    entry: object = waiters[0].outcome
    assert entry is second
    served = handoffs(core.release(second, 6.0))
    assert served == [(waiters[2], second)]
    assert core.stats().waiting == 0


def test_enqueue_serves_from_idle_after_a_race_with_the_fast_path() -> None:
    # The caller found nothing idle, then a connection came back before it queued.
    core = open_filled(min_size=1, max_size=1)
    waiter = Waiter()
    actions = core.enqueue(waiter, 0.5)
    entry = waiter.outcome
    assert isinstance(entry, Entry)
    assert core.lent[entry.number] is entry
    assert handoffs(actions) == [(waiter, entry)]
    assert core.stats().waiting == 0
    assert not core.cancel(waiter, 0.6)  # served: the caller takes the entry


def test_enqueue_checks_an_idle_entry_that_needs_it_before_handing_it_off() -> None:
    core = open_filled(min_size=1, max_size=1, check_after_idle=1.0)
    (entry,) = core.idle
    waiter = Waiter()
    actions = core.enqueue(waiter, 5.0)
    assert checked_entries(actions) == [entry]
    assert connects(actions) == 0  # the check may serve the waiter: no extra connect
    assert waiter.outcome is None
    actions = core.checked(entry, 5.1, ok=True)
    assert handoffs(actions) == [(waiter, entry)]
    assert entry.verified_at == 5.1


def test_max_waiting_refuses_a_caller_when_the_queue_is_full() -> None:
    core = open_filled(min_size=1, max_size=1, max_waiting=2)
    core.lend_idle(0.0)
    w1, w2 = Waiter(), Waiter()
    core.enqueue(w1, 0.0)
    core.enqueue(w2, 0.0)
    rejected = Waiter()
    assert core.enqueue(rejected, 0.0) == "queue_full"
    assert rejected.outcome is None
    assert core.stats().rejected == 1
    assert list(core.waiters) == [w1, w2]
    # Room again once somebody leaves.
    assert core.cancel(w1, 1.0)
    core.enqueue(rejected, 1.0)
    assert list(core.waiters) == [w2, rejected]


def test_max_waiting_zero_means_unbounded() -> None:
    core = open_filled(min_size=1, max_size=1, max_waiting=0)
    core.lend_idle(0.0)
    for _ in range(100):
        core.enqueue(Waiter(), 0.0)
    assert core.stats().waiting == 100


def test_enqueue_before_open_is_refused() -> None:
    core = make_core()
    waiter = Waiter()
    assert core.enqueue(waiter, 0.0) == "not_open"
    assert waiter.outcome is None
    assert not core.waiters


def test_a_closed_pool_refuses_to_queue_or_reopen() -> None:
    core = open_filled(min_size=1, max_size=1)
    core.close(1.0)
    assert core.enqueue(Waiter(), 2.0) == "closed"
    assert not core.waiters
    assert core.lend_idle(2.0) == (None, False, ())
    assert core.open(3.0) == "closed"
    assert core.stats().connecting == 0  # nothing started


# -- cancel ----------------------------------------------------------------------------


def test_cancel_withdraws_a_queued_waiter() -> None:
    core = open_filled(min_size=1, max_size=1)
    entry, _, _ = core.lend_idle(0.0)
    assert entry is not None
    first, second = Waiter(), Waiter()
    core.enqueue(first, 0.0)
    core.enqueue(second, 0.0)
    assert core.cancel(first, 1.0) is True
    assert first.outcome is None
    assert list(core.waiters) == [second]
    assert core.stats().timeouts == 1
    # The next return skips the withdrawn waiter.
    assert handoffs(core.release(entry, 2.0)) == [(second, entry)]
    assert first.outcome is None
    # Withdrawing twice, or a waiter never queued, is a no-op.
    assert core.cancel(first, 3.0) is False
    assert core.cancel(Waiter(), 3.0) is False
    assert core.stats().timeouts == 1


def test_cancel_not_timed_out_does_not_count_a_timeout() -> None:
    core = open_filled(min_size=1, max_size=1)
    core.lend_idle(0.0)
    waiter = Waiter()
    core.enqueue(waiter, 0.0)
    assert core.cancel(waiter, 1.0, timed_out=False) is True
    assert core.stats().timeouts == 0


def test_cancel_after_an_outcome_returns_false_and_the_caller_keeps_it() -> None:
    core = open_filled(min_size=1, max_size=1)
    entry, _, _ = core.lend_idle(0.0)
    assert entry is not None
    waiter = Waiter()
    core.enqueue(waiter, 0.0)
    core.release(entry, 1.0)  # served at the same moment the caller times out
    assert core.cancel(waiter, 1.0) is False
    assert served(waiter) is entry
    assert core.lent[entry.number] is entry  # still lent: the caller must release it
    assert core.stats().timeouts == 0
    # Giving it back unused puts it on the idle stack.
    core.release(entry, 1.1)
    assert core.idle == [entry]


def test_cancel_after_a_failure_returns_false() -> None:
    core = make_core(min_size=0, max_size=1, fail_fast=True)
    core.open(0.0)
    waiter = Waiter()
    core.enqueue(waiter, 0.0)
    core.connect_failed(OSError("refused"), 0.5)
    assert waiter.outcome == "database_unavailable"
    assert core.cancel(waiter, 0.6) is False


def test_a_cancelled_waiter_leaves_its_connect_to_the_pool() -> None:
    core = make_core(min_size=0, max_size=2)
    core.open(0.0)
    waiter = Waiter()
    assert connects(core.enqueue(waiter, 0.0)) == 1
    assert core.cancel(waiter, 0.5)
    actions = core.connected(FakeConn(), 1.0, 1.0)
    assert handoffs(actions) == []
    assert len(core.idle) == 1
    assert waiter.outcome is None
    assert connects(actions) == 0  # min_size=0 and nobody waits: no refill


def test_enqueue_closes_expired_idle_entries_it_finds() -> None:
    core = open_filled(min_size=1, max_size=1, max_lifetime=10.0)
    (entry,) = core.idle
    waiter = Waiter()
    actions = core.enqueue(waiter, entry.expires_at)
    assert closes(actions) == [(entry, "expired")]
    assert connects(actions) == 1
    assert waiter.outcome is None
