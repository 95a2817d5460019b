"""``transaction_pooler``: what it changes and refuses at construction (nothing sent, no
server), the session-feature words, the watch that notices a pooler, and the hints for a
server or pooler that is full. No server needed."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import pytest

from pgfleet import AsyncPool, AsyncPostgresManager, Pool, PostgresManager
from pgfleet._postgres.pooler import Finding, PoolerWatch, session_feature
from pgfleet.tls import connect_error_hint

#: Nothing listens here, and nothing connects: the pools below are never opened.
NOWHERE = "host=127.0.0.1 port=1 dbname=app user=app password=s3cret-pw"


def sync_reset(conn: Any) -> None:
    """A reset callback (never run)."""


async def async_reset(conn: Any) -> None:
    """A reset callback (never run)."""


def test_a_reset_callback_is_refused() -> None:
    with pytest.raises(ValueError, match="reset cannot work with transaction_pooler=True"):
        Pool(NOWHERE, reset=sync_reset, transaction_pooler=True)
    with pytest.raises(ValueError, match="reset cannot work with transaction_pooler=True"):
        AsyncPool(NOWHERE, reset=async_reset, transaction_pooler=True)
    Pool(NOWHERE, reset=sync_reset)  # fine without the flag


@pytest.mark.parametrize("manager_class", [PostgresManager, AsyncPostgresManager])
def test_automatic_prepared_statements_are_off(manager_class: type[PostgresManager]) -> None:
    manager = manager_class(NOWHERE, transaction_pooler=True)
    assert manager._connect_kwargs == {"prepare_threshold": None}
    assert manager.pooler_watch is None
    plain = manager_class(NOWHERE, kwargs={"autocommit": True})
    assert plain._connect_kwargs == {"autocommit": True}
    assert plain.pooler_watch is not None


def test_an_explicit_threshold_needs_a_libpq_that_closes_prepared_statements(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(psycopg.pq, "version", lambda: 160004)
    with pytest.raises(ValueError, match=r"prepare_threshold=5 .*libpq >= 17.*libpq 16\.4"):
        Pool(NOWHERE, kwargs={"prepare_threshold": 5}, transaction_pooler=True)
    # prepare_threshold=None says the same as the flag: fine.
    Pool(NOWHERE, kwargs={"prepare_threshold": None}, transaction_pooler=True)
    monkeypatch.setattr(psycopg.pq, "version", lambda: 170000)
    manager = PostgresManager(NOWHERE, kwargs={"prepare_threshold": 5}, transaction_pooler=True)
    assert manager._connect_kwargs == {"prepare_threshold": 5}  # the caller's choice


def test_the_flag_goes_with_the_postgres_manager_only() -> None:
    manager = PostgresManager(NOWHERE)
    with pytest.raises(TypeError, match="transaction_pooler"):
        Pool(manager=manager, transaction_pooler=True)
    with pytest.raises(TypeError, match="transaction_pooler must be a bool"):
        Pool(NOWHERE, transaction_pooler="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="transaction_pooler must be a bool"):
        PostgresManager(NOWHERE, transaction_pooler=1)  # type: ignore[arg-type]


def test_the_pool_passes_the_flag_to_its_manager() -> None:
    pool = Pool(NOWHERE, transaction_pooler=True)
    assert isinstance(pool.manager, PostgresManager)
    assert pool.manager.transaction_pooler is True
    assert pool.settings.transaction_pooler is True
    assert Pool(NOWHERE).settings.transaction_pooler is False


@pytest.mark.parametrize(
    ("statement", "feature"),
    [
        ("SET work_mem = '7MB'", "SET without LOCAL"),
        ("  -- a comment\n/* another */ set search_path to app", "SET without LOCAL"),
        ("SET SESSION statement_timeout = 5", "SET without LOCAL"),
        ("SET ROLE reader", "SET without LOCAL"),
        ("LISTEN jobs", "LISTEN"),
        ("PREPARE q AS SELECT 1", "PREPARE"),
        ("DECLARE c CURSOR\n WITH\tHOLD FOR SELECT 1", "WITH HOLD"),
        ("CREATE TEMP TABLE t (a int)", "CREATE TEMPORARY"),
        ("create temporary table t (a int)", "CREATE TEMPORARY"),
        ("LOAD 'auto_explain'", "LOAD"),
        ("SELECT pg_advisory_lock(1)", "advisory lock"),
        ("SELECT pg_try_advisory_lock_shared(1, 2)", "advisory lock"),
        ("SELECT set_config('a.b', 'c', false)", "set_config"),
        # What ends with the transaction is fine.
        ("SET LOCAL work_mem = '7MB'", None),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", None),
        ("SET CONSTRAINTS ALL DEFERRED", None),
        ("SELECT pg_advisory_xact_lock(1)", None),
        ("CREATE TEMP TABLE t (a int) ON COMMIT DROP", None),
        ("SELECT set_config('a.b', 'c', true)", None),
        ("DECLARE c CURSOR FOR SELECT 1", None),
        ("SELECT 'SET x = 1'", None),
        ("SELECT 1; SET x = 1", None),  # a look at the first statement only (documented)
        ("", None),
    ],
)
def test_session_features(statement: str, feature: str | None) -> None:
    found = session_feature(statement)
    if feature is None:
        assert found is None
    else:
        assert found is not None
        assert feature in found


def finding(watch: PoolerWatch) -> Finding:
    """What `watch` knows now (a call: mypy keeps no narrowing across it)."""
    return watch.finding


def test_the_watch_settles_on_the_server() -> None:
    watch = PoolerWatch("app@db:5432/app")
    assert watch.saw(1, 100, 100) is None
    assert watch.finding is Finding.SERVER
    assert not watch.watching


def test_the_watch_warns_once_about_shared_sessions() -> None:
    watch = PoolerWatch("app@bouncer:6432/app")
    said = watch.saw(1, 11, 500)
    assert said is not None
    assert said[0] == logging.INFO
    assert watch.finding is Finding.POOLER
    assert watch.saw(2, 12, 501) is None  # another session: session mode, or busy
    watch.forget(1)
    assert watch.saw(3, 13, 500) is None  # 500's first client is gone: proves nothing
    said = watch.saw(4, 14, 501)  # 501 serves two open connections (2 and 4)
    assert said is not None
    level, message = said
    assert level == logging.WARNING
    assert "app@bouncer:6432/app is a transaction pooler" in message
    assert "process 501" in message
    assert finding(watch) is Finding.TRANSACTION_POOLER
    assert not watch.watching
    assert watch.saw(5, 15, 501) is None  # said once


def test_the_watch_gives_up_after_a_while_and_on_errors() -> None:
    watch = PoolerWatch("x")
    for key in range(PoolerWatch.MAX_LOOKS):
        watch.saw(key, 10_000 + key, key)
    assert watch.finding is Finding.GAVE_UP
    other = PoolerWatch("y")
    other.give_up()
    assert not other.watching
    assert other.saw(1, 1, 2) is None


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            'connection to server at "127.0.0.1", port 5432 failed: FATAL:  sorry, too many'
            " clients already",
            "no free connection slots (max_connections); see `pgfleet check --replicas N"
            " --max-size M`",
        ),
        (
            "FATAL:  remaining connection slots are reserved for roles with the SUPERUSER"
            " attribute",
            "no free connection slots",
        ),
        ("FATAL:  no more connections allowed (max_client_conn)", "max_client_conn"),
        ("FATAL:  unsupported startup parameter: options", "ignore_startup_parameters"),
    ],
)
def test_hints_for_full_servers_and_poolers(message: str, expected: str) -> None:
    hint = connect_error_hint(psycopg.OperationalError(message), {})
    assert hint is not None
    assert expected in hint
