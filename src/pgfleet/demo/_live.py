"""What the live page of ``pgfleet demo --serve`` shows, as data: the pool's recent history,
marks on it (growth, shrinking, reconnects, outages), its health and its hosts.

Everything here is read from the public `AsyncPool.stats()` snapshots (a sampler takes one
a second) and from the demo's own checkouts; nothing touches the pool's internals. The shape
of ``/api/pool`` (built by `snapshot`) is documented on `snapshot`.
"""

from __future__ import annotations

import math
import weakref
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from pgfleet import PoolStats
from pgfleet._core.cluster import ClusterStats
from pgfleet._core.reasons import CloseReason
from pgfleet._core.stats import HistogramSnapshot
from pgfleet.errors import DatabaseUnavailable

__all__ = [
    "HISTORY_SECONDS",
    "RECENT_SECONDS",
    "SAMPLE_EVERY",
    "Health",
    "History",
    "HostBook",
    "Mark",
    "Sample",
    "cluster_rows",
    "combined_stats",
    "quantile_bound",
    "snapshot",
]

#: Seconds between two samples of the pool.
SAMPLE_EVERY = 1.0
#: Seconds of history kept (and drawn at most).
HISTORY_SECONDS = 600
#: Seconds the headline numbers (throughput, wait percentiles) are computed over.
RECENT_SECONDS = 10
#: Close reasons that mean a connection was lost (it failed its check, or broke in use).
LOST: tuple[CloseReason, ...] = ("check_failed", "broken")

#: Kinds of marks on the history. ``failover`` only comes from pools that span a cluster.
MARK_KINDS = ("grow", "shrink", "reconnect", "timeout", "down", "up", "failover")

UP, DOWN, FAILING = "up", "down", "failing"


@dataclass(frozen=True, slots=True)
class Sample:
    """The pool over one sampling interval (ending at `t`, seconds since the epoch)."""

    t: float
    #: Checkouts per second over the interval.
    checkouts_per_s: float
    #: Upper bounds (seconds) of the interval's median and 99th percentile checkout wait;
    #: None when no checkout happened.
    wait_p50: float | None
    wait_p99: float | None
    size: int
    #: Connections in use: the most the interval is known to have had (the count at its
    #: end, or the ceiling of its mean, whichever is larger), so short uses between two
    #: samples still show.
    in_use: int
    idle: int
    #: Connections being opened or checked.
    connecting: int
    waiting: int
    max_size: int
    #: Checkouts that failed in the interval (timed out, rejected, failed fast).
    failures: int
    #: The page's banner state at `t`: "up", "down" or "failing".
    state: str


@dataclass(frozen=True, slots=True)
class Mark:
    """Something that happened to the pool, drawn on the history at `t`."""

    t: float
    kind: str  # one of MARK_KINDS
    text: str


