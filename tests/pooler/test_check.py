"""``pgfleet check`` against PgBouncer and straight against the server: the pooler report and
the connection budget; and a pool refused with "too many clients" says so and points at it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import psycopg
import pytest

from pgfleet import Pool, PoolTimeout
from support.cluster import APP_PASSWORD, ClusterFactory, PgCluster
from support.pgbouncer import PgBouncer

from .conftest import BouncerFactory


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m pgfleet check ...`` without the caller's libpq environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "pgfleet", "check", "--timeout", "10", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def check_json(*args: str) -> dict[str, Any]:
    result = run_check("--json", *args)
    assert result.returncode == 0, result.stderr
    assert APP_PASSWORD not in result.stdout + result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_through_pgbouncer_the_transaction_pooler_is_reported(bouncer: PgBouncer) -> None:
    report = check_json(bouncer.conninfo(), "--replicas", "4", "--max-size", "10")
    pooler = report["pooler"]
    assert pooler["detected"] is True
    assert pooler["transaction_pooling"] is True
    assert pooler["announced_pid"] != pooler["server_pid"]
    assert "transaction_pooler=True" in pooler["summary"]
    budget = report["budget"]
    assert budget["available"] is True
    assert budget["behind_pooler"] is True
    assert budget["needed"] == 40
    assert budget["fits_now"] is None  # the client connections go to the pooler
    assert budget["max_connections"] > 0


def test_a_session_pooler_is_not_called_a_transaction_pooler(
    bouncer_cluster: PgCluster, make_bouncer: BouncerFactory
) -> None:
    session = make_bouncer(bouncer_cluster, pool_mode="session", default_pool_size=4)
    pooler = check_json(session.conninfo())["pooler"]
    assert pooler["detected"] is True
    assert pooler["transaction_pooling"] is None  # not seen
    assert "not seen" in pooler["summary"]


def test_straight_to_the_server_the_budget(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(max_connections=20)
    others = [psycopg.connect(cluster.conninfo(application_name="billing")) for _ in range(3)]
    try:
        report = check_json(cluster.conninfo(), "--replicas", "3", "--max-size", "5")
        crowded = check_json(cluster.conninfo(), "--replicas", "3", "--max-size", "6")
        human = run_check(
            cluster.conninfo(), "--replicas", "2", "--max-size", "20", "--server-cores", "8"
        )
    finally:
        for conn in others:
            conn.close()
    assert report["pooler"]["detected"] is False
    budget = report["budget"]
    assert budget["max_connections"] == 20
    assert budget["superuser_reserved_connections"] == 3
    assert budget["usable"] == 17
    # The three others and the check's own connection.
    assert budget["in_use_by_application"]["billing"] == 3
    assert budget["in_use"] == 4
    assert budget["free"] == 13
    assert budget["needed"] == 15
    assert budget["fits_now"] is False
    assert budget["fits_when_idle"] is True
    assert any("do not fit" in warning for warning in report["warnings"])
    assert crowded["budget"]["fits_when_idle"] is False
    suggestion = budget["suggestion"]
    assert "HikariCP" in suggestion["source"]
    assert "About-Pool-Sizing" in suggestion["source"]
    # The human report: the slots, who uses them, the verdict and the sourced suggestion.
    assert human.returncode == 0, human.stderr
    text = human.stdout
    assert "max_connections 20, 3 reserved" in text
    assert "billing 3" in text
    assert "2 x max_size 20 = 40 connections: do NOT fit" in text
    assert "about 17 busy connections server-wide = (8 cores x 2) + 1 spindle" in text
    assert "HikariCP" in text
    assert "max_size about 9 each" in text


def test_replicas_and_max_size_go_together() -> None:
    result = run_check("host=127.0.0.1 port=1", "--replicas", "3")
    assert result.returncode == 2
    assert "--replicas and --max-size go together" in result.stderr


def test_a_pool_refused_with_too_many_clients_points_at_the_budget(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(max_connections=5)  # 3 reserved for superusers: 2 for the rest
    taken = [psycopg.connect(cluster.conninfo()) for _ in range(2)]
    try:
        pool = Pool(cluster.conninfo(), min_size=1, connect_timeout=2, name="crowded")
        with pytest.raises(PoolTimeout) as caught:
            pool.open(wait=True, timeout=1.0)
        pool.close()
    finally:
        for conn in taken:
            conn.close()
    message = str(caught.value)
    assert "no free connection slots (max_connections)" in message
    assert "pgfleet check --replicas N --max-size M" in message
    assert APP_PASSWORD not in message
