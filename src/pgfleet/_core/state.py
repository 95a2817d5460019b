"""The pool engine: a deterministic state machine over connections and waiters.

Theory of operation
-------------------
The engine owns the *bookkeeping* of a pool and nothing else. It never touches a
connection, reads a clock, sleeps or locks: a shell (``AsyncPool`` or ``Pool``)
calls one method per event, always passing ``now``, under the shell's lock, and
then carries out the returned actions *outside* that lock.

Every connection the pool knows is an `Entry` in exactly one place:

* ``idle``    -- a stack (last in, first out) of connections ready to lend. LIFO
                 keeps the busy connections warm and lets the surplus ones sit
                 idle long enough to expire above ``min_size``.
* ``lent``    -- connections a caller holds, by ``Entry.number``.
* ``checking``-- idle connections taken out to be health-checked.

plus ``connecting``, the number of `Connect` actions in flight. Their sum is the
pool's size and never exceeds ``max_size``.

A caller first tries `lend_fast` or `lend_idle` (a pop). If nothing is idle, or
somebody is already queued (first come, first served: nobody barges past a
waiter), it queues a `Waiter` with `enqueue`. The engine decides every waiter's
single outcome, an entry or an error, by writing ``waiter.outcome`` under the
lock *before* the shell wakes it, so a waiter that times out at the same moment
can always tell whether it was served (`cancel` returns False) and nothing is
lost.

Health: an entry remembers when it was last known good (``verified_at``: when
it connected, passed a check or came back clean). It is checked before it is
lent when it has been idle longer than ``check_after_idle`` or when it predates
the *suspect mark*: when one connection is found dead, every connection older
than that moment is suspect, and the idle ones are checked by maintenance
straight away.

Connects: connection attempts run at most ``max_connecting`` at a time. After
a failure the engine marks the database *down* and backs off (exponential,
full jitter) before refilling in the background; callers that queue meanwhile
start a single probe (one at a time, never a herd), so the first checkout after
the server is back succeeds at once. With ``fail_fast`` a failed attempt fails
the queued callers with `DatabaseUnavailable` instead of letting them sit out
their timeout.

Time: `tick` expires connections (``max_lifetime`` with jitter, ``max_idle``
above ``min_size``), reports leaks, refills the ``min_size`` floor and returns
the next deadline. Events that create an earlier deadline emit `WAKEUP` so the
maintenance loop ticks again.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

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
from pgfleet._core.stats import BUCKETS, Histogram, PoolStats
from pgfleet.errors import DatabaseUnavailable, PoolClosed, TooManyRequests

T = TypeVar("T")

NO_ACTIONS: tuple[Action, ...] = ()
INF = math.inf

#: `Entry.waited` for a lend without a wait: by the fast path, or from the idle stack.
FAST_LEND = -1.0
IDLE_LEND = -2.0

# Entry states.
IDLE = "idle"
LENT = "lent"
CHECKING = "checking"
CLOSED = "closed"
#: Inherited by a forked child: the parent's, never to be touched (see `forget_all`).
ORPHANED = "orphaned"


@dataclass(frozen=True, slots=True)
class CoreSettings:
    """The engine's policy knobs, already validated by the shell's settings."""

    min_size: int = 4
    max_size: int = 4
    max_waiting: int = 0
    max_lifetime: float | None = 3600.0
    lifetime_jitter: float = 0.1
    max_idle: float | None = 600.0
    check_after_idle: float | None = 1.0
    max_connecting: int = 2
    leak_timeout: float | None = None
    fail_fast: bool = True
    backoff: Backoff = field(default_factory=Backoff)


class Entry(Generic[T]):
    """One pooled connection and what the engine knows about it."""

    __slots__ = (
        "conn",
        "number",
        "state",
        "created_at",
        "expires_at",
        "verified_at",
        "idle_since",
        "lent_at",
        "needs_check",
        "waited",
        "leak_reported",
        "retired",
    )

    def __init__(self, conn: T, number: int, now: float, expires_at: float) -> None:
        self.conn = conn
        self.number = number
        self.state = IDLE
        self.created_at = now
        self.expires_at = expires_at
        self.verified_at = now
        self.idle_since = now
        self.lent_at = now
        #: Set by `lend_idle` (and cleared by a hand-over to a waiter): the shell must
        #: check the connection before lending it. Meaningless after `lend_fast`.
        self.needs_check = False
        #: How it was last lent, so `discard` can undo the counting: FAST_LEND,
        #: IDLE_LEND, or the seconds the caller waited before it was handed over.
        self.waited = FAST_LEND
        self.leak_reported = False
        #: Set by `drain`/`resize`: close instead of pooling it again.
        self.retired = False

    def __repr__(self) -> str:
        return f"<Entry #{self.number} {self.state}>"


class Waiter:
    """A queued request. The engine writes ``outcome`` (an `Entry` or an error) once."""

    __slots__ = ("enqueued_at", "outcome")

    def __init__(self) -> None:
        self.enqueued_at = 0.0
        self.outcome: Entry[Any] | BaseException | None = None

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
        self.lent: dict[int, Entry[T]] = {}  # by `Entry.number`
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
        self._apply_settings()
        # Counters.
        self.checkouts = 0
        self.fast_checkouts = 0  # counted apart so the fast path stays lean
        self.checkouts_waited = 0
        self.timeouts = 0
        self.rejected = 0
        self.failed_fast = 0
        self.connections_created = 0
        self.connect_errors = 0
        self.connections_closed: dict[str, int] = {}
        self.checks = 0
        self.checks_failed = 0
        self.returns_broken = 0
        self.resets = 0
        self.leaks = 0
        self.transaction_retries = 0
        self.wait_time = Histogram()
        self.usage_time = Histogram()
        self.connect_time = Histogram()

    def _apply_settings(self) -> None:
        """Cache what the fast paths read."""
        settings = self.settings
        self._check_after_idle = (
            INF if settings.check_after_idle is None else settings.check_after_idle
        )
        self._no_fast_path = self.closed or settings.leak_timeout is not None

    # -- sizes -----------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Connections that exist or are being opened."""
        return len(self.idle) + len(self.lent) + len(self.checking) + self.connecting

    # -- lifecycle -------------------------------------------------------------------

    def open(self, now: float) -> list[Action]:
        """Start lending; begin filling the ``min_size`` floor."""
        if self.closed:
            raise PoolClosed(f"pool {self.name!r} was closed and cannot be reopened")
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
        error = PoolClosed(f"pool {self.name!r} is closed")
        while self.waiters:
            waiter = self.waiters.popleft()
            waiter.outcome = error
            actions.append(Fail(waiter, error))
        while self.idle:
            actions.append(self._forget(self.idle.pop(), "pool_closed"))
        for entry in list(self.checking):
            self.checking.discard(entry)
            actions.append(self._forget(entry, "pool_closed"))
        return actions

    def close_lent(self) -> list[Action]:
        """After a close timeout: close the connections still lent out."""
        actions: list[Action] = []
        for entry in list(self.lent.values()):
            del self.lent[entry.number]
            actions.append(self._forget(entry, "pool_closed"))
        return actions

    def forget_all(self) -> list[Entry[T]]:
        """Drop every connection without closing it (a forked child must not touch them)."""
        entries = [*self.idle, *self.lent.values(), *self.checking]
        self.idle.clear()
        self.lent.clear()
        self.checking.clear()
        self.waiters.clear()
        self.connecting = 0
        for entry in entries:
            entry.state = ORPHANED
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
        idle.pop()
        entry.state = LENT
        entry.lent_at = now
        entry.waited = FAST_LEND
        self.lent[entry.number] = entry
        self.fast_checkouts += 1
        return entry

    def lend_idle(self, now: float) -> tuple[Entry[T] | None, Sequence[Action]]:
        """The slow path's first step: lend an idle connection if nobody is queued.

        Closes expired connections on the way. Returns ``(None, actions)`` when the
        caller must `enqueue`. An entry comes back with ``needs_check`` set when it
        must be checked before use.
        """
        if self.waiters or not self.idle or self.closed:
            return None, NO_ACTIONS
        actions: list[Action] = []
        while self.idle:
            entry = self.idle.pop()
            if entry.expires_at <= now:
                actions.append(self._forget(entry, "expired"))
                continue
            entry.needs_check = self._needs_check(entry, now)
            self._lend(entry, now)
            self.checkouts += 1
            self.wait_time.observe(0.0)
            entry.waited = IDLE_LEND
            if self.settings.leak_timeout is not None and self._schedule(
                now + self.settings.leak_timeout
            ):
                actions.append(WAKEUP)
            return entry, actions
        return None, self._refill(now, actions)

    def enqueue(self, waiter: Waiter, now: float) -> list[Action]:
        """Queue a caller that found nothing idle; may start connects.

        Raises `PoolClosed` or `TooManyRequests` at once; with ``fail_fast`` and a
        database known to be down, the waiter may be failed right away (its
        outcome is then set and a `Fail` action returned).
        """
        if self.closed or not self.opened:
            state = "closed" if self.closed else "not open (call open() first)"
            raise PoolClosed(f"pool {self.name!r} is {state}")
        if self.settings.max_waiting and len(self.waiters) >= self.settings.max_waiting:
            self.rejected += 1
            raise TooManyRequests(
                f"pool {self.name!r} already has {len(self.waiters)} requests waiting"
                f" (max_waiting={self.settings.max_waiting})"
            )
        waiter.enqueued_at = now
        self.waiters.append(waiter)
        actions: list[Action] = []
        # A connection may have come back between the caller's fast path and now.
        self._serve_from_idle(now, actions)
        if waiter.outcome is None:
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
            self.timeouts += 1
        return True

    def release(
        self, entry: Entry[T], now: float, *, broken: bool = False, reset: bool = False
    ) -> tuple[Action, ...] | list[Action]:
        """A caller gives a connection back, after the shell reset it (`reset`: it had
        something to undo) or found it `broken`."""
        if reset:
            self.resets += 1
        taken = self.lent.pop(entry.number, None)
        if taken is not entry:
            # Already forgotten: closed by close_lent, or lent before a fork. A forked
            # child's engine numbers its own entries from 1: put back the one taken.
            if taken is not None:
                self.lent[taken.number] = taken
            return NO_ACTIONS
        usage = now - entry.lent_at
        usage_time = self.usage_time  # Histogram.observe, inlined
        usage_time.counts[bisect_left(BUCKETS, usage)] += 1
        usage_time.total += usage
        if usage > usage_time.maximum:
            usage_time.maximum = usage
        if not (
            broken or self.waiters or self._no_fast_path or entry.retired or entry.expires_at <= now
        ):
            # The fast path: back on the idle stack. No deadline can move earlier here:
            # tick() always wakes again within max_idle (see _next_deadline).
            entry.state = IDLE
            entry.verified_at = entry.idle_since = now
            self.idle.append(entry)
            return NO_ACTIONS
        actions: list[Action] = []
        if broken:
            self.returns_broken += 1
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

    def discard(self, entry: Entry[T], now: float, reason: str = "check_failed") -> list[Action]:
        """A lent connection was found unusable before use: drop it, suspect its elders.

        `reason` is ``"check_failed"`` (it failed its ping) or ``"broken"`` (its own
        state or socket said so). The lend is taken back out of the counters: the
        caller did not get this connection and tries again.
        """
        actions: list[Action] = []
        if self.lent.get(entry.number) is not entry:
            return actions
        del self.lent[entry.number]
        self._uncount_lend(entry)
        if reason == "check_failed":
            self.checks += 1
            self.checks_failed += 1
        self._mark_suspect(now, actions)
        actions.append(self._forget(entry, reason))
        return self._refill(now, actions)

    def checked(self, entry: Entry[T], now: float, *, ok: bool) -> list[Action]:
        """Maintenance finished checking an entry it was given in a `Check` action."""
        actions: list[Action] = []
        if entry not in self.checking:
            return actions
        self.checking.discard(entry)
        self.checks += 1
        if not ok:
            self.checks_failed += 1
            actions.append(self._forget(entry, "check_failed"))
            return self._refill(now, actions)
        entry.verified_at = now
        if self.closed:
            actions.append(self._forget(entry, "pool_closed"))
        elif entry.retired or entry.expires_at <= now:
            actions.append(self._forget(entry, "retired" if entry.retired else "expired"))
            self._refill(now, actions)
        elif self.size >= self.settings.max_size:
            # A resize shrank max_size while this one was out for a check: shed it, as
            # `connected` does, rather than pool it above max_size (for ever, when
            # nothing else expires it).
            actions.append(self._forget(entry, "surplus"))
        else:
            self._pool(entry, now, actions)
        return actions

    def check_passed(self, entry: Entry[T], now: float) -> None:
        """A lent connection passed its check before use (a failure goes to `discard`)."""
        self.checks += 1
        entry.verified_at = now

    # -- connects --------------------------------------------------------------------

    def connected(self, conn: T, now: float, duration: float) -> list[Action]:
        """A `Connect` action succeeded."""
        self.connecting -= 1
        self.connections_created += 1
        self.connect_time.observe(duration)
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
        if self.closed or self.size >= self.settings.max_size:
            actions.append(self._forget(entry, "pool_closed" if self.closed else "surplus"))
            return actions
        self._pool(entry, now, actions)
        if self._schedule(expires_at):
            actions.append(WAKEUP)
        return self._refill(now, actions)

    def connect_failed(self, error: BaseException, now: float) -> list[Action]:
        """A `Connect` action failed: back off, and fail fast if so configured."""
        self.connecting -= 1
        self.connect_errors += 1
        self.consecutive_failures += 1
        self.database_down = True
        self.last_error = error
        delay = self.settings.backoff.delay(self.consecutive_failures, self._rng)
        self.retry_at = now + delay
        actions: list[Action] = []
        if self.settings.fail_fast and not self.closed and not (self.lent or self.checking):
            # Callers queued now would otherwise wait for a database known to be down.
            # Keep as many as the connects still in flight could serve. While the pool
            # still holds connections (lent, or being checked), a refused refill ("too
            # many clients") does not mean the database is down: their return serves
            # the queue, so nobody is failed.
            while len(self.waiters) > self.connecting:
                waiter = self.waiters.pop()
                exc = DatabaseUnavailable(
                    f"pool {self.name!r}: the database is unavailable ({_describe(error)});"
                    " the checkout failed fast instead of waiting"
                )
                exc.__cause__ = error
                waiter.outcome = exc
                self.failed_fast += 1
                actions.append(Fail(waiter, exc))
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
        keep: list[Entry[T]] = []
        surplus = self.size - settings.min_size
        for entry in self.idle:  # from the least recently used
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
            else:
                keep.append(entry)
        self.idle[:] = keep
        # Leaks.
        if settings.leak_timeout is not None:
            for entry in self.lent.values():
                if not entry.leak_reported and now - entry.lent_at >= settings.leak_timeout:
                    entry.leak_reported = True
                    self.leaks += 1
                    actions.append(ReportLeak(entry, held=now - entry.lent_at))
        self._refill(now, actions)
        deadline = self._next_deadline(now)
        self._scheduled_at = deadline
        return actions, deadline

    def _next_deadline(self, now: float) -> float:
        settings = self.settings
        deadline = INF
        wants_connects = self.size < settings.min_size or (
            self.waiters and self.size < settings.max_size
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
        """Change the size bounds; surplus idle connections close at once."""
        self.settings = replace(self.settings, min_size=min_size, max_size=max_size)
        self._apply_settings()
        actions: list[Action] = []
        while self.idle and self.size > max_size:
            actions.append(self._forget(self.idle.pop(0), "resized"))
        # Still too many: the lent surplus closes when it comes back.
        surplus = self.size - max_size
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
            actions.append(self._forget(self.idle.pop(), "drained"))
        return self._refill(now, actions)

    def check_all(self) -> list[Action]:
        """Take every idle connection out for a check (``pool.check()``)."""
        actions: list[Action] = []
        while self.idle:
            entry = self.idle.pop()
            entry.state = CHECKING
            self.checking.add(entry)
            actions.append(Check(entry))
        return actions

    def stats(self) -> PoolStats:
        """A snapshot of the state and counters."""
        return PoolStats(
            name=self.name,
            min_size=self.settings.min_size,
            max_size=self.settings.max_size,
            size=self.size,
            idle=len(self.idle),
            in_use=len(self.lent),
            checking=len(self.checking),
            connecting=self.connecting,
            waiting=len(self.waiters),
            database_down=self.database_down,
            checkouts=self.checkouts + self.fast_checkouts,
            checkouts_waited=self.checkouts_waited,
            timeouts=self.timeouts,
            rejected=self.rejected,
            failed_fast=self.failed_fast,
            connections_created=self.connections_created,
            connect_errors=self.connect_errors,
            connections_closed=dict(self.connections_closed),
            checks=self.checks,
            checks_failed=self.checks_failed,
            returns_broken=self.returns_broken,
            resets=self.resets,
            leaks=self.leaks,
            transaction_retries=self.transaction_retries,
            wait_time=self.wait_time.snapshot(zeros=self.fast_checkouts),
            usage_time=self.usage_time.snapshot(),
            connect_time=self.connect_time.snapshot(),
        )

    # -- internals -------------------------------------------------------------------

    def _lend(self, entry: Entry[T], now: float) -> None:
        entry.state = LENT
        entry.lent_at = now
        entry.leak_reported = False
        self.lent[entry.number] = entry

    def _pool(self, entry: Entry[T], now: float, actions: list[Action]) -> None:
        """Give a good entry to the oldest waiter, else put it on the idle stack."""
        if self.waiters:
            waiter = self.waiters.popleft()
            entry.needs_check = False
            self._lend(entry, now)
            waiter.outcome = entry
            self.checkouts += 1
            self.checkouts_waited += 1
            entry.waited = max(now - waiter.enqueued_at, 0.0)
            self.wait_time.observe(entry.waited)
            actions.append(HandOff(waiter, entry))
            if self.settings.leak_timeout is not None and self._schedule(
                now + self.settings.leak_timeout
            ):
                actions.append(WAKEUP)
            return
        entry.state = IDLE
        entry.idle_since = now
        self.idle.append(entry)

    def _needs_check(self, entry: Entry[T], now: float) -> bool:
        """Idle longer than ``check_after_idle``, or older than the suspect mark."""
        verified_at = entry.verified_at
        return verified_at < self.suspect_before or now - verified_at > self._check_after_idle

    def _serve_from_idle(self, now: float, actions: list[Action]) -> None:
        """Hand idle entries to queued waiters (only after a race with the fast path)."""
        while self.waiters and self.idle:
            entry = self.idle.pop()
            if entry.expires_at <= now:
                actions.append(self._forget(entry, "expired"))
                continue
            if self._needs_check(entry, now):
                entry.state = CHECKING
                self.checking.add(entry)
                actions.append(Check(entry))
                continue
            self._pool(entry, now, actions)

    def _uncount_lend(self, entry: Entry[T]) -> None:
        """Undo what lending `entry` added to the counters and the wait histogram."""
        waited = entry.waited
        if waited == FAST_LEND:
            self.fast_checkouts -= 1
            return
        self.checkouts -= 1
        if waited == IDLE_LEND:
            waited = 0.0
        else:
            self.checkouts_waited -= 1
        self.wait_time.counts[bisect_left(BUCKETS, waited)] -= 1
        self.wait_time.total -= waited

    def _mark_suspect(self, now: float, actions: list[Action]) -> None:
        """One connection was found dead: check every idle connection older than now."""
        self.suspect_before = now
        for entry in self.idle:
            entry.state = CHECKING
            self.checking.add(entry)
            actions.append(Check(entry))
        self.idle.clear()

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
        wanted = min(wanted, settings.max_size - size, settings.max_connecting - self.connecting)
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

    def _forget(self, entry: Entry[T], reason: str) -> Close:
        entry.state = CLOSED
        self.connections_closed[reason] = self.connections_closed.get(reason, 0) + 1
        return Close(entry, reason)


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    described = f"{type(error).__name__}: {first}" if first else type(error).__name__
    # The PostgreSQL manager notes which setting to look at ("hint: check sslrootcert...").
    hints = [note for note in getattr(error, "__notes__", ()) if str(note).startswith("hint: ")]
    return "; ".join([described, *map(str, hints)])
