"""Tests of the replication fixture itself (tests/support/replication.py) on real servers.

The assertions are about what the servers say (recovery state, timeline, rows), never about
how long a step took beyond generous bounds. Tests that change the topology build their own
primary and standby (about 1 s); the others share the session's pair.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict

from support.cluster import APP_PASSWORD, ClusterError, PgCluster
from support.replication import (
    PATIENCE,
    Endpoint,
    Replication,
    format_lsn,
    multi_host_conninfo,
    parse_lsn,
    timeline_of_walfile,
)

from .conftest import ReplicationFactory


def app(node: PgCluster, **params: Any) -> psycopg.Connection[tuple[Any, ...]]:
    """An autocommit connection as the ordinary ``app`` role."""
    return psycopg.connect(node.conninfo(connect_timeout=5, **params), autocommit=True)


class Table:
    """A one-column table of ints with a name of its own (the shared pair is shared)."""

    def __init__(self, rs: Replication) -> None:
        self.name = sql.Identifier(f"t_{uuid.uuid4().hex[:10]}")
        with app(rs.primary) as conn:
            conn.execute(sql.SQL("CREATE TABLE {} (x int PRIMARY KEY)").format(self.name))

    def insert(self, node: PgCluster, *values: int) -> None:
        with app(node) as conn:
            for v in values:
                conn.execute(sql.SQL("INSERT INTO {} VALUES (%s)").format(self.name), [v])

    def rows(self, node: PgCluster) -> list[int]:
        with app(node) as conn:
            query = sql.SQL("SELECT x FROM {} ORDER BY x").format(self.name)
            return [r[0] for r in conn.execute(query).fetchall()]


def test_standby_replicates_and_refuses_writes(shared_replication: Replication) -> None:
    rs = shared_replication
    primary, standby = rs.primary, rs.standbys[0]
    assert [primary.in_recovery(), standby.in_recovery()] == [False, True]
    assert primary.timeline() == standby.timeline() == 1
    t = Table(rs)
    t.insert(primary, 1, 2)  # synchronous_commit=off: wait_replayed must see them anyway
    rs.wait_replayed(standby)
    assert t.rows(standby) == [1, 2]
    [(status, sender_port)] = standby.execute(
        "SELECT status, sender_port FROM pg_stat_wal_receiver"
    )
    assert (status, sender_port) == ("streaming", primary.port)
    with pytest.raises(errors.ReadOnlySqlTransaction):
        t.insert(standby, 3)
    # A read-write multi-host connection skips the standby listed first.
    with psycopg.connect(rs.conninfo([standby, primary], target_session_attrs="read-write")) as c:
        assert c.info.port == primary.port


def test_apply_delay_is_visible(shared_replication: Replication) -> None:
    rs = shared_replication
    primary, standby = rs.primary, rs.standbys[0]
    delay = 0.5
    t = Table(rs)
    rs.wait_replayed(standby)
    rs.set_apply_delay(standby, int(delay * 1000))
    try:
        with app(standby) as conn:
            assert conn.execute("SHOW recovery_min_apply_delay").fetchone() == ("500ms",)
        with app(primary) as conn:
            conn.execute("SET synchronous_commit = on")
            query = sql.SQL("INSERT INTO {} VALUES (1) RETURNING clock_timestamp()")
            written = conn.execute(query.format(t.name)).fetchone()
            target = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert written is not None
        assert target is not None
        # Server clocks (one machine): the standby replays the commit no earlier than its
        # commit time + delay, whatever the load; it receives the WAL long before.
        samples: list[tuple[bool, bool, float]] = []
        probe = sql.SQL(
            "SELECT pg_last_wal_receive_lsn() >= %s::pg_lsn, EXISTS (SELECT FROM {}),"
            " extract(epoch FROM clock_timestamp() - %s)"
        ).format(t.name)
        deadline = time.monotonic() + PATIENCE
        with app(standby) as conn:
            while time.monotonic() < deadline:
                row = conn.execute(probe, [target[0], written[0]]).fetchone()
                assert row is not None
                samples.append((row[0], row[1], float(row[2])))
                if row[1]:
                    break
                time.sleep(0.01)
        assert samples[-1][1], "the row was never replayed"
        assert samples[-1][2] >= delay
        assert any(received and not visible for received, visible, _ in samples)
        assert all(not visible for _, visible, age in samples if age < delay)
    finally:
        rs.set_apply_delay(standby, 0)
    t.insert(primary, 2)
    rs.wait_replayed(standby, timeout=10 * delay)
    assert t.rows(standby) == [1, 2]


def test_set_synchronous_names_a_sync_standby(shared_replication: Replication) -> None:
    rs = shared_replication
    standby = rs.standbys[0]
    try:
        rs.set_synchronous([standby])
        [(name, state)] = rs.primary.execute(
            "SELECT application_name, sync_state FROM pg_stat_replication"
        )
        assert (name, state) == (f"node{standby.port}", "sync")
    finally:
        rs.set_synchronous([])
    assert rs.primary.execute("SHOW synchronous_standby_names") == [("",)]


def test_promote_running_standby(replication: Replication) -> None:
    """Promoting while the primary still runs: two writable servers, told apart by timeline;
    a session opened on the standby before the promotion can write after it."""
    rs = replication
    old, standby = rs.primary, rs.standbys[0]
    t = Table(rs)
    t.insert(old, 1)
    rs.wait_replayed(standby)
    with app(standby) as session:
        assert session.info.parameter_status("in_hot_standby") == "on"
        assert rs.promote(standby) < PATIENCE
        assert rs.primary is standby
        assert rs.standbys == [old]
        # The server reports the change with the answer to the next query.
        assert session.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        assert session.info.parameter_status("in_hot_standby") == "off"
        # Promoted, it still reports its last replay position (a primary that never was
        # a standby says NULL): only pg_is_in_recovery() shows the promotion.
        [replayed] = session.execute("SELECT pg_last_wal_replay_lsn()").fetchone() or [None]
        assert replayed is not None
        session.execute(sql.SQL("INSERT INTO {} VALUES (2)").format(t.name))
    with app(old) as conn:
        assert conn.execute("SELECT pg_last_wal_replay_lsn()").fetchone() == (None,)
    assert (old.timeline(), standby.timeline()) == (1, 2)
    t.insert(old, 3)  # the old primary never heard of the promotion
    assert t.rows(standby) == [1, 2]
    assert t.rows(old) == [1, 3]


def test_crash_promote_then_old_primary_back_writable(replication: Replication) -> None:
    rs = replication
    old, new = rs.primary, rs.standbys[0]
    t = Table(rs)
    t.insert(old, 1)
    rs.wait_replayed(new)
    rs.crash(old)
    assert not old.is_running()
    rs.promote(new)
    assert new.timeline() == 2
    [(parent, switch_lsn)] = new.timeline_history()
    assert parent == 1
    assert switch_lsn > 0
    t.insert(new, 2)
    assert t.rows(new) == [1, 2]

    rs.start_old_primary_as_writable(old)
    assert rs.primary is new
    assert not old.in_recovery()
    assert old.timeline() == 1 < new.timeline()
    # The danger: a read-write multi-host connection takes the first writable host listed.
    with psycopg.connect(rs.conninfo([old, new], target_session_attrs="read-write")) as conn:
        assert conn.info.port == old.port
    t.insert(old, 3)
    assert t.rows(old) == [1, 3]
    assert t.rows(new) == [1, 2]
    # A node configured as a standby is refused as an "old primary".
    old.stop()
    (old.data_dir / "standby.signal").touch()
    with pytest.raises(ClusterError, match="configured as a standby"):
        rs.start_old_primary_as_writable(old)


def test_old_primary_back_as_standby(replication: Replication) -> None:
    rs = replication
    old, new = rs.primary, rs.standbys[0]
    t = Table(rs)
    t.insert(old, 1)
    rs.wait_replayed(new)
    rs.crash(old)
    rs.promote(new)
    rs.start_old_primary_as_writable(old)
    t.insert(old, 99)  # written on the abandoned timeline: must not survive
    t.insert(new, 2)
    port = old.port
    rs.restart_as_standby(old, new)
    assert old.port == port
    assert old.in_recovery()
    assert old.timeline() == new.timeline() == 2
    t.insert(new, 3)
    rs.wait_replayed(old)
    assert t.rows(old) == [1, 2, 3]
    with pytest.raises(errors.ReadOnlySqlTransaction):
        t.insert(old, 4)


def test_second_standby_follows_promoted_primary(make_replication: ReplicationFactory) -> None:
    rs = make_replication(standbys=2)
    old, s1, s2 = rs.nodes
    assert rs.standbys == [s1, s2]
    t = Table(rs)
    t.insert(old, 1)
    rs.wait_replayed(s1)
    rs.wait_replayed(s2)
    rs.crash(old)
    rs.promote(s1)
    rs.follow(s2, s1)
    assert s2.in_recovery()
    assert s2.timeline() == 2
    t.insert(s1, 2)
    rs.wait_replayed(s2)
    assert t.rows(s2) == [1, 2]


def test_multi_host_conninfo_is_built_safely() -> None:
    nodes = [Endpoint(5433), Endpoint(5434)]
    info = multi_host_conninfo(nodes, target_session_attrs="read-write", connect_timeout=2)
    params = conninfo_to_dict(info)
    assert params["host"] == "127.0.0.1,127.0.0.1"
    assert params["port"] == "5433,5434"
    assert params["target_session_attrs"] == "read-write"
    assert params["password"] == APP_PASSWORD
    # A value cannot smuggle in another parameter, and None drops a default.
    params = conninfo_to_dict(multi_host_conninfo(nodes, dbname="x sslmode=disable", password=None))
    assert params["dbname"] == "x sslmode=disable"
    assert "sslmode" not in params
    assert "password" not in params
    with pytest.raises(ValueError):
        multi_host_conninfo([])


def test_lsn_and_walfile_helpers() -> None:
    assert parse_lsn("16/B374D848") == 0x16B374D848
    assert format_lsn(parse_lsn("0/3000028")) == "0/3000028"
    assert parse_lsn("1/0") > parse_lsn("0/FFFFFFFF")
    assert timeline_of_walfile("0000000A0000000000000003") == 10
    with pytest.raises(ValueError):
        timeline_of_walfile("00000001")
