# WARNING: this file is generated from src/pgfleet/_async/cluster.py by tools/gen_sync.py.
# Do not edit it: edit the source and run `python tools/gen_sync.py`.

"""`ClusterPool`: one pool object for a primary and its standbys.

This file is the source of truth for the threaded `ClusterPool` too
(``tools/gen_sync.py`` writes ``_sync/cluster.py``). It keeps one ordinary
`Pool` per host of a multi-host conninfo, unchanged, and adds the cluster's
duties around them; every decision (which host is primary, whether a server is
stale, which standby reads, what lag is too much) is made by
`pgfleet._core.cluster.ClusterState`, which does no I/O.
"""

from __future__ import annotations

import logging
import math
import os
import weakref
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self, Unpack, cast

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus

from pgfleet import _config as _defaults
from pgfleet._acompat import (
    CoreLock,
    Event,
    Workers,
    bounded,
    monotonic,
    sleep,
    wait_fd,
)
from pgfleet._config import CLUSTER_SETTINGS, PoolSettings, cluster_env_overrides
from pgfleet._core.cluster import (
    ClusterState,
    ClusterStats,
    ConnFacts,
    HostStats,
    WriteToken,
    parse_lsn,
    timeline_of_walfile,
)
from pgfleet._postgres import wire
from pgfleet._retry import TransactionOptions, TxSettings
from pgfleet._sync import tx as _tx
from pgfleet._sync.pool import Pool
from pgfleet._sync.postgres import ConnectionCallback
from pgfleet.errors import DatabaseUnavailable, PoolClosed, PoolTimeout

logger = logging.getLogger("pgfleet.cluster")

Conn = psycopg.Connection[Any]

#: The timeline of a writable server: exact, callable by any role (docs/clusters-facts.md).
_TIMELINE_QUERY = "SELECT pg_walfile_name(pg_current_wal_lsn())"
#: What a standby has replayed; NULL out of recovery (a promoted standby still reports
#: its last replayed position: only pg_is_in_recovery() says it was promoted).
_REPLAY_QUERY = "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text END"
#: A read-your-writes token: the insert position covers the commit just made, even with
#: ``synchronous_commit=off`` (where the write position may still be before it).
_TOKEN_QUERY = "SELECT pg_current_wal_insert_lsn()::text"
#: The primary's write position, sampled to measure the standbys' lag.
_POSITION_QUERY = "SELECT pg_current_wal_lsn()::text"
#: A probe's question on a pooled connection, one round trip: ``standby``, else the
#: timeline (as a WAL file name). Sent by `_first_value`, under a deadline.
_ROLE_QUERY = (
    b"SELECT CASE WHEN pg_is_in_recovery() THEN 'standby'"
    b" ELSE pg_walfile_name(pg_current_wal_lsn()) END"
)
#: How long a probe waits to borrow an idle connection of a standby's pool.
_PROBE_BORROW = 0.05
#: Parameters of a multi-host conninfo that the cluster pool takes over per host.
_CLUSTER_PARAMS = ("target_session_attrs", "load_balance_hosts")
#: SQLSTATEs saying the server lending this connection no longer is what it was.
_SHUT_DOWN = frozenset({"57P01", "57P02", "57P03"})
_DEMOTED = _SHUT_DOWN | {"25006"}


def split_conninfo(conninfo: str) -> list[tuple[str, str]]:
    """The per-host conninfos of a multi-host conninfo, with their labels (``host:port``).

    ``host``, ``hostaddr`` and ``port`` may list several values (a single ``port``
    applies to every host); ``target_session_attrs`` and ``load_balance_hosts`` are
    dropped: the cluster pool chooses the host.
    """
    params = conninfo_to_dict(conninfo)
    for name in _CLUSTER_PARAMS:
        params.pop(name, None)
    lists = {
        key: str(params[key]).split(",") for key in ("host", "hostaddr", "port") if key in params
    }
    count = max((len(values) for values in lists.values()), default=1)
    hosts: list[tuple[str, str]] = []
    for index in range(count):
        one = dict(params)
        for key, values in lists.items():
            if len(values) == 1:
                one[key] = values[0]
            elif len(values) == count:
                one[key] = values[index]
            else:
                raise ValueError(
                    f"conninfo lists {len(values)} values of {key!r} for {count} hosts"
                )
        host = one.get("host") or one.get("hostaddr") or "localhost"
        label = f"{host}:{one.get('port') or 5432}"
        hosts.append((make_conninfo("", **{k: v for k, v in one.items() if v is not None}), label))
    return hosts


