# WARNING: this file is generated from tests/compat/_async/test_pool.py by tools/gen_sync.py.
# Do not edit it: edit the source and run `python tools/gen_sync.py`.

"""psycopg_pool's public API, run against psycopg_pool and pgfleet (issue #16).

The reference is psycopg_pool 3.3's source and docstrings. This async file is the source;
the threaded twin is generated (``python tools/gen_sync.py``). Tests marked for one class
only are those where the other class has nothing to show (a null pool keeps no idle
connection to check, drain or reset).
"""

# mypy keeps `pool.closed` narrowed across the calls that change it (python/mypy#9457),
# and a pool class taken from `Impl` leaves its connection type unsolved.
# mypy: disable-error-code="unreachable, var-annotated"

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.pq import TransactionStatus

from compat.helpers import PROMPT, Impl, Observer, insert, unique_app, with_app
from support.cluster import PgCluster
from support.flavours import Flavour, Task

POOL = "ConnectionPool"
NULL_POOL = "NullConnectionPool"
BOTH = pytest.mark.parametrize("kind", [POOL, NULL_POOL])


class BodyError(Exception):
    """Raised by the body of a ``connection()`` block."""


class MyConnection(psycopg.Connection[Any]):
    """A user's connection class."""


def make(impl: Impl, kind: str, conninfo: Any, *, min_size: int = 1, **options: Any) -> Any:
    """A pool of class `kind`, not open yet (``with`` opens it); a null pool gets
    ``min_size=0``, the only size it accepts."""
    options.setdefault("open", False)
    if kind == NULL_POOL:
        min_size = 0
    return getattr(impl, kind)(conninfo, min_size=min_size, **options)


def show(conn: Any, setting: str) -> str:
    cur = conn.execute("SELECT current_setting(%s)", [setting])
    row = cur.fetchone()
    assert row is not None
    return str(row[0])


# -- construction ---------------------------------------------------------------------------


@BOTH
def test_attributes_reflect_the_arguments(impl: Impl, kind: str, pg_dsn: str) -> None:
    kwargs = {"application_name": "compat-attrs"}
    pool = make(
        impl,
        kind,
        pg_dsn,
        kwargs=kwargs,
        connection_class=MyConnection,
        max_size=3,
        max_waiting=5,
        max_lifetime=100.0,
        max_idle=50.0,
        num_workers=2,
        reconnect_timeout=7.0,
        name="compat-attrs",
        timeout=4.0,
    )
    assert pool.conninfo == pg_dsn
    assert pool.kwargs == kwargs
    assert pool.connection_class is MyConnection
    assert pool.min_size == (0 if kind == NULL_POOL else 1)
    assert pool.max_size == 3
    assert pool.max_waiting == 5
    assert pool.max_lifetime == 100.0
    assert pool.max_idle == 50.0
    assert pool.num_workers == 2
    assert pool.reconnect_timeout == 7.0
    assert pool.name == "compat-attrs"
    assert pool.timeout == 4.0
    assert pool.closed is True


@BOTH
def test_defaults(impl: Impl, kind: str) -> None:
    cls = getattr(impl, kind)
    pool = cls(open=False)
    other = cls(open=False)
    assert pool.conninfo == ""
    assert not pool.kwargs
    assert pool.connection_class is psycopg.Connection
    if kind == NULL_POOL:
        # max_size 0 means "no limit" for a null pool.
        assert (pool.min_size, pool.max_size) == (0, 0)
    else:
        assert (pool.min_size, pool.max_size) == (4, 4)
    assert pool.timeout == 30.0
    assert pool.max_waiting == 0
    assert pool.max_lifetime == 3600.0
    assert pool.max_idle == 600.0
    assert pool.reconnect_timeout == 300.0
    assert pool.num_workers == 3
    assert pool.close_returns is False
    assert isinstance(pool.name, str)
    assert pool.name
    assert pool.name != other.name
    assert pool.closed is True


@pytest.mark.parametrize(
    ("min_size", "max_size"),
    [(0, None), (0, 0), (-1, None), (-1, 2), (3, 2)],
)
def test_invalid_sizes_raise_value_error(impl: Impl, min_size: int, max_size: int | None) -> None:
    with pytest.raises(ValueError):
        impl.ConnectionPool("", min_size=min_size, max_size=max_size, open=False)


@pytest.mark.parametrize(("min_size", "max_size"), [(1, None), (1, 5), (2, 2), (0, -1)])
def test_null_pool_invalid_sizes_raise_value_error(
    impl: Impl, min_size: int, max_size: int | None
) -> None:
    with pytest.raises(ValueError):
        impl.NullConnectionPool("", min_size=min_size, max_size=max_size, open=False)


@BOTH
def test_num_workers_must_be_positive(impl: Impl, kind: str) -> None:
    with pytest.raises(ValueError):
        make(impl, kind, "", max_size=2, num_workers=0)


