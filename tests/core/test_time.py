"""Time: max_lifetime with jitter, max_idle above the floor, leaks, deadlines, wakeups."""

from __future__ import annotations

from typing import Any

import pytest

from pgfleet._core import WAKEUP, ReportLeak, Waiter

from .fakes import FakeConn, closes, connects, handoffs, make_core, of_type, open_filled, served

INF = float("inf")


def test_lifetimes_are_jittered_between_90_and_100_percent() -> None:
    core = make_core(min_size=0, max_size=200, max_lifetime=100.0, max_connecting=200)
    core.open(0.0)
    for _ in range(200):
        core.enqueue(Waiter(), 0.0)
    entries = []
    for i in range(200):
        ((_, entry),) = handoffs(core.connected(FakeConn(), float(i), 0.1))
        entries.append(entry)
    lifetimes = [entry.expires_at - entry.created_at for entry in entries]
    assert all(90.0 <= lifetime <= 100.0 for lifetime in lifetimes)
    assert min(lifetimes) < 91.0
    assert max(lifetimes) > 99.0


def test_lifetime_without_jitter_or_limit() -> None:
    exact = open_filled(min_size=1, max_size=1, max_lifetime=50.0, lifetime_jitter=0.0)
    assert exact.idle[0].expires_at == 50.0
    forever = open_filled(min_size=1, max_size=1, max_lifetime=None)
    assert forever.idle[0].expires_at == INF


def test_tick_expires_at_the_lifetime_never_later() -> None:
    core = open_filled(min_size=1, max_size=1, max_lifetime=100.0, max_idle=None)
    (entry,) = core.idle
    actions, deadline = core.tick(0.0)
    assert actions == []
    assert deadline == entry.expires_at
    actions, deadline = core.tick(entry.expires_at - 0.001)
    assert actions == []
    assert deadline == entry.expires_at
    actions, _ = core.tick(entry.expires_at)
    assert closes(actions) == [(entry, "expired")]
    assert connects(actions) == 1  # the floor is refilled
    assert core.stats().connections_closed == {"expired": 1}


def test_a_connection_lent_across_a_tick_still_expires_on_time() -> None:
    # The entry is lent when maintenance computes its next deadline, so that deadline
    # ignores it; when it comes back, the maintenance must still wake by its expiry.
    core = open_filled(min_size=1, max_size=1, max_lifetime=100.0, max_idle=None)
    (entry,) = core.idle
    core.tick(0.0)
    core.lend_idle(1.0)
    _, deadline = core.tick(2.0)
    actions = core.release(entry, 3.0)
    assert WAKEUP in actions or deadline <= entry.expires_at
    # The same through a check: taken out for a check across a tick.
    core.check_all()
    _, deadline = core.tick(4.0)
    actions = core.checked(entry, 5.0, ok=True)
    assert WAKEUP in actions or deadline <= entry.expires_at


def test_release_of_an_expired_connection_closes_it() -> None:
    core = open_filled(min_size=1, max_size=1, max_lifetime=10.0)
    entry, _, _ = core.lend_idle(0.0)
    assert entry is not None
    actions = core.release(entry, 10.0)
    assert closes(actions) == [(entry, "expired")]
    assert connects(actions) == 1


def test_max_idle_closes_the_least_recently_used_above_min_size() -> None:
    core = open_filled(min_size=1, max_size=3, max_idle=10.0, max_lifetime=None)
    first, _, _ = core.lend_idle(0.0)
    w2, w3 = Waiter(), Waiter()
    core.enqueue(w2, 0.0)
    core.enqueue(w3, 0.0)
    core.connected(FakeConn(), 0.5, 0.5)
    core.connected(FakeConn(), 0.5, 0.5)
    lent = [first, served(w2), served(w3)]
    for i, entry in enumerate(lent):
        assert entry is not None
        core.release(entry, 1.0 + i)
    assert core.idle == lent
    actions, deadline = core.tick(5.0)
    assert actions == []
    assert deadline == 11.0  # the least recently used one
    actions, deadline = core.tick(11.0)
    assert closes(actions) == [(lent[0], "idle")]
    assert deadline == 12.0
    actions, deadline = core.tick(20.0)
    # Only down to min_size: the most recently used one stays.
    assert closes(actions) == [(lent[1], "idle")]
    assert core.idle == [lent[2]]
    assert connects(actions) == 0
    actions, _ = core.tick(1000.0)
    assert actions == []
    assert core.idle == [lent[2]]


def test_max_idle_counts_lent_connections_in_the_surplus() -> None:
    core = open_filled(min_size=2, max_size=2, max_idle=10.0, max_lifetime=None)
    core.resize(1, 2, 0.0)
    lent, _, _ = core.lend_idle(0.0)
    assert lent is not None
    # size 2 (one idle, one lent) is one above min_size=1: the idle one may go.
    actions, _ = core.tick(100.0)
    assert len(closes(actions)) == 1
    assert core.idle == []
    actions, _ = core.tick(200.0)
    assert actions == []


def test_max_idle_none_keeps_idle_connections() -> None:
    core = open_filled(min_size=0, max_size=2, max_idle=None, max_lifetime=None)
    waiter = Waiter()
    core.enqueue(waiter, 0.0)
    core.connected(FakeConn(), 0.0, 0.1)
    core.release(served(waiter), 0.0)
    actions, deadline = core.tick(1e9)
    assert actions == []
    assert deadline == INF
    assert len(core.idle) == 1


