"""The pool engine: a deterministic state machine over connections and waiters.

Theory of operation
-------------------
The engine owns the *bookkeeping* of a pool and nothing else. It never touches a
connection, reads a clock, sleeps or locks: a shell (``AsyncPool`` or ``Pool``)
calls one method per event, always passing ``now``, under the shell's lock, and
then carries out the returned actions *outside* that lock.

Every connection the pool knows is an `Entry` in exactly one place, named by
its ``state``:

* ``idle``    -- a stack (last in, first out) of connections ready to lend. LIFO
                 keeps the busy connections warm and lets the surplus ones sit
                 idle long enough to expire above ``min_size``.
* ``lent``    -- connections a caller holds: named by their state alone (a lend
                 and a return change no container but the idle stack; see
                 `PoolCore.lent`).
* ``checking``-- idle connections taken out to be health-checked.

``members`` holds all three by ``Entry.number``; with ``connecting``, the number
of `Connect` actions in flight, it makes the pool's size, which never exceeds
``max_size``. An entry changes place (and state) in
`PoolCore._move` only, but for the one move each hot path inlines; it ends
``closed`` (or ``orphaned``, in a forked child), held by no place.

A caller first tries `lend_fast` or `lend_idle` (a pop). If nothing is idle, or
somebody is already queued (first come, first served: nobody barges past a
waiter), it queues a `Waiter` with `enqueue`. The engine decides every waiter's
single outcome, an entry or a failure reason, by writing ``waiter.outcome`` under
the lock *before* the shell wakes it, so a waiter that times out at the same
moment can always tell whether it was served (`cancel` returns False) and nothing
is lost.

Outcomes are data: the engine reports a failure (`Fail`), a refusal (`enqueue`,
`open`) or a close (`Close`) by a reason from `pgfleet._core.reasons`, never by an
exception; the shell builds the errors its callers see, and all their text.

Health: an entry remembers when it was last known good (``verified_at``: when
it connected, passed a check or came back clean). It is checked before it is
lent when it has been idle longer than ``check_after_idle`` or when it predates
the *suspect mark*: when one connection is found dead, every connection older
than that moment is suspect, and the idle ones are checked by maintenance
straight away. Cheaper than a check, the shell's *probe* (a look at the socket,
no round trip) comes before every lend of a connection unseen for longer than
``probe_after`` (``seen_at``: a lend longer than that does not count as seen).

Connects: connection attempts run at most ``max_connecting`` at a time. After
a failure the engine marks the database *down* and backs off (exponential,
full jitter) before refilling in the background; callers that queue meanwhile
start a single probe (one at a time, never a herd), so the first checkout after
the server is back succeeds at once. With ``fail_fast`` a failed attempt fails
the queued callers (reason ``"database_unavailable"``) instead of letting them
sit out their timeout; ``last_error`` keeps the failure for the shell to report.

Keeping no idle connection (``keep_idle=False``, the null pools): a connection
that comes back, or connects, goes straight to the oldest waiter, else it closes
(reason ``"not_kept"``): the idle stack stays empty, ``min_size`` is 0 and nothing
fills in the background; ``max_size`` bounds the connections open at once
(`UNBOUNDED`: no bound). Every queued caller starts a connect of its own; when one fails, the
callers its attempt was for fail with it (``"database_unavailable"``, whatever
``fail_fast`` says), as a null pool's caller gets its own connect error.

Time: `tick` expires connections (``max_lifetime`` with jitter, ``max_idle``
above ``min_size``), reports leaks, refills the ``min_size`` floor and returns
the next deadline. Events that create an earlier deadline emit `WAKEUP` so the
maintenance loop ticks again.

Counting: a `Counters` owns every counter and histogram, and builds the stats.
"""

from __future__ import annotations

import math
import random
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Generic, Literal, TypeVar

from pgfleet._core import defaults
from pgfleet._core.actions import (
    WAKEUP,
    Action,
    Check,
    Close,
    Connect,
    Fail,
    HandOff,
    ReportLeak,
)
from pgfleet._core.backoff import Backoff
from pgfleet._core.reasons import CloseReason, DiscardReason, FailReason, Refusal
from pgfleet._core.stats import PENDING_MAX, Counters, PoolStats

T = TypeVar("T")

