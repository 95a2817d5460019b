"""`ClusterPool.from_env` / `AsyncClusterPool.from_env`: the pool settings of `Pool.from_env`
for each host's pool, the cluster's own settings, and where to connect (DATABASE_URL)."""

from __future__ import annotations

from typing import Any

import pytest

from pgfleet import AsyncClusterPool, ClusterPool
from support.replication import Replication

FLAVOURS = [ClusterPool, AsyncClusterPool]
TWO_HOSTS = "host=127.0.0.1,127.0.0.1 port=5001,5002 dbname=app user=app password=s3cret"


@pytest.mark.parametrize("cls", FLAVOURS)
def test_cluster_and_pool_settings_come_from_the_environment(cls: Any) -> None:
    environ = {
        "DATABASE_URL": TWO_HOSTS,
        "PGFLEET_FAILOVER_GRACE": "7.5",
        "PGFLEET_MAX_REPLICA_LAG": "None",
        "PGFLEET_LAG_INTERVAL": " 0.25 ",
        "PGFLEET_READ_YOUR_WRITES_WAIT": "0",
        "PGFLEET_MIN_SIZE": "1",
        "PGFLEET_MAX_SIZE": "3",
        "PGFLEET_TIMEOUT": "4",
    }
    pool = cls.from_env(environ=environ)
    assert pool.failover_grace == 7.5
    assert pool._state.max_replica_lag is None
    assert pool.lag_interval == 0.25
    assert pool.read_your_writes_wait == 0.0
    assert pool.timeout == 4.0
    assert [p.max_size for p in pool.pools] == [3, 3]
    assert [h.label for h in pool.stats().hosts] == ["127.0.0.1:5001", "127.0.0.1:5002"]


@pytest.mark.parametrize("cls", FLAVOURS)
def test_keyword_arguments_win_over_the_environment(cls: Any) -> None:
    environ = {"PGFLEET_FAILOVER_GRACE": "7.5", "PGFLEET_MAX_SIZE": "3"}
    pool = cls.from_env(TWO_HOSTS, environ=environ, failover_grace=1.0, max_size=5)
    assert pool.failover_grace == 1.0
    assert [p.max_size for p in pool.pools] == [5, 5]
    default = cls.from_env(TWO_HOSTS, environ={})
    assert default.failover_grace == 5.0  # the constructor's default


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("PGFLEET_FAILOVER_GRACE", "soon", "expected a number of seconds"),
        ("PGFLEET_FAILOVER_GRACE", "none", "expected a number of seconds"),
        ("PGFLEET_FAILOVER_GRACE", "-1", ">= 0"),
        ("PGFLEET_FAILOVER_GRACE", "inf", "finite"),
        ("PGFLEET_MAX_REPLICA_LAG", "nan", "finite"),
        ("PGFLEET_MAX_REPLICA_LAG", "10s", "or 'none'"),
        ("PGFLEET_LAG_INTERVAL", "0", "> 0"),
        ("PGFLEET_READ_YOUR_WRITES_WAIT", "-0.5", ">= 0"),
        ("PGFLEET_MAX_SIZE", "0", "max_size"),
    ],
)
def test_a_bad_value_names_the_variable(variable: str, value: str, says: str) -> None:
    with pytest.raises(ValueError, match="is not valid") as caught:
        ClusterPool.from_env(TWO_HOSTS, environ={variable: value})
    assert f"{variable}={value!r}" in str(caught.value)
    assert says in str(caught.value)


def test_an_explicit_prefix_is_used() -> None:
    pool = ClusterPool.from_env(TWO_HOSTS, prefix="APP_DB_", environ={"APP_DB_FAILOVER_GRACE": "2"})
    assert pool.failover_grace == 2.0


@pytest.mark.pg
def test_from_env_finds_the_primary(shared_replication: Replication) -> None:
    rs = shared_replication
    environ = {
        "DATABASE_URL": rs.conninfo(connect_timeout=2),
        "PGFLEET_MIN_SIZE": "1",
        "PGFLEET_MAX_SIZE": "2",
    }
    with ClusterPool.from_env(environ=environ) as pool:
        with pool.connection() as conn:
            row = conn.execute("SELECT inet_server_port()").fetchone()
        assert row == (rs.primary.port,)
        with pool.connection(read_only=True) as conn:
            row = conn.execute("SELECT inet_server_port()").fetchone()
        assert row == (rs.standbys[0].port,)
