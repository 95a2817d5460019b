"""The server and libpq facts docs/clusters-facts.md records, pinned as tests.

What an ordinary role (``app``: no superuser, no pg_monitor) can learn about a server's role,
timeline and replay position, what writes get on a standby, and what ``target_session_attrs``
does with psycopg's bundled libpq on a multi-host conninfo. If a PostgreSQL or libpq upgrade
changes one of these, the pool's cluster support must be revisited: that is the point.
All on the session's shared primary and standby (nothing here changes the topology).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from support.cluster import PgCluster
from support.replication import Endpoint, HasPort, Replication, parse_lsn, timeline_of_walfile


def app(node: PgCluster, **params: Any) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(node.conninfo(connect_timeout=5, **params), autocommit=True)


def one(conn: psycopg.Connection[tuple[Any, ...]], query: str | sql.Composed, *params: Any) -> Any:
    row = conn.execute(query, params or None).fetchone()
    assert row is not None
    return row[0] if len(row) == 1 else row


def test_ordinary_role_learns_the_timeline_of_a_primary(shared_replication: Replication) -> None:
    primary = shared_replication.primary
    with app(primary) as conn:
        assert one(conn, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is False
        walfile = one(conn, "SELECT pg_walfile_name(pg_current_wal_lsn())")
        assert timeline_of_walfile(walfile) == primary.timeline() == 1
        # pg_control_checkpoint() is executable by PUBLIC (but lags after a promotion:
        # see docs/clusters-facts.md), pg_is_in_recovery() too.
        assert one(conn, "SELECT has_function_privilege('pg_control_checkpoint()', 'EXECUTE')")
        assert one(conn, "SELECT (pg_control_checkpoint()).timeline_id") == 1
        assert one(conn, "SELECT pg_is_in_recovery()") is False


def test_ordinary_role_on_a_standby(shared_replication: Replication) -> None:
    standby = shared_replication.standbys[0]
    with app(standby) as conn:
        for query in (
            "SELECT pg_walfile_name(pg_current_wal_lsn())",
            "SELECT pg_walfile_name(pg_last_wal_replay_lsn())",
        ):
            with pytest.raises(errors.ObjectNotInPrerequisiteState, match="recovery is in"):
                conn.execute(query)
        assert one(conn, "SELECT pg_is_in_recovery()") is True
        assert one(conn, "SELECT (pg_control_checkpoint()).timeline_id") == 1
        # pg_stat_wal_receiver: the row is there, its contents hidden from the app role.
        assert one(conn, "SELECT count(*) FROM pg_stat_wal_receiver") == 1
        hidden = one(conn, "SELECT (status, received_tli, sender_port) FROM pg_stat_wal_receiver")
        assert hidden == (None, None, None)
        # The replay position is public.
        receive, replay = one(
            conn, "SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text"
        )
        assert parse_lsn(receive) >= parse_lsn(replay) > 0
    [(status, tli)] = standby.execute("SELECT status, received_tli FROM pg_stat_wal_receiver")
    assert (status, tli) == ("streaming", 1)


def test_replication_view_hides_lag_from_ordinary_role(shared_replication: Replication) -> None:
    rs = shared_replication
    with app(rs.primary) as conn:
        rows = conn.execute(
            "SELECT application_name, state, replay_lsn, replay_lag FROM pg_stat_replication"
        ).fetchall()
    assert rows == [(f"node{rs.standbys[0].port}", None, None, None)]


def test_read_your_writes_by_lsn(shared_replication: Replication) -> None:
    """The token an ordinary role can use: the primary's WAL position after COMMIT, compared
    with the standby's ``pg_last_wal_replay_lsn()``."""
    rs = shared_replication
    table = sql.Identifier(f"ryw_{uuid.uuid4().hex[:10]}")
    with app(rs.primary) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (x int)").format(table))
        conn.execute("SET synchronous_commit = on")  # then pg_current_wal_lsn() covers it
        conn.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(table))
        token = one(conn, "SELECT pg_current_wal_lsn()::text")
    rs.wait_replayed(rs.standbys[0], parse_lsn(token))
    with app(rs.standbys[0]) as conn:
        assert one(conn, "SELECT pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn())", token) <= 0
        assert one(conn, sql.SQL("SELECT count(*) FROM {}").format(table)) == 1


