"""The decisions of a cluster pool: which host is primary, which server is stale, who reads.

Theory of operation. A cluster pool (``pgfleet._async.cluster``) keeps one ordinary pool
per host of a multi-host conninfo and asks this state, under its lock, what to do; the
state reads no clock and does no I/O, so every rule is a plain function call in the tests.

- **Roles** come from what a server says: ``in_hot_standby`` (sent for free at connect by
  PostgreSQL 14+) tells a standby from a primary, and on a primary
  ``pg_walfile_name(pg_current_wal_lsn())`` gives its timeline exactly. Both are learnt
  when a connection is made (`ConnFacts`) and by the discovery probes (`probed`).
- **Fencing.** `newest_timeline` is the newest timeline seen on a writable server. A
  writable server on an older one is a stale primary (restarted by mistake, reached by a
  stale address): `judge_write` refuses its connections and marks the host ``stale``.
  A server's timeline only grows while a session to it lives (a promotion moves it on,
  nothing moves it back without a restart, which ends the session), so a timeline read at
  connect is a lower bound for the connection's whole life; the check is then one
  comparison per checkout.
- **Failover.** When the primary is lost (`lost`), callers wait for a new one, each within
  its own timeout and all within `failover_grace` of the loss (`write_wait_until`);
  after that, checkouts fail fast until a primary is found again. One discovery at a time
  probes every host; `probe_delay` paces its rounds.
- **Reads** go to a standby (`pick_reader`): spread by least use, never a stale, lost or
  lagging one (`LagTracker`), else to the primary.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from pgfleet._core.stats import PoolStats

Role = Literal["unknown", "primary", "standby", "stale", "down"]
#: What `judge_write` says of a connection about to be lent for writes.
Verdict = Literal["ok", "stale", "standby", "moved"]

#: Back-off of discovery rounds within the grace: short, a promotion takes tens of ms
#: and the probe of a standby is one query on a connection its pool already has.
PROBE_DELAY_MIN = 0.005
PROBE_DELAY_GRACE_MAX = 0.010
#: Back-off of discovery rounds after the grace (a real outage): gentler.
PROBE_DELAY_OUTAGE_MAX = 1.0


def timeline_of_walfile(walfile: str) -> int:
    """The timeline in a WAL file name (its first 8 hex digits)."""
    return int(walfile[:8], 16)


def parse_lsn(text: str) -> int:
    """A ``pg_lsn`` as text (``16/B374D848``) as a number."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(value: int) -> str:
    """A number as ``pg_lsn`` text."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


@dataclass(frozen=True, slots=True)
class ConnFacts:
    """What a connection's server said about itself when the connection was made."""

    host: int
    born_at: float
    #: True: the server was a standby (in recovery) at connect.
    standby: bool
    #: The timeline of a writable server (None: a standby, or not learnt yet).
    timeline: int | None


@dataclass(slots=True)
class HostState:
    """What the cluster knows of one host."""

    label: str
    role: Role = "unknown"
    timeline: int | None = None
    #: When the role was last learnt.
    seen_at: float = float("-inf")
    #: The last replay position read on this standby, and when.
    replay_lsn: int | None = None
    replay_at: float = float("-inf")
    probing: bool = False
    #: Set once the stale refusal of the current episode was logged.
    stale_logged: bool = False
    #: Connections refused because the server is on an older timeline.
    fenced: int = 0
    #: Times a connection showed this host is no longer what it was (read-only, shut down).
    demoted: int = 0
    #: Checkouts served here for reads / writes.
    reads: int = 0
    writes: int = 0


class LagTracker:
    """How far behind the primary a standby's replay is, in seconds.

    The primary's write position is sampled over time; a standby that has replayed up
    to ``R`` shows the primary as it was when the first sample past ``R`` was taken, so
    its lag is the time since then (0 when it has replayed the newest sample). The
    precision is the sampling interval; an idle primary makes every standby current.
    """

    __slots__ = ("_lsns", "_times", "keep")

    def __init__(self, keep: float = 120.0) -> None:
        self.keep = keep
        self._times: deque[float] = deque()
        self._lsns: deque[int] = deque()

    def primary_at(self, lsn: int, now: float) -> None:
        """The primary was at `lsn` at `now`."""
        if self._lsns and lsn <= self._lsns[-1]:
            return  # no news (and the samples stay sorted)
        self._times.append(now)
        self._lsns.append(lsn)
        while len(self._times) > 1 and self._times[0] < now - self.keep:
            self._times.popleft()
            self._lsns.popleft()

    @property
    def newest(self) -> int | None:
        """The newest primary position known."""
        return self._lsns[-1] if self._lsns else None

    def reset(self) -> None:
        """Forget the samples (a new primary: its positions are another history's)."""
        self._times.clear()
        self._lsns.clear()

    def lag(self, replayed: int, now: float) -> float:
        """Seconds of the primary's history a standby that replayed `replayed` lacks."""
        index = bisect.bisect_right(self._lsns, replayed)
        if index >= len(self._lsns):
            return 0.0
        return max(now - self._times[index], 0.0)