# -- opening and closing --------------------------------------------------------------------


@BOTH
def test_a_pool_never_opened_is_closed(impl: Impl, kind: str, pg_dsn: str) -> None:
    pool = make(impl, kind, pg_dsn, max_size=2)
    assert pool.closed is True
    with pytest.raises(impl.PoolClosed):
        pool.getconn()
    with pytest.raises(impl.PoolClosed), pool.connection():
        pass


@BOTH
def test_open_close_lifecycle(impl: Impl, kind: str, pg_dsn: str) -> None:
    pool = make(impl, kind, pg_dsn, max_size=2)
    pool.open()
    try:
        assert pool.closed is False
        pool.open()  # a second open is a no-op
        assert pool.closed is False
        with pool.connection(timeout=PROMPT * 2) as conn:
            cur = conn.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        pool.close()
    assert pool.closed is True
    pool.close()  # a second close is a no-op
    with pytest.raises(impl.PoolClosed):
        pool.getconn()
    with pytest.raises(impl.PoolClosed), pool.connection():
        pass
    # A closed pool cannot be reopened.
    with pytest.raises(impl.PoolClosed):
        pool.open()
    assert pool.closed is True


@BOTH
def test_context_manager_opens_and_closes(impl: Impl, kind: str, pg_dsn: str) -> None:
    # The documented form, without `open`: no warning (warnings are errors here).
    min_size = 0 if kind == NULL_POOL else 1
    cls = getattr(impl, kind)
    with cls(pg_dsn, min_size=min_size, max_size=2) as pool:
        assert pool.closed is False
        with pool.connection(timeout=PROMPT * 2) as conn:
            cur = conn.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    assert pool.closed is True
    with pytest.raises(impl.PoolClosed):
        pool.getconn()


@BOTH
def test_context_manager_closes_on_error(impl: Impl, kind: str, pg_dsn: str) -> None:
    with pytest.raises(BodyError), make(impl, kind, pg_dsn, max_size=2) as pool:
        raise BodyError
    assert pool.closed is True


@BOTH
def test_context_manager_does_not_wait_for_a_database_that_is_down(
    impl: Impl, kind: str, dead_dsn: str
) -> None:
    # The documented form, `open` not given.
    min_size = 0 if kind == NULL_POOL else 1
    started = time.monotonic()
    with getattr(impl, kind)(dead_dsn, min_size=min_size, max_size=2) as pool:
        assert time.monotonic() - started < PROMPT
        assert pool.closed is False
        # Housekeeping before the first checkout runs (the pool is open, not ready).
        pool.resize(pool.min_size, 3)
        assert pool.max_size == 3
        if kind == NULL_POOL:
            # A null pool connects in the caller: the connect error itself surfaces.
            with pytest.raises(psycopg.OperationalError), pool.connection(timeout=0.2):
                pass
        else:
            with pytest.raises(impl.PoolTimeout), pool.connection(timeout=0.2):
                pass
        assert pool.get_stats()["connections_errors"] >= 1
    assert pool.closed is True


@BOTH
def test_wait_times_out_and_closes_the_pool(impl: Impl, kind: str, dead_dsn: str) -> None:
    pool = make(impl, kind, dead_dsn, max_size=2)
    pool.open()
    try:
        with pytest.raises(impl.PoolTimeout):
            pool.wait(timeout=0.2)
        assert pool.closed is True
    finally:
        pool.close()


@BOTH
def test_open_wait_times_out(impl: Impl, kind: str, dead_dsn: str) -> None:
    pool = make(impl, kind, dead_dsn, max_size=2)
    try:
        with pytest.raises(impl.PoolTimeout):
            pool.open(wait=True, timeout=0.2)
    finally:
        pool.close()


@BOTH
def test_open_does_not_wait_for_the_database(impl: Impl, kind: str, dead_dsn: str) -> None:
    pool = make(impl, kind, dead_dsn, max_size=2)
    started = time.monotonic()
    pool.open()  # wait=False by default
    try:
        assert time.monotonic() - started < PROMPT
        assert pool.closed is False
    finally:
        pool.close()


@BOTH
def test_wait_on_a_pool_never_opened_raises_pool_closed(impl: Impl, kind: str, pg_dsn: str) -> None:
    pool = make(impl, kind, pg_dsn, max_size=2)
    with pytest.raises(impl.PoolClosed):
        pool.wait(timeout=PROMPT)
    assert pool.closed is True


@BOTH
def test_close_leaves_lent_connections_usable(impl: Impl, kind: str, pg_dsn: str) -> None:
    pool = make(impl, kind, pg_dsn, max_size=1)
    pool.open()
    try:
        conn = pool.getconn(timeout=PROMPT * 2)
        started = time.monotonic()
        pool.close(timeout=PROMPT)
        # close() did not wait for the lent connection, nor close it: it still works.
        assert time.monotonic() - started < PROMPT
        assert pool.closed is True
        cur = conn.execute("SELECT 1")
        assert cur.fetchone() == (1,)
        pool.putconn(conn)  # given back to a closed pool: closed, no error
        assert conn.closed
    finally:
        pool.close()