class ClusterPool:
    """One pool for a primary and its standbys, in threaded programs.

    Built from a multi-host conninfo (``host=a,b,c port=5432,5433,5434``), it keeps
    one `Pool` per host (sizes and most settings apply to each) and lends:

    - for writes (the default), a connection to the primary, never to a server on a
      timeline older than the newest it has seen (fencing); during a failover, callers
      wait (within their timeout and `failover_grace`) for the new primary;
    - with ``read_only=True``, a connection to a standby whose replay lag is within
      `max_replica_lag`, spread across standbys, else to the primary; with
      ``after=token`` (see `write_token`), only to a server that replayed past it.

    Args:
        conninfo: a multi-host conninfo or URL; None reads ``DATABASE_URL``.
        kwargs: more connect arguments, for every host.
        failover_grace: seconds after losing the primary during which checkouts wait for
            a new one; after it they fail fast with `DatabaseUnavailable`.
        max_replica_lag: standbys lagging more seconds serve no reads (None: no bound).
        lag_interval: seconds between measurements of the standbys' replay positions.
        read_your_writes_wait: seconds a read with ``after=`` may wait for a standby to
            replay the token before it goes to the primary.
        configure: ``fn(conn)`` run on each new connection, after the role check.
        name: the pool's name; each host's pool is named ``name[host:port]``.
        open: open at construction (prefer ``with``).
        pool_options: any other `Pool` keyword (``min_size``, ``max_size``,
            ``timeout``...), applied to each host's pool.
    """

    def __init__(
        self,
        conninfo: str | None = None,
        *,
        kwargs: Mapping[str, Any] | None = None,
        failover_grace: float = 5.0,
        max_replica_lag: float | None = 10.0,
        lag_interval: float = 1.0,
        read_your_writes_wait: float = 1.0,
        configure: ConnectionCallback | None = None,
        connect_timeout: float = _defaults.CONNECT_TIMEOUT,
        timeout: float = _defaults.TIMEOUT,
        name: str | None = None,
        open: bool = False,
        **pool_options: Any,
    ) -> None:
        if conninfo is None:
            conninfo = os.environ.get("DATABASE_URL", "")
        for label, value in (
            ("failover_grace", failover_grace),
            ("lag_interval", lag_interval),
            ("read_your_writes_wait", read_your_writes_wait),
        ):
            if not (isinstance(value, int | float) and value >= 0 and math.isfinite(value)):
                raise ValueError(f"{label} must be a finite number >= 0, got {value!r}")
        if lag_interval <= 0:
            raise ValueError(f"lag_interval must be > 0, got {lag_interval!r}")
        if max_replica_lag is not None and not max_replica_lag >= 0:
            raise ValueError(f"max_replica_lag must be >= 0 or None, got {max_replica_lag!r}")
        for forbidden in ("manager", "open"):
            if forbidden in pool_options:
                raise TypeError(f"{forbidden!r} is not an option of a cluster pool")
        self.name = name or f"cluster-{id(self):x}"
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.lag_interval = lag_interval
        self.read_your_writes_wait = read_your_writes_wait
        self._kwargs = dict(kwargs or {})
        self._user_configure = configure
        split = split_conninfo(conninfo)
        self._conninfos = [info for info, _ in split]
        self.pools: tuple[Pool[Conn], ...] = tuple(
            Pool(
                info,
                kwargs=kwargs,
                configure=self._configure_for(index),
                connect_timeout=connect_timeout,
                timeout=timeout,
                name=f"{self.name}[{label}]",
                **pool_options,
            )
            for index, (info, label) in enumerate(split)
        )
        self._min_size = self.pools[0].min_size
        #: Hosts whose pool was quieted because they are stale (see _quiet_stale_pools).
        self._quiet: set[int] = set()
        self._state = ClusterState.of(
            [label for _, label in split], failover_grace, max_replica_lag
        )
        #: What each live connection's server said at connect (weak: dies with it).
        self._facts: weakref.WeakKeyDictionary[Conn, ConnFacts] = weakref.WeakKeyDictionary()
        #: Which host lent each connection `getconn` lent, and whether for reads.
        self._lent: dict[int, tuple[int, bool]] = {}
        self._lock = CoreLock()
        self._workers = Workers(self.name)
        self._primary_known = Event()
        self._wakeup = Event()
        self._discovering = False
        #: When discovery last elected a primary (the first write after it logs the delay).
        self._elected_at: float | None = None
        self._opened = False
        self._closed = False
        if open:
            self._open_now()

    @classmethod
    def from_env(
        cls,
        conninfo: str | None = None,
        *,
        prefix: str = "PGFLEET_",
        environ: Mapping[str, str] | None = None,
        **settings: Any,
    ) -> Self:
        """A cluster pool configured from the environment, as `Pool.from_env`.

        Where to connect: `conninfo`, else ``DATABASE_URL`` (a multi-host conninfo or
        URL; libpq's ``PG*`` variables fill in what it leaves out, but a host list in
        ``PGHOST`` is not split into hosts). Settings: the pool settings of
        `Pool.from_env` (``PGFLEET_MAX_SIZE``...), applied to each host's pool, and
        the cluster's own, in seconds: ``PGFLEET_FAILOVER_GRACE``,
        ``PGFLEET_MAX_REPLICA_LAG`` (or ``none``), ``PGFLEET_LAG_INTERVAL``,
        ``PGFLEET_READ_YOUR_WRITES_WAIT``. Keyword arguments win over the environment;
        a bad value raises ValueError naming the variable.
        """
        pool_settings = {k: v for k, v in settings.items() if k not in CLUSTER_SETTINGS}
        found = PoolSettings.env_overrides(prefix, environ, explicit=pool_settings)
        found.update(cluster_env_overrides(prefix, environ))
        if conninfo is None:
            conninfo = (os.environ if environ is None else environ).get("DATABASE_URL", "")
        build: Callable[..., Self] = cls  # the flavour's constructor
        return build(conninfo, **{**found, **settings})

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._opened else "new"
        hosts = ",".join(h.label for h in self._state.hosts)
        return f"<{type(self).__name__} {self.name!r} {state} hosts={hosts}>"

    @property
    def failover_grace(self) -> float:
        """Seconds after losing the primary during which checkouts wait for a new one."""
        return self._state.failover_grace

    # -- what a connection says at connect -------------------------------------------

    def _configure_for(self, host: int) -> ConnectionCallback:
        def configure(conn: Conn) -> None:
            self._learn(host, conn)
            if self._user_configure is not None:
                self._user_configure(conn)

        return configure

    def _learn(self, host: int, conn: Conn) -> None:
        """Record the role (and on a primary, the timeline) of a new connection's server;
        refuse a stale primary's at once."""
        timeline = None
        news = False
        standby = _is_standby(conn)
        if not standby:
            timeline = _timeline(conn)
        facts = ConnFacts(host, monotonic(), standby, timeline)
        self._facts[conn] = facts
        with self._lock:
            stale = timeline is not None and timeline < self._state.newest_timeline
            newest = self._state.newest_timeline
            if stale:
                self._state.judge_write(facts, facts.born_at)
                news = self._state.is_news_of_staleness(host)
                self._publish()
        if stale:
            if news:
                self._log_stale(host, timeline, newest)
            raise StaleServer(
                f"{self._state.hosts[host].label} is writable on timeline {timeline}, older"
                f" than timeline {newest} seen on another primary: refused"
            )

    def _log_stale(self, host: int, timeline: int | None, newest: int) -> None:
        self._wakeup.set()  # the monitor quiets the stale host's pool at once
        logger.error(
            "cluster pool %r: %s is a stale primary (writable on timeline %s, but timeline"
            " %s was seen on a primary): its connections are refused",
            self.name,
            self._state.hosts[host].label,
            timeline,
            newest,
        )

    def _publish(self) -> None:
        """Under the lock, after any change of the state: the event writers wait on says
        whether a primary is known (set while one is, cleared while none is)."""
        if self._state.primary is not None or self._closed:
            self._primary_known.set()
        else:
            self._primary_known.clear()

    # -- lifecycle -------------------------------------------------------------------

    def open(self, wait: bool = True, timeout: float = 30.0) -> None:
        """Open every host's pool and look for the primary; with `wait`, until found.

        Raises `PoolTimeout` when no primary is found within `timeout` (the pool
        stays open and keeps looking).
        """
        self._open_now()
        if wait:
            self.wait(timeout)

    def _open_now(self) -> None:
        if self._closed:
            raise PoolClosed(f"cluster pool {self.name!r} was closed and cannot be reopened")
        if self._opened:
            return
        self._opened = True
        for pool in self.pools:
            pool._open_now()
        self._discover()
        self._workers.spawn(self._monitor)

    def wait(self, timeout: float = 30.0) -> None:
        """Wait until a primary is known, or raise `PoolTimeout`."""
        if not self._primary_known.wait(timeout):
            raise PoolTimeout(
                f"cluster pool {self.name!r}: no primary found within {timeout:.3g} s"
                f" ({self._describe_hosts()})"
            )

    def close(self, timeout: float = 5.0) -> None:
        """Close every host's pool and stop the background work. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._wakeup.set()
        self._primary_known.set()  # waiters look again and see the pool closed
        for pool in self.pools:
            pool.close(timeout)
        self._workers.join(max(timeout, 1.0))

    @property
    def closed(self) -> bool:
        """True once `close` was called."""
        return self._closed

    def __enter__(self) -> Self:
        try:
            self.open(wait=True, timeout=self.timeout)
        except BaseException:
            self.close(timeout=0)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- lending ---------------------------------------------------------------------

    def connection(
        self,
        timeout: float | None = None,
        *,
        read_only: bool = False,
        after: WriteToken | None = None,
    ) -> ClusterGuard:
        """A context manager lending a connection: to the primary, or with `read_only`
        to a standby (see the class doc); `after` asks for a server that replayed past
        a `WriteToken`. Commits a block that ends cleanly, rolls back one that raises."""
        return ClusterGuard(self, timeout, read_only, after)

    def getconn(
        self,
        timeout: float | None = None,
        *,
        read_only: bool = False,
        after: WriteToken | None = None,
    ) -> Conn:
        """Borrow a connection (see `connection`); give it back with `putconn`."""
        if timeout is None:
            timeout = self.timeout
        deadline = monotonic() + timeout
        if read_only:
            host, conn = self._lend_read(deadline, timeout, after)
        else:
            host, conn = self._lend_write(deadline, timeout)
        self._lent[id(conn)] = (host, read_only)
        return conn

    def putconn(self, conn: Conn, error: BaseException | None = None) -> None:
        """Give back a connection borrowed with `getconn`; `error`, when the caller's
        work on it failed with one, tells whether the host is still what it was."""
        lent = self._lent.pop(id(conn), None)
        if lent is None:
            if self._closed:
                return
            raise ValueError(f"{conn!r} is not lent by cluster pool {self.name!r}")
        host, read_only = lent
        if error is not None or conn.broken or conn.closed:
            self._judge_failure(host, conn, error, read_only)
        self.pools[host].putconn(conn)

    def _judge_failure(
        self, host: int, conn: Conn, error: BaseException | None, read_only: bool
    ) -> None:
        """Role awareness: a connection that failed because its server is no longer the
        primary (read-only, shut down, gone) takes its host's older connections with it."""
        sqlstate = getattr(error, "sqlstate", None)
        if read_only:
            # A write refused on a connection lent for reads is the caller's mistake.
            demoted = sqlstate in _SHUT_DOWN
        else:
            demoted = sqlstate in _DEMOTED or (
                isinstance(error, pg_errors.FeatureNotSupported) and "during recovery" in str(error)
            )
        if not (demoted or conn.broken or conn.closed):
            return
        with self._lock:
            was_primary = self._state.lost(host, monotonic(), demoted=demoted)
            self._publish()
        if was_primary:
            logger.warning(
                "cluster pool %r: lost the primary %s (%s); looking for the new one",
                self.name,
                self._state.hosts[host].label,
                sqlstate or "connection lost",
            )
        # Every connection to that host made before this moment is suspect.
        self.pools[host].drain()
        self._discover()

    def _unreachable(self, host: int) -> None:
        """`host`'s pool could not lend (down, or not at once): mark it lost, rediscover."""
        with self._lock:
            self._state.lost(host, monotonic())
            self._publish()
        self._discover()

    def _lend_write(
        self, deadline: float, timeout: float, *, for_read: bool = False
    ) -> tuple[int, Conn]:
        """A connection to the primary, fenced; counted as a read when `for_read` (a
        read that fell back to the primary)."""
        while True:
            if self._closed:
                raise PoolClosed(f"cluster pool {self.name!r} is closed")
            now = monotonic()
            with self._lock:
                host = self._state.primary
                until = self._state.write_wait_until(now) if host is None else None
            if host is None:
                if until is None:
                    raise self._unavailable()
                self._discover()
                found = self._primary_known.wait(min(deadline, until) - now)
                if not found and monotonic() >= deadline:
                    raise self._timeout(timeout, "waited for a primary")
                continue
            pool = self.pools[host]
            try:
                conn = pool.getconn(max(deadline - now, 0.0))
            except DatabaseUnavailable:
                self._unreachable(host)
                continue
            if self._fit_for_writes(host, conn, for_read):
                return host, conn

    def _fit_for_writes(self, host: int, conn: Conn, for_read: bool = False) -> bool:
        """Fencing and role check of a connection about to be lent for writes; an unfit
        one is closed (and its host's standing updated)."""
        facts = self._facts.get(conn)
        if facts is None:  # made before the pool knew (cannot happen): learn now
            facts = ConnFacts(host, monotonic(), True, None)
        if facts.timeline is None:
            # Made while the server was a standby: it may have been promoted since. One
            # query, once in the connection's life.
            try:
                timeline = _timeline(conn)
            except psycopg.Error:
                timeline = None
            if timeline is not None:
                facts = ConnFacts(host, facts.born_at, False, timeline)
                self._facts[conn] = facts
        with self._lock:
            newest = self._state.newest_timeline
            verdict = self._state.judge_write(facts, monotonic())
            elected_at: float | None = None
            news = False
            if verdict == "ok":
                # Counted once, in this locked step, so a scrape never sees it move back.
                if for_read:
                    self._state.hosts[host].reads += 1
                else:
                    self._state.hosts[host].writes += 1
                elected_at, self._elected_at = self._elected_at, None
            else:
                news = verdict == "stale" and self._state.is_news_of_staleness(host)
                if verdict == "standby":
                    self._state.lost(host, monotonic(), demoted=True)
            self._publish()
        if verdict == "ok":
            if elected_at is not None:
                logger.debug(
                    "cluster pool %r: first write lent on %s %.1f ms after its election",
                    self.name,
                    self._state.hosts[host].label,
                    (monotonic() - elected_at) * 1000,
                )
            return True
        if verdict == "moved":
            self.pools[host].putconn(conn)  # unused, sound: back it goes
            return False
        if news:
            self._log_stale(host, facts.timeline, newest)
        conn.close()
        self.pools[host].putconn(conn)  # closed: the pool drops it
        self.pools[host].drain()
        self._discover()
        return False

    def _lend_read(
        self, deadline: float, timeout: float, after: WriteToken | None
    ) -> tuple[int, Conn]:
        min_lsn = after.lsn if after is not None else None
        with self._lock:
            readers = self._state.readers(monotonic(), min_lsn)
        for host in readers:
            pool = self.pools[host]
            try:
                # A standby that cannot lend at once is skipped, not waited for.
                conn = pool.getconn(max(min(deadline - monotonic(), 0.5), 0.0))
            except (PoolTimeout, PoolClosed):
                self._unreachable(host)
                continue
            if min_lsn is None or self._replayed(host, conn, min_lsn, deadline):
                with self._lock:
                    self._state.hosts[host].reads += 1
                return host, conn
            pool.putconn(conn)
        return self._lend_write(deadline, timeout, for_read=True)

    def _replayed(self, host: int, conn: Conn, lsn: int, deadline: float) -> bool:
        """Wait (up to `read_your_writes_wait`) for a standby to replay past `lsn`."""
        with self._lock:
            if self._state.replayed_past(host, lsn):
                return True
        give_up = min(deadline, monotonic() + self.read_your_writes_wait)
        delay = 0.002
        while True:
            try:
                replayed = _replay_lsn(conn)
            except psycopg.Error:
                return False
            now = monotonic()
            with self._lock:
                self._state.standby_at(host, replayed, now)
            if replayed is None or replayed >= lsn:
                return replayed is not None
            if now + delay > give_up:
                return False
            sleep(delay)
            delay = min(delay * 2, 0.05)

    def write_token(self, conn: Conn) -> WriteToken:
        """Commit the work done so far on a connection to the primary, and return a
        read-your-writes token for it: the primary's WAL position after the commit.

        Call it last in the block that writes::

            with pool.connection() as conn:
                conn.execute("INSERT ...")
                token = pool.write_token(conn)
            with pool.connection(read_only=True, after=token) as conn:
                ...  # sees the insert
        """
        if conn.info.transaction_status != TransactionStatus.IDLE:
            conn.commit()
        cursor = conn.execute(_TOKEN_QUERY)
        row = cursor.fetchone()
        if conn.info.transaction_status == TransactionStatus.INTRANS:
            conn.rollback()
        if row is None or row[0] is None:
            raise psycopg.ProgrammingError("write_token needs a connection to the primary")
        token = WriteToken(parse_lsn(row[0]))
        with self._lock:
            self._state.lag.primary_at(token.lsn, monotonic())
        return token

    def _unavailable(self) -> DatabaseUnavailable:
        return DatabaseUnavailable(
            f"cluster pool {self.name!r}: no primary for longer than failover_grace"
            f" ({self._state.failover_grace:.3g} s): {self._describe_hosts()};"
            " the checkout failed fast instead of waiting"
        )

    def _timeout(self, timeout: float, what: str) -> PoolTimeout:
        return PoolTimeout(
            f"cluster pool {self.name!r}: no connection within {timeout:.3g} s"
            f" ({what}; {self._describe_hosts()})"
        )

    def _describe_hosts(self) -> str:
        with self._lock:
            return ", ".join(
                f"{h.label} {h.role}" + (f" tl{h.timeline}" if h.timeline else "")
                for h in self._state.hosts
            )

    # -- discovery -------------------------------------------------------------------

    def _discover(self) -> None:
        """Start the discovery unless it runs (one at a time, whoever asks)."""
        if self._closed:
            return
        with self._lock:
            if self._discovering or self._state.primary is not None:
                return
            self._discovering = True
        self._workers.spawn(self._discovery)

    def _discovery(self) -> None:
        """Probe every host, round after round, until a primary is found."""
        try:
            while not self._closed:
                with self._lock:
                    if self._state.primary is not None:
                        return
                    hosts = [
                        index for index in range(len(self.pools)) if self._state.start_probe(index)
                    ]
                for host in hosts:
                    self._workers.spawn(self._probe, host)
                with self._lock:
                    delay = self._state.probe_delay(monotonic())
                self._primary_known.wait(delay)
        finally:
            with self._lock:
                self._discovering = False
            if self._state.primary is None and not self._closed:
                self._discover()  # lost again while we were leaving

    def _probe(self, host: int) -> None:
        """Ask `host` its role (and, writable, its timeline): on an idle connection of its
        pool when it was a standby (one round trip), else on a new connection."""
        started = monotonic()
        answer = self._probe_pooled(host)
        how = "pooled"
        if answer is None:
            how = "new"
            answer = self._probe_new(host)
        standby, timeline = answer if answer is not None else (None, None)
        now = monotonic()
        with self._lock:
            newest = self._state.newest_timeline
            lost_at = self._state.lost_at
            found = self._state.probed(host, now, standby=standby, timeline=timeline)
            state = self._state.hosts[host]
            news = state.role == "stale" and self._state.is_news_of_staleness(host)
            primary = self._state.primary
            if found:
                self._elected_at = now
            self._publish()
        logger.debug(
            "cluster pool %r: probe of %s (%s connection): %s in %.1f ms",
            self.name,
            self._state.hosts[host].label,
            how,
            "no answer" if standby is None else "standby" if standby else f"writable tl{timeline}",
            (now - started) * 1000,
        )
        if news:
            self._log_stale(host, timeline, newest)
        if found and primary is not None:
            logger.info(
                "cluster pool %r: primary is %s (timeline %s)%s",
                self.name,
                self._state.hosts[primary].label,
                self._state.hosts[primary].timeline,
                "" if lost_at is None else f", {(now - lost_at) * 1000:.0f} ms after the loss",
            )

    def _probe_pooled(self, host: int) -> tuple[bool, int | None] | None:
        """The role of a host last seen as a standby, asked on an idle connection of its
        pool: a promotion is seen one round trip after it, without a connect (a new
        backend costs milliseconds on a loaded server), and the connection, now known
        writable on its timeline, goes back to the pool for the writers woken by the
        election. None: no idle connection, or it failed (the caller connects anew)."""
        pool = self.pools[host]
        with self._lock:
            was_standby = self._state.hosts[host].role == "standby"
        if not was_standby or not pool._core.idle or pool._core.waiters:  # hints, unlocked
            return None
        try:
            conn = pool.getconn(min(self.connect_timeout, _PROBE_BORROW))
        except Exception:
            return None
        try:
            value = _first_value(conn, _ROLE_QUERY, self.connect_timeout)
            assert value is not None
            standby = value == b"standby"
            timeline = None if standby else timeline_of_walfile(value.decode())
            if timeline is not None:
                # A lower bound for the rest of the session (see _core.cluster): the
                # writer that takes this connection needs no query of its own.
                self._facts[conn] = ConnFacts(host, monotonic(), False, timeline)
            return standby, timeline
        except Exception:
            return None
        finally:
            # Back before the election is published: the first writer finds it idle.
            pool.putconn(conn)

    def _probe_new(self, host: int) -> tuple[bool, int | None] | None:
        """The role of `host` asked on a new connection (closed after); None: no answer."""
        try:
            conn = bounded(
                psycopg.Connection.connect(
                    self._conninfos[host],
                    connect_timeout=max(2, math.ceil(self.connect_timeout)),
                    **self._kwargs,
                ),
                self.connect_timeout,
            )
            try:
                standby = _is_standby(conn)
                return standby, None if standby else _timeline(conn)
            finally:
                conn.close()
        except Exception as exc:
            logger.debug(
                "cluster pool %r: probe of %s failed: %s",
                self.name,
                self._state.hosts[host].label,
                self.pools[host]._describe_short(exc),  # redacted as the pool's own lines
            )
            return None

    # -- lag and promotions ----------------------------------------------------------

    def _monitor(self) -> None:
        """Every `lag_interval`: sample the primary's position and each standby's replay
        position (a standby found out of recovery was promoted: probe it)."""
        while not self._closed:
            self._sample()
            if self._wakeup.wait(self.lag_interval) and not self._closed:
                self._wakeup.clear()  # woken early (a stale host): sample again now

    def _sample(self) -> None:
        with self._lock:
            primary = self._state.primary
            standbys = [
                index
                for index, h in enumerate(self._state.hosts)
                if h.role in ("standby", "unknown", "down") and index != primary
            ]
            stale = [
                index
                for index, h in enumerate(self._state.hosts)
                if h.role == "stale" and index != primary and self._state.start_probe(index)
            ]
        self._quiet_stale_pools()
        for host in stale:
            # Asked on a new connection, not through its pool (which would log a failed
            # attempt at INFO each time): a stale server rebuilt as a standby is seen
            # within `lag_interval`, as any standby is.
            self._probe(host)
        self._quiet_stale_pools()
        if primary is not None:
            position = self._query_on(primary, _POSITION_QUERY)
            if position is not None:
                with self._lock:
                    if self._state.primary == primary:
                        self._state.lag.primary_at(parse_lsn(position), monotonic())
        for host in standbys:
            if self._closed:
                return
            try:
                replayed = self._query_on(host, _REPLAY_QUERY, raise_errors=True)
            except Exception:
                continue
            with self._lock:
                self._state.standby_at(
                    host, None if replayed is None else parse_lsn(replayed), monotonic()
                )
                promoted = replayed is None and self._state.start_probe(host)
            if promoted:
                self._probe(host)  # a writable newer timeline becomes primary

    def _quiet_stale_pools(self) -> None:
        """A stale host's pool opens nothing while the host is stale (its attempts would
        all be refused, each logged and each a new backend on the stale server); the
        monitor probes the host instead. Its floor comes back when the host is no longer
        stale (rebuilt as a standby, or on a newer timeline)."""
        with self._lock:
            stale = {index for index, h in enumerate(self._state.hosts) if h.role == "stale"}
        for host in stale ^ self._quiet:
            pool = self.pools[host]
            if host in stale:
                self._quiet.add(host)
                pool.resize(0, pool.max_size)
                logger.debug(
                    "cluster pool %r: %s is stale: its pool opens no connection while it is",
                    self.name,
                    self._state.hosts[host].label,
                )
            else:
                self._quiet.discard(host)
                pool.resize(self._min_size, pool.max_size)

    def _query_on(self, host: int, query: str, raise_errors: bool = False) -> str | None:
        pool = self.pools[host]
        try:
            conn = pool.getconn(min(self.lag_interval, 1.0))
        except Exception:
            if raise_errors:
                raise
            return None
        try:
            cursor = conn.execute(query)
            row = cursor.fetchone()
            return None if row is None or row[0] is None else str(row[0])
        except Exception:
            if raise_errors:
                raise
            return None
        finally:
            pool.putconn(conn)

    # -- transactions (pgfleet._sync.tx) ---------------------------------------------

    def run_transaction(
        self,
        fn: _tx.TxFunction[Conn, *_tx.Ts, _tx.R],
        *args: *_tx.Ts,
        **options: Unpack[TransactionOptions],
    ) -> _tx.R:
        """`Pool.run_transaction` on the primary; with ``read_only=True`` (a
        ``READ ONLY`` transaction), on a standby as ``connection(read_only=True)`` would
        choose it. Each attempt borrows its own connection, so an attempt that found the
        primary gone is retried on the new one when that is safe."""
        door = _TxDoor(self, options.get("read_only") is True)
        return _tx.run_transaction(cast(Any, door), fn, args, TxSettings.build(**options))

    def transactional(self, **options: Unpack[TransactionOptions]) -> _tx.Transactional[Conn]:
        """`Pool.transactional` on the primary (``read_only=True``: a standby)."""
        door = _TxDoor(self, options.get("read_only") is True)
        return _tx.Transactional(cast(Any, door), TxSettings.build(**options))

    def transactions(self, **options: Unpack[TransactionOptions]) -> _tx.Attempts[Conn]:
        """`Pool.transactions` on the primary (``read_only=True``: a standby)."""
        door = _TxDoor(self, options.get("read_only") is True)
        return _tx.Attempts(cast(Any, door), TxSettings.build(**options))

    # -- administration --------------------------------------------------------------

    def drain(self) -> None:
        """Replace every connection of every host (idle now, lent when they come back)."""
        for pool in self.pools:
            pool.drain()

    def stats(self) -> ClusterStats:
        """A snapshot: the primary, the newest timeline, and each host's role and stats."""
        now = monotonic()
        pools = [pool.stats() for pool in self.pools]
        with self._lock:
            state = self._state
            hosts = tuple(
                HostStats(
                    label=h.label,
                    role=h.role,
                    timeline=h.timeline,
                    lag=state.lag_of(index, now) if h.role == "standby" else None,
                    fenced=h.fenced,
                    demoted=h.demoted,
                    reads=h.reads,
                    writes=h.writes,
                    pool=pools[index],
                )
                for index, h in enumerate(state.hosts)
            )
            return ClusterStats(
                name=self.name,
                primary=None if state.primary is None else state.hosts[state.primary].label,
                newest_timeline=state.newest_timeline,
                failovers=state.failovers,
                fenced=state.fenced,
                hosts=hosts,
            )


