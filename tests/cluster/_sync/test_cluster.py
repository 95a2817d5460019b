# WARNING: this file is generated from tests/cluster/_async/test_cluster.py by tools/gen_sync.py.
# Do not edit it: edit the source and run `python tools/gen_sync.py`.

"""`ClusterPool` on real replication sets: failover, fencing, role awareness, reads.

The async file is the source, the threaded one is generated (``python tools/gen_sync.py``).
Every write scenario runs under load from the write ledger (tests/support/ledger.py) and
checks every acknowledged write against the final primary at the end.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from pgfleet import ClusterPool
from pgfleet._acompat import Event, sleep
from pgfleet.errors import DatabaseUnavailable, PoolError, PoolTimeout
from support.flavours import Flavour, Task
from support.ledger import Ledger
from support.replication import Endpoint, PgNode, Replication, multi_host_conninfo

pytestmark = pytest.mark.pg

#: Writers and the size of each host's pool: at most MAX_SIZE calls are in flight.
WRITERS = 8
MAX_SIZE = 4


def _table() -> str:
    return f"ledger_{uuid.uuid4().hex[:10]}"


def cluster_pool(rs: Replication, nodes: list[PgNode] | None = None, **options: Any) -> Any:
    """A cluster pool over `nodes` (default: every node of `rs`, in creation order)."""
    options.setdefault("min_size", 1)
    options.setdefault("max_size", MAX_SIZE)
    options.setdefault("timeout", 10.0)
    options.setdefault("failover_grace", 5.0)
    options.setdefault("lag_interval", 0.1)
    return ClusterPool(rs.conninfo(nodes, connect_timeout=2), **options)


@dataclass
class Load:
    """Writers looping over ``pool.connection()`` + one ledger write, until stopped."""

    pool: Any
    ledger: Ledger
    stop: Event = field(default_factory=Event)
    #: Checkouts that failed (no write was sent), by exception class name.
    checkout_errors: Counter[str] = field(default_factory=Counter)
    tasks: list[Task[None]] = field(default_factory=list)

    def start(self, writers: int = WRITERS) -> None:
        self.tasks = [Task(self._writer, number) for number in range(writers)]

    def _writer(self, number: int) -> None:
        while not self.stop.is_set():
            try:
                with self.pool.connection(timeout=10.0) as conn:
                    try:
                        self.ledger.write(conn, number)
                    except psycopg.Error:
                        pass  # recorded by the ledger
            except PoolError as exc:
                self.checkout_errors[type(exc).__name__] += 1
                sleep(0.005)
            except psycopg.Error:
                sleep(0.005)  # the write's own error, recorded

    def finish(self) -> None:
        self.stop.set()
        for task in self.tasks:
            task.join(30.0)

    def failed_writes(self) -> int:
        return sum(1 for a in self.ledger.attempts if a.outcome != "acked")

    def acks_on(self, port: int) -> int:
        return sum(1 for a in self.ledger.acks() if a.port == port)

    def wait_acks(self, count: int, port: int) -> None:
        """Wait until `count` more writes are acked by the server on `port`."""
        target = self.acks_on(port) + count
        Flavour.wait_until(lambda: self.acks_on(port) >= target, timeout=15.0)


def test_crash_and_promote_fails_only_the_calls_in_flight(
    make_replication: Any,
) -> None:
    rs: Replication = make_replication(standbys=1)
    old, new = rs.primary, rs.standbys[0]
    rs.set_synchronous([new])  # an ack then means "on the standby too": nothing to lose
    ledger = Ledger(_table())
    ledger.create(old)
    with cluster_pool(rs) as pool:
        load = Load(pool, ledger)
        load.start()
        load.wait_acks(50, old.port)
        Flavour.blocking(rs.crash, old)
        Flavour.blocking(rs.promote, new)
        writable_at = time.monotonic()
        load.wait_acks(100, new.port)
        load.finish()
        stats = pool.stats()
    report = ledger.check(new)
    report.assert_ok()
    assert not report.lost, report
    assert not report.off_history, report
    # Callers that arrived during the switch waited for the new primary: no checkout
    # failed, and only the writes in flight on the dead primary did (at most one per
    # connection to it).
    assert not load.checkout_errors, load.checkout_errors
    assert load.failed_writes() <= MAX_SIZE, report
    first_new = min(a.at for a in ledger.acks() if a.port == new.port)
    assert first_new - writable_at < 2.0  # generous: ~20 ms on an idle machine
    assert stats.primary is not None
    assert stats.primary.endswith(f":{new.port}")
    assert stats.newest_timeline == 2
    assert stats.failovers == 1


def test_old_primary_back_writable_gets_no_write(
    make_replication: Any, caplog: pytest.LogCaptureFixture
) -> None:
    rs: Replication = make_replication(standbys=1)
    old, new = rs.primary, rs.standbys[0]
    ledger = Ledger(_table())
    ledger.create(old)
    with cluster_pool(rs) as pool:
        load = Load(pool, ledger)
        load.start()
        load.wait_acks(20, old.port)
        Flavour.blocking(rs.crash, old)
        crashed_at = time.monotonic()
        Flavour.blocking(rs.promote, new)
        load.wait_acks(50, new.port)
        # The old primary comes back writable on timeline 1 (listed first), and every
        # connection is made again.
        Flavour.blocking(rs.start_old_primary_as_writable, old)
        acks_on_old = load.acks_on(old.port)
        with caplog.at_level(logging.ERROR, logger="pgfleet.cluster"):
            pool.drain()
            load.wait_acks(100, new.port)
            # A pool opened now, old primary first: it must still choose the new one.
            fresh = cluster_pool(rs, [old, new], min_size=0)
            with fresh, fresh.connection() as conn:
                cur = conn.execute("SELECT inet_server_port()")
                assert cur.fetchone() == (new.port,)
        load.finish()
        stats = pool.stats()
        # Rebuilt as a standby, the old primary serves reads again.
        Flavour.blocking(rs.restart_as_standby, old, new)
        Flavour.wait_until(lambda: role_of(pool, old) == "standby", timeout=15.0)
    assert load.acks_on(old.port) == acks_on_old  # not one more write on the stale server
    report = ledger.check(new)
    # Replication is asynchronous here: the old primary's last acks before the crash may
    # be missing from the new one. None acknowledged after the crash may be off history.
    assert not [a for a in report.off_history if a.at > crashed_at], report
    [old_host] = [h for h in stats.hosts if h.label.endswith(f":{old.port}")]
    assert old_host.role == "stale"
    assert old_host.fenced >= 1
    assert stats.fenced >= 1
    errors = [r for r in caplog.records if "stale primary" in r.getMessage()]
    assert errors
    assert "timeline 1" in errors[0].getMessage()
    assert "timeline 2" in errors[0].getMessage()
    assert (
        len([r for r in errors if r.name == "pgfleet.cluster" and pool.name in r.getMessage()]) == 1
    )


def test_a_promotion_elsewhere_fences_a_primary_that_still_runs(
    make_replication: Any,
) -> None:
    """Split brain: the standby is promoted while the old primary keeps running. The pool
    notices within about one lag_interval (a standby out of recovery is probed) and moves
    every write to the newer timeline; the old primary's connections are refused."""
    rs: Replication = make_replication(standbys=1)
    old, new = rs.primary, rs.standbys[0]
    ledger = Ledger(_table())
    ledger.create(old)
    with cluster_pool(rs, lag_interval=0.1) as pool:
        load = Load(pool, ledger)
        load.start()
        load.wait_acks(20, old.port)
        Flavour.blocking(rs.promote, new)
        promoted_at = time.monotonic()
        load.wait_acks(50, new.port)
        load.finish()
        stats = pool.stats()
    late = [a for a in ledger.acks() if a.port == old.port and a.at > promoted_at + 1.0]
    assert not late, late
    assert stats.newest_timeline == 2
    assert stats.primary is not None
    assert stats.primary.endswith(f":{new.port}")
    assert role_of_stats(stats, old) == "stale"
    assert not load.checkout_errors, load.checkout_errors