def quantile_bound(
    buckets: Sequence[float], counts: Sequence[int], q: float, maximum: float
) -> float | None:
    """An upper bound of the `q` quantile of bucket `counts` (the bound of the bucket that
    holds it; `maximum` for the unbounded last bucket); None when the counts are all 0."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = max(1.0, q * total)
    seen = 0
    for bound, n in zip((*buckets, maximum), counts, strict=True):
        seen += n
        if seen >= rank:
            return bound
    return maximum


def _delta(now: Sequence[int], then: Sequence[int]) -> list[int]:
    return [a - b for a, b in zip(now, then, strict=True)]


def _connecting(s: PoolStats) -> int:
    return s.connecting + s.checking


def _lost(s: PoolStats) -> int:
    return sum(s.connections_closed.get(reason, 0) for reason in LOST)


def _failures(s: PoolStats) -> int:
    return s.timeouts + s.rejected + s.failed_fast


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class Health:
    """Whether the database looks down, from the pool's stats and the demo's checkouts.

    Down: the pool knows the database is down (``stats().database_down``), or the last
    checkout failed with `DatabaseUnavailable` and the pool has made no connection since.
    Failing: the last checkout failed otherwise (timed out, rejected) and nothing has
    succeeded since. Up: neither.
    """

    def __init__(self) -> None:
        self.failure: str | None = None
        self._created_at_failure = 0
        self._down_failure = False
        self.state = UP
        self.since: float | None = None

    def checkout_succeeded(self) -> None:
        """A checkout of the demo's succeeded."""
        self.failure = None

    def checkout_failed(self, error: BaseException, stats: PoolStats) -> None:
        """A checkout of the demo's failed with `error` (a pool error)."""
        self.failure = type(error).__name__
        self._down_failure = isinstance(error, DatabaseUnavailable)
        self._created_at_failure = stats.connections_created

    def evaluate(self, stats: PoolStats, now: float) -> str:
        """The state now (and remember since when it holds)."""
        if self.failure is not None and stats.connections_created > self._created_at_failure:
            self.failure = None  # the pool reached the database since: that failure is old
        if stats.database_down or (self.failure is not None and self._down_failure):
            state = DOWN
        elif self.failure is not None:
            state = FAILING
        else:
            state = UP
        if state != self.state or self.since is None:
            self.state, self.since = state, now
        return state

    def as_dict(self, stats: PoolStats) -> dict[str, Any]:
        """The banner's data: state, since when, and why (never an error's text)."""
        if self.state == DOWN:
            reason = (
                "the pool cannot connect to the database; checkouts fail fast until it"
                " is back, and the pool reconnects by itself"
            )
        elif self.state == FAILING:
            reason = (
                f"the last checkout failed ({self.failure}): the pool is exhausted or the"
                " database does not answer"
            )
        else:
            reason = ""
        return {
            "state": self.state,
            "since": self.since,
            "reason": reason,
            "last_failure": self.failure,
            "database_down": stats.database_down,
        }