class _TxDoor:
    """What `pgfleet._sync.tx` asks of a pool, served by a cluster pool for one role."""

    __slots__ = ("_cluster", "_read_only", "_redact", "manager", "name", "timeout")

    def __init__(self, cluster: ClusterPool, read_only: bool) -> None:
        self._cluster = cluster
        self._read_only = read_only
        self.name = cluster.name
        self.timeout = cluster.timeout
        # The same for every host: one conninfo's secrets, one kind of connection.
        self.manager = cluster.pools[0].manager
        self._redact = cluster.pools[0]._redact

    def getconn(self, timeout: float | None = None) -> Conn:
        return self._cluster.getconn(timeout, read_only=self._read_only)

    def putconn(self, conn: Conn) -> None:
        self._cluster.putconn(conn)

    def _putconn_failed(self, conn: Conn, error: BaseException) -> None:
        # Called by pgfleet._sync.tx for an attempt that failed: a 25006 or 57P0x
        # inside a transaction function says what it says in a ``connection()`` block.
        self._cluster.putconn(conn, error)

    def _count_transaction_retry(self) -> None:
        # Counted in the stats of the primary's pool (of the first host's, between two).
        primary = self._cluster._state.primary
        self._cluster.pools[primary or 0]._count_transaction_retry()


class StaleServer(psycopg.OperationalError):
    """A connection was refused: its server is writable on an older timeline."""