def test_a_stale_hosts_pool_stays_quiet_until_rebuilt_as_standby(
    make_replication: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """While a host is stale its pool opens nothing (each attempt would be refused and
    logged); the pool comes back, and the host serves reads, once it is a standby."""
    rs: Replication = make_replication(standbys=1)
    old, new = rs.primary, rs.standbys[0]
    # Retries every 0.2 s at most: a pool that kept trying would show it at once.
    with cluster_pool(rs, reconnect_max_delay=0.2) as pool:
        Flavour.blocking(rs.crash, old)
        Flavour.blocking(rs.promote, new)
        for _ in range(50):  # the first attempts may meet the dead primary's connections
            try:
                if pool.run_transaction(port_of) == new.port:
                    break
            except psycopg.Error:
                sleep(0.05)
        assert host_stats(pool, new).role == "primary"
        Flavour.blocking(rs.start_old_primary_as_writable, old)
        # The old host's pool finds it stale on its next attempt, and is quieted.
        Flavour.wait_until(lambda: host_stats(pool, old).pool.min_size == 0, 15.0)
        assert host_stats(pool, old).role == "stale"
        attempts = host_stats(pool, old).pool.connect_errors
        label = f"[127.0.0.1:{old.port}]"
        with caplog.at_level(logging.DEBUG, logger="pgfleet"):
            # No event says "nothing happened": watch for 1 s (5 retries' worth).
            sleep(1.0)
        assert host_stats(pool, old).pool.connect_errors == attempts
        assert not [
            r
            for r in caplog.records
            if r.levelno >= logging.INFO and label in r.getMessage() and "attempt" in r.getMessage()
        ]
        assert host_stats(pool, old).role == "stale"  # still probed, still refused
        # Rebuilt as a standby: seen within lag_interval, its pool refilled, reads served.
        Flavour.blocking(rs.restart_as_standby, old, new)
        rebuilt_at = time.monotonic()
        Flavour.wait_until(lambda: host_stats(pool, old).role == "standby", 15.0)
        assert time.monotonic() - rebuilt_at < 5.0  # generous: lag_interval is 0.1 s
        Flavour.wait_until(lambda: host_stats(pool, old).pool.min_size == 1, 15.0)
        with pool.connection(read_only=True) as conn:
            cur = conn.execute("SELECT inet_server_port(), pg_is_in_recovery()")
            assert cur.fetchone() == (old.port, True)


def role_of_stats(stats: Any, node: PgNode) -> str:
    [host] = [h for h in stats.hosts if h.label.endswith(f":{node.port}")]
    return str(host.role)


def role_of(pool: Any, node: PgNode) -> str:
    return role_of_stats(pool.stats(), node)


def test_old_primary_back_as_standby_serves_reads(make_replication: Any) -> None:
    rs: Replication = make_replication(standbys=1)
    old, new = rs.primary, rs.standbys[0]
    rs.set_synchronous([new])  # nothing acknowledged can be lost in the crash
    ledger = Ledger(_table())
    ledger.create(old)
    with cluster_pool(rs) as pool:
        load = Load(pool, ledger)
        load.start()
        load.wait_acks(20, old.port)
        Flavour.blocking(rs.crash, old)
        Flavour.blocking(rs.promote, new)
        load.wait_acks(30, new.port)
        Flavour.blocking(rs.restart_as_standby, old, new)
        load.wait_acks(30, new.port)

        def old_is_standby() -> bool:
            return any(
                h.role == "standby" and h.label.endswith(f":{old.port}") for h in pool.stats().hosts
            )

        Flavour.wait_until(old_is_standby, timeout=10.0)
        with pool.connection(read_only=True) as conn:
            cur = conn.execute("SELECT inet_server_port(), pg_is_in_recovery()")
            assert cur.fetchone() == (old.port, True)
        load.finish()
    report = ledger.check(new)
    assert not report.off_history, report
    assert not load.checkout_errors, load.checkout_errors


def test_switchover(make_replication: Any) -> None:
    rs: Replication = make_replication(standbys=1)
    old, new = rs.primary, rs.standbys[0]
    ledger = Ledger(_table())
    ledger.create(old)
    with cluster_pool(rs) as pool:
        load = Load(pool, ledger)
        load.start()
        load.wait_acks(30, old.port)
        Flavour.blocking(rs.stop, old)  # clean: every commit reached the standby
        Flavour.blocking(rs.promote, new)
        load.wait_acks(50, new.port)
        load.finish()
    report = ledger.check(new)
    report.assert_ok()
    assert not report.lost, report
    assert not report.off_history, report
    assert not load.checkout_errors, load.checkout_errors
    assert load.failed_writes() <= MAX_SIZE, report


def test_a_write_refused_as_read_only_rediscovers(replication: Replication) -> None:
    """Role awareness: 25006 on a write means the host is no longer primary; its older
    connections go and the pool finds the primary again."""
    rs = replication
    with cluster_pool(rs) as pool:
        with pool.connection() as conn:
            cur = conn.execute("SELECT inet_server_port()")
            assert cur.fetchone() == (rs.primary.port,)

        def refused_write() -> None:
            # The server says read-only, as a demoted primary would.
            with pool.connection() as conn:
                conn.execute("SET TRANSACTION READ ONLY")
                conn.execute("CREATE TEMP TABLE t (x int)")

        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            refused_write()
        stats = pool.stats()
        [host] = [h for h in stats.hosts if h.label.endswith(f":{rs.primary.port}")]
        assert host.demoted == 1
        with pool.connection() as conn:  # found again at once
            cur = conn.execute("SELECT inet_server_port()")
            assert cur.fetchone() == (rs.primary.port,)


def test_a_write_refused_on_a_read_connection_is_the_callers_mistake(
    shared_replication: Replication,
) -> None:
    rs = shared_replication
    with cluster_pool(rs) as pool:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            write_on_a_read_connection(pool)
        stats = pool.stats()
    assert [h.demoted for h in stats.hosts] == [0, 0]
    assert stats.primary is not None
    assert stats.primary.endswith(f":{rs.primary.port}")


def test_transaction_helpers_choose_the_role(shared_replication: Replication) -> None:
    rs = shared_replication

    def where(conn: Any) -> tuple[int, bool]:
        cur = conn.execute("SELECT inet_server_port(), pg_is_in_recovery()")
        row = cur.fetchone()
        assert row is not None
        return row[0], row[1]

    with cluster_pool(rs) as pool:
        assert pool.run_transaction(where) == (rs.primary.port, False)
        standby = (rs.standbys[0].port, True)
        assert pool.run_transaction(where, read_only=True) == standby
        assert pool.transactional(read_only=True)(where)() == standby
        for attempt in pool.transactions():
            with attempt as conn:
                got = where(conn)
        assert got == (rs.primary.port, False)


def test_transaction_helpers_see_a_demoted_primary(replication: Replication) -> None:
    """Role awareness in the transaction helpers: a 25006 raised by the server inside a
    transaction function on a connection lent for writes drains that host and
    rediscovers, as in a ``connection()`` block (the error still reaches the caller: the
    server refused the write, nothing was committed)."""
    rs = replication

    def refused_write(conn: Any) -> None:
        # The server refuses the write as a demoted primary would.
        conn.execute("SET TRANSACTION READ ONLY")
        conn.execute("CREATE TEMP TABLE t (x int)")

    def attempts_form() -> None:
        for attempt in pool.transactions():
            with attempt as conn:
                refused_write(conn)

    with cluster_pool(rs) as pool:
        forms = [
            lambda: pool.run_transaction(refused_write),
            pool.transactional()(refused_write),
            attempts_form,
        ]
        for count, form in enumerate(forms, 1):
            before = host_stats(pool, rs.primary).pool
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                form()
            after = host_stats(pool, rs.primary)
            assert after.demoted == count
            # The connection that saw it is not lent again (the host was drained).
            closed = sum(after.pool.connections_closed.values())
            assert closed > sum(before.connections_closed.values())
            assert pool.run_transaction(port_of) == rs.primary.port  # found again


def host_stats(pool: Any, node: PgNode) -> Any:
    [host] = [h for h in pool.stats().hosts if h.label.endswith(f":{node.port}")]
    return host


def port_of(conn: Any) -> int:
    cur = conn.execute("SELECT inet_server_port()")
    row = cur.fetchone()
    assert row is not None
    return int(row[0])


def write_on_a_read_connection(pool: Any) -> None:
    with pool.connection(read_only=True) as conn:
        conn.execute("CREATE TEMP TABLE t (x int)")


def test_no_primary_for_longer_than_the_grace_fails_fast(
    replication: Replication,
) -> None:
    rs = replication
    old, new = rs.primary, rs.standbys[0]
    with cluster_pool(rs, failover_grace=0.5, timeout=5.0) as pool:
        with pool.connection() as conn:
            conn.execute("SELECT 1")
        Flavour.blocking(rs.crash, old)
        # The first caller finds the primary gone and waits out the grace, not its timeout.
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable):
            select_one(pool)
        assert time.monotonic() - started < 4.0
        # After the grace: at once.
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable):
            select_one(pool)
        assert time.monotonic() - started < 1.0
        # Reads still have a standby.
        with pool.connection(read_only=True) as conn:
            cur = conn.execute("SELECT inet_server_port()")
            assert cur.fetchone() == (new.port,)
        Flavour.blocking(rs.promote, new)

        def writable_again() -> bool:
            try:
                select_one(pool)
            except DatabaseUnavailable:
                return False
            return True

        deadline = time.monotonic() + 10.0
        while not writable_again():
            assert time.monotonic() < deadline, "the new primary was never found"
            sleep(0.05)