class History:
    """One `Sample` a second for `HISTORY_SECONDS`, and the `Mark`s derived from them."""

    def __init__(self, seconds: int = HISTORY_SECONDS, recent: int = RECENT_SECONDS) -> None:
        self.samples: deque[Sample] = deque(maxlen=seconds)
        self.marks: deque[Mark] = deque(maxlen=seconds)
        #: Recent raw snapshots (time, stats), for the headline numbers.
        self._recent: deque[tuple[float, PoolStats]] = deque(maxlen=recent + 1)
        self._previous: tuple[float, PoolStats, str] | None = None
        #: The cluster's failover count and primary at the previous `observe_cluster`.
        self._cluster: tuple[int, str | None] | None = None

    def observe(self, stats: PoolStats, now: float, state: str) -> Sample | None:
        """Add the interval that ends now; None for the first call (nothing to compare)."""
        self._recent.append((now, stats))
        previous, self._previous = self._previous, (now, stats, state)
        if previous is None:
            return None
        then, before, was = previous
        elapsed = max(now - then, 1e-9)
        counts = _delta(stats.wait_time.counts, before.wait_time.counts)
        maximum = stats.wait_time.maximum
        sample = Sample(
            t=now,
            checkouts_per_s=(stats.checkouts - before.checkouts) / elapsed,
            wait_p50=quantile_bound(stats.wait_time.buckets, counts, 0.50, maximum),
            wait_p99=quantile_bound(stats.wait_time.buckets, counts, 0.99, maximum),
            size=stats.size,
            # The peak is an integer at least the interval's mean (connection-seconds of
            # finished uses over its length): its ceiling is a sound lower bound.
            in_use=max(
                stats.in_use,
                math.ceil((stats.usage_time.total - before.usage_time.total) / elapsed - 1e-9),
            ),
            idle=stats.idle,
            connecting=_connecting(stats),
            waiting=stats.waiting,
            max_size=stats.max_size,
            failures=_failures(stats) - _failures(before),
            state=state,
        )
        self.samples.append(sample)
        self.marks.extend(self._marks(now, before, stats, was, state))
        return sample

    @staticmethod
    def _marks(now: float, before: PoolStats, after: PoolStats, was: str, state: str) -> list[Mark]:
        marks = []
        if state != was:
            if state == DOWN:
                marks.append(Mark(now, "down", "database down"))
            elif state == FAILING:
                marks.append(Mark(now, "down", "checkouts failing"))
            else:
                marks.append(Mark(now, "up", "database back"))
        lost = _lost(after) - _lost(before)
        if lost > 0:
            marks.append(
                Mark(now, "reconnect", f"{_plural(lost, 'connection')} lost: reconnecting")
            )
        grown = after.size - before.size
        # While the database is down, the size follows the failed attempts: noise.
        steady = state == UP and was == UP
        if steady and grown > 0:
            marks.append(Mark(now, "grow", f"grew by {grown} to {after.size}"))
        elif steady and grown < 0 and lost <= 0:
            marks.append(Mark(now, "shrink", f"shrank by {-grown} to {after.size}"))
        timeouts = after.timeouts - before.timeouts
        if timeouts > 0:
            marks.append(Mark(now, "timeout", f"{_plural(timeouts, 'checkout')} timed out"))
        return marks

    def observe_cluster(self, cluster: ClusterStats, now: float) -> Mark | None:
        """Mark a failover: the cluster pool counted one, or its primary changed to
        another host (a primary lost without a successor yet is the banner's business)."""
        previous, self._cluster = self._cluster, (cluster.failovers, cluster.primary)
        if previous is None:
            return None
        failovers, primary = previous
        moved = cluster.primary is not None and primary is not None and cluster.primary != primary
        if cluster.failovers <= failovers and not moved:
            if cluster.primary is not None:
                return None
            # No primary now: remember the last one, so that its successor is a change.
            self._cluster = (cluster.failovers, primary)
            return None
        text = (
            f"failover: primary now {cluster.primary}"
            if cluster.primary is not None
            else "failover: looking for the new primary"
        )
        mark = Mark(now, "failover", text)
        self.marks.append(mark)
        return mark

    def recent(self, stats: PoolStats, now: float) -> dict[str, Any]:
        """Throughput and wait percentiles over the last `RECENT_SECONDS` up to `stats`."""
        if not self._recent:
            return {"seconds": 0.0, "checkouts_per_s": 0.0, "wait_p50": None, "wait_p99": None}
        then, before = self._recent[0]
        elapsed = max(now - then, 1e-9)
        counts = _delta(stats.wait_time.counts, before.wait_time.counts)
        maximum = stats.wait_time.maximum
        return {
            "seconds": now - then,
            "checkouts_per_s": (stats.checkouts - before.checkouts) / elapsed,
            "wait_p50": quantile_bound(stats.wait_time.buckets, counts, 0.50, maximum),
            "wait_p99": quantile_bound(stats.wait_time.buckets, counts, 0.99, maximum),
        }

    def since(self, t: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Samples and marks later than `t` (all of them for 0), as dicts."""
        samples = [asdict(s) for s in self.samples if s.t > t]
        marks = [asdict(m) for m in self.marks if m.t > t]
        return samples, marks


# -- hosts -----------------------------------------------------------------------------


def _address(host: str, port: str) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("/") else host
    return f"{shown}:{port}" if port else shown


def configured_hosts(conninfo: str, env: Mapping[str, str]) -> list[tuple[str, str]]:
    """The (host, port) pairs a conninfo names, in order (libpq's rules: one port for all
    hosts, or one per host; ``PGHOST``/``PGPORT`` when absent); [] when it names none."""
    params = conninfo_to_dict(conninfo)
    hosts_text = str(params.get("host") or params.get("hostaddr") or env.get("PGHOST") or "")
    ports_text = str(params.get("port") or env.get("PGPORT") or "5432")
    hosts = [h.strip() for h in hosts_text.split(",")] if hosts_text else []
    ports = [p.strip() or "5432" for p in ports_text.split(",")]
    if len(ports) == 1:
        ports = ports * len(hosts)
    if len(ports) != len(hosts):  # libpq refuses this; show the hosts without ports
        ports = [""] * len(hosts)
    return list(zip(hosts, ports, strict=True))


def _version(number: int) -> str:
    major, rest = divmod(number, 10000)
    return f"{major}.{rest}" if major >= 10 else f"{major}.{rest // 100}.{rest % 100}"


class HostBook:
    """The servers the pool's connections go to: one row per host of the conninfo, plus any
    other a connection reached. Fed by the pool's ``configure`` callback (each new
    connection) and by the demo's checkouts (what is in use where)."""

    def __init__(self, conninfo: str, env: Mapping[str, str]) -> None:
        self._configured = configured_hosts(conninfo, env)
        self._connections: weakref.WeakSet[psycopg.AsyncConnection[Any]] = weakref.WeakSet()
        self._in_use: dict[tuple[str, str], int] = {}
        self._facts: dict[tuple[str, str], dict[str, Any]] = {}

    @staticmethod
    def key(conn: psycopg.AsyncConnection[Any]) -> tuple[str, str]:
        """(host, port) of a connection, as libpq reports them."""
        info = conn.info
        return info.host, str(info.port)

    async def configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """The pool's ``configure`` callback: note the new connection and its server."""
        self._connections.add(conn)
        info = conn.info
        standby = info.parameter_status("in_hot_standby")
        self._facts[self.key(conn)] = {
            "role": None if standby is None else ("standby" if standby == "on" else "primary"),
            "server_version": _version(info.server_version),
        }

    def versions(self) -> dict[str, str]:
        """Server versions by address (``host:port``), of the servers reached so far."""
        return {
            _address(host, port): facts["server_version"]
            for (host, port), facts in self._facts.items()
        }

    def lent(self, conn: psycopg.AsyncConnection[Any]) -> tuple[str, str]:
        """The demo checked out `conn`; returns its key for `returned`."""
        key = self.key(conn)
        self._in_use[key] = self._in_use.get(key, 0) + 1
        return key

    def returned(self, key: tuple[str, str]) -> None:
        """The demo gave back the connection `lent` returned `key` for."""
        self._in_use[key] = max(0, self._in_use.get(key, 0) - 1)

    def rows(self, state: str) -> list[dict[str, Any]]:
        """One row per host: address, role, state, open connections, in use by requests."""
        open_by_host: dict[tuple[str, str], int] = {}
        for conn in list(self._connections):
            if not conn.closed:
                key = self.key(conn)
                open_by_host[key] = open_by_host.get(key, 0) + 1
        keys: list[tuple[str, str]] = list(self._configured)
        keys += [k for k in (*self._facts, *open_by_host) if k not in keys]
        rows = []
        for host, port in _unique(keys):
            connections = open_by_host.get((host, port), 0)
            facts = self._facts.get((host, port), {})
            if connections:
                host_state = UP
            elif state == DOWN:
                host_state = DOWN
            else:
                host_state = "unused"
            rows.append(
                {
                    "address": _address(host, port),
                    "host": host,
                    "port": port,
                    "role": facts.get("role"),
                    "server_version": facts.get("server_version"),
                    "state": host_state,
                    "connections": connections,
                    "in_use": self._in_use.get((host, port), 0),
                }
            )
        return rows


