"""Health: broken returns, failed checks, the suspect mark, maintenance checks."""

from __future__ import annotations

from pgfleet._core import Waiter

from .fakes import FakeConn, checked_entries, closes, connects, handoffs, open_filled


def test_release_broken_closes_it_and_checks_every_idle_entry() -> None:
    core = open_filled(min_size=4, max_size=4)
    lent, _, _ = core.lend_idle(1.0)
    assert lent is not None
    idle = list(core.idle)
    actions = core.release(lent, 2.0, broken=True)
    assert closes(actions) == [(lent, "broken")]
    assert lent.state == "closed"
    # Every idle connection is older than the moment one was found dead: suspect.
    assert set(checked_entries(actions)) == set(idle)
    assert core.checking == set(idle)
    assert all(entry.state == "checking" for entry in idle)
    assert core.idle == []
    assert core.suspect_before == 2.0
    # The floor is refilled at once (the checks count as connections that exist).
    assert connects(actions) == 1
    stats = core.stats()
    assert stats.returns_broken == 1
    assert stats.connections_closed == {"broken": 1}
    assert stats.usage_time.count == 1
    assert stats.size == 4
    assert stats.checking == 3


def test_release_broken_hands_nothing_to_waiters_and_connects_for_them() -> None:
    core = open_filled(min_size=1, max_size=1)
    lent, _, _ = core.lend_idle(0.0)
    assert lent is not None
    waiter = Waiter()
    core.enqueue(waiter, 0.0)
    actions = core.release(lent, 1.0, broken=True)
    assert handoffs(actions) == []
    assert connects(actions) == 1
    assert waiter.outcome is None
    actions = core.connected(FakeConn(), 1.5, 0.5)
    ((served, entry),) = handoffs(actions)
    assert served is waiter
    assert entry.conn is not lent.conn


def test_discard_drops_a_lent_entry_that_failed_its_check_before_use() -> None:
    core = open_filled(min_size=3, max_size=3, check_after_idle=1.0)
    entry, needs_check, _ = core.lend_idle(5.0)
    assert entry is not None
    assert needs_check
    others = list(core.idle)
    actions = core.discard(entry, 5.1)
    assert closes(actions) == [(entry, "check_failed")]
    assert set(checked_entries(actions)) == set(others)
    assert connects(actions) == 1
    assert core.suspect_before == 5.1
    stats = core.stats()
    assert stats.checks == 1
    assert stats.checks_failed == 1
    assert stats.checkouts == 0  # the checkout did not happen: the caller tries again
    assert stats.connections_closed == {"check_failed": 1}


def test_discard_with_a_reason_and_twice() -> None:
    core = open_filled(min_size=1, max_size=1)
    entry, _, _ = core.lend_idle(0.0)
    assert entry is not None
    assert closes(core.discard(entry, 0.1, "broken")) == [(entry, "broken")]
    assert list(core.discard(entry, 0.2)) == []  # already forgotten
    assert list(core.release(entry, 0.3)) == []


def test_checked_ok_pools_the_entry_again() -> None:
    core = open_filled(min_size=2, max_size=2)
    actions = core.check_all()
    entries = checked_entries(actions)
    assert len(entries) == 2
    assert core.idle == []
    first = entries[0]
    assert list(core.checked(first, 3.0, ok=True)) == []
    assert core.idle == [first]
    assert first.state == "idle"
    assert first.verified_at == 3.0
    assert first.idle_since == 3.0
    assert core.stats().checks == 1


def test_checked_ok_hands_off_to_the_oldest_waiter() -> None:
    core = open_filled(min_size=2, max_size=2)
    (entry, other) = checked_entries(core.check_all())
    w1, w2 = Waiter(), Waiter()
    actions = core.enqueue(w1, 1.0)
    assert connects(actions) == 0  # the pool is full: the checks will serve
    core.enqueue(w2, 1.0)
    assert handoffs(core.checked(entry, 2.0, ok=True)) == [(w1, entry)]
    assert handoffs(core.checked(other, 2.0, ok=True)) == [(w2, other)]
    assert entry.verified_at == 2.0  # handed over fresh: the shell lends it unchecked


def test_checked_failed_closes_and_refills() -> None:
    core = open_filled(min_size=2, max_size=2)
    (entry, other) = checked_entries(core.check_all())
    actions = core.checked(entry, 1.0, ok=False)
    assert closes(actions) == [(entry, "check_failed")]
    assert connects(actions) == 1
    stats = core.stats()
    assert (stats.checks, stats.checks_failed) == (1, 1)
    assert stats.connections_closed == {"check_failed": 1}
    assert core.checking == {other}