def test_wait_returns_with_min_size_idle_connections(
    impl: Impl, observer: Observer, pg_dsn: str
) -> None:
    app = unique_app()
    with make(impl, POOL, with_app(pg_dsn, app), min_size=2, max_size=3) as pool:
        pool.wait(timeout=PROMPT * 2)
        stats = pool.get_stats()
        assert stats["pool_available"] == 2
        assert stats["pool_size"] == 2
        assert observer.backends(app) == 2


def test_open_wait_true(impl: Impl, observer: Observer, pg_dsn: str) -> None:
    app = unique_app()
    pool = make(impl, POOL, with_app(pg_dsn, app), min_size=2, max_size=2)
    try:
        pool.open(wait=True, timeout=PROMPT * 2)
        assert pool.get_stats()["pool_available"] == 2
        assert observer.backends(app) == 2
    finally:
        pool.close()
    Flavour.wait_until(lambda: observer.backends(app) == 0)


def test_null_pool_wait_checks_connectivity(impl: Impl, pg_dsn: str) -> None:
    with make(impl, NULL_POOL, pg_dsn, max_size=2) as pool:
        pool.wait(timeout=PROMPT * 2)
        stats = pool.get_stats()
        assert stats["pool_available"] == 0
        assert stats["connections_num"] == 1


# -- lending --------------------------------------------------------------------------------


@BOTH
def test_connection_commits_a_clean_block_and_rolls_back_a_failing_one(
    impl: Impl, kind: str, pg_dsn: str, table: str, observer: Observer
) -> None:
    with make(impl, kind, pg_dsn, max_size=1) as pool:
        with pool.connection(timeout=PROMPT * 2) as conn:
            assert isinstance(conn, psycopg.Connection)
            conn.execute(insert(table), [1])
        error = BodyError("the body failed")

        def failing_block() -> None:
            with pool.connection() as conn:
                conn.execute(insert(table), [2])
                raise error

        with pytest.raises(BodyError) as raised:
            failing_block()
        assert raised.value is error  # passed through unchanged
        assert observer.ids(table) == {1}
        with pool.connection() as conn:
            assert conn.info.transaction_status == TransactionStatus.IDLE


@BOTH
def test_getconn_putconn(
    impl: Impl, kind: str, pg_dsn: str, table: str, observer: Observer
) -> None:
    with make(impl, kind, pg_dsn, max_size=1) as pool:
        conn = pool.getconn(timeout=PROMPT * 2)
        assert isinstance(conn, psycopg.Connection)
        cur = conn.execute("SELECT %s::int + 1", [41])
        assert cur.fetchone() == (42,)
        # Returned inside a transaction: the pool rolls it back.
        conn.execute(insert(table), [1])
        pool.putconn(conn)
        assert observer.ids(table) == set()
        conn = pool.getconn(timeout=PROMPT)
        try:
            assert conn.info.transaction_status == TransactionStatus.IDLE
        finally:
            pool.putconn(conn)
        assert pool.get_stats()["requests_num"] == 2


@BOTH
def test_kwargs_reach_connect(impl: Impl, kind: str, pg_dsn: str) -> None:
    kwargs = {"autocommit": True, "connect_timeout": 3, "application_name": "compat-kwargs"}
    with make(impl, kind, pg_dsn, max_size=1, kwargs=kwargs) as pool:
        assert pool.kwargs == kwargs
        with pool.connection(timeout=PROMPT * 2) as conn:
            assert conn.autocommit is True
            assert show(conn, "application_name") == "compat-kwargs"


@BOTH
def test_connection_class(impl: Impl, kind: str, pg_dsn: str) -> None:
    with make(impl, kind, pg_dsn, max_size=1, connection_class=MyConnection) as pool:
        with pool.connection(timeout=PROMPT * 2) as conn:
            assert type(conn) is MyConnection
        conn = pool.getconn()
        try:
            assert type(conn) is MyConnection
        finally:
            pool.putconn(conn)


@BOTH
def test_putconn_of_a_foreign_connection_raises(impl: Impl, kind: str, pg_dsn: str) -> None:
    with (
        make(impl, kind, pg_dsn, max_size=1) as pool,
        make(impl, kind, pg_dsn, max_size=1) as other,
    ):
        with psycopg.Connection.connect(pg_dsn) as foreign:
            with pytest.raises(ValueError):
                pool.putconn(foreign)
            assert not foreign.closed
        conn = other.getconn(timeout=PROMPT * 2)
        try:
            with pytest.raises(ValueError):
                pool.putconn(conn)
            assert not conn.closed
        finally:
            other.putconn(conn)