def select_one(pool: Any) -> None:
    with pool.connection() as conn:
        conn.execute("SELECT 1")


def test_standby_crash_under_read_load(make_replication: Any) -> None:
    rs: Replication = make_replication(standbys=2)
    first, second = rs.standbys
    served: Counter[int] = Counter()
    errors: list[BaseException] = []
    with cluster_pool(rs) as pool:
        stop = Event()

        def reader() -> None:
            while not stop.is_set():
                try:
                    with pool.connection(read_only=True) as conn:
                        cur = conn.execute("SELECT inet_server_port()")
                        row = cur.fetchone()
                        assert row is not None
                        served[row[0]] += 1
                except psycopg.Error as exc:
                    errors.append(exc)
                    sleep(0.005)

        tasks = [Task(reader) for _ in range(WRITERS)]
        Flavour.wait_until(lambda: served[first.port] > 20 and served[second.port] > 20)
        assert served[rs.primary.port] == 0  # standbys first
        Flavour.blocking(rs.crash, first)
        before = served[second.port]
        Flavour.wait_until(lambda: served[second.port] > before + 100, timeout=10.0)
        stop.set()
        for task in tasks:
            task.join(30.0)
    assert len(errors) <= MAX_SIZE, errors  # only reads in flight on the crashed standby