@dataclass(slots=True)
class ClusterState:
    """The cluster's hosts, its newest timeline and its primary (see the module doc)."""

    hosts: list[HostState]
    failover_grace: float
    #: Standbys whose replay lags more seconds are not used for reads (None: no bound).
    max_replica_lag: float | None = None
    newest_timeline: int = 0
    primary: int | None = None
    #: When the primary was lost (None: a primary is known, or none was ever found).
    lost_at: float | None = None
    #: Times the primary moved to another host, and the refusals of stale servers.
    failovers: int = 0
    #: The primary before the current loss (None: none yet): a failover is a new one.
    last_primary: int | None = None
    fenced: int = 0
    lag: LagTracker = field(default_factory=LagTracker)
    #: Discovery rounds since the primary was lost (paces `probe_delay`).
    rounds: int = 0

    @classmethod
    def of(
        cls, labels: list[str], failover_grace: float, max_replica_lag: float | None = None
    ) -> ClusterState:
        """A state for these hosts, nothing known yet."""
        return cls([HostState(label) for label in labels], failover_grace, max_replica_lag)

    # -- writes -------------------------------------------------------------------------

    def judge_write(self, facts: ConnFacts, now: float) -> Verdict:
        """May this connection be lent for writes? ``stale``: its server is on an older
        timeline than the newest seen (the host is marked stale); ``standby``: its
        server was in recovery (learn its timeline first); ``moved``: its host is no
        longer the primary (lost, or replaced, since it was chosen): give the connection
        back and look again. A newer timeline than any seen elects its host at once."""
        if facts.timeline is None:
            return "standby"
        if facts.timeline < self.newest_timeline:
            self._stale(facts.host, facts.timeline, now)
            return "stale"
        if facts.timeline == self.newest_timeline and self.primary != facts.host:
            # Only discovery elects a primary again after a loss: this connection may
            # well be one the loss has not reached yet.
            return "moved"
        self._writable(facts.host, facts.timeline, now)
        return "ok"

    def is_news_of_staleness(self, host: int) -> bool:
        """True once per stale episode of `host`: the refusal is logged then."""
        state = self.hosts[host]
        if state.stale_logged:
            return False
        state.stale_logged = True
        return True

    def _stale(self, host: int, timeline: int, now: float) -> None:
        state = self.hosts[host]
        state.role = "stale"
        state.timeline = timeline
        state.seen_at = now
        state.fenced += 1
        self.fenced += 1
        if self.primary == host:
            self._lose(now)

    def _writable(self, host: int, timeline: int, now: float) -> bool:
        """A writable server on `timeline` at least as new as any seen: the primary.
        True when that is news (another host, or the first one)."""
        if timeline > self.newest_timeline:
            self.newest_timeline = timeline
            for index, other in enumerate(self.hosts):
                if index != host and other.role == "primary":
                    other.role = "stale"  # a writable server on an older timeline
                    other.stale_logged = False
        state = self.hosts[host]
        state.role = "primary"
        state.timeline = timeline
        state.seen_at = now
        state.stale_logged = False
        news = self.primary != host
        if news:
            # A failover is another host taking over; the same primary found again
            # (after a lost connection or a read-only answer) is not one.
            previous = self.primary if self.primary is not None else self.last_primary
            if previous is not None and previous != host:
                self.failovers += 1
            self.primary = host
            self.lag.reset()
        self.lost_at = None
        self.rounds = 0
        return news

    def lost(self, host: int, now: float, *, demoted: bool = False) -> bool:
        """A connection to `host` failed in a way that says it may no longer be primary
        (connection lost, shut down, read-only). True when it was the primary."""
        state = self.hosts[host]
        if demoted:
            state.demoted += 1
        if state.role in ("primary", "standby"):
            state.role = "unknown"
        if self.primary != host:
            return False
        self._lose(now)
        return True

    def _lose(self, now: float) -> None:
        if self.primary is not None:
            self.last_primary = self.primary
        self.primary = None
        if self.lost_at is None:
            self.lost_at = now
        self.rounds = 0

    def write_wait_until(self, now: float) -> float | None:
        """Until when a writer may wait for a primary; None: fail fast now (no primary for
        longer than the grace). Meaningful while `primary` is None."""
        if self.lost_at is None:
            return now + self.failover_grace  # never found one yet: the opening's wait
        until = self.lost_at + self.failover_grace
        return until if now < until else None

    def probe_delay(self, now: float) -> float:
        """Seconds between discovery rounds: short within the grace, longer after it."""
        in_grace = self.lost_at is None or now < self.lost_at + self.failover_grace
        cap = PROBE_DELAY_GRACE_MAX if in_grace else PROBE_DELAY_OUTAGE_MAX
        delay: float = min(PROBE_DELAY_MIN * 2.0 ** min(self.rounds, 16), cap)
        self.rounds += 1
        return delay

    # -- discovery ----------------------------------------------------------------------

    def start_probe(self, host: int) -> bool:
        """Mark `host` as being probed; False when a probe already runs."""
        state = self.hosts[host]
        if state.probing:
            return False
        state.probing = True
        return True

    def probed(self, host: int, now: float, *, standby: bool | None, timeline: int | None) -> bool:
        """What a probe found: `standby` None when the host did not answer. True when a
        primary was found (or changed). A writable server becomes primary only when no
        newer timeline is known, and, before any timeline is known, only once every
        host answered (else the first to answer, maybe a stale one, would win)."""
        state = self.hosts[host]
        state.probing = False
        if standby is None:
            if state.role != "stale":
                state.role = "down"
            state.seen_at = now
            if self.primary == host:
                self._lose(now)
            return self.probes_done(now)
        if standby:
            state.role = "standby"
            state.timeline = None
            state.seen_at = now
            state.stale_logged = False
            if self.primary == host:
                self._lose(now)
            return self.probes_done(now)
        assert timeline is not None
        if timeline < self.newest_timeline:
            state.role = "stale"
            state.timeline = timeline
            state.seen_at = now
            return False
        if self.newest_timeline == 0 and any(h.probing for h in self.hosts):
            # Nothing known yet and others still answering: remember, decide when all did.
            state.role = "primary"
            state.timeline = timeline
            state.seen_at = now
            return False
        return self._choose_primary(now, host, timeline)

    def _choose_primary(self, now: float, host: int, timeline: int) -> bool:
        # Of the writable servers known, the one on the newest timeline.
        best, best_tli = host, timeline
        for index, other in enumerate(self.hosts):
            if other.role == "primary" and other.timeline is not None and other.timeline > best_tli:
                best, best_tli = index, other.timeline
        return self._writable(best, best_tli, now)

    def probes_done(self, now: float) -> bool:
        """After a round in which every host answered: elect the newest writable server
        remembered while others were still answering. True when a primary was found."""
        if self.primary is not None or any(h.probing for h in self.hosts):
            return False
        candidates = [
            (h.timeline, index)
            for index, h in enumerate(self.hosts)
            if h.role == "primary" and h.timeline is not None
        ]
        if not candidates:
            return False
        timeline, host = max(candidates)
        return self._writable(host, timeline, now)

    # -- reads --------------------------------------------------------------------------

    def standby_at(self, host: int, replayed: int | None, now: float) -> None:
        """A standby said it replayed up to `replayed` (None: it is not in recovery)."""
        state = self.hosts[host]
        if replayed is None:
            if state.role == "standby":
                state.role = "unknown"  # promoted, or another server: discovery decides
            return
        state.replay_lsn = replayed
        state.replay_at = now
        if state.role in ("unknown", "down", "stale"):
            # In recovery: a standby now (a stale primary rebuilt as one serves again).
            state.role = "standby"
            state.stale_logged = False

    def lag_of(self, host: int, now: float) -> float | None:
        """The replay lag of a standby in seconds (None: not known yet)."""
        state = self.hosts[host]
        if state.replay_lsn is None:
            return None
        return self.lag.lag(state.replay_lsn, state.replay_at)

    def readers(self, now: float, min_lsn: int | None = None) -> list[int]:
        """The standbys fit to serve a read, best first (least used); empty: use the
        primary. A standby is fit when its lag is within `max_replica_lag` (an unknown
        lag is trusted until the first measurement) and, with `min_lsn`, when it is
        known to have replayed that far (else the caller may wait on it, see
        `pick_reader`)."""
        fit: list[tuple[int, int]] = []
        for index, state in enumerate(self.hosts):
            if state.role != "standby" or index == self.primary:
                continue
            if self.max_replica_lag is not None:
                lag = self.lag_of(index, now)
                if lag is not None and lag > self.max_replica_lag:
                    continue
            fit.append((state.reads, index))
        fit.sort()
        ordered = [index for _, index in fit]
        if min_lsn is not None:
            # Those known to have replayed the token first: no wait for them.
            ordered.sort(key=lambda i: not self.replayed_past(i, min_lsn))
        return ordered

    def replayed_past(self, host: int, lsn: int) -> bool:
        """True when `host` is known to have replayed `lsn`."""
        replayed = self.hosts[host].replay_lsn
        return replayed is not None and replayed >= lsn


@dataclass(frozen=True, slots=True)
class WriteToken:
    """A read-your-writes token: the primary's WAL position after a commit.

    Pass it as ``after=`` to ``connection(read_only=True, after=token)``: the read is
    then served only by a server that has replayed past it.
    """

    lsn: int

    def __str__(self) -> str:
        return format_lsn(self.lsn)


@dataclass(frozen=True, slots=True)
class HostStats:
    """One host of a cluster pool: its role, timeline, lag and its own pool's stats."""

    label: str
    role: Role
    timeline: int | None
    #: Seconds of the primary's history this standby has not replayed (None: unknown).
    lag: float | None
    #: Connections refused because the server was on an older timeline (fencing).
    fenced: int
    #: Times a connection showed the host was no longer primary (read-only, shut down).
    demoted: int
    reads: int
    writes: int
    pool: PoolStats


@dataclass(frozen=True, slots=True)
class ClusterStats:
    """A snapshot of a cluster pool (see ``docs/clusters.md``, "Reading the stats")."""

    name: str
    primary: str | None
    newest_timeline: int
    failovers: int
    fenced: int
    hosts: tuple[HostStats, ...]