@BOTH
def test_putconn_after_close_closes_the_connection(impl: Impl, kind: str, pg_dsn: str) -> None:
    pool = make(impl, kind, pg_dsn, max_size=2)
    pool.open()
    try:
        conn = pool.getconn(timeout=PROMPT * 2)
        with pool.connection(timeout=PROMPT * 2) as conn2:
            pool.close()
        # Leaving the block after close did not raise; nor does putconn.
        pool.putconn(conn)
        assert conn.closed
        assert conn2.closed
    finally:
        pool.close()


@BOTH
def test_pool_timeout_when_exhausted(impl: Impl, kind: str, pg_dsn: str) -> None:
    with make(impl, kind, pg_dsn, max_size=1, timeout=0.2) as pool:
        held = pool.getconn(timeout=PROMPT * 2)
        before = pool.get_stats()
        try:
            started = time.monotonic()
            with pytest.raises(impl.PoolTimeout):
                pool.getconn()  # the pool's own timeout
            assert 0.1 <= time.monotonic() - started < PROMPT
            started = time.monotonic()
            with pytest.raises(impl.PoolTimeout), pool.connection(timeout=0.1):
                pass
            assert 0.05 <= time.monotonic() - started < PROMPT
            stats = pool.get_stats()
            assert stats["requests_errors"] == before.get("requests_errors", 0) + 2
            assert stats["requests_queued"] == before.get("requests_queued", 0) + 2
        finally:
            pool.putconn(held)
        # The slot is free again.
        with pool.connection(timeout=PROMPT):
            pass


@BOTH
def test_too_many_requests(impl: Impl, kind: str, pg_dsn: str) -> None:
    with make(impl, kind, pg_dsn, max_size=1, max_waiting=1) as pool:
        held = pool.getconn(timeout=PROMPT * 2)
        pid = held.info.backend_pid
        waiter = Task(pool.getconn, PROMPT * 2)
        try:
            Flavour.wait_until(lambda: pool.get_stats()["requests_waiting"] == 1)
            with pytest.raises(impl.TooManyRequests):
                pool.getconn(timeout=PROMPT)
            assert pool.get_stats()["requests_errors"] == 1
        finally:
            pool.putconn(held)
        conn = waiter.join()
        try:
            if kind == POOL:
                assert conn.info.backend_pid == pid  # handed over, not replaced
        finally:
            pool.putconn(conn)


@BOTH
def test_waiting_clients_are_served_in_order(impl: Impl, kind: str, pg_dsn: str) -> None:
    with make(impl, kind, pg_dsn, max_size=1) as pool:
        held = pool.getconn(timeout=PROMPT * 2)
        first = Task(pool.getconn, PROMPT * 2)
        Flavour.wait_until(lambda: pool.get_stats()["requests_waiting"] == 1)
        second = Task(pool.getconn, PROMPT * 2)
        Flavour.wait_until(lambda: pool.get_stats()["requests_waiting"] == 2)
        pool.putconn(held)
        conn = first.join()
        assert not second.done()
        pool.putconn(conn)
        conn = second.join()
        pool.putconn(conn)


@BOTH
def test_close_fails_waiting_clients_with_pool_closed(impl: Impl, kind: str, pg_dsn: str) -> None:
    pool = make(impl, kind, pg_dsn, max_size=1)
    pool.open()
    try:
        held = pool.getconn(timeout=PROMPT * 2)
        waiter = Task(pool.getconn, PROMPT * 2)
        Flavour.wait_until(lambda: pool.get_stats()["requests_waiting"] == 1)
        pool.close()
        with pytest.raises(impl.PoolClosed):
            waiter.join()
        pool.putconn(held)
        assert held.closed
    finally:
        pool.close()


@BOTH
def test_a_connection_closed_by_the_user_is_replaced(
    impl: Impl, kind: str, observer: Observer, pg_dsn: str
) -> None:
    app = unique_app()
    with make(impl, kind, with_app(pg_dsn, app), max_size=1) as pool:
        with pool.connection(timeout=PROMPT * 2) as conn:
            pid = conn.info.backend_pid
            conn.close()
        # Leaving the block did not raise; the next checkout gets a working connection.
        with pool.connection(timeout=PROMPT * 2) as conn:
            assert conn.info.backend_pid != pid
            cur = conn.execute("SELECT 1")
            assert cur.fetchone() == (1,)
        assert pool.get_stats()["returns_bad"] == 1
        if kind == POOL:
            Flavour.wait_until(
                lambda: (
                    pool.get_stats()["pool_available"] == 1 and pool.get_stats()["pool_size"] == 1
                )
            )
            assert observer.backends(app) == 1
        else:
            assert pool.get_stats()["pool_size"] == 0
            Flavour.wait_until(lambda: observer.backends(app) == 0)