class ClusterGuard:
    """Lends a cluster pool's connection for one ``with`` block."""

    __slots__ = ("_after", "_conn", "_pool", "_read_only", "_timeout")

    def __init__(
        self,
        pool: ClusterPool,
        timeout: float | None,
        read_only: bool,
        after: WriteToken | None,
    ) -> None:
        self._pool = pool
        self._timeout = timeout
        self._read_only = read_only
        self._after = after
        self._conn: Conn | None = None

    def __enter__(self) -> Conn:
        self._conn = self._pool.getconn(self._timeout, read_only=self._read_only, after=self._after)
        return self._conn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if exc is None and conn.info.transaction_status != TransactionStatus.IDLE:
            try:
                # As psycopg_pool does: a block that ends cleanly commits its transaction.
                conn.commit()
            except BaseException as error:
                self._pool.putconn(conn, error)
                raise
        self._pool.putconn(conn, exc)


def _is_standby(conn: Conn) -> bool:
    """In recovery? ``in_hot_standby`` comes free at connect (PG 14+); else one query."""
    status = conn.info.parameter_status("in_hot_standby")
    if status is not None:
        return status == "on"
    cursor = conn.execute("SELECT pg_is_in_recovery()")
    row = cursor.fetchone()
    return bool(row and row[0])