def test_checked_failed_connects_for_waiters() -> None:
    core = open_filled(min_size=1, max_size=1)
    (entry,) = checked_entries(core.check_all())
    waiter = Waiter()
    assert connects(core.enqueue(waiter, 1.0)) == 0
    actions = core.checked(entry, 1.5, ok=False)
    assert connects(actions) == 1
    assert handoffs(core.connected(FakeConn(), 2.0, 0.5))[0][0] is waiter


def test_checked_expired_entry_is_closed() -> None:
    core = open_filled(min_size=1, max_size=1, max_lifetime=10.0)
    (entry,) = checked_entries(core.check_all())
    actions = core.checked(entry, 10.0, ok=True)
    assert closes(actions) == [(entry, "expired")]
    assert connects(actions) == 1


def test_checked_for_an_entry_not_being_checked_is_ignored() -> None:
    core = open_filled(min_size=1, max_size=1)
    (entry,) = core.idle
    assert list(core.checked(entry, 1.0, ok=False)) == []
    assert core.idle == [entry]
    assert core.stats().checks == 0


def test_suspect_mark_spares_entries_verified_after_it() -> None:
    core = open_filled(min_size=3, max_size=3, check_after_idle=None)
    a, _, _ = core.lend_idle(1.0)
    b, _, _ = core.lend_idle(1.0)
    assert a is not None
    assert b is not None
    actions = core.release(a, 2.0, broken=True)
    (c,) = checked_entries(actions)
    # b was lent when the mark was set and comes back clean later: it is known good.
    core.release(b, 3.0)
    entry, needs_check, _ = core.lend_idle(3.5)
    assert entry is b
    assert not needs_check
    # c passes its check after the mark: good as well.
    core.checked(c, 4.0, ok=True)
    core.release(b, 4.0)
    for _ in range(2):
        entry, needs_check, _ = core.lend_idle(4.5)
        assert entry is not None
        assert not needs_check


# -- seen_at: what the shell's probe before a lend goes by ----------------------------------


def test_a_lend_longer_than_probe_after_leaves_the_connection_unseen() -> None:
    core = open_filled(min_size=1, max_size=1, probe_after=0.2)
    entry = core.lend_fast(1.0)
    assert entry is not None
    core.release(entry, 1.1)  # a short lend: seen working at its end
    assert entry.seen_at == 1.1
    assert core.lend_fast(1.2) is entry
    core.release(entry, 2.0)  # a long one: news may have come meanwhile
    assert entry.seen_at == 1.1
    assert entry.verified_at == 2.0  # (the check after idle still counts from the return)


def test_a_reset_does_not_count_as_seen() -> None:
    """A manager's reset need not touch the socket (a callback with no I/O)."""
    core = open_filled(min_size=1, max_size=1, probe_after=0.2)
    entry = core.lend_fast(1.0)
    assert entry is not None
    core.release(entry, 2.0, reset=True)
    assert entry.seen_at == 0.0


def test_a_connection_given_back_unused_keeps_what_was_known_before_its_lend() -> None:
    """A caller served as it was cancelled gives the connection back unused: the next
    caller must still probe a connection unseen since before the lend that ended it."""
    core = open_filled(min_size=1, max_size=1, probe_after=0.2)
    entry = core.lend_fast(1.0)
    assert entry is not None
    first, second = Waiter(), Waiter()
    core.enqueue(first, 1.5)
    core.enqueue(second, 1.5)
    assert handoffs(core.release(entry, 3.0)) == [(first, entry)]  # lent for 2 s: unseen
    assert entry.seen_at == 0.0
    # `first` was cancelled as it was served: it gives the connection back at once.
    assert handoffs(core.give_back(entry, 3.0)) == [(second, entry)]
    assert (entry.seen_at, entry.verified_at) == (0.0, 3.0)
    # `second` probed it (the shell does, seen_at being old) and used it briefly.
    core.release(entry, 3.1)
    assert (entry.seen_at, entry.verified_at) == (3.1, 3.1)
    # An unused lend off the idle stack changes nothing known either.
    assert core.lend_fast(3.5) is entry
    core.give_back(entry, 3.6)
    assert (entry.seen_at, entry.verified_at) == (3.1, 3.1)
