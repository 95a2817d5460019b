"""A Hypothesis state machine that plays the shell against the engine.

The test keeps its own model of what a shell knows (the connects and checks it was
asked to run, the connections its callers hold, the queue of waiters, when the
maintenance loop will tick) and checks the engine against it after every step.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from pgfleet._core import (
    Action,
    Backoff,
    Check,
    Close,
    Connect,
    CoreSettings,
    Entry,
    Fail,
    HandOff,
    PoolCore,
    ReportLeak,
    Waiter,
    Wakeup,
)
from pgfleet._core.state import UNBOUNDED

from .fakes import FakeConn

INF = float("inf")
_waiter_numbers = itertools.count(1)


class TrackedWaiter(Waiter):
    """A waiter that records every write to ``outcome``, to catch an overwrite."""

    def __init__(self) -> None:
        self.number = next(_waiter_numbers)
        self.writes: list[Any] = []
        super().__init__()  # writes the initial None through the property

    @property
    def outcome(self) -> Any:
        return self._outcome

    @outcome.setter
    def outcome(self, value: Any) -> None:
        self.writes.append(value)
        self._outcome = value

    def __repr__(self) -> str:
        return f"<Waiter #{self.number}>"


def limit(max_size: int) -> float:
    """The size bound of `max_size` (`UNBOUNDED`: none)."""
    return INF if max_size == UNBOUNDED else max_size


@st.composite
def core_settings(draw: st.DrawFn) -> CoreSettings:
    # A third of the pools keep no idle connection (the null pools): no floor, and
    # some have no size bound (a null pool's max_size=0).
    keep_idle = draw(st.sampled_from([True, True, False]))
    max_size = draw(st.integers(1, 4) if keep_idle else st.sampled_from([UNBOUNDED, 1, 2, 3, 4]))
    initial = draw(st.sampled_from([0.5, 2.0]))
    return CoreSettings(
        keep_idle=keep_idle,
        min_size=draw(st.integers(0, max_size)) if keep_idle else 0,
        max_size=max_size,
        max_waiting=draw(st.sampled_from([0, 0, 2, 5])),
        max_lifetime=draw(st.sampled_from([None, 20.0, 60.0])),
        lifetime_jitter=draw(st.sampled_from([0.0, 0.1])),
        max_idle=draw(st.sampled_from([None, 5.0, 30.0])),
        check_after_idle=draw(st.sampled_from([None, 0.0, 1.0])),
        max_connecting=draw(st.integers(1, 3)),
        leak_timeout=draw(st.sampled_from([None, None, 3.0])),
        fail_fast=draw(st.booleans()),
        backoff=Backoff(initial=initial, cap=4 * initial),
    )


# The events of the one rule, weighted by repetition.
EVENTS = st.sampled_from(
    ["advance"] * 3
    + ["tick"] * 2
    + ["borrow"] * 4
    + ["give_back"] * 4
    + ["complete_connect"] * 3
    + ["complete_check"] * 2
    + ["cancel", "administer"]
)
DELAYS = st.sampled_from([0.0, 0.05, 0.5, 1.0, 2.0, 5.0, 15.0, 45.0])
BORROWS = st.sampled_from(["checkout", "checkout", "lend_fast", "lend_idle", "enqueue"])
GIVE_BACKS = st.sampled_from(["release", "release", "broken", "discard", "check_passed"])
ADMINISTRATION = st.sampled_from(["resize", "drain", "check_all", "resize", "close_lent", "close"])
MOSTLY_TRUE = st.sampled_from([True, True, True, False])
DURATIONS = st.sampled_from([0.001, 0.5])
PICKS = st.integers(0, 63)
SIZES = st.integers(1, 5)


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.core: PoolCore[FakeConn] | None = None

    # -- playing the shell --------------------------------------------------------------

    @initialize(config=core_settings(), seed=st.integers(0, 2**16))
    def start(self, config: CoreSettings, seed: int) -> None:
        self.core = PoolCore(config, name="machine", seed=seed)
        self.now = 0.0
        self.pending_connects = 0
        self.pending_checks: list[Entry[FakeConn]] = []
        self.holders: list[Entry[FakeConn]] = []  # entries our callers hold
        self.queue: list[TrackedWaiter] = []  # our copy of the engine's queue
        self.waiters: list[TrackedWaiter] = []  # every waiter that was queued
        self.withdrawn: set[int] = set()  # waiters withdrawn by a successful cancel
        self.closed_entries: dict[int, Entry[FakeConn]] = {}  # by id: kept alive
        self.conns: list[FakeConn] = []  # keep them alive: entries are keyed by id(conn)
        self.reported: set[tuple[int, float]] = set()  # (entry, lent_at) leak reports
        # When the maintenance loop ticks next: at `deadline`, or now after a WAKEUP
        # (and when it starts: it ticks first thing).
        self.deadline = INF
        self.tick_pending = True
        self.size_bound = limit(config.max_size)
        self.counts: Counter[str] = Counter()
        opened = self.core.open(self.now)
        assert not isinstance(opened, str)  # a new pool opens
        self.run(opened)

    def run(self, actions: Sequence[Action]) -> None:
        """Carry out actions the way a shell would, checking each one."""
        core = self.engine
        for action in actions:
            if isinstance(action, Connect):
                self.pending_connects += 1
            elif isinstance(action, Check):
                entry = action.entry
                assert entry.state == "checking"
                assert entry in core.checking
                assert all(entry is not other for other in self.pending_checks)
                self.pending_checks.append(entry)
            elif isinstance(action, Close):
                entry = action.entry
                assert entry.state == "closed"
                assert id(entry) not in self.closed_entries, f"{entry} closed twice"
                self.closed_entries[id(entry)] = entry
                assert not self.in_engine(entry)
                self.counts["closes"] += 1
            elif isinstance(action, HandOff):
                # First come, first served: the oldest queued waiter gets it.
                assert self.queue, "a hand-off with nobody queued"
                assert action.waiter is self.queue[0], (action.waiter, self.queue)
                self.queue.pop(0)
                assert action.waiter.outcome is action.entry
                self.take(action.entry)
            elif isinstance(action, Fail):
                assert isinstance(action.waiter, TrackedWaiter)
                assert any(action.waiter is w for w in self.queue)
                self.queue.remove(action.waiter)
                assert action.waiter.outcome == action.reason
                assert action.reason in ("closed", "database_unavailable")
                if action.reason == "database_unavailable":
                    # The shell reports the engine's last error as the cause.
                    assert isinstance(core.last_error, ConnectionRefusedError)
                    self.counts["failed_fast"] += 1
                else:
                    assert core.closed
            elif isinstance(action, ReportLeak):
                pass  # checked where they come from (tick and release)
            elif isinstance(action, Wakeup):
                self.tick_pending = True
            else:  # pragma: no cover
                raise AssertionError(f"unknown action {action!r}")

    def take(self, entry: Entry[FakeConn]) -> None:
        """A caller now holds this entry."""
        core = self.engine
        assert entry.state == "lent"
        assert core.lent.get(entry.number) is entry
        assert all(entry is not held for held in self.holders), f"{entry} lent twice"
        assert id(entry) not in self.closed_entries
        assert entry.expires_at > self.now, "an expired connection was lent"
        self.holders.append(entry)

    def in_engine(self, entry: Entry[FakeConn]) -> bool:
        core = self.engine
        return (
            any(entry is other for other in core.idle)
            or core.lent.get(entry.number) is entry
            or entry in core.checking
        )

    @property
    def engine(self) -> PoolCore[FakeConn]:
        assert self.core is not None
        return self.core

    # -- the one rule ----------------------------------------------------------------------

    @rule(event=EVENTS, data=st.data())
    def step(self, event: str, data: st.DataObject) -> None:
        """One event, with its details drawn as needed.

        One rule rather than a rule per event: Hypothesis' swarm testing switches
        whole rules off for a run, which starves this machine (no connect completed,
        nothing lent, nothing given back) and finds far fewer bugs per second. The
        strategies are module constants: building them per draw is most of the cost.
        """
        draw = data.draw
        # An event with nothing to act on turns into one that makes something.
        if (event == "give_back" and not self.holders) or (
            event == "complete_connect" and not self.pending_connects
        ):
            event = "borrow"
        elif event == "complete_check" and not self.pending_checks:
            event = "tick"
        elif event == "cancel" and not self.queue:
            event = "borrow"
        if event == "advance":
            self.advance(draw(DELAYS, "dt"))
        elif event == "tick":
            self.tick()
        elif event == "borrow":
            getattr(self, draw(BORROWS, "how"))()
        elif event == "give_back":
            entry = self.holders[draw(PICKS, "holder") % len(self.holders)]
            how = draw(GIVE_BACKS, "how")
            if how in ("release", "broken"):
                self.release(entry, broken=how == "broken")
            else:
                self.check_before_use(entry, ok=how == "check_passed")
        elif event == "complete_connect":
            if draw(MOSTLY_TRUE, "ok"):
                self.connect_succeeds(draw(DURATIONS, "duration"))
            else:
                self.connect_fails()
        elif event == "complete_check":
            entry = self.pending_checks[draw(PICKS, "check") % len(self.pending_checks)]
            self.complete_check(entry, draw(MOSTLY_TRUE, "ok"))
        elif event == "cancel":
            # Mostly a queued waiter; sometimes any waiter (served, failed or withdrawn).
            candidates = self.queue if draw(MOSTLY_TRUE, "queued") else self.waiters
            waiter = candidates[draw(PICKS, "waiter") % len(candidates)]
            self.cancel(waiter, draw(st.booleans(), "timed_out"))
        else:
            what = draw(ADMINISTRATION, "what")
            if what == "resize":
                max_size = draw(SIZES, "max_size")
                if self.engine.settings.keep_idle:
                    self.resize(draw(SIZES, "min_size") % (max_size + 1), max_size)
                else:
                    self.resize(0, max_size % 5 or UNBOUNDED)
            else:
                getattr(self, what)()

    # -- events: time ----------------------------------------------------------------------

    def advance(self, dt: float) -> None:
        self.now += dt

    def tick(self) -> None:
        core = self.engine
        lent_before = list(core.lent.values())
        actions, deadline = core.tick(self.now)
        for action in actions:
            if isinstance(action, ReportLeak):
                entry = action.entry
                assert not action.returned
                leak_timeout = core.settings.leak_timeout
                assert leak_timeout is not None
                assert action.held >= leak_timeout
                assert any(entry is e for e in lent_before)
                key = (id(entry), entry.lent_at)
                assert key not in self.reported, "a leak reported twice"
                self.reported.add(key)
                self.counts["leaks"] += 1
        if not core.settings.keep_idle and not self.queue:
            # A null pool fills nothing in the background: connects are for callers.
            assert not any(isinstance(action, Connect) for action in actions)
        self.run(actions)
        self.tick_pending = False
        self.deadline = deadline
        assert deadline > self.now
        if core.closed:
            assert deadline == INF
            return
        config = core.settings
        for entry in core.idle:
            assert entry.expires_at > self.now
            if config.max_idle is not None and core.size > config.min_size:
                assert self.now - entry.idle_since < config.max_idle
        if config.leak_timeout is not None:
            for entry in core.lent.values():
                assert entry.leak_reported or self.now - entry.lent_at < config.leak_timeout

    # -- events: lending ----------------------------------------------------------------

    def lend_idle(self) -> None:
        core = self.engine
        top = core.idle[-1] if core.idle else None
        suspect_before = core.suspect_before
        entry, needs_check, actions = core.lend_idle(self.now)
        self.run(actions)
        if entry is None:
            assert not needs_check
            assert not core.idle or core.waiters or core.closed
            return
        if top is not None and top.expires_at > self.now:
            assert entry is top  # LIFO
        self.take(entry)
        after = core.settings.check_after_idle
        expected = entry.verified_at < suspect_before or (
            after is not None and self.now - entry.verified_at > after
        )
        assert needs_check is expected

    def lend_fast(self) -> None:
        core = self.engine
        top = core.idle[-1] if core.idle else None
        entry = core.lend_fast(self.now)
        if entry is not None:
            assert entry is top
            assert not core.waiters
            self.take(entry)
            assert entry.verified_at >= core.suspect_before
            after = core.settings.check_after_idle
            assert after is None or self.now - entry.verified_at <= after

    def enqueue(self) -> None:
        """A caller queues directly (it lost a race with the fast path)."""
        core = self.engine
        waiter = TrackedWaiter()
        queued = len(self.queue)
        actions = core.enqueue(waiter, self.now)
        if isinstance(actions, str):  # refused: not queued, no outcome
            assert waiter.writes == [None]
            assert list(core.waiters) == self.queue
            if actions == "closed":
                assert core.closed
            else:
                assert not core.closed
                assert actions == "queue_full"  # (the machine opens the pool first)
                assert core.settings.max_waiting
                assert queued >= core.settings.max_waiting
                self.counts["rejected"] += 1
            return
        self.queue.append(waiter)
        self.waiters.append(waiter)
        self.run(actions)

    def checkout(self) -> None:
        """What a caller does: the fast path, else the queue."""
        entry, _, actions = self.engine.lend_idle(self.now)
        self.run(actions)
        if entry is not None:
            self.take(entry)
        else:
            self.enqueue()

    def cancel(self, waiter: TrackedWaiter, timed_out: bool) -> None:
        had_outcome = waiter.outcome is not None
        queued = any(waiter is w for w in self.queue)
        withdrawn = self.engine.cancel(waiter, self.now, timed_out=timed_out)
        if withdrawn:
            assert queued
            assert not had_outcome
            self.queue.remove(waiter)
            self.withdrawn.add(id(waiter))
            if timed_out:
                self.counts["timeouts"] += 1
        else:
            assert had_outcome or id(waiter) in self.withdrawn
            assert not queued

    def release(self, entry: Entry[FakeConn], *, broken: bool) -> None:
        core = self.engine
        self.holders.remove(entry)
        was_lent = core.lent.get(entry.number) is entry
        leak_reported = entry.leak_reported
        actions = core.release(entry, self.now, broken=broken)
        if not was_lent:
            assert list(actions) == []  # already forgotten (close_lent)
            return
        leaks = [action for action in actions if isinstance(action, ReportLeak)]
        assert leaks == ([ReportLeak(entry)] if leak_reported and not broken else [])
        assert all(leak.returned for leak in leaks)
        queued = bool(self.queue)
        self.run(actions)
        if broken:
            assert entry.state == "closed"
            assert core.suspect_before == self.now
        elif not core.settings.keep_idle:
            # Straight to the oldest waiter, else closed: never idle.
            assert entry.state in ("lent", "closed"), entry
            if not (core.closed or entry.retired or entry.expires_at <= self.now):
                assert entry.state == ("lent" if queued else "closed"), entry
                if not queued:
                    assert core.stats().connections_closed.get("not_kept", 0) >= 1

    def check_before_use(self, entry: Entry[FakeConn], *, ok: bool) -> None:
        """The shell checks a lent connection before use: it passes, or is discarded."""
        core = self.engine
        if ok:
            core.check_passed(entry, self.now)
            return
        self.holders.remove(entry)
        was_lent = core.lent.get(entry.number) is entry
        actions = core.discard(entry, self.now)
        if not was_lent:
            assert list(actions) == []
            return
        self.run(actions)
        assert entry.state == "closed"

    # -- events: connects and checks -------------------------------------------------------

    def connect_succeeds(self, duration: float) -> None:
        core = self.engine
        self.pending_connects -= 1
        self.counts["created"] += 1
        conn = FakeConn()
        self.conns.append(conn)
        actions = core.connected(conn, self.now, duration)
        assert not core.database_down
        assert core.consecutive_failures == 0
        homes = [
            a.entry for a in actions if isinstance(a, HandOff | Close) and a.entry.conn is conn
        ]
        homes += [entry for entry in core.idle if entry.conn is conn]
        assert len(homes) == 1
        (entry,) = homes
        assert entry.created_at == self.now
        lifetime = core.settings.max_lifetime
        if lifetime is None:
            assert entry.expires_at == INF
        else:
            jitter = core.settings.lifetime_jitter
            lifetime_given = entry.expires_at - self.now
            assert (1 - jitter) * lifetime - 1e-9 <= lifetime_given <= lifetime + 1e-9
        self.run(actions)

    def connect_fails(self) -> None:
        core = self.engine
        self.pending_connects -= 1
        self.counts["connect_errors"] += 1
        queue_before = list(self.queue)
        error = ConnectionRefusedError(f"refused #{self.counts['connect_errors']}")
        actions = core.connect_failed(error, self.now)
        assert core.database_down
        assert core.last_error is error
        ceiling = core.settings.backoff.ceiling(core.consecutive_failures)
        assert self.now <= core.retry_at <= self.now + ceiling
        self.run(actions)
        for action in actions:
            if isinstance(action, Fail):
                assert action.reason == "database_unavailable"
        if core.closed:
            assert self.queue == queue_before
        elif not core.settings.keep_idle:
            # Each caller's connect is its own: the ones a connect was (or would be)
            # started for fail with it, but as many as the connects in flight could
            # serve; those queued beyond max_size wait for a lent connection's return.
            free = limit(core.settings.max_size) - core.size
            failing = max(0, min(free, len(queue_before) - core.connecting))
            assert self.queue == queue_before[: len(queue_before) - int(failing)]
        elif core.settings.fail_fast and not (core.lent or core.checking):
            # Keep as many of the oldest waiters as the connects in flight could serve
            # (and all of them while the pool still holds connections that will return).
            kept = min(len(queue_before), core.connecting)
            assert self.queue == queue_before[:kept]
        else:
            assert self.queue == queue_before

    def complete_check(self, entry: Entry[FakeConn], ok: bool) -> None:
        core = self.engine
        self.pending_checks.remove(entry)
        was_checking = entry in core.checking
        actions = core.checked(entry, self.now, ok=ok)
        if not was_checking:
            assert list(actions) == []  # closed with the pool meanwhile
            return
        self.run(actions)
        if not ok:
            assert entry.state == "closed"
        else:
            assert entry.verified_at == self.now or entry.state == "closed"

    # -- events: administration ------------------------------------------------------------

    def drain(self) -> None:
        core = self.engine
        idle = list(core.idle)
        actions = self.engine.drain(self.now)
        self.run(actions)
        assert all(entry.state == "closed" for entry in idle)
        assert all(entry.retired for entry in core.lent.values())
        assert all(entry.retired for entry in core.checking)

    def resize(self, min_size: int, max_size: int) -> None:
        actions = self.engine.resize(min_size, max_size, self.now)
        self.run(actions)
        # Lent, checking and connecting ones may exceed the new max_size for a while.
        self.size_bound = max(limit(max_size), self.engine.size)

    def check_all(self) -> None:
        self.run(self.engine.check_all())

    def close(self) -> None:
        if self.engine.closed:
            return
        self.run(self.engine.close(self.now))
        assert not self.queue
        assert not self.engine.idle
        assert not self.engine.checking

    def close_lent(self) -> None:
        if self.engine.closed:
            self.run(self.engine.close_lent())
            assert not self.engine.lent

    # -- invariants ---------------------------------------------------------------------

    @invariant()
    def consistent(self) -> None:
        # One invariant calling the checks keeps a failure's step listing short.
        self.every_entry_is_in_exactly_one_place()
        self.the_engine_agrees_with_the_shell()
        self.size_stays_within_max_size()
        self.nobody_waits_while_a_connection_is_idle()
        self.a_null_pool_keeps_nothing_idle()
        self.each_waiter_gets_at_most_one_outcome()
        self.queued_waiters_are_not_forgotten()
        self.maintenance_wakes_in_time()
        self.stats_match_the_containers()

    def every_entry_is_in_exactly_one_place(self) -> None:
        core = self.engine
        idle_ids = [id(entry) for entry in core.idle]
        lent_ids = [id(entry) for entry in core.lent.values()]
        checking_ids = [id(entry) for entry in core.checking]
        everywhere = idle_ids + lent_ids + checking_ids
        assert len(everywhere) == len(set(everywhere)), "an entry in two places"
        assert not self.closed_entries.keys() & set(everywhere), "a closed entry is pooled"
        assert all(entry.state == "idle" for entry in core.idle)
        assert all(entry.state == "checking" for entry in core.checking)
        for key, entry in core.lent.items():
            assert key == entry.number
            assert entry.state == "lent"

    def the_engine_agrees_with_the_shell(self) -> None:
        core = self.engine
        assert core.connecting == self.pending_connects
        pending = {id(entry) for entry in self.pending_checks}
        assert {id(entry) for entry in core.checking} <= pending
        for entry in self.pending_checks:
            assert entry in core.checking or id(entry) in self.closed_entries
        holders = {id(entry) for entry in self.holders}
        assert len(holders) == len(self.holders), "a connection lent to two holders"
        assert {id(entry) for entry in core.lent.values()} == holders - self.closed_entries.keys()
        assert list(core.waiters) == self.queue

    def size_stays_within_max_size(self) -> None:
        core = self.engine
        size = core.size
        assert size == len(core.idle) + len(core.lent) + len(core.checking) + core.connecting
        # Only a resize may leave more than max_size (the engine closes the idle surplus
        # at once and sheds the rest as it comes back), and then the size only shrinks...
        assert size <= self.size_bound, (size, self.size_bound)
        self.size_bound = max(limit(core.settings.max_size), size)
        # ...as what is out comes back: the excess is all due to be shed (retired lent
        # connections, connects in flight, connections being checked).
        excess = size - limit(core.settings.max_size)
        if excess > 0 and not core.closed:
            retired = sum(entry.retired for entry in core.lent.values())
            assert excess <= retired + core.connecting + len(core.checking), (
                excess,
                retired,
                core.connecting,
                core.checking,
            )

    def nobody_waits_while_a_connection_is_idle(self) -> None:
        core = self.engine
        assert not (core.idle and core.waiters)

    def a_null_pool_keeps_nothing_idle(self) -> None:
        core = self.engine
        if core.settings.keep_idle:
            return
        assert not core.idle, core.idle
        assert core.settings.min_size == 0
        assert not core.checking  # nothing idle, so nothing to check
        stats = core.stats()
        assert stats.idle == 0
        closed = sum(stats.connections_closed.values())
        assert stats.connections_created - closed == len(core.lent) + len(core.checking)

    def each_waiter_gets_at_most_one_outcome(self) -> None:
        queued = {id(waiter) for waiter in self.queue}
        for waiter in self.waiters:
            assert waiter.writes[0] is None
            assert len(waiter.writes) <= 2, f"{waiter} outcome overwritten: {waiter.writes}"
            if id(waiter) in queued or id(waiter) in self.withdrawn:
                assert waiter.outcome is None
            else:
                assert waiter.outcome is not None

    def queued_waiters_are_not_forgotten(self) -> None:
        core = self.engine
        if core.closed or not self.queue:
            return
        config = core.settings
        starved = (
            len(self.queue) > core.connecting + len(core.checking)
            and core.size < limit(config.max_size)
            and core.connecting < config.max_connecting
        )
        if starved:
            # Backing off: maintenance must be due by the retry time.
            assert self.tick_pending or self.deadline <= max(core.retry_at, self.now)

    def maintenance_wakes_in_time(self) -> None:
        core = self.engine
        if core.closed or self.tick_pending:
            return
        config = core.settings
        for entry in core.idle:
            assert self.deadline <= entry.expires_at, (self.deadline, entry)
            if config.max_idle is not None and core.size > config.min_size:
                assert self.deadline <= entry.idle_since + config.max_idle
        if config.leak_timeout is not None:
            for entry in core.lent.values():
                if not entry.leak_reported:
                    assert self.deadline <= entry.lent_at + config.leak_timeout

    def stats_match_the_containers(self) -> None:
        core = self.engine
        stats = core.stats()
        assert stats.idle == len(core.idle)
        assert stats.in_use == len(core.lent)
        assert stats.checking == len(core.checking)
        assert stats.connecting == core.connecting
        assert stats.waiting == len(self.queue)
        assert stats.size == core.size
        assert (stats.min_size, stats.max_size) == (core.settings.min_size, core.settings.max_size)
        assert stats.connections_created == self.counts["created"]
        assert stats.connect_errors == self.counts["connect_errors"]
        assert sum(stats.connections_closed.values()) == self.counts["closes"]
        assert stats.rejected == self.counts["rejected"]
        assert stats.failed_fast == self.counts["failed_fast"]
        assert stats.timeouts == self.counts["timeouts"]
        assert stats.leaks == self.counts["leaks"]
        # A discard takes a lend back out of every counter it entered.
        assert stats.checkouts >= stats.checkouts_waited >= 0
        assert stats.wait_time.count == stats.checkouts
        assert stats.checks >= stats.checks_failed >= 0
        assert stats.database_down == core.database_down

    def teardown(self) -> None:
        if self.core is None:
            return
        core = self.core
        # Close the pool and let everything in flight land: nothing is left behind.
        self.run(core.close(self.now))
        while self.holders:
            entry = self.holders.pop()
            self.run(core.release(entry, self.now))
        while self.pending_connects:
            self.pending_connects -= 1
            self.counts["created"] += 1
            conn = FakeConn()
            self.conns.append(conn)
            self.run(core.connected(conn, self.now, 0.0))
        for entry in self.pending_checks:
            assert list(core.checked(entry, self.now, ok=True)) == []
        assert core.size == 0
        assert self.counts["closes"] == self.counts["created"]
        for waiter in self.waiters:
            if id(waiter) in self.withdrawn:
                assert waiter.writes == [None]
            else:
                assert len(waiter.writes) == 2
                assert waiter.outcome is not None


PoolMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_pool_machine = PoolMachine.TestCase