def test_close_returns_gives_the_connection_back(
    impl: Impl, pg_dsn: str, table: str, observer: Observer
) -> None:
    with make(impl, POOL, pg_dsn, max_size=1, close_returns=True) as pool:
        assert pool.close_returns is True
        pool.wait(timeout=PROMPT * 2)
        conn = pool.getconn(timeout=PROMPT)
        pid = conn.info.backend_pid
        conn.execute(insert(table), [1])
        conn.close()  # returns it (rolled back), does not close it
        assert not conn.closed
        assert observer.ids(table) == set()
        Flavour.wait_until(lambda: pool.get_stats()["pool_available"] == 1)
        conn = pool.getconn(timeout=PROMPT)
        try:
            assert conn.info.backend_pid == pid
            assert conn.info.transaction_status == TransactionStatus.IDLE
        finally:
            conn.close()
        assert pool.get_stats()["pool_size"] == 1


@BOTH
def test_a_connection_from_getconn_survives_its_own_with_block(
    impl: Impl, kind: str, pg_dsn: str, table: str, observer: Observer
) -> None:
    # psycopg's ``with conn:`` commits, and closes only a connection no pool lent.
    with make(impl, kind, pg_dsn, max_size=1) as pool:
        conn = pool.getconn(timeout=PROMPT * 2)
        try:
            with conn:
                conn.execute(insert(table), [1])
            assert not conn.closed
            cur = conn.execute("SELECT 1")
            assert cur.fetchone() == (1,)
        finally:
            pool.putconn(conn)
        assert observer.ids(table) == {1}
        assert pool.get_stats().get("returns_bad", 0) == 0


@BOTH
def test_a_with_conn_block_inside_connection_leaves_it_open(
    impl: Impl, kind: str, pg_dsn: str, table: str, observer: Observer
) -> None:
    # psycopg's ``with conn:`` commits, and closes only a connection no pool lent.
    with make(impl, kind, pg_dsn, max_size=1) as pool:
        with pool.connection(timeout=PROMPT * 2) as conn:
            with conn:
                conn.execute(insert(table), [1])
            assert not conn.closed
            conn.execute(insert(table), [2])
        assert observer.ids(table) == {1, 2}
        assert pool.get_stats().get("returns_bad", 0) == 0


class ReturningConnection(psycopg.Connection[Any]):
    """psycopg_pool's recipe before ``close_returns`` (its pool guide, "Integration with
    SQLAlchemy"): ``close()`` gives a lent connection back through ``self._pool``."""

    def close(self) -> None:
        if pool := getattr(self, "_pool", None):
            pool.putconn(self)
        else:
            super().close()


def test_a_close_override_can_give_the_connection_back(impl: Impl, pg_dsn: str) -> None:
    with make(impl, POOL, pg_dsn, max_size=1, connection_class=ReturningConnection) as pool:
        conn = pool.getconn(timeout=PROMPT * 2)
        pid = conn.info.backend_pid
        conn.close()  # given back, not closed
        assert not conn.closed
        conn = pool.getconn(timeout=PROMPT)
        try:
            assert conn.info.backend_pid == pid
        finally:
            conn.close()
        Flavour.wait_until(lambda: pool.get_stats()["pool_available"] == 1)
    assert conn.closed  # closing the pool closed it for real


# -- callbacks ------------------------------------------------------------------------------


@BOTH
def test_configure_runs_on_each_new_connection(impl: Impl, kind: str, pg_dsn: str) -> None:
    configured: list[int] = []

    def configure(conn: Any) -> None:
        conn.set_autocommit(True)
        configured.append(conn.info.backend_pid)

    with make(impl, kind, pg_dsn, max_size=1, configure=configure) as pool:
        for _ in range(3):
            with pool.connection(timeout=PROMPT * 2) as conn:
                assert conn.autocommit is True
                assert conn.info.backend_pid in configured
    # A null pool makes a connection per checkout; a pool keeps its one connection.
    assert len(configured) == (3 if kind == NULL_POOL else 1)


def test_reset_runs_when_a_connection_comes_back(impl: Impl, pg_dsn: str) -> None:
    resets: list[int] = []

    def reset(conn: Any) -> None:
        conn.execute("RESET statement_timeout")
        conn.commit()
        resets.append(conn.info.backend_pid)

    with make(impl, POOL, pg_dsn, max_size=1, reset=reset) as pool:
        with pool.connection(timeout=PROMPT * 2) as conn:
            pid = conn.info.backend_pid
            conn.execute("SET statement_timeout = '123s'")
        with pool.connection(timeout=PROMPT) as conn:
            assert conn.info.backend_pid == pid
            assert show(conn, "statement_timeout") == "0"
        assert resets[0] == pid