def _unique(keys: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return list(dict.fromkeys(keys))


# -- clusters --------------------------------------------------------------------------

_SUMMED = (
    "min_size",
    "max_size",
    "size",
    "idle",
    "in_use",
    "checking",
    "connecting",
    "waiting",
    "checkouts",
    "checkouts_waited",
    "timeouts",
    "rejected",
    "failed_fast",
    "connections_created",
    "connect_errors",
    "checks",
    "checks_failed",
    "returns_broken",
    "resets",
    "leaks",
    "transaction_retries",
)


def _merged(histograms: Sequence[HistogramSnapshot]) -> HistogramSnapshot:
    """The histograms added up (the hosts' pools share their bucket bounds)."""
    first = histograms[0]
    if any(h.buckets != first.buckets for h in histograms):
        raise ValueError("histograms with different buckets cannot be added")
    return HistogramSnapshot(
        buckets=first.buckets,
        counts=tuple(sum(column) for column in zip(*(h.counts for h in histograms), strict=True)),
        count=sum(h.count for h in histograms),
        total=sum(h.total for h in histograms),
        maximum=max(h.maximum for h in histograms),
    )


def combined_stats(name: str, pools: Sequence[PoolStats]) -> PoolStats:
    """The stats of a cluster's host pools added up, as if of one pool named `name`:
    the whole cluster for the charts. The database is down when every host is."""
    if not pools:
        raise ValueError("a cluster has at least one host")
    summed: dict[str, Any] = {key: sum(getattr(p, key) for p in pools) for key in _SUMMED}
    closed: dict[CloseReason, int] = {}
    for p in pools:
        for reason, n in p.connections_closed.items():
            closed[reason] = closed.get(reason, 0) + n
    return PoolStats(
        name=name,
        database_down=all(p.database_down for p in pools),
        connections_closed=closed,
        wait_time=_merged([p.wait_time for p in pools]),
        usage_time=_merged([p.usage_time for p in pools]),
        connect_time=_merged([p.connect_time for p in pools]),
        **summed,
    )


def cluster_rows(cluster: ClusterStats, versions: Mapping[str, str]) -> list[dict[str, Any]]:
    """One row per host of a cluster pool, from its `ClusterStats`: the rows `HostBook`
    gives for one pool, plus the host's timeline, lag, reads, writes and fencing.
    `versions` maps a host's address to its server version, when known."""
    rows = []
    for h in cluster.hosts:
        p = h.pool
        if h.role == "down" or (p.database_down and not p.size):
            state = DOWN
        elif p.size:
            state = UP
        else:
            state = "unused"
        rows.append(
            {
                "address": h.label,
                "role": h.role,
                "primary": h.label == cluster.primary,
                "state": state,
                "connections": p.size,
                "in_use": p.in_use,
                "idle": p.idle,
                "server_version": versions.get(h.label),
                "timeline": h.timeline,
                "lag": None if h.lag is None else _finite(h.lag),
                "reads": h.reads,
                "writes": h.writes,
                "fenced": h.fenced,
                "demoted": h.demoted,
                "stale": h.role == "stale",
            }
        )
    return rows


# -- the JSON snapshot -----------------------------------------------------------------


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def snapshot(
    stats: PoolStats,
    *,
    now: float,
    health: Health,
    history: History,
    hosts: HostBook,
    events: Iterable[Mapping[str, Any]],
    since: float = 0.0,
    cluster: ClusterStats | None = None,
) -> dict[str, Any]:
    """The body of ``/api/pool``.

    Top level: the pool's gauges and counters (``size``, ``idle``, ``in_use``, ``waiting``,
    ``connecting``, ``checkouts``, ``timeouts``, ...), ``wait_time`` (the whole run's
    histogram: ``buckets`` of ``{"le": bound or null, "count"}``, ``count``, ``maximum``,
    ``p50``, ``p99``), and:

    - ``recent``: ``checkouts_per_s``, ``wait_p50``, ``wait_p99`` over the last seconds;
    - ``health``: ``state`` (``up``/``down``/``failing``), ``since``, ``reason``;
    - ``hosts``: a list of ``{"address", "host", "port", "role", "server_version",
      "state", "connections", "in_use"}``, one per server; for a cluster pool, the rows
      of `cluster_rows` instead;
    - ``cluster``: None for one pool; for a cluster pool (`stats` then adds up its hosts'
      pools), ``{"primary", "newest_timeline", "failovers", "fenced"}``;
    - ``history``: ``interval``, ``seconds``, ``samples`` and ``marks`` later than
      `since` (see `Sample` and `Mark`);
    - ``events``: recent log events, newest first.
    """
    h = stats.wait_time
    samples, marks = history.since(since)
    return {
        "time": now,
        "name": stats.name,
        "min_size": stats.min_size,
        "max_size": stats.max_size,
        "size": stats.size,
        "idle": stats.idle,
        "in_use": stats.in_use,
        "waiting": stats.waiting,
        "connecting": _connecting(stats),
        "checkouts": stats.checkouts,
        "timeouts": stats.timeouts,
        "failures": _failures(stats),
        "connections_created": stats.connections_created,
        "connections_lost": _lost(stats),
        "connect_errors": stats.connect_errors,
        "database_down": stats.database_down,
        "wait_time": {
            "buckets": [
                {"le": bound, "count": count}
                for bound, count in zip((*h.buckets, None), h.counts, strict=True)
            ],
            "count": h.count,
            "maximum": _finite(h.maximum),
            "p50": h.quantile(0.5),
            "p99": h.quantile(0.99),
        },
        "recent": history.recent(stats, now),
        "health": health.as_dict(stats),
        "hosts": (
            hosts.rows(health.state) if cluster is None else cluster_rows(cluster, hosts.versions())
        ),
        "cluster": None
        if cluster is None
        else {
            "primary": cluster.primary,
            "newest_timeline": cluster.newest_timeline,
            "failovers": cluster.failovers,
            "fenced": cluster.fenced,
        },
        "history": {
            "interval": SAMPLE_EVERY,
            "seconds": history.samples.maxlen,
            "samples": samples,
            "marks": marks,
        },
        "events": list(events),
    }