NO_ACTIONS: tuple[Action, ...] = ()
INF = math.inf
#: The ``max_size`` of a pool with no size bound (a null pool's ``max_size=0``).
UNBOUNDED: Final = sys.maxsize

State = Literal["new", "idle", "lent", "checking", "closed", "orphaned"]
"""Where an entry is (see the theory of operation)."""

#: Connected, not placed yet.
NEW: Final = "new"
#: On the idle stack.
IDLE: Final = "idle"
#: Held by a caller (in `PoolCore.members`, in no other place).
LENT: Final = "lent"
#: In the checking set.
CHECKING: Final = "checking"
#: Forgotten: a `Close` action was (or is being) carried out.
CLOSED: Final = "closed"
#: Inherited by a forked child: the parent's, never to be touched (see `forget_all`).
ORPHANED: Final = "orphaned"


@dataclass(frozen=True, slots=True)
class CoreSettings:
    """The engine's policy knobs, already validated by the shell's settings."""

    min_size: int = defaults.MIN_SIZE
    #: The most connections at once (`UNBOUNDED`: no bound).
    max_size: int = defaults.MIN_SIZE
    max_waiting: int = defaults.MAX_WAITING
    max_lifetime: float | None = defaults.MAX_LIFETIME
    lifetime_jitter: float = defaults.LIFETIME_JITTER
    max_idle: float | None = defaults.MAX_IDLE
    check_after_idle: float | None = defaults.CHECK_AFTER_IDLE
    max_connecting: int = defaults.MAX_CONNECTING
    leak_timeout: float | None = defaults.LEAK_TIMEOUT
    fail_fast: bool = defaults.FAIL_FAST
    backoff: Backoff = field(default_factory=Backoff)
    #: False: keep no idle connection (a null pool; ``min_size`` must be 0).
    keep_idle: bool = True
    #: The shell probes (looks at its socket) a connection unseen for longer than this
    #: before lending it: the manager's ``probe_after_idle``. The engine needs it at a
    #: return, to tell whether the lend was short enough to count as seen (`Entry.seen_at`).
    probe_after: float = 0.0


class Entry(Generic[T]):
    """One pooled connection and what the engine knows about it."""

    __slots__ = (
        "conn",
        "number",
        "state",
        "created_at",
        "expires_at",
        "verified_at",
        "seen_at",
        "idle_since",
        "lent_at",
        "waited",
        "leak_reported",
        "retired",
    )

    def __init__(self, conn: T, number: int, now: float, expires_at: float) -> None:
        self.conn = conn
        self.number = number
        self.state: State = NEW
        self.created_at = now
        self.expires_at = expires_at
        self.verified_at = now
        #: When it last showed itself working, as far as the engine knows: connected,
        #: checked, or back from a lend no longer than ``probe_after`` (a longer one keeps
        #: the time from before it: news of a lost server may have come meanwhile, so the
        #: shell probes it before its next lend, rather than at the return).
        self.seen_at = now
        self.idle_since = now
        self.lent_at = now
        #: How its current lend was counted (`Counters.observe_lend`): the seconds
        #: its caller queued, None when it did not, so that `discard` can take the
        #: lend back. The engine's own record, kept here because the shell hands
        #: back nothing but the entry (the guard's fast path keeps nothing else).
        self.waited: float | None = None
        self.leak_reported = False
        #: Set by `drain`/`resize`: close instead of pooling it again.
        self.retired = False

    def __repr__(self) -> str:
        return f"<Entry #{self.number} {self.state}>"


class Waiter:
    """A queued request. The engine writes ``outcome`` (an `Entry` or a reason) once."""

    __slots__ = ("enqueued_at", "outcome")

    def __init__(self) -> None:
        self.enqueued_at = 0.0
        self.outcome: Entry[Any] | FailReason | None = None

    def wake(self) -> bool:
        """Wake the waiting caller; each shell's waiter knows how.

        False when the caller can never run again (an asyncio caller whose event
        loop closed while it was queued): the shell then takes back what it was given.
        """
        return True