def test_a_reset_leaving_a_transaction_open_discards_the_connection(
    impl: Impl, pg_dsn: str
) -> None:
    def reset(conn: Any) -> None:
        conn.execute("SELECT 1")  # leaves the connection INTRANS

    with make(impl, POOL, pg_dsn, max_size=1, reset=reset) as pool:
        with pool.connection(timeout=PROMPT * 2) as conn:
            pid = conn.info.backend_pid
        with pool.connection(timeout=PROMPT * 2) as conn:
            assert conn.info.backend_pid != pid


@BOTH
def test_check_runs_at_each_checkout(impl: Impl, kind: str, pg_dsn: str) -> None:
    checks: list[int] = []

    def check(conn: Any) -> None:
        checks.append(conn.info.backend_pid)
        if len(checks) == 1:
            raise psycopg.OperationalError("the first check fails")

    with make(impl, kind, pg_dsn, max_size=1, check=check) as pool:
        # The failed check does not reach the caller: it gets another (checked) connection.
        with pool.connection(timeout=PROMPT * 2) as conn:
            cur = conn.execute("SELECT 1")
            assert cur.fetchone() == (1,)
        assert len(checks) == 2
        with pool.connection(timeout=PROMPT) as conn:
            assert checks[-1] == conn.info.backend_pid
        assert len(checks) == 3


def test_check_connection_as_the_check_callback(impl: Impl, pg: PgCluster, pg_dsn: str) -> None:
    app = unique_app()
    check = impl.ConnectionPool.check_connection
    with make(impl, POOL, with_app(pg_dsn, app), max_size=1, check=check) as pool:
        pool.wait(timeout=PROMPT * 2)
        with pool.connection(timeout=PROMPT) as conn:
            pid = conn.info.backend_pid
            assert conn.autocommit is False  # the check restored it
        assert pg.terminate_backends(app) == 1
        # The dead connection fails the check and is replaced, unseen by the caller.
        with pool.connection(timeout=PROMPT * 2) as conn:
            assert conn.info.backend_pid != pid
            cur = conn.execute("SELECT 1")
            assert cur.fetchone() == (1,)
        assert pool.get_stats()["connections_lost"] == 1


def test_check_connection_on_a_live_and_a_closed_connection(impl: Impl, pg_dsn: str) -> None:
    with psycopg.Connection.connect(pg_dsn) as conn:
        impl.ConnectionPool.check_connection(conn)
        assert conn.autocommit is False
        assert conn.info.transaction_status == TransactionStatus.IDLE
        conn.close()
        with pytest.raises(psycopg.OperationalError):
            impl.ConnectionPool.check_connection(conn)


def test_reconnect_failed_is_called_after_reconnect_timeout(impl: Impl, dead_dsn: str) -> None:
    failed: list[Any] = []
    with make(
        impl,
        POOL,
        dead_dsn,
        max_size=1,
        reconnect_timeout=0.1,
        reconnect_failed=failed.append,
    ) as pool:
        assert pool.reconnect_timeout == 0.1
        Flavour.wait_until(lambda: failed)
        assert failed[0] is pool


def test_reconnect_failed_method_calls_the_callback(impl: Impl, pg_dsn: str) -> None:
    failed: list[Any] = []
    pool = make(impl, POOL, pg_dsn, max_size=1, reconnect_failed=failed.append)
    pool.reconnect_failed()
    assert failed == [pool]
    # Without a callback, nothing happens.
    make(impl, POOL, pg_dsn, max_size=1).reconnect_failed()


def test_check_connection_keeps_autocommit(impl: Impl, pg_dsn: str) -> None:
    with psycopg.Connection.connect(pg_dsn, autocommit=True) as conn:
        impl.ConnectionPool.check_connection(conn)
        assert conn.autocommit is True
        assert conn.info.transaction_status == TransactionStatus.IDLE


@BOTH
def test_repr_names_the_pool(impl: Impl, kind: str, pg_dsn: str) -> None:
    pool = make(impl, kind, pg_dsn, max_size=1, name="compat-repr")
    assert "compat-repr" in repr(pool)
    assert type(pool).__name__ in repr(pool)


@BOTH
def test_conninfo_callable_is_asked_for_each_new_connection(
    impl: Impl, kind: str, pg_dsn: str
) -> None:
    app = unique_app()
    calls: list[str] = []

    def conninfo() -> str:
        calls.append(f"{app}-{len(calls) + 1}")
        return make_conninfo(pg_dsn, application_name=calls[-1])

    with make(impl, kind, conninfo, max_size=2) as pool:
        assert pool.conninfo is conninfo
        seen = _names_of_two_connections(pool, kind)
    assert seen == {f"{app}-1", f"{app}-2"}
    assert calls == [f"{app}-1", f"{app}-2"]


