"""A pool that is not in transaction_pooler mode notices a pooler from its first connections
(``SELECT pg_backend_pid()`` against the process id the pooler announced) and warns once
when two open connections share a server session: a transaction pooler.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from pgfleet import AsyncPool, Pool
from pgfleet._postgres.pooler import Finding, PoolerWatch
from pgfleet._sync.postgres import PostgresManager
from support.cluster import PgCluster
from support.pgbouncer import PgBouncer

from .conftest import BouncerFactory

POOLER_LOGGER = "pgfleet.pooler"


def pooler_records(
    caplog: pytest.LogCaptureFixture, level: int | None = None
) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == POOLER_LOGGER and (level is None or record.levelno == level)
    ]


def watch_of(pool: Pool[Any] | AsyncPool[Any]) -> Finding:
    watch = getattr(pool.manager, "pooler_watch", None)
    assert isinstance(watch, PoolerWatch)
    return watch.finding


def test_a_transaction_pooler_is_reported_once(
    bouncer: PgBouncer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=POOLER_LOGGER)
    # One connection at a time: the second is served by the session the first released.
    with Pool(bouncer.conninfo(), min_size=4, max_connecting=1, name="unaware") as pool:
        assert watch_of(pool) is Finding.TRANSACTION_POOLER
        pool.drain()  # four new connections: nothing more to say
        pool.wait(10)
        with pool.connection() as conn:
            conn.execute("SELECT 1")
    warnings = pooler_records(caplog, logging.WARNING)
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert "is a transaction pooler" in message
    assert "transaction_pooler=True" in message
    assert "PGFLEET_TRANSACTION_POOLER=1" in message
    assert "app-secret-pw" not in message
    infos = pooler_records(caplog, logging.INFO)
    assert len(infos) == 1, [r.getMessage() for r in infos]
    assert "through a connection pooler" in infos[0].getMessage()


async def test_the_async_pool_reports_it_too(
    bouncer: PgBouncer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=POOLER_LOGGER)
    async with AsyncPool(bouncer.conninfo(), min_size=3, max_connecting=1) as pool:
        assert watch_of(pool) is Finding.TRANSACTION_POOLER
    assert len(pooler_records(caplog, logging.WARNING)) == 1


def test_a_session_pooler_is_noted_without_a_warning(
    bouncer_cluster: PgCluster, make_bouncer: BouncerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=POOLER_LOGGER)
    session = make_bouncer(bouncer_cluster, pool_mode="session", default_pool_size=6)
    with Pool(session.conninfo(), min_size=4, max_connecting=1) as pool:
        assert watch_of(pool) is Finding.POOLER
    assert not pooler_records(caplog, logging.WARNING)
    infos = pooler_records(caplog, logging.INFO)
    assert len(infos) == 1
    assert "through a connection pooler" in infos[0].getMessage()


def test_the_server_itself_is_recognised_and_left_alone(
    bouncer_cluster: PgCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=POOLER_LOGGER)
    with Pool(bouncer_cluster.conninfo(), min_size=2) as pool:
        assert watch_of(pool) is Finding.SERVER
        manager = pool.manager
        assert isinstance(manager, PostgresManager)
        assert manager.pooler_watch is not None
        assert not manager.pooler_watch.watching  # no more probes for this pool
    assert not pooler_records(caplog)


def test_transaction_pooler_mode_probes_nothing(
    bouncer: PgBouncer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=POOLER_LOGGER)
    with Pool(bouncer.conninfo(), min_size=3, max_connecting=1, transaction_pooler=True) as pool:
        manager = pool.manager
        assert isinstance(manager, PostgresManager)
        assert manager.pooler_watch is None
        assert manager.transaction_pooler is True
    assert not pooler_records(caplog)