def test_errors_of_writes_on_a_standby(shared_replication: Replication) -> None:
    with app(shared_replication.standbys[0]) as conn:
        with pytest.raises(errors.ReadOnlySqlTransaction) as exc:
            conn.execute("CREATE TABLE nope (x int)")
        assert exc.value.sqlstate == "25006"
        assert str(exc.value) == "cannot execute CREATE TABLE in a read-only transaction"
        with pytest.raises(errors.ReadOnlySqlTransaction, match="during recovery"):
            conn.execute("SELECT pg_current_xact_id()")
        for begin in ("BEGIN READ WRITE", "BEGIN; SET TRANSACTION READ WRITE"):
            with pytest.raises(errors.FeatureNotSupported) as feature:
                conn.execute(begin)
            assert feature.value.sqlstate == "0A000"
            assert str(feature.value) == "cannot set transaction read-write mode during recovery"
            conn.execute("ROLLBACK")
        # default_transaction_read_only can be turned off; transactions stay read-only.
        conn.execute("SET default_transaction_read_only = off")
        assert one(conn, "SHOW transaction_read_only") == "on"


def test_role_is_reported_at_connect(shared_replication: Replication) -> None:
    """``in_hot_standby`` (PG 14+) and ``default_transaction_read_only`` come as
    ParameterStatus with the connection: no query needed."""
    rs = shared_replication
    for node, hot in ((rs.primary, "off"), (rs.standbys[0], "on")):
        with app(node) as conn:
            assert conn.info.parameter_status("in_hot_standby") == hot
            assert conn.info.parameter_status("default_transaction_read_only") == "off"
            assert conn.info.server_version >= 140000


def _port_of(info: str, names: dict[int, str]) -> str:
    try:
        with psycopg.connect(info) as conn:
            return names[conn.info.port]
    except psycopg.OperationalError:
        return "fail"


def test_target_session_attrs_with_a_dead_first_host(shared_replication: Replication) -> None:
    """Nothing listens on the first port: refused at once, libpq moves on (connect_timeout
    does not come into it); then each attribute picks as documented."""
    rs = shared_replication
    primary, standby = rs.primary, rs.standbys[0]
    dead = Endpoint.unused()
    names = {primary.port: "primary", standby.port: "standby"}
    expected: dict[str, dict[str, str]] = {
        "dead,primary": {
            "any": "primary",
            "read-write": "primary",
            "primary": "primary",
            "prefer-standby": "primary",
            "read-only": "fail",
            "standby": "fail",
        },
        "dead,standby": {
            "any": "standby",
            "read-write": "fail",
            "primary": "fail",
            "prefer-standby": "standby",
            "read-only": "standby",
            "standby": "standby",
        },
        "standby,primary": {
            "any": "standby",
            "read-write": "primary",
            "primary": "primary",
            "prefer-standby": "standby",
            "read-only": "standby",
            "standby": "standby",
        },
        "primary,standby": {
            "any": "primary",
            "read-write": "primary",
            "primary": "primary",
            "prefer-standby": "standby",
            "read-only": "standby",
            "standby": "standby",
        },
    }
    nodes: dict[str, HasPort] = {"dead": dead, "primary": primary, "standby": standby}
    got: dict[str, dict[str, str]] = {}
    slowest = 0.0
    for order, wanted in expected.items():
        listed = [nodes[name] for name in order.split(",")]
        got[order] = {}
        for attrs in wanted:
            info = rs.conninfo(listed, target_session_attrs=attrs, connect_timeout=2)
            start = time.monotonic()
            got[order][attrs] = _port_of(info, names)
            slowest = max(slowest, time.monotonic() - start)
    assert got == expected
    assert slowest < 1.5  # a connect_timeout wait would take 2 s


def test_read_write_also_needs_default_read_only_off(shared_replication: Replication) -> None:
    """``read-write`` rejects a primary where the session is read-only by default;
    ``primary`` only asks "not in hot standby"."""
    rs = shared_replication
    role = f"ro_{uuid.uuid4().hex[:8]}"
    password = "ro-secret-pw"
    rs.primary.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)
        )
    )
    try:
        rs.primary.execute(
            sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(
                sql.Identifier(role)
            )
        )
        names = {rs.primary.port: "primary"}
        info = {"user": role, "password": password, "dbname": "postgres", "connect_timeout": 2}
        with psycopg.connect(rs.conninfo([rs.primary], **info)) as conn:
            assert conn.info.parameter_status("default_transaction_read_only") == "on"
        got = {
            attrs: _port_of(rs.conninfo([rs.primary], target_session_attrs=attrs, **info), names)
            for attrs in ("read-write", "primary", "read-only")
        }
        assert got == {"read-write": "fail", "primary": "primary", "read-only": "primary"}
    finally:
        rs.primary.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
