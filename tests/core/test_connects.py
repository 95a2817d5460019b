"""Connects: back-off with jitter, the database-down state, fail-fast, no herd."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from pgfleet._core import WAKEUP, Action, Backoff, Fail, HandOff, Waiter

from .fakes import FakeConn, closes, connects, fails, handoffs, make_core

INF = float("inf")


def test_backoff_ceiling_doubles_up_to_the_cap() -> None:
    backoff = Backoff(initial=0.1, cap=1.0)
    ceilings = [backoff.ceiling(n) for n in range(1, 7)]
    assert ceilings == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert backoff.ceiling(10_000) == 1.0  # no overflow
    assert backoff.ceiling(0) == 0.1


def test_backoff_delay_is_full_jitter_within_the_ceiling() -> None:
    backoff = Backoff(initial=1.0, cap=8.0)
    rng = random.Random(7)
    delays = [backoff.delay(3, rng) for _ in range(200)]
    assert all(0.0 <= delay <= 4.0 for delay in delays)
    assert min(delays) < 1.0  # spread over the whole window
    assert max(delays) > 3.0


@pytest.mark.parametrize(("initial", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_backoff_rejects_bad_bounds(initial: float, cap: float) -> None:
    with pytest.raises(ValueError, match="initial"):
        Backoff(initial=initial, cap=cap)


def test_connect_failed_backs_off_within_the_growing_ceiling() -> None:
    backoff = Backoff(initial=0.5, cap=4.0)
    core = make_core(min_size=1, max_size=1, backoff=backoff, fail_fast=False)
    now = 0.0
    assert connects(core.open(now)) == 1
    for failures in range(1, 8):
        error = OSError(f"refused #{failures}")
        core.connect_failed(error, now)
        assert core.consecutive_failures == failures
        assert core.database_down
        assert core.last_error is error
        assert now <= core.retry_at <= now + backoff.ceiling(failures)
        # Nothing starts before the retry time...
        actions, deadline = core.tick(now)
        assert connects(actions) == 0
        assert deadline == core.retry_at or core.retry_at == now
        # ...and the floor is refilled once it has passed.
        now = core.retry_at
        actions, _ = core.tick(now)
        assert connects(actions) == 1
    stats = core.stats()
    assert stats.connect_errors == 7
    assert stats.database_down


def test_connect_failed_retry_times_are_jittered() -> None:
    retries = set()
    for seed in range(10):
        core = make_core(seed=seed, min_size=1, max_size=1, backoff=Backoff(1.0, 1.0))
        core.open(0.0)
        core.connect_failed(OSError("refused"), 0.0)
        retries.add(core.retry_at)
    assert len(retries) == 10
    assert all(0.0 <= retry <= 1.0 for retry in retries)


def test_connect_failed_asks_for_a_wakeup_at_the_retry_time() -> None:
    core = make_core(min_size=1, max_size=1, max_idle=None, backoff=Backoff(1.0, 1.0))
    core.open(0.0)
    assert core.tick(0.0)[1] == INF  # the connect is in flight: nothing to wait for
    actions = core.connect_failed(OSError("refused"), 0.0)
    assert WAKEUP in actions
    _, deadline = core.tick(0.0)
    assert deadline == core.retry_at


def test_connected_clears_the_down_state() -> None:
    core = make_core(min_size=3, max_size=3, max_connecting=3)
    assert connects(core.open(0.0)) == 3
    core.connect_failed(OSError("refused"), 0.0)
    core.connect_failed(OSError("refused"), 0.0)
    assert core.stats().database_down
    assert core.consecutive_failures == 2
    core.connected(FakeConn(), 5.0, 0.1)
    assert not core.database_down
    assert core.consecutive_failures == 0
    assert core.retry_at == -INF
    stats = core.stats()
    assert not stats.database_down
    assert stats.connections_created == 1
    assert stats.connect_time.count == 1


def test_fail_fast_fails_the_waiters_the_connects_in_flight_cannot_serve() -> None:
    core = make_core(min_size=0, max_size=4, max_connecting=2, fail_fast=True)
    core.open(0.0)
    w1, w2, w3 = Waiter(), Waiter(), Waiter()
    for waiter in (w1, w2, w3):
        core.enqueue(waiter, 0.0)
    assert core.connecting == 2
    error = OSError("connection refused\nis the server running?")
    actions = core.connect_failed(error, 1.0)
    # One connect is still in flight: the oldest waiter keeps waiting for it, the two
    # newest fail now (woken oldest first).
    failed = fails(actions)
    assert [waiter for waiter, _ in failed] == [w2, w3]
    assert list(core.waiters) == [w1]
    for waiter, reason in failed:
        assert reason == "database_unavailable"
        assert waiter.outcome == reason
    assert core.last_error is error  # for the shell's error: its cause and its text
    assert core.stats().failed_fast == 2

    actions = core.connect_failed(OSError("refused again"), 2.0)
    assert [waiter for waiter, _ in fails(actions)] == [w1]
    assert w1.outcome == "database_unavailable"
    stats = core.stats()
    assert stats.failed_fast == 3
    assert stats.waiting == 0
    assert stats.as_psycopg_pool_dict()["requests_errors"] == 3


def test_without_fail_fast_waiters_keep_waiting() -> None:
    core = make_core(min_size=0, max_size=2, fail_fast=False)
    core.open(0.0)
    waiter = Waiter()
    core.enqueue(waiter, 0.0)
    actions = core.connect_failed(OSError("refused"), 1.0)
    assert fails(actions) == []
    assert list(core.waiters) == [waiter]
    assert waiter.outcome is None
    # It is served once the database is back.
    actions, _ = core.tick(core.retry_at)
    assert connects(actions) == 1
    actions = core.connected(FakeConn(), core.retry_at + 0.1, 0.1)
    assert [w for w, _ in handoffs(actions)] == [waiter]


def test_no_herd_while_backing_off_one_probe_at_a_time() -> None:
    core = make_core(
        min_size=0,
        max_size=5,
        max_connecting=3,
        fail_fast=False,
        max_lifetime=None,
        max_idle=None,
        backoff=Backoff(initial=10.0, cap=10.0),
    )
    core.open(0.0)
    assert connects(core.enqueue(Waiter(), 0.0)) == 1
    core.connect_failed(OSError("refused"), 0.0)
    retry_at = core.retry_at
    assert retry_at > 0.01
    # A newcomer while backing off probes, alone.
    assert connects(core.enqueue(Waiter(), 0.01)) == 1
    assert connects(core.enqueue(Waiter(), 0.01)) == 0
    actions, deadline = core.tick(0.01)
    assert connects(actions) == 0
    assert deadline == retry_at
    # The probe fails: still backing off; the next newcomer probes again.
    core.connect_failed(OSError("refused"), 0.02)
    assert core.retry_at > 0.02
    retry_at = core.retry_at
    assert connects(core.enqueue(Waiter(), 0.03)) == 1
    assert core.connecting == 1
    # At the retry time the maintenance refills for the queue, up to max_connecting.
    actions, _ = core.tick(retry_at)
    assert connects(actions) == 2
    assert core.connecting == 3


def test_a_successful_probe_ends_the_back_off_and_serves_the_queue() -> None:
    core = make_core(
        min_size=0,
        max_size=5,
        max_connecting=3,
        fail_fast=False,
        backoff=Backoff(initial=10.0, cap=10.0),
    )
    core.open(0.0)
    w1 = Waiter()
    core.enqueue(w1, 0.0)
    core.connect_failed(OSError("refused"), 0.0)
    w2, w3 = Waiter(), Waiter()
    assert connects(core.enqueue(w2, 0.1)) == 1  # the probe
    assert connects(core.enqueue(w3, 0.1)) == 0
    actions = core.connected(FakeConn(), 0.2, 0.1)
    assert [w for w, _ in handoffs(actions)] == [w1]
    assert connects(actions) == 2  # back to normal: connects for w2 and w3 at once
    assert not core.database_down


def test_the_floor_is_not_refilled_while_backing_off() -> None:
    core = make_core(min_size=2, max_size=2, backoff=Backoff(initial=5.0, cap=5.0))
    assert connects(core.open(0.0)) == 2
    core.connect_failed(OSError("refused"), 0.0)
    core.connect_failed(OSError("refused"), 0.0)
    retry_at = core.retry_at
    assert retry_at > 0.0
    assert connects(core.tick(retry_at / 2)[0]) == 0
    assert connects(core.tick(retry_at)[0]) == 2


def test_connected_beyond_max_size_closes_the_surplus() -> None:
    core = make_core(min_size=2, max_size=2)
    core.open(0.0)
    assert core.connecting == 2
    core.resize(0, 1, 0.0)  # the two connects in flight are one too many
    actions = core.connected(FakeConn(), 1.0, 0.1)
    ((entry, reason),) = closes(actions)
    assert reason == "surplus"
    assert entry.state == "closed"
    actions = core.connected(FakeConn(), 1.0, 0.1)
    assert closes(actions) == []
    assert len(core.idle) == core.size == 1
    assert core.stats().connections_closed == {"surplus": 1}


def test_newcomers_during_back_off_wake_maintenance_for_the_retry() -> None:
    core = make_core(
        min_size=0,
        max_size=3,
        fail_fast=False,
        max_lifetime=None,
        max_idle=None,
        backoff=Backoff(initial=10.0, cap=10.0),
    )
    core.open(0.0)
    early = [Waiter(), Waiter()]
    core.enqueue(early[0], 0.0)
    core.connect_failed(OSError("refused"), 0.0)
    retry_at = core.retry_at
    assert connects(core.enqueue(early[1], 0.1)) == 1  # the probe
    for waiter in early:
        core.cancel(waiter, 0.2)
    assert core.tick(0.2)[1] == INF  # nobody waits: nothing to retry for
    core.enqueue(Waiter(), 0.3)  # served by the probe in flight, if it succeeds
    actions = core.enqueue(Waiter(), 0.3)  # needs one more connect: not before retry_at
    assert connects(actions) == 0
    assert WAKEUP in actions
    assert core.tick(0.3)[1] == retry_at
    assert connects(core.tick(retry_at)[0]) == 1


def test_fail_fast_spares_the_waiters_while_connections_are_lent() -> None:
    """A refused refill ("too many clients") is not a database outage."""
    core = make_core(min_size=0, max_size=2, max_connecting=1, fail_fast=True)
    core.open(0.0)
    core.enqueue(Waiter(), 0.0)
    first = Waiter()
    actions: Sequence[Action] = core.connected(FakeConn(), 0.1, 0.01)  # serves the first waiter
    held = next(a for a in actions if isinstance(a, HandOff))
    core.enqueue(first, 0.2)  # wants a second connection: a refill starts
    assert core.connecting == 1
    actions = core.connect_failed(ConnectionRefusedError("too many clients"), 0.3)
    assert not [a for a in actions if isinstance(a, Fail)]
    assert first.outcome is None
    # The lent connection comes back and serves the waiter.
    actions = core.release(held.entry, 0.4)
    assert first.outcome is held.entry