class PoolCore(Generic[T]):
    """The state machine. See the module docstring for the theory of operation."""

    def __init__(self, settings: CoreSettings, *, name: str = "pool", seed: int | None = None):
        self.settings = settings
        self.name = name
        self._rng = random.Random(seed)
        self.idle: list[Entry[T]] = []  # a stack: the top is the most recently used
        #: Every entry idle, lent or checking, by `Entry.number`. Lent entries are in no
        #: other container: their state says where they are (see `lent`).
        self.members: dict[int, Entry[T]] = {}
        self.checking: set[Entry[T]] = set()
        self.waiters: deque[Waiter] = deque()
        self.connecting = 0
        self.opened = False
        self.closed = False
        #: Connections created before this moment are suspect (see the theory).
        self.suspect_before = -INF
        self.database_down = False
        self.consecutive_failures = 0
        self.retry_at = -INF
        self.last_error: BaseException | None = None
        self._scheduled_at = INF
        self._numbers = 0
        _check_sizes(settings.min_size, settings.keep_idle)
        self._apply_settings()
        self.counters = Counters()
        #: `counters.usage_time.pending` and `counters.wait_time.pending`, the same lists
        #: (`Histogram.fold` clears them in place).
        self._usage_pending = self.counters.usage_time.pending
        self._wait_pending = self.counters.wait_time.pending

    def _apply_settings(self) -> None:
        """Cache what the fast paths read."""
        settings = self.settings
        self._check_after_idle = (
            INF if settings.check_after_idle is None else settings.check_after_idle
        )
        self._max_size = settings.max_size
        self._probe_after = settings.probe_after
        # Without an idle stack every return takes the slow path (`_pool` decides).
        self._no_fast_path = (
            self.closed or settings.leak_timeout is not None or not settings.keep_idle
        )

    # -- sizes -----------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Connections that exist or are being opened."""
        return len(self.members) + self.connecting

    @property
    def lent(self) -> dict[int, Entry[T]]:
        """The lent entries by `Entry.number` (a new dict: for the slow paths and tests).

        No table of lent entries is kept: a lend and a return, the hot path, then
        touch no dict, only the idle stack and the entry's state (callgrind: a
        ``lend_fast`` + ``release`` cycle took 7.4k instructions with a lent table).
        """
        return {number: e for number, e in self.members.items() if e.state == LENT}

    def is_lent(self, entry: Entry[T]) -> bool:
        """True when `entry` is this pool's and lent (``putconn`` asks before taking it back)."""
        return entry.state == LENT and self.members.get(entry.number) is entry

    # -- lifecycle -------------------------------------------------------------------

    def open(self, now: float) -> list[Action] | Literal["closed"]:
        """Start lending; begin filling the ``min_size`` floor.

        Returns ``"closed"`` (a `Refusal`) for a closed pool: it cannot be reopened.
        """
        if self.closed:
            return "closed"
        self.opened = True
        return self._refill(now, [])

    def close(self, now: float) -> list[Action]:
        """Stop lending: fail the waiters, close the idle connections.

        Lent connections are closed when they come back (or by `close_lent`).
        """
        actions: list[Action] = []
        if self.closed:
            return actions
        self.closed = True
        self._apply_settings()
        while self.waiters:
            waiter = self.waiters.popleft()
            waiter.outcome = "closed"
            actions.append(Fail(waiter, "closed"))
        while self.idle:
            actions.append(self._forget(self.idle[-1], "pool_closed"))
        for entry in list(self.checking):
            actions.append(self._forget(entry, "pool_closed"))
        return actions

    def close_lent(self) -> list[Action]:
        """After a close timeout: close the connections still lent out."""
        return [self._forget(entry, "pool_closed") for entry in list(self.lent.values())]

    def forget_all(self) -> list[Entry[T]]:
        """Drop every connection without closing it (a forked child must not touch them).

        The queued callers stay in this engine's queue, to time out there (the shell
        discards this engine, not the deadlines of callers queued in it).
        """
        entries = list(self.members.values())
        for entry in entries:
            self._move(entry, ORPHANED)
        self.connecting = 0
        return entries

    # -- lending ---------------------------------------------------------------------

    def lend_fast(self, now: float) -> Entry[T] | None:
        """The fastest path: lend the top idle connection if it needs nothing else.

        Returns None whenever anything is special (a queue, a check due, an expired
        connection, leak tracking, a closed pool); the shell then takes `lend_idle`.
        """
        idle = self.idle
        if not idle or self.waiters or self._no_fast_path:
            return None
        entry = idle[-1]
        verified_at = entry.verified_at
        if (  # expired, or `_needs_check` (inlined: this is the hot path)
            entry.expires_at <= now
            or verified_at < self.suspect_before
            or now - verified_at > self._check_after_idle
        ):
            return None
        # `_lend` (with its `_move`) and `Counters.observe_lend(None)`, inlined, as is
        # `_move` on `release`'s fast path: as calls, a lend and return through the
        # engine took 38% more instructions (callgrind: 11.1k against 8.0k). No
        # ``leak_reported`` to reset: there is no fast path under leak tracking.
        idle.pop()
        entry.state = LENT
        entry.lent_at = now
        entry.waited = None
        self.counters.checkouts_at_once += 1
        return entry

    def lend_idle(self, now: float) -> tuple[Entry[T] | None, bool, Sequence[Action]]:
        """The slow path's first step: lend an idle connection if nobody is queued.

        Closes expired connections on the way. Returns ``(entry, needs_check,
        actions)``: `needs_check` when the shell must check the entry before use;
        no entry when the caller must `enqueue`.
        """
        if self.waiters or not self.idle or self.closed:
            return None, False, NO_ACTIONS
        actions: list[Action] = []
        idle = self.idle
        while idle:
            entry = idle[-1]
            if entry.expires_at <= now:
                actions.append(self._forget(entry, "expired"))
                continue
            needs_check = self._needs_check(entry, now)
            self._lend(entry, now)
            entry.waited = None
            self.counters.checkouts_at_once += 1  # `observe_lend(None)`, a call fewer
            if self.settings.leak_timeout is not None and self._schedule(
                now + self.settings.leak_timeout
            ):
                actions.append(WAKEUP)
            return entry, needs_check, actions
        return None, False, self._refill(now, actions)

    def enqueue(self, waiter: Waiter, now: float) -> Sequence[Action] | Refusal:
        """Queue a caller that found nothing idle; may start connects.

        Returns the actions, or a `Refusal` when the caller may not queue: the pool
        is ``"closed"`` or ``"not_open"``, or ``max_waiting`` callers are queued
        already (``"queue_full"``, counted as rejected).
        """
        if self.closed:
            return "closed"
        if not self.opened:
            return "not_open"
        max_waiting = self.settings.max_waiting
        if max_waiting and len(self.waiters) >= max_waiting:
            self.counters.rejected += 1
            return "queue_full"
        waiter.enqueued_at = now
        self.waiters.append(waiter)
        if not self.idle and len(self.members) + self.connecting >= self._max_size:
            # Nothing idle, nothing to refill: every queued checkout under
            # oversubscription, which this test spares the rest (and a list).
            return NO_ACTIONS
        actions: list[Action] = []
        # A connection may have come back between the caller's fast path and now.
        if self.idle:
            self._serve_from_idle(now, actions)
        if waiter.outcome is None and self.size < self._max_size:
            self._refill(now, actions, demand=True)
        return actions

    def cancel(self, waiter: Waiter, now: float, *, timed_out: bool = True) -> bool:
        """Withdraw a waiter that timed out or was cancelled.

        Returns False when the waiter already has an outcome: the caller must take
        it (and give back an entry it no longer wants with `release`).
        """
        if waiter.outcome is not None:
            return False
        try:
            self.waiters.remove(waiter)
        except ValueError:
            return False
        if timed_out:
            self.counters.timeouts += 1
        return True

    def release(
        self, entry: Entry[T], now: float, broken: bool = False, reset: bool = False
    ) -> tuple[Action, ...] | list[Action]:
        """A caller gives a connection back, after the shell reset it (`reset`: it had
        something to undo) or found it `broken`.

        (`broken` and `reset` are not keyword-only: CPython 3.11 specialises no call to
        a function with keyword-only parameters, and this call is on every return:
        ~350 instructions a checkout, callgrind.)
        """
        if entry.state != LENT:
            # Already forgotten: closed by close_lent (CLOSED), or lent before a fork
            # (ORPHANED). The state alone tells: the shells give back only their own
            # engine's entries, so no lookup in `members` is needed on this hot path.
            return NO_ACTIONS
        usage = now - entry.lent_at
        if usage <= self._probe_after:
            entry.seen_at = now
        # Recorded in a batch, bucketed later (see `Histogram.pending`); the list is
        # read from the engine, not through `counters.usage_time`: two attribute
        # reads fewer on every return.
        pending = self._usage_pending
        pending.append(usage)
        if len(pending) >= PENDING_MAX:
            self.counters.usage_time.fold()
        if not (broken or reset or self._no_fast_path or entry.retired or entry.expires_at <= now):
            waiters = self.waiters
            if not waiters:
                # The fast path: back on the idle stack. No deadline can move earlier
                # here: tick() always wakes again within max_idle (see _next_deadline).
                # `_move(entry, IDLE)`, inlined (see `lend_fast`).
                entry.state = IDLE
                entry.verified_at = entry.idle_since = now
                self.idle.append(entry)
                return NO_ACTIONS
            # The queued path: straight to the oldest waiter, lent again where it is
            # (`_pool`'s hand-over without its `_lend` and `_move`: under
            # oversubscription every return takes it, and as calls they were half of a
            # queued checkout's engine work). No leak deadline to schedule: there is no
            # fast path under leak tracking.
            waiter = waiters.popleft()
            entry.verified_at = entry.lent_at = now
            waited = now - waiter.enqueued_at
            if waited < 0.0:
                waited = 0.0
            entry.waited = waited
            waiter.outcome = entry
            pending = self._wait_pending
            pending.append(waited)
            if len(pending) >= PENDING_MAX:
                self.counters.wait_time.fold()
            return (HandOff(waiter, entry),)
        if reset:
            self.counters.resets += 1
        actions: list[Action] = []
        if broken:
            self.counters.returns_broken += 1
            self._mark_suspect(now, actions)
            actions.append(self._forget(entry, "broken"))
            return self._refill(now, actions)
        if entry.leak_reported:
            # The shell logs the late return (the entry may be lent again by then).
            actions.append(ReportLeak(entry, returned=True, held=usage))
        entry.verified_at = now
        if self.closed:
            actions.append(self._forget(entry, "pool_closed"))
            return actions
        if entry.retired or entry.expires_at <= now:
            actions.append(self._forget(entry, "retired" if entry.retired else "expired"))
            return self._refill(now, actions)
        self._pool(entry, now, actions)
        return actions

    def give_back(self, entry: Entry[T], now: float) -> Sequence[Action]:
        """Take back a lent entry its caller never used (cancelled as it was served, or
        unable to run): as `release`, but what was known of it before the lend stays
        (``verified_at``, ``seen_at``), so that its next lend checks and probes it as
        this one would have."""
        verified_at, seen_at = entry.verified_at, entry.seen_at
        actions = self.release(entry, now)
        entry.verified_at, entry.seen_at = verified_at, seen_at
        return actions

    def discard(
        self, entry: Entry[T], now: float, reason: DiscardReason = "check_failed"
    ) -> list[Action]:
        """A lent connection was found unusable before use: drop it, suspect its elders.

        `reason` is ``"check_failed"`` (it failed its ping) or ``"broken"`` (its own
        state or socket said so). The lend is taken back out of the counters: the
        caller did not get this connection and tries again.
        """
        actions: list[Action] = []
        if not self.is_lent(entry):
            return actions
        counters = self.counters
        counters.unobserve_lend(entry.waited)
        if reason == "check_failed":
            counters.checks += 1
            counters.checks_failed += 1
        self._mark_suspect(now, actions)
        actions.append(self._forget(entry, reason))
        return self._refill(now, actions)

    def checked(self, entry: Entry[T], now: float, *, ok: bool) -> list[Action]:
        """Maintenance finished checking an entry it was given in a `Check` action."""
        actions: list[Action] = []
        if entry not in self.checking:
            return actions
        counters = self.counters
        counters.checks += 1
        if not ok:
            counters.checks_failed += 1
            actions.append(self._forget(entry, "check_failed"))
            return self._refill(now, actions)
        entry.verified_at = entry.seen_at = now
        if self.closed:
            actions.append(self._forget(entry, "pool_closed"))
        elif entry.retired or entry.expires_at <= now:
            actions.append(self._forget(entry, "retired" if entry.retired else "expired"))
            self._refill(now, actions)
        elif self.size > self._max_size:  # (the size counts this one still)
            # A resize shrank max_size while this one was out for a check: shed it, as
            # `connected` does, rather than pool it above max_size (for ever, when
            # nothing else expires it).
            actions.append(self._forget(entry, "surplus"))
        else:
            self._pool(entry, now, actions)
        return actions

    def check_passed(self, entry: Entry[T], now: float) -> None:
        """A lent connection passed its check before use (a failure goes to `discard`)."""
        self.counters.checks += 1
        entry.verified_at = entry.seen_at = now

    # -- connects --------------------------------------------------------------------

    def connected(self, conn: T, now: float, duration: float) -> list[Action]:
        """A `Connect` action succeeded."""
        self.connecting -= 1
        counters = self.counters
        counters.connections_created += 1
        counters.connect_time.observe(duration)
        self.consecutive_failures = 0
        self.database_down = False
        self.retry_at = -INF
        self._numbers += 1
        expires_at = INF
        if self.settings.max_lifetime is not None:
            jitter = 1.0 - self.settings.lifetime_jitter * self._rng.random()
            expires_at = now + self.settings.max_lifetime * jitter
        entry = Entry(conn, self._numbers, now, expires_at)
        actions: list[Action] = []
        if self.closed or self.size >= self._max_size:
            actions.append(self._forget(entry, "pool_closed" if self.closed else "surplus"))
            return actions
        self._pool(entry, now, actions)
        if entry.state != CLOSED and self._schedule(expires_at):
            actions.append(WAKEUP)
        return self._refill(now, actions)

    def connect_failed(self, error: BaseException, now: float) -> list[Action]:
        """A `Connect` action failed: back off, and fail fast if so configured."""
        self.connecting -= 1
        self.counters.connect_errors += 1
        self.consecutive_failures += 1
        self.database_down = True
        self.last_error = error
        delay = self.settings.backoff.delay(self.consecutive_failures, self._rng)
        self.retry_at = now + delay
        actions: list[Action] = []
        failing = 0
        if self.closed:
            pass
        elif not self.settings.keep_idle:
            # A pool that keeps no idle connection: each queued caller's connect is its
            # own, and so is its error (as a null pool's caller gets the connect error).
            # Fail the callers a connect was (or would be) started for, beyond those in
            # flight; those queued beyond max_size wait for a lent connection's return.
            failing = min(self._max_size - self.size, len(self.waiters) - self.connecting)
        elif self.settings.fail_fast and not (self.lent or self.checking):
            # Callers queued now would otherwise wait for a database known to be down.
            # Keep as many as the connects still in flight could serve. While the pool
            # still holds connections (lent, or being checked), a refused refill ("too
            # many clients") does not mean the database is down: their return serves
            # the queue, so nobody is failed.
            failing = len(self.waiters) - self.connecting
        if failing > 0:
            for _ in range(failing):  # the newest: the oldest are served first
                waiter = self.waiters.pop()
                waiter.outcome = "database_unavailable"
                self.counters.failed_fast += 1
                actions.append(Fail(waiter, "database_unavailable"))
            actions.reverse()  # wake the oldest first
        if self._schedule(self.retry_at):
            actions.append(WAKEUP)
        return actions

    # -- time ------------------------------------------------------------------------

    def tick(self, now: float) -> tuple[list[Action], float]:
        """Expire, report leaks, refill. Returns the actions and the next deadline."""
        actions: list[Action] = []
        if self.closed or not self.opened:
            self._scheduled_at = INF
            return actions, INF
        settings = self.settings
        # Expire idle connections: past their lifetime, or idle too long above min_size.
        surplus = self.size - settings.min_size
        for entry in list(self.idle):  # from the least recently used
            if entry.expires_at <= now or entry.retired:
                actions.append(self._forget(entry, "expired"))
                surplus -= 1
            elif (
                settings.max_idle is not None
                and surplus > 0
                and now - entry.idle_since >= settings.max_idle
            ):
                actions.append(self._forget(entry, "idle"))
                surplus -= 1
        # Leaks.
        if settings.leak_timeout is not None:
            for entry in self.lent.values():
                if not entry.leak_reported and now - entry.lent_at >= settings.leak_timeout:
                    entry.leak_reported = True
                    self.counters.leaks += 1
                    actions.append(ReportLeak(entry, held=now - entry.lent_at))
        self._refill(now, actions)
        deadline = self._next_deadline(now)
        self._scheduled_at = deadline
        return actions, deadline

    def _next_deadline(self, now: float) -> float:
        settings = self.settings
        deadline = INF
        wants_connects = self.size < settings.min_size or (
            self.waiters and self.size < self._max_size
        )
        if wants_connects and self.retry_at > now:
            deadline = self.retry_at
        for entry in self.idle:
            deadline = min(deadline, entry.expires_at)
        # Lent and checking connections too: they go back on the idle stack without
        # moving the deadline (the fast path of `release`, `checked`), and must still
        # expire on time there. (Found by tests/core/test_stateful.py: lend, tick,
        # release, and an idle connection outlived max_lifetime by up to max_idle, or
        # for ever with max_idle=None.)
        for entry in (*self.lent.values(), *self.checking):
            if now < entry.expires_at < deadline:
                deadline = entry.expires_at
        if settings.max_idle is not None:
            # Wake at least every max_idle: connections that go idle through the fast
            # path then never need to move this deadline earlier.
            deadline = min(deadline, now + settings.max_idle)
            if self.size > settings.min_size:
                for entry in self.idle:
                    deadline = min(deadline, entry.idle_since + settings.max_idle)
        if settings.leak_timeout is not None:
            for entry in self.lent.values():
                if not entry.leak_reported:
                    deadline = min(deadline, entry.lent_at + settings.leak_timeout)
        return deadline

    # -- administration ---------------------------------------------------------------

    def resize(self, min_size: int, max_size: int, now: float) -> list[Action]:
        """Change the size bounds; surplus idle connections close at once.

        Raises ValueError for a ``min_size`` above 0 in a pool that keeps no idle
        connection (nothing changes then).
        """
        _check_sizes(min_size, self.settings.keep_idle)
        self.settings = replace(self.settings, min_size=min_size, max_size=max_size)
        self._apply_settings()
        limit = self._max_size
        actions: list[Action] = []
        while self.idle and self.size > limit:
            actions.append(self._forget(self.idle[0], "resized"))
        # Still too many: the lent surplus closes when it comes back.
        surplus = self.size - limit
        for entry in self.lent.values():
            if surplus <= 0:
                break
            if not entry.retired:
                entry.retired = True
                surplus -= 1
        # The bounds moved every deadline (a lower min_size lets idle connections
        # above it expire): let maintenance recompute now rather than at its next wake.
        if self._schedule(now):
            actions.append(WAKEUP)
        return self._refill(now, actions)

    def drain(self, now: float) -> list[Action]:
        """Replace every connection: idle ones now, lent ones when they come back."""
        for entry in (*self.lent.values(), *self.checking):
            entry.retired = True
        actions: list[Action] = []
        while self.idle:
            actions.append(self._forget(self.idle[-1], "drained"))
        return self._refill(now, actions)

    def check_all(self) -> list[Action]:
        """Take every idle connection out for a check (``pool.check()``)."""
        actions: list[Action] = []
        while self.idle:
            entry = self.idle[-1]
            self._move(entry, CHECKING)
            actions.append(Check(entry))
        return actions

    def stats(self) -> PoolStats:
        """A snapshot of the state and counters."""
        return self.counters.snapshot(
            name=self.name,
            min_size=self.settings.min_size,
            max_size=self.settings.max_size,
            idle=len(self.idle),
            in_use=len(self.members) - len(self.idle) - len(self.checking),
            checking=len(self.checking),
            connecting=self.connecting,
            waiting=len(self.waiters),
            database_down=self.database_down,
        )

    # -- internals -------------------------------------------------------------------

    def _move(self, entry: Entry[T], to: State) -> None:
        """Take `entry` out of its place and put it in the place of state `to`.

        The one place an entry changes state (but for the one move inlined on each
        hot path, `lend_fast` and `release`), so that its state always names the
        one container that holds it.
        """
        state = entry.state
        if state == IDLE:
            idle = self.idle
            if idle[-1] is entry:  # the usual case: lent, checked or closed from the top
                idle.pop()
            else:  # expired by tick, resized from the bottom, suspect
                idle.remove(entry)
        elif state == CHECKING:
            self.checking.remove(entry)
        # LENT entries are in no container but `members`; NEW, CLOSED and ORPHANED in none.
        entry.state = to
        if to == IDLE:
            self.idle.append(entry)
        elif to == CHECKING:
            self.checking.add(entry)
        if to in (CLOSED, ORPHANED):
            self.members.pop(entry.number, None)
        elif state == NEW:
            self.members[entry.number] = entry

    def _lend(self, entry: Entry[T], now: float) -> None:
        self._move(entry, LENT)
        entry.lent_at = now
        entry.leak_reported = False

    def _pool(self, entry: Entry[T], now: float, actions: list[Action]) -> None:
        """Give a good entry to the oldest waiter, else put it on the idle stack (or
        close it, in a pool that keeps no idle connection)."""
        if self.waiters:
            waiter = self.waiters.popleft()
            self._lend(entry, now)
            waiter.outcome = entry
            waited = now - waiter.enqueued_at
            if waited < 0.0:
                waited = 0.0
            entry.waited = waited
            # `Counters.observe_lend(waited)`, inlined.
            self.counters.wait_time.observe(waited)
            actions.append(HandOff(waiter, entry))
            if self.settings.leak_timeout is not None and self._schedule(
                now + self.settings.leak_timeout
            ):
                actions.append(WAKEUP)
            return
        if not self.settings.keep_idle:
            actions.append(self._forget(entry, "not_kept"))
            return
        self._move(entry, IDLE)
        entry.idle_since = now

    def _needs_check(self, entry: Entry[T], now: float) -> bool:
        """Idle longer than ``check_after_idle``, or older than the suspect mark."""
        verified_at = entry.verified_at
        return verified_at < self.suspect_before or now - verified_at > self._check_after_idle

    def _serve_from_idle(self, now: float, actions: list[Action]) -> None:
        """Hand idle entries to queued waiters (only after a race with the fast path)."""
        while self.waiters and self.idle:
            entry = self.idle[-1]
            if entry.expires_at <= now:
                actions.append(self._forget(entry, "expired"))
            elif self._needs_check(entry, now):
                self._move(entry, CHECKING)
                actions.append(Check(entry))
            else:
                self._pool(entry, now, actions)

    def _mark_suspect(self, now: float, actions: list[Action]) -> None:
        """One connection was found dead: check every idle connection older than now."""
        self.suspect_before = now
        for entry in list(self.idle):  # from the least recently used
            self._move(entry, CHECKING)
            actions.append(Check(entry))

    def _refill(self, now: float, actions: list[Action], *, demand: bool = False) -> list[Action]:
        """Start the connects the floor and the queue call for, within the limits."""
        if self.closed or not self.opened:
            return actions
        settings = self.settings
        size = self.size
        wanted = max(
            settings.min_size - size,
            len(self.waiters) - self.connecting - len(self.checking),
        )
        wanted = min(wanted, self._max_size - size, settings.max_connecting - self.connecting)
        if wanted <= 0:
            return actions
        if now < self.retry_at:
            # Backing off after a failure. A queued caller may still probe, one at a
            # time: the first checkout after the database is back then succeeds.
            if not (demand and self.connecting == 0 and self.waiters):
                if self._schedule(self.retry_at):
                    actions.append(WAKEUP)
                return actions
            wanted = 1
        for _ in range(wanted):
            self.connecting += 1
            actions.append(Connect())
        return actions

    def _schedule(self, at: float) -> bool:
        """Note a deadline; True when it is earlier than the one maintenance sleeps to."""
        if at < self._scheduled_at:
            self._scheduled_at = at
            return True
        return False

    def _forget(self, entry: Entry[T], reason: CloseReason) -> Close:
        """Take `entry` out of the pool for good: the shell closes it."""
        self._move(entry, CLOSED)
        self.counters.observe_close(reason)
        return Close(entry, reason)


def _check_sizes(min_size: int, keep_idle: bool) -> None:
    """A pool that keeps no idle connection has no floor to keep either."""
    if not keep_idle and min_size != 0:
        raise ValueError(
            f"min_size must be 0 in a pool that keeps no idle connection, got {min_size}"
        )