def _timeline(conn: Conn) -> int:
    """The timeline of a writable server (55000 on a standby)."""
    cursor = conn.execute(_TIMELINE_QUERY)
    row = cursor.fetchone()
    if conn.info.transaction_status == TransactionStatus.INTRANS:
        conn.rollback()
    assert row is not None
    return timeline_of_walfile(row[0])


def _replay_lsn(conn: Conn) -> int | None:
    cursor = conn.execute(_REPLAY_QUERY)
    row = cursor.fetchone()
    if conn.info.transaction_status == TransactionStatus.INTRANS:
        conn.rollback()
    return None if row is None or row[0] is None else parse_lsn(row[0])


def _first_value(conn: Conn, query: bytes, timeout: float) -> bytes | None:
    """The first value `query` returns, under a deadline in both flavours (psycopg's
    ``execute`` has none; see `pgfleet._postgres.wire`). A timeout leaves the
    connection mid-exchange: its pool then discards it."""
    pgconn = conn.pgconn
    exchange = wire.first_value(pgconn, query)
    deadline = monotonic() + timeout
    try:
        want = next(exchange)
        while True:
            remaining = deadline - monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no answer from the server within {timeout:.3g} s")
            ready = wait_fd(pgconn.socket, want, remaining)
            if ready:
                want = exchange.send(ready)
    except StopIteration as done:
        value: bytes | None = done.value
        return value