@BOTH
def test_kwargs_callable_is_asked_for_each_new_connection(
    impl: Impl, kind: str, pg_dsn: str
) -> None:
    app = unique_app()
    calls: list[str] = []

    def kwargs() -> dict[str, Any]:
        calls.append(f"{app}-{len(calls) + 1}")
        return {"application_name": calls[-1]}

    with make(impl, kind, pg_dsn, kwargs=kwargs, max_size=2) as pool:
        assert pool.kwargs is kwargs
        seen = _names_of_two_connections(pool, kind)
    assert seen == {f"{app}-1", f"{app}-2"}
    assert calls == [f"{app}-1", f"{app}-2"]


@BOTH
def test_kwargs_callable_may_return_connect_timeout(impl: Impl, kind: str, pg_dsn: str) -> None:
    # libpq's connect_timeout, as psycopg_pool passes it to connect(); pgfleet bounds
    # each attempt itself and must not refuse the connection settings.
    app = unique_app()

    def kwargs() -> dict[str, Any]:
        return {"connect_timeout": 5, "application_name": app}

    pool = make(impl, kind, pg_dsn, kwargs=kwargs, max_size=1, timeout=PROMPT * 2)
    with pool, pool.connection() as conn:
        assert show(conn, "application_name") == app


def _names_of_two_connections(pool: Any, kind: str) -> set[str]:
    """The application_names of two connections: held together from a pool (its
    min_size=1 connection and one more), one after the other from a null pool (which
    makes one per checkout)."""
    if kind == NULL_POOL:
        names = set()
        for _ in range(2):
            with pool.connection(timeout=PROMPT * 2) as conn:
                names.add(show(conn, "application_name"))
        return names
    pool.wait(timeout=PROMPT * 2)
    first = pool.getconn(timeout=PROMPT)
    second = pool.getconn(timeout=PROMPT * 2)
    try:
        return {show(first, "application_name"), show(second, "application_name")}
    finally:
        pool.putconn(first)
        pool.putconn(second)


# -- maintenance ----------------------------------------------------------------------------


def test_resize(impl: Impl, observer: Observer, pg_dsn: str) -> None:
    app = unique_app()
    with make(impl, POOL, with_app(pg_dsn, app), max_size=1) as pool:
        pool.wait(timeout=PROMPT * 2)
        pool.resize(2, 3)
        assert (pool.min_size, pool.max_size) == (2, 3)
        pool.wait(timeout=PROMPT * 2)
        stats = pool.get_stats()
        assert (stats["pool_min"], stats["pool_max"]) == (2, 3)
        assert stats["pool_available"] == 2
        assert observer.backends(app) == 2
        with pytest.raises(ValueError):
            pool.resize(3, 2)
        with pytest.raises(ValueError):
            pool.resize(0)
        assert (pool.min_size, pool.max_size) == (2, 3)
        pool.resize(1)
        assert (pool.min_size, pool.max_size) == (1, 1)


def test_null_pool_resize(impl: Impl, pg_dsn: str) -> None:
    with make(impl, NULL_POOL, pg_dsn, max_size=2) as pool:
        pool.resize(0, 5)
        assert (pool.min_size, pool.max_size) == (0, 5)
        with pytest.raises(ValueError):
            pool.resize(1, 5)
        assert (pool.min_size, pool.max_size) == (0, 5)


def test_check_replaces_broken_idle_connections(impl: Impl, pg: PgCluster, pg_dsn: str) -> None:
    app = unique_app()
    with make(impl, POOL, with_app(pg_dsn, app), min_size=2, max_size=2) as pool:
        pool.wait(timeout=PROMPT * 2)
        old = _backend_pids(pool, 2)
        assert pg.terminate_backends(app) == 2
        pool.check()
        pool.wait(timeout=PROMPT * 2)
        assert pool.get_stats()["connections_lost"] == 2
        new = _backend_pids(pool, 2)
        assert not old & new


def test_drain_replaces_every_connection(impl: Impl, pg_dsn: str) -> None:
    with make(impl, POOL, pg_dsn, min_size=2, max_size=2) as pool:
        pool.wait(timeout=PROMPT * 2)
        lent = pool.getconn(timeout=PROMPT)
        old = {lent.info.backend_pid} | _backend_pids(pool, 1)
        pool.drain()
        # The connection lent during the drain is replaced when it comes back.
        pool.putconn(lent)
        pool.wait(timeout=PROMPT * 2)
        new = _backend_pids(pool, 2)
        assert not old & new


def _backend_pids(pool: Any, count: int) -> set[int]:
    """The backend pids of `count` connections held at once, then returned."""
    conns = [pool.getconn(timeout=PROMPT * 2) for _ in range(count)]
    try:
        return {conn.info.backend_pid for conn in conns}
    finally:
        for conn in conns:
            pool.putconn(conn)


def test_null_pool_check_and_drain_are_harmless(impl: Impl, pg_dsn: str) -> None:
    with make(impl, NULL_POOL, pg_dsn, max_size=2) as pool:
        pool.check()
        pool.drain()
        with pool.connection(timeout=PROMPT * 2) as conn:
            cur = conn.execute("SELECT 1")
            assert cur.fetchone() == (1,)


