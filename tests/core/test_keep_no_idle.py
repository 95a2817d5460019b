"""A pool that keeps no idle connection (``keep_idle=False``, the null pools).

A returned connection goes straight to the oldest waiter, else it closes; nothing is
kept idle, nothing fills in the background, ``max_size`` bounds concurrency (0: no
bound), and a caller whose connect fails gets the failure.
"""

from __future__ import annotations

import pytest

from pgfleet._core import Waiter
from pgfleet._core.state import UNBOUNDED

from .fakes import FakeConn, acted, closes, connects, fails, handoffs, make_core, served


def test_min_size_must_be_zero() -> None:
    with pytest.raises(ValueError, match="min_size must be 0"):
        make_core(keep_idle=False, min_size=1, max_size=2)
    core = make_core(keep_idle=False, min_size=0, max_size=2)
    with pytest.raises(ValueError, match="min_size must be 0"):
        core.resize(1, 2, 0.0)
    assert (core.settings.min_size, core.settings.max_size) == (0, 2)  # unchanged


def test_open_and_tick_connect_nothing() -> None:
    core = make_core(keep_idle=False, min_size=0, max_size=3)
    assert connects(acted(core.open(0.0))) == 0
    actions, _ = core.tick(100.0)
    assert connects(actions) == 0
    assert core.size == 0


def test_a_return_with_nobody_queued_closes_the_connection() -> None:
    core = make_core(keep_idle=False, min_size=0, max_size=2, max_lifetime=None)
    core.open(0.0)
    waiter = Waiter()
    assert connects(acted(core.enqueue(waiter, 0.0))) == 1
    (handoff,) = handoffs(core.connected(FakeConn(), 0.1, 0.1))
    entry = served(waiter)
    assert handoff == (waiter, entry)
    assert core.lend_fast(0.2) is None  # nothing idle, ever
    actions = core.release(entry, 0.3)
    assert closes(actions) == [(entry, "not_kept")]
    assert not core.idle
    stats = core.stats()
    assert (stats.size, stats.idle, stats.in_use) == (0, 0, 0)
    assert stats.connections_created == 1
    assert stats.connections_closed == {"not_kept": 1}
    assert stats.checkouts == 1


def test_a_return_goes_to_the_oldest_waiter_first() -> None:
    core = make_core(keep_idle=False, min_size=0, max_size=1)
    core.open(0.0)
    first, second, third = Waiter(), Waiter(), Waiter()
    assert connects(acted(core.enqueue(first, 0.0))) == 1
    # At max_size: the others queue without a connect of their own.
    assert connects(acted(core.enqueue(second, 0.1))) == 0
    assert connects(acted(core.enqueue(third, 0.2))) == 0
    core.connected(FakeConn(), 0.3, 0.3)
    entry = served(first)
    assert handoffs(core.release(entry, 0.4)) == [(second, entry)]
    assert handoffs(core.release(entry, 0.5)) == [(third, entry)]
    assert closes(core.release(entry, 0.6)) == [(entry, "not_kept")]
    stats = core.stats()
    assert stats.checkouts == 3
    assert stats.checkouts_waited == 3
    assert stats.size == 0


def test_a_connect_with_nobody_left_to_serve_is_closed() -> None:
    core = make_core(keep_idle=False, min_size=0, max_size=2)
    core.open(0.0)
    waiter = Waiter()
    core.enqueue(waiter, 0.0)
    assert core.cancel(waiter, 0.5)  # timed out before the connect came back
    actions = core.connected(FakeConn(), 1.0, 1.0)
    assert [reason for _, reason in closes(actions)] == ["not_kept"]
    assert core.size == 0
    assert core.stats().timeouts == 1


def test_an_unbounded_max_size() -> None:
    core = make_core(keep_idle=False, min_size=0, max_size=UNBOUNDED, max_connecting=1000)
    core.open(0.0)
    waiters = [Waiter() for _ in range(50)]
    started = sum(connects(acted(core.enqueue(waiter, 0.0))) for waiter in waiters)
    assert started == 50  # every caller connects at once
    for _ in range(50):
        core.connected(FakeConn(), 0.1, 0.1)
    assert all(served(waiter) for waiter in waiters)
    assert core.stats().max_size == UNBOUNDED


def test_a_failed_connect_fails_its_caller_whatever_fail_fast_says() -> None:
    core = make_core(keep_idle=False, min_size=0, max_size=4, fail_fast=False)
    core.open(0.0)
    first, second = Waiter(), Waiter()
    assert connects(acted(core.enqueue(first, 0.0))) == 1
    assert connects(acted(core.enqueue(second, 0.0))) == 1
    error = ConnectionRefusedError("down")
    # One attempt failed, one is still in flight: the newest caller fails, the
    # oldest keeps the connect in flight.
    assert fails(core.connect_failed(error, 0.1)) == [(second, "database_unavailable")]
    assert core.last_error is error
    assert fails(core.connect_failed(error, 0.2)) == [(first, "database_unavailable")]
    assert not core.waiters
    stats = core.stats()
    assert stats.failed_fast == 2
    assert stats.connect_errors == 2
    assert stats.size == 0


def test_backing_off_a_new_caller_still_probes_and_fails_promptly() -> None:
    core = make_core(keep_idle=False, min_size=0, max_size=4)
    core.open(0.0)
    first = Waiter()
    core.enqueue(first, 0.0)
    core.connect_failed(ConnectionRefusedError("down"), 0.0)
    assert first.outcome == "database_unavailable"
    assert core.database_down
    second = Waiter()
    # Within the back-off, a caller still starts one probe of its own (no herd).
    assert connects(acted(core.enqueue(second, 0.0))) == 1
    assert fails(core.connect_failed(ConnectionRefusedError("down"), 0.0)) == [
        (second, "database_unavailable")
    ]


def test_callers_beyond_max_size_wait_for_a_return_not_for_a_connect() -> None:
    core = make_core(keep_idle=False, min_size=0, max_size=2)
    core.open(0.0)
    holder, connecting, beyond = Waiter(), Waiter(), Waiter()
    core.enqueue(holder, 0.0)
    core.connected(FakeConn(), 0.0, 0.0)
    lent = served(holder)
    assert connects(acted(core.enqueue(connecting, 0.1))) == 1
    assert connects(acted(core.enqueue(beyond, 0.2))) == 0  # at max_size
    # The connect fails: one caller fails with it, the other waits for the lent one.
    assert fails(core.connect_failed(ConnectionRefusedError("down"), 0.3)) == [
        (beyond, "database_unavailable")
    ]
    assert handoffs(core.release(lent, 0.4)) == [(connecting, lent)]


def test_a_broken_return_is_replaced_for_the_next_caller() -> None:
    core = make_core(keep_idle=False, min_size=0, max_size=1)
    core.open(0.0)
    first, second = Waiter(), Waiter()
    core.enqueue(first, 0.0)
    core.connected(FakeConn(), 0.0, 0.0)
    core.enqueue(second, 0.1)
    actions = core.release(served(first), 0.2, broken=True)
    assert [reason for _, reason in closes(actions)] == ["broken"]
    assert connects(actions) == 1
    core.connected(FakeConn(), 0.3, 0.1)
    assert served(second) is not served(first)
    stats = core.stats()
    assert stats.returns_broken == 1
    assert stats.connections_created - sum(stats.connections_closed.values()) == stats.size