def test_lagging_standby_is_excluded_and_reads_see_own_writes(
    replication: Replication,
) -> None:
    rs = replication
    standby = rs.standbys[0]
    rs.primary.execute("CREATE TABLE ryw (id int PRIMARY KEY)", dbname="app")
    rs.primary.execute("GRANT ALL ON ryw TO app", dbname="app")
    with cluster_pool(rs, max_replica_lag=0.3, lag_interval=0.05) as pool:
        # Healthy: reads go to the standby, reads after a write too (once it replayed).
        with pool.connection(read_only=True) as conn:
            cur = conn.execute("SELECT inet_server_port()")
            assert cur.fetchone() == (standby.port,)
        for trial in range(-5, 0):
            with pool.connection() as conn:
                conn.execute("INSERT INTO ryw VALUES (%s)", (trial,))
                token = pool.write_token(conn)
            with pool.connection(read_only=True, after=token) as conn:
                cur = conn.execute(
                    "SELECT inet_server_port(), EXISTS (SELECT 1 FROM ryw WHERE id = %s)",
                    (trial,),
                )
                assert cur.fetchone() == (standby.port, True)
        Flavour.blocking(rs.set_apply_delay, standby, 1500)
        ports: Counter[int] = Counter()
        for trial in range(20):
            with pool.connection() as conn:
                conn.execute("INSERT INTO ryw VALUES (%s)", (trial,))
                token = pool.write_token(conn)
            with pool.connection(read_only=True, after=token) as conn:
                cur = conn.execute(
                    "SELECT inet_server_port(), EXISTS (SELECT 1 FROM ryw WHERE id = %s)",
                    (trial,),
                )
                row = cur.fetchone()
                assert row is not None
                ports[row[0]] += 1
                assert row[1], f"trial {trial}: own write not visible on port {row[0]}"

        # The standby fell more than max_replica_lag behind: excluded from reads.
        def excluded() -> bool:
            [host] = [h for h in pool.stats().hosts if h.label.endswith(f":{standby.port}")]
            return host.lag is not None and host.lag > 0.3

        Flavour.wait_until(excluded, timeout=10.0)
        with pool.connection(read_only=True) as conn:
            cur = conn.execute("SELECT inet_server_port()")
            assert cur.fetchone() == (rs.primary.port,)
        assert ports[rs.primary.port] > 0
        Flavour.blocking(rs.set_apply_delay, standby, 0)


