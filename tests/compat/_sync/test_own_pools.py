# WARNING: this file is generated from tests/compat/_async/test_own_pools.py by tools/gen_sync.py.
# Do not edit it: edit the source and run `python tools/gen_sync.py`.

"""psycopg_pool's attributes and methods on pgfleet's own `Pool` (issue #16).

`Pool` keeps pgfleet's defaults and open semantics; what psycopg_pool code reads
or calls on a pool exists on it too. This async file is the source; the threaded twin is
generated (``python tools/gen_sync.py``).
"""

# mypy keeps `pool.closed` narrowed across the calls that change it (python/mypy#9457).
# mypy: disable-error-code="unreachable"

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from pgfleet import Pool
from support.flavours import FakeManager

TIMEOUT = 5.0


class MyConnection(psycopg.Connection[Any]):
    """A user's connection class."""


def test_psycopg_pool_attributes(pg_dsn: str) -> None:
    pool = Pool(pg_dsn, min_size=1, max_size=3, max_waiting=7, connection_class=MyConnection)
    assert pool.conninfo == pg_dsn
    assert pool.kwargs is None  # as given
    assert pool.connection_class is MyConnection
    assert (pool.min_size, pool.max_size) == (1, 3)
    assert pool.max_waiting == 7
    assert pool.max_lifetime == pool.settings.max_lifetime
    assert pool.max_idle == pool.settings.max_idle
    assert pool.num_workers == pool.settings.max_connecting
    assert pool.reconnect_timeout == 300.0
    assert pool.close_returns is False
    assert pool.closed is True  # not open yet
    with pool:
        assert pool.closed is False
        with pool.connection(timeout=TIMEOUT) as conn:
            assert type(conn) is MyConnection
        pool.resize(2, 4)
        assert (pool.min_size, pool.max_size) == (2, 4)
    assert pool.closed is True


def test_default_connection_class(pg_dsn: str) -> None:
    assert Pool(pg_dsn).connection_class is psycopg.Connection


def test_num_workers_is_max_connecting() -> None:
    pool = Pool(manager=FakeManager(), num_workers=5)
    assert pool.num_workers == 5
    assert pool.settings.max_connecting == 5
    with pytest.raises(ValueError, match="num_workers"):
        Pool(manager=FakeManager(), num_workers=0)
    with pytest.raises(TypeError, match="num_workers"):
        Pool(manager=FakeManager(), num_workers=3, max_connecting=4)
    with pytest.raises(TypeError, match="connection_class"):
        Pool(manager=FakeManager(), connection_class=MyConnection)


def test_check_callback_runs_on_every_checkout(pg_dsn: str) -> None:
    # pgfleet's idle ping is off here: only the callback decides.
    checks: list[int] = []

    def check(conn: psycopg.Connection[Any]) -> None:
        checks.append(conn.info.backend_pid)
        if len(checks) == 2:
            raise psycopg.OperationalError("the second check fails")

    with Pool(pg_dsn, min_size=1, max_size=1, check_after_idle=None, check=check) as pool:
        with pool.connection(timeout=TIMEOUT) as conn:
            first = conn.info.backend_pid
        assert checks == [first]
        # The failed check is not seen by the caller: it gets another connection.
        with pool.connection(timeout=TIMEOUT) as conn:
            second = conn.info.backend_pid
        assert second != first
        assert checks == [first, first, second]
        conn = pool.getconn(timeout=TIMEOUT)
        pool.putconn(conn)
        assert checks == [first, first, second, second]
        assert pool.get_stats()["connections_lost"] == 1


def test_pop_stats_leaves_stats_alone(pg_dsn: str) -> None:
    with Pool(pg_dsn, min_size=1, max_size=1) as pool:
        for _ in range(2):
            with pool.connection(timeout=TIMEOUT):
                pass
        assert pool.pop_stats()["requests_num"] == 2
        assert pool.get_stats()["requests_num"] == 0
        assert pool.stats().checkouts == 2  # stats() counts from the start, always


def test_check_connection_is_on_pgfleet_pools(pg_dsn: str) -> None:
    with psycopg.Connection.connect(pg_dsn) as conn:
        Pool.check_connection(conn)
        assert conn.autocommit is False
        conn.close()
        with pytest.raises(psycopg.OperationalError):
            Pool.check_connection(conn)