# -- stats ----------------------------------------------------------------------------------


@BOTH
def test_get_stats_and_pop_stats(impl: Impl, kind: str, pg_dsn: str) -> None:
    with make(impl, kind, pg_dsn, max_size=2) as pool:
        if kind == POOL:
            pool.wait(timeout=PROMPT * 2)
        for _ in range(3):
            with pool.connection(timeout=PROMPT * 2):
                pass
        stats = pool.get_stats()
        for key in ("pool_min", "pool_max", "pool_size", "pool_available", "requests_waiting"):
            assert isinstance(stats[key], int), key
        for key in ("requests_num", "usage_ms", "connections_num", "connections_ms"):
            assert isinstance(stats[key], int), key
        popped = pool.pop_stats()
        for stat in (stats, popped):
            assert stat["requests_num"] == 3
            assert stat["connections_num"] == (3 if kind == NULL_POOL else 1)
            assert stat["requests_waiting"] == 0
        if kind == NULL_POOL:
            assert (popped["pool_min"], popped["pool_max"]) == (0, 2)
            assert (popped["pool_size"], popped["pool_available"]) == (0, 0)
        else:
            assert (popped["pool_min"], popped["pool_max"]) == (1, 2)
            assert (popped["pool_size"], popped["pool_available"]) == (1, 1)
        # pop_stats reset the counters, not the measures.
        after = pool.get_stats()
        assert after.get("requests_num", 0) == 0
        assert after.get("connections_num", 0) == 0
        assert after["pool_max"] == 2
        assert after["pool_size"] == popped["pool_size"]
        with pool.connection(timeout=PROMPT * 2):
            pass
        assert pool.get_stats()["requests_num"] == 1


# -- null pools -----------------------------------------------------------------------------


def test_null_pool_keeps_no_idle_connection(impl: Impl, observer: Observer, pg_dsn: str) -> None:
    app = unique_app()
    with make(impl, NULL_POOL, with_app(pg_dsn, app), max_size=2) as pool:
        with pool.connection(timeout=PROMPT * 2) as conn:
            pid = conn.info.backend_pid
            assert observer.backends(app) == 1
        assert conn.closed
        stats = pool.get_stats()
        assert (stats["pool_size"], stats["pool_available"]) == (0, 0)
        Flavour.wait_until(lambda: observer.backends(app) == 0)
        conn = pool.getconn(timeout=PROMPT * 2)
        assert conn.info.backend_pid != pid
        pool.putconn(conn)
        assert conn.closed


def test_null_pool_max_size_bounds_concurrency_and_callers_queue(
    impl: Impl, observer: Observer, pg_dsn: str
) -> None:
    app = unique_app()
    with make(impl, NULL_POOL, with_app(pg_dsn, app), max_size=2) as pool:
        held = [pool.getconn(timeout=PROMPT * 2) for _ in range(2)]
        waiter = Task(pool.getconn, PROMPT * 2)
        Flavour.wait_until(lambda: pool.get_stats()["requests_waiting"] == 1)
        with pytest.raises(impl.PoolTimeout):
            pool.getconn(timeout=0.1)
        assert observer.backends(app) == 2
        pool.putconn(held.pop())
        held.append(waiter.join())
        assert observer.backends(app) <= 2
        for conn in held:
            pool.putconn(conn)
        Flavour.wait_until(lambda: observer.backends(app) == 0)


def test_null_pool_under_concurrent_workers(impl: Impl, pg_dsn: str) -> None:
    lock = threading.Lock()
    inside = [0]
    most = [0]

    def worker() -> None:
        for _ in range(3):
            with pool.connection(timeout=PROMPT * 4) as conn:
                with lock:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                cur = conn.execute("SELECT 1")
                assert cur.fetchone() == (1,)
                with lock:
                    inside[0] -= 1

    with make(impl, NULL_POOL, pg_dsn, max_size=2) as pool:
        workers = [Task(worker) for _ in range(8)]
        for task in workers:
            task.join(timeout=PROMPT * 8)
        assert pool.get_stats()["requests_num"] == 24
        # A connect started for a caller that a returned connection served meanwhile
        # may still be in flight: it closes when it lands (nobody waits for it).
        Flavour.wait_until(
            lambda: (pool.get_stats()["pool_size"], pool.get_stats()["pool_available"]) == (0, 0)
        )
    assert 1 <= most[0] <= 2


def test_null_pool_without_max_size_is_unbounded(impl: Impl, pg_dsn: str) -> None:
    with impl.NullConnectionPool(pg_dsn, open=False) as pool:
        held = [pool.getconn(timeout=PROMPT * 2) for _ in range(3)]
        try:
            assert len({conn.info.backend_pid for conn in held}) == 3
        finally:
            for conn in held:
                pool.putconn(conn)