def test_tick_refills_the_min_size_floor() -> None:
    core = make_core(min_size=3, max_size=5, max_connecting=2)
    assert connects(core.open(0.0)) == 2
    actions = core.connected(FakeConn(), 0.1, 0.1)
    assert connects(actions) == 1
    core.connected(FakeConn(), 0.2, 0.1)
    core.connected(FakeConn(), 0.3, 0.1)
    assert len(core.idle) == 3
    entry, _, _ = core.lend_idle(1.0)
    assert entry is not None
    core.release(entry, 1.0, broken=True)  # refilled at once...
    assert core.connecting == 1
    core.connect_failed(OSError("refused"), 1.0)
    actions, _ = core.tick(core.retry_at)  # ...and by maintenance after a failure
    assert connects(actions) == 1


def test_leaks_are_reported_once_per_checkout() -> None:
    core = open_filled(min_size=1, max_size=1, leak_timeout=5.0, max_lifetime=None, max_idle=None)
    entry, _, _ = core.lend_idle(0.0)
    assert entry is not None
    actions, deadline = core.tick(4.0)
    assert actions == []
    assert deadline == 5.0
    actions, deadline = core.tick(5.0)
    (report,) = of_type(actions, ReportLeak)
    assert report.entry is entry
    assert not report.returned
    assert report.held == 5.0
    assert entry.leak_reported
    assert deadline == INF
    assert core.tick(6.0)[0] == []
    assert core.stats().leaks == 1
    # The late return is reported too (the shell logs it), but not counted again.
    returned = core.release(entry, 7.0)
    (report,) = of_type(returned, ReportLeak)
    assert report.entry is entry
    assert report.returned
    assert report.held == 7.0
    assert core.stats().leaks == 1
    # A new checkout of the same connection starts afresh.
    again, _, _ = core.lend_idle(8.0)
    assert again is entry
    assert not again.leak_reported
    assert core.tick(8.0)[1] == 13.0
    assert of_type(core.tick(13.0)[0], ReportLeak) == [ReportLeak(entry)]
    assert core.stats().leaks == 2


def test_a_late_return_handed_to_a_waiter_is_reported_as_returned() -> None:
    # The shell logs the report after the entry may have been lent again: the report
    # itself says it came back, and after how long.
    core = open_filled(min_size=1, max_size=1, leak_timeout=5.0)
    entry, _, _ = core.lend_idle(0.0)
    assert entry is not None
    core.tick(6.0)
    waiter = Waiter()
    core.enqueue(waiter, 6.0)
    actions = core.release(entry, 8.0)
    (report,) = of_type(actions, ReportLeak)
    assert report.returned
    assert report.held == 8.0
    assert served(waiter) is entry
    assert not entry.leak_reported  # lent afresh


def test_a_handed_off_connection_is_watched_for_leaks() -> None:
    core = make_core(min_size=0, max_size=1, leak_timeout=5.0, max_lifetime=None, max_idle=None)
    core.open(0.0)
    assert core.tick(0.0)[1] == INF
    waiter = Waiter()
    core.enqueue(waiter, 0.0)
    actions = core.connected(FakeConn(), 1.0, 1.0)
    assert WAKEUP in actions
    assert core.tick(1.0)[1] == 6.0


@pytest.mark.parametrize("settings", [{}, {"max_idle": None}, {"leak_timeout": 1.0}])
def test_tick_deadline_is_always_in_the_future(settings: dict[str, Any]) -> None:
    core = open_filled(min_size=2, max_size=4, **settings)
    core.lend_idle(0.0)
    for now in (0.0, 0.5, 1.0, 10.0, 1000.0, 5000.0):
        actions, deadline = core.tick(now)
        assert deadline > now
        for connect in range(connects(actions)):
            core.connected(FakeConn(), now + 0.01 * connect, 0.01)


def test_next_deadline_values() -> None:
    core = make_core(min_size=1, max_size=2, max_lifetime=None, max_idle=None, leak_timeout=None)
    assert core.tick(0.0) == ([], INF)  # not open
    core.open(0.0)
    assert core.tick(0.0)[1] == INF  # a connect in flight: nothing timed
    core.connect_failed(OSError("refused"), 0.0)
    assert core.tick(0.0)[1] == core.retry_at  # below the floor: wake to retry
    core.tick(core.retry_at)
    core.connected(FakeConn(), 10.0, 0.1)
    assert core.tick(10.0)[1] == INF  # nothing left to time

    with_lifetime = open_filled(min_size=2, max_size=2, max_lifetime=60.0, max_idle=None)
    assert with_lifetime.tick(0.0)[1] == min(e.expires_at for e in with_lifetime.idle)

    with_idle = open_filled(min_size=1, max_size=1, max_lifetime=None, max_idle=30.0)
    # At the floor nothing expires for idleness, yet maintenance wakes within max_idle.
    assert with_idle.tick(5.0)[1] <= 35.0


def test_wakeup_only_when_an_earlier_deadline_appears() -> None:
    core = make_core(min_size=0, max_size=2, max_lifetime=100.0, max_idle=None)
    core.open(0.0)
    assert core.tick(0.0)[1] == INF
    w1, w2 = Waiter(), Waiter()
    core.enqueue(w1, 0.0)
    core.enqueue(w2, 0.0)
    first = core.connected(FakeConn(), 1.0, 1.0)
    assert WAKEUP in first  # a lifetime deadline, earlier than "never"
    second = core.connected(FakeConn(), 1.0, 1.0)  # expires no earlier than ~91
    assert (WAKEUP in second) == (served(w2).expires_at < served(w1).expires_at)


def test_tick_when_closed_or_not_open() -> None:
    core = open_filled(min_size=1, max_size=1)
    core.close(1.0)
    assert core.tick(2.0) == ([], INF)