def test_split_conninfo_never_concatenates() -> None:
    from pgfleet._sync.cluster import split_conninfo

    hosts = split_conninfo(
        "host=a,b port=1,2 dbname='x sslmode=disable' target_session_attrs=read-write"
    )
    assert [label for _, label in hosts] == ["a:1", "b:2"]
    info = psycopg.conninfo.conninfo_to_dict(hosts[1][0])
    assert info["dbname"] == "x sslmode=disable"
    assert "sslmode" not in info
    assert "target_session_attrs" not in info


def test_no_password_in_repr_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    secret = "s3cr3t-pw"
    info = multi_host_conninfo(
        [Endpoint.unused(), Endpoint.unused()], password=secret, connect_timeout=2
    )
    pool = ClusterPool(info, min_size=1, timeout=0.5, name="secretive")
    assert secret not in repr(pool)
    with caplog.at_level(logging.DEBUG, logger="pgfleet"):
        with pytest.raises(PoolTimeout) as raised:
            pool.open(wait=True, timeout=0.5)
        try:
            with pytest.raises(PoolError) as again:
                select_one(pool)
        finally:
            pool.close()
    assert secret not in str(raised.value)
    assert secret not in str(again.value)
    assert secret not in repr(pool.stats())
    assert caplog.records  # the probes' failures were logged...
    assert all(secret not in r.getMessage() for r in caplog.records)  # ...without it
