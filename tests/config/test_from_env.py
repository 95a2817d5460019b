"""`Pool.from_env` / `AsyncPool.from_env`: pool settings from PGFLEET_* variables, where to
connect from DATABASE_URL or libpq's PG* variables."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pgfleet import AsyncPool, Pool
from pgfleet._config import PoolSettings
from support.cluster import APP_DBNAME, APP_PASSWORD, APP_USER, HOST, PgCluster


def test_every_setting_can_come_from_the_environment() -> None:
    environ = {
        "PGFLEET_MIN_SIZE": "2",
        "PGFLEET_MAX_SIZE": " 20 ",
        "PGFLEET_TIMEOUT": "2.5",
        "PGFLEET_MAX_WAITING": "100",
        "PGFLEET_MAX_LIFETIME": "none",
        "PGFLEET_MAX_IDLE": "NONE",
        "PGFLEET_CHECK_AFTER_IDLE": "0",
        "PGFLEET_LEAK_TIMEOUT": "30",
        "PGFLEET_CONNECT_TIMEOUT": "3",
        "PGFLEET_RESET_TIMEOUT": "1e0",
        "PGFLEET_MAX_CONNECTING": "4",
        "PGFLEET_FAIL_FAST": "off",
        "PGFLEET_RECONNECT_DELAY": "0.05",
        "PGFLEET_RECONNECT_MAX_DELAY": "5",
        "PGFLEET_TRANSACTION_POOLER": "on",
        "UNRELATED": "x",
    }
    found = PoolSettings.env_overrides(environ=environ)
    assert found == {
        "min_size": 2,
        "max_size": 20,
        "timeout": 2.5,
        "max_waiting": 100,
        "max_lifetime": None,
        "max_idle": None,
        "check_after_idle": 0.0,
        "leak_timeout": 30.0,
        "connect_timeout": 3.0,
        "reset_timeout": 1.0,
        "max_connecting": 4,
        "fail_fast": False,
        "reconnect_delay": 0.05,
        "reconnect_max_delay": 5.0,
        "transaction_pooler": True,
    }
    PoolSettings(**found)  # a valid combination


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("PGFLEET_MAX_SIZE", "lots", "expected int or 'none'"),
        ("PGFLEET_MIN_SIZE", "2.5", "expected int"),
        ("PGFLEET_MIN_SIZE", "none", "expected int"),
        ("PGFLEET_TIMEOUT", "30s", "expected float"),
        ("PGFLEET_FAIL_FAST", "maybe", "expected bool"),
        ("PGFLEET_TRANSACTION_POOLER", "pgbouncer", "expected bool"),
        ("PGFLEET_TIMEOUT", "-1", "timeout must be > 0 seconds, got -1.0"),
        ("PGFLEET_TIMEOUT", "nan", "timeout must be > 0 seconds"),
        ("PGFLEET_MAX_SIZE", "0", "max_size must be >= 1, got 0"),
        ("PGFLEET_MAX_WAITING", "-3", "max_waiting must be >= 0, got -3"),
        ("PGFLEET_CHECK_AFTER_IDLE", "-0.5", "check_after_idle must be >= 0 seconds"),
        ("PGFLEET_MAX_CONNECTING", "0", "max_connecting must be >= 1"),
    ],
)
def test_a_bad_value_names_the_variable_the_value_and_what_was_expected(
    variable: str, value: str, expected: str
) -> None:
    with pytest.raises(ValueError) as caught:
        PoolSettings.env_overrides(environ={variable: value})
    message = str(caught.value)
    assert message.startswith(f"{variable}={value!r} is not valid: ")
    assert expected in message


def test_a_bad_combination_names_the_variables_involved() -> None:
    environ = {"PGFLEET_MIN_SIZE": "5", "PGFLEET_MAX_SIZE": "2"}
    with pytest.raises(ValueError) as caught:
        Pool.from_env(environ=environ)
    message = str(caught.value)
    assert "max_size must be >= min_size" in message
    assert "PGFLEET_MIN_SIZE='5'" in message
    assert "PGFLEET_MAX_SIZE='2'" in message


def test_a_bad_combination_with_an_argument_names_only_the_variable() -> None:
    with pytest.raises(ValueError) as caught:
        Pool.from_env(environ={"PGFLEET_MAX_SIZE": "2"}, min_size=5)
    assert str(caught.value).endswith("(from the environment: PGFLEET_MAX_SIZE='2')")


def test_arguments_win_over_the_environment_and_the_prefix_is_yours() -> None:
    environ = {"MYAPP_DB_MIN_SIZE": "3", "MYAPP_DB_TIMEOUT": "9", "PGFLEET_TIMEOUT": "1"}
    pool = Pool.from_env(prefix="MYAPP_DB_", environ=environ, timeout=4.0, max_size=6)
    assert (pool.settings.min_size, pool.settings.max_size, pool.settings.timeout) == (3, 6, 4.0)


@pytest.mark.parametrize("pool_class", [Pool, AsyncPool])
def test_transaction_pooler_from_the_environment(pool_class: Any) -> None:
    environ = {"DATABASE_URL": "postgresql://bouncer.test:6432/db"}
    pool = pool_class.from_env(environ={**environ, "PGFLEET_TRANSACTION_POOLER": "1"})
    assert pool.settings.transaction_pooler is True
    assert pool.manager.transaction_pooler is True
    assert pool.manager._connect_kwargs["prepare_threshold"] is None
    assert pool_class.from_env(environ=environ).manager.transaction_pooler is False
    # An argument wins over the environment.
    pool = pool_class.from_env(
        environ={**environ, "PGFLEET_TRANSACTION_POOLER": "yes"}, transaction_pooler=False
    )
    assert pool.manager.transaction_pooler is False


@pytest.mark.parametrize("pool_class", [Pool, AsyncPool])
def test_database_url_comes_from_the_given_environment_only(
    pool_class: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://process-env.test/db")
    pool = pool_class.from_env(environ={"DATABASE_URL": "postgresql://given.test/db"})
    assert pool.manager.target.params["host"] == "given.test"
    # A given environment without DATABASE_URL does not fall back on the process's.
    pool = pool_class.from_env(environ={})
    assert "host" not in pool.manager.target.params
    # Without `environ`, the process's environment is read.
    pool = pool_class.from_env()
    assert pool.manager.target.params["host"] == "process-env.test"


def test_from_env_connects_with_database_url(
    pg: PgCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", pg.url())
    monkeypatch.setenv("PGFLEET_MIN_SIZE", "2")
    monkeypatch.setenv("PGFLEET_TIMEOUT", "5")
    with Pool.from_env() as pool, pool.connection() as conn:
        assert conn.execute("SELECT current_user").fetchone() == (APP_USER,)
        assert pool.stats().min_size == 2


async def test_without_database_url_libpqs_pg_variables_apply(
    pg: PgCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "PGHOST": HOST,
        "PGPORT": str(pg.port),
        "PGUSER": APP_USER,
        "PGPASSWORD": APP_PASSWORD,
        "PGDATABASE": APP_DBNAME,
        "PGAPPNAME": "from-pg-env",
    }.items():
        monkeypatch.setenv(name, value)
    async with AsyncPool.from_env(min_size=1, timeout=5) as pool, pool.connection() as conn:
        cursor = await conn.execute("SELECT current_setting('application_name')")
        assert await cursor.fetchone() == ("from-pg-env",)


def test_the_readme_example_runs(pg: PgCluster) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Configuration and TLS", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", block],
        env={**os.environ, "DATABASE_URL": pg.url()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no TLS (sslmode=prefer): not encrypted")
    assert "[local connection]" in result.stdout
