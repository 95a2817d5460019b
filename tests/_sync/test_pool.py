# WARNING: this file is generated from tests/_async/test_pool.py by tools/gen_sync.py.
# Do not edit it: edit the source and run `python tools/gen_sync.py`.

"""Shell tests of `Pool` with a scripted fake manager (no sockets).

The async file is the source, the threaded one is generated (``python tools/gen_sync.py``):
the renamed text must be a valid threaded test. The helpers that differ between the two
flavours come from ``support.flavours``.
"""

# A test asserts a state (`not pool.closed`), acts, then asserts the new one: mypy keeps
# the first narrowing across the act and calls what follows unreachable (python/mypy#9457).
# mypy: disable-error-code="unreachable"

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import psycopg
import pytest

from pgfleet import (
    DatabaseUnavailable,
    Pool,
    PoolClosed,
    PoolError,
    PoolTimeout,
    TooManyRequests,
)
from support.flavours import (
    PATIENCE,
    FakeConn,
    FakeError,
    FakeManager,
    Flavour,
    Task,
)
from support.timing import well_under

#: A short checkout timeout; whatever waits for it must be over well within `PROMPT`.
SHORT = 0.2
#: A generous upper bound for something that should take `SHORT` or less (more than
#: `deadline_bound(SHORT)`: a loaded machine may stall a thread for a while).
PROMPT = 1.5
#: The timeout of a call that must end at once, not wait it out: it ends `well_under` it.
LONG = 10.0


def fake_pool(manager: FakeManager, **kwargs: Any) -> Pool[FakeConn]:
    """A pool over `manager`: one connection, no pings unless the test asks for them."""
    kwargs.setdefault("min_size", 1)
    kwargs.setdefault("check_after_idle", None)
    kwargs.setdefault("reconnect_delay", 0.02)
    kwargs.setdefault("reconnect_max_delay", 0.1)
    return Pool(manager=manager, **kwargs)


class BodyError(Exception):
    """Raised by the body of a ``connection()`` block."""


# -- construction ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "parameter"),
    [
        ({"min_size": 3, "max_size": 2}, ValueError, "max_size"),
        ({"min_size": -1}, ValueError, "min_size"),
        ({"min_size": "2"}, TypeError, "min_size"),
        ({"min_size": True}, TypeError, "min_size"),
        ({"max_size": 0}, ValueError, "max_size"),
        ({"max_size": 2.5}, TypeError, "max_size"),
        ({"timeout": -1}, ValueError, "timeout"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"timeout": "30"}, TypeError, "timeout"),
        ({"timeout": float("nan")}, ValueError, "timeout"),
        ({"max_waiting": -1}, ValueError, "max_waiting"),
        ({"max_lifetime": -5.0}, ValueError, "max_lifetime"),
        ({"max_idle": 0}, ValueError, "max_idle"),
        ({"check_after_idle": -0.5}, ValueError, "check_after_idle"),
        ({"leak_timeout": -1}, ValueError, "leak_timeout"),
        ({"connect_timeout": 0}, ValueError, "connect_timeout"),
        ({"reset_timeout": None}, TypeError, "reset_timeout"),
        ({"max_connecting": 0}, ValueError, "max_connecting"),
        ({"fail_fast": 1}, TypeError, "fail_fast"),
        ({"reconnect_delay": 1.0, "reconnect_max_delay": 0.5}, ValueError, "reconnect_max_delay"),
        ({"name": 3}, TypeError, "name"),
    ],
)
def test_bad_settings_name_the_parameter(
    kwargs: dict[str, Any], error: type[Exception], parameter: str
) -> None:
    with pytest.raises(error, match=rf"\b{parameter}\b"):
        Pool(manager=FakeManager(), **kwargs)


@pytest.mark.parametrize(
    "extra",
    [
        {"conninfo": "dbname=app"},
        {"kwargs": {"autocommit": True}},
        {"configure": print},
        {"reset": print},
        {"check": print},
    ],
)
def test_manager_excludes_connection_arguments(extra: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match=r"\bmanager\b"):
        Pool(manager=FakeManager(), **extra)


def test_settings_defaults() -> None:
    pool = Pool(manager=FakeManager(), min_size=2, name="defaults")
    assert pool.settings.max_size == 2  # max_size defaults to min_size
    assert pool.timeout == 30.0
    assert pool.name == "defaults"
    assert pool.closed  # not open yet (as in psycopg_pool)
    assert "defaults" in repr(pool)


# -- lifecycle ---------------------------------------------------------------------------


def test_open_fills_min_size() -> None:
    manager = FakeManager()
    pool = fake_pool(manager, min_size=3, max_size=5)
    try:
        pool.open(wait=True, timeout=PATIENCE)
        stats = pool.stats()
        assert (stats.size, stats.idle, stats.in_use) == (3, 3, 0)
        assert manager.connects == 3
        pool.open()  # opening an open pool is a no-op
        assert manager.connect_attempts == 3
    finally:
        pool.close()


def test_open_without_wait_then_wait() -> None:
    manager = FakeManager()
    pool = fake_pool(manager, min_size=2)
    try:
        pool.open(wait=False)
        pool.wait(timeout=PATIENCE)
        assert pool.stats().idle == 2
    finally:
        pool.close()
    with pytest.raises(PoolClosed):
        pool.wait(timeout=SHORT)


def test_open_wait_timeout_chains_the_connect_error() -> None:
    manager = FakeManager()
    manager.connect_error = FakeError("connection refused")
    pool = fake_pool(manager, name="unready")
    try:
        started = time.monotonic()
        with pytest.raises(PoolTimeout) as info:
            pool.open(wait=True, timeout=SHORT)
        assert time.monotonic() - started < PROMPT
        assert "unready" in str(info.value)
        assert info.value.__cause__ is manager.connect_error
        # The pool stays open and keeps trying: it fills once the database is back.
        manager.connect_error = None
        pool.wait(timeout=PATIENCE)
        assert pool.stats().idle == 1
    finally:
        pool.close()


def test_context_manager_opens_and_closes() -> None:
    manager = FakeManager()
    with fake_pool(manager, min_size=2) as pool:
        assert not pool.closed
        assert pool.stats().idle == 2
        with pool.connection() as conn:
            assert isinstance(conn, FakeConn)
    assert pool.closed
    assert manager.connects == 2
    assert all(conn.closed for conn in manager.connections)


def test_close_is_idempotent() -> None:
    manager = FakeManager()
    pool = fake_pool(manager)
    pool.open()
    pool.close()
    pool.close()
    assert pool.closed
    assert manager.closes == 1


def test_close_without_open() -> None:
    pool = fake_pool(FakeManager())
    pool.close()
    assert pool.closed


def test_getconn_before_open_is_pool_closed() -> None:
    pool = fake_pool(FakeManager())
    try:
        with pytest.raises(PoolClosed, match="open"):
            pool.getconn(timeout=SHORT)
    finally:
        pool.close()


def test_closed_pool_lends_nothing_and_cannot_reopen() -> None:
    pool = fake_pool(FakeManager())
    pool.open()
    pool.close()
    with pytest.raises(PoolClosed):
        pool.getconn(timeout=SHORT)
    with pytest.raises(PoolClosed), pool.connection(timeout=SHORT):
        pass
    with pytest.raises(PoolClosed):
        pool.open()


def test_close_fails_waiters_with_pool_closed() -> None:
    manager = FakeManager()
    pool = fake_pool(manager, min_size=1, max_size=1)
    pool.open()
    conn = pool.getconn()
    waiter = Task(pool.getconn, 10.0)
    Flavour.wait_until(lambda: pool.stats().waiting == 1)
    started = time.monotonic()
    pool.close(timeout=SHORT)
    assert time.monotonic() - started < PROMPT
    with pytest.raises(PoolClosed):
        waiter.join()
    assert conn.closed


def test_close_waits_for_lent_connections_then_closes_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="pgfleet")
    manager = FakeManager()
    pool = fake_pool(manager, min_size=2)
    pool.open()
    conn = pool.getconn()
    started = time.monotonic()
    pool.close(timeout=SHORT)
    elapsed = time.monotonic() - started
    assert SHORT * 0.9 <= elapsed < PROMPT
    assert conn.closed
    assert all(c.closed for c in manager.connections)
    assert any("still lent" in record.getMessage() for record in caplog.records)


def test_late_putconn_after_close_is_quiet() -> None:
    manager = FakeManager()
    pool = fake_pool(manager)
    pool.open()
    conn = pool.getconn()
    pool.close(timeout=SHORT)  # gives up waiting and closes it
    assert conn.closed
    pool.putconn(conn)  # a worker's `finally: putconn()` during shutdown: no error
    assert manager.closes == 1


def test_context_manager_that_cannot_fill_closes_the_pool() -> None:
    manager = FakeManager()
    manager.connect_error = FakeError("connection refused")
    pool = fake_pool(manager, timeout=SHORT)
    started = time.monotonic()
    with pytest.raises(PoolTimeout) as info, pool:
        pytest.fail("the block must not run")
    assert time.monotonic() - started < PROMPT
    assert info.value.__cause__ is manager.connect_error
    assert pool.closed  # nobody else could close it: no background work left behind


def test_close_returns_when_lent_connection_comes_back() -> None:
    manager = FakeManager()
    pool = fake_pool(manager)
    pool.open()
    conn = pool.getconn()
    started = time.monotonic()
    closing = Task(pool.close, LONG)
    Flavour.wait_until(lambda: pool.closed)
    pool.putconn(conn)
    closing.join()
    assert time.monotonic() - started < well_under(LONG)
    assert conn.closed


# -- lending -----------------------------------------------------------------------------


def test_getconn_putconn_round_trip() -> None:
    manager = FakeManager()
    with fake_pool(manager) as pool:
        conn = pool.getconn()
        assert isinstance(conn, FakeConn)
        assert (pool.stats().idle, pool.stats().in_use) == (0, 1)
        pool.putconn(conn)
        assert (pool.stats().idle, pool.stats().in_use) == (1, 0)
        assert conn.resets == 1
        assert pool.stats().resets == 1  # the default is_clean (False): every return is reset
        assert pool.getconn() is conn  # the same warm connection
        pool.putconn(conn)


def test_putconn_of_a_foreign_object_is_value_error() -> None:
    with fake_pool(FakeManager()) as pool:
        with pytest.raises(ValueError, match="not lent"):
            pool.putconn(FakeConn(99))
        with pytest.raises(ValueError, match="not lent"):
            pool.putconn(object())  # type: ignore[arg-type]
        conn = pool.getconn()
        pool.putconn(conn)
        with pytest.raises(ValueError, match="not lent"):
            pool.putconn(conn)  # twice
        assert pool.stats().idle == 1


def test_putconn_of_a_guarded_connection_is_value_error() -> None:
    """`connection()` gives its connection back itself: a putconn too would return it twice."""
    with fake_pool(FakeManager()) as pool:
        with pool.connection() as conn:
            with pytest.raises(ValueError, match="not lent"):
                pool.putconn(conn)
            assert pool.stats().in_use == 1
        assert (pool.stats().idle, pool.stats().in_use) == (1, 0)


def test_putconn_to_another_pool_is_value_error() -> None:
    with fake_pool(FakeManager()) as pool, fake_pool(FakeManager()) as other:
        conn = pool.getconn()
        with pytest.raises(ValueError, match="not lent"):
            other.putconn(conn)
        pool.putconn(conn)


def test_connection_returns_the_connection_when_the_body_raises() -> None:
    manager = FakeManager()
    with fake_pool(manager) as pool:
        error = BodyError("boom")
        with pytest.raises(BodyError) as info, pool.connection() as conn:
            raise error
        assert info.value is error  # unchanged, not wrapped
        assert info.value.__cause__ is None
        stats = pool.stats()
        assert (stats.idle, stats.in_use) == (1, 0)
        assert not conn.closed
        with pool.connection() as again:
            assert again is conn


def test_connection_commits_only_a_block_that_ends_cleanly() -> None:
    with fake_pool(FakeManager()) as pool:
        with pool.connection() as conn:
            pass
        assert (conn.commits, conn.resets) == (1, 1)
        with pytest.raises(BodyError), pool.connection() as conn:
            raise BodyError("boom")
        assert (conn.commits, conn.resets) == (1, 2)  # rolled back by the reset instead
        assert pool.stats().resets == 2


def test_commit_error_propagates_and_the_connection_comes_back() -> None:
    with fake_pool(FakeManager()) as pool:
        with pytest.raises(FakeError, match="commit"), pool.connection() as conn:
            conn.commit_fails = True
        stats = pool.stats()
        assert (stats.idle, stats.in_use) == (1, 0)
        assert conn.resets == 1


def test_connection_passes_psycopg_errors_through() -> None:
    with fake_pool(FakeManager()) as pool:
        error = psycopg.errors.UniqueViolation("duplicate key")
        with pytest.raises(psycopg.errors.UniqueViolation) as info, pool.connection():
            raise error
        assert info.value is error
        assert pool.stats().idle == 1


def test_connection_timeout_argument() -> None:
    with fake_pool(FakeManager(), max_size=1, timeout=10.0) as pool:
        conn = pool.getconn()
        started = time.monotonic()
        with pytest.raises(PoolTimeout), pool.connection(timeout=SHORT):
            pass
        assert time.monotonic() - started < PROMPT
        pool.putconn(conn)


def test_timeout_names_the_pool() -> None:
    with fake_pool(FakeManager(), max_size=1, name="orders-db") as pool:
        conn = pool.getconn()
        started = time.monotonic()
        with pytest.raises(PoolTimeout) as info:
            pool.getconn(timeout=SHORT)
        elapsed = time.monotonic() - started
        assert SHORT * 0.9 <= elapsed < PROMPT
        error = info.value
        assert isinstance(error, TimeoutError)
        assert isinstance(error, PoolError)
        assert not isinstance(error, DatabaseUnavailable)
        assert "orders-db" in str(error)
        assert error.__cause__ is None  # no connection attempt ever failed
        stats = pool.stats()
        assert (stats.timeouts, stats.waiting) == (1, 0)  # no ghost waiter
        pool.putconn(conn)
        assert pool.stats().idle == 1  # not handed to the departed caller
        assert pool.getconn(timeout=SHORT) is conn
        pool.putconn(conn)


def test_timeout_cause_is_the_last_connect_error() -> None:
    manager = FakeManager()
    manager.connect_error = FakeError("connection refused")
    pool = fake_pool(manager, fail_fast=False, name="patient")
    try:
        pool.open(wait=False)
        started = time.monotonic()
        with pytest.raises(PoolTimeout) as info:
            pool.getconn(timeout=SHORT)
        elapsed = time.monotonic() - started
        assert SHORT * 0.9 <= elapsed < PROMPT  # fail_fast=False: waits out the timeout
        assert not isinstance(info.value, DatabaseUnavailable)
        assert "patient" in str(info.value)
        assert info.value.__cause__ is manager.connect_error
        assert manager.connect_failures >= 1
    finally:
        pool.close()


def test_connect_failure_fails_fast_then_heals() -> None:
    manager = FakeManager()
    manager.connect_error = FakeError("connection refused")
    pool = fake_pool(manager, name="down")
    try:
        pool.open(wait=False)
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable) as info:
            pool.getconn(timeout=LONG)
        assert time.monotonic() - started < well_under(LONG)  # it did not wait it out
        assert isinstance(info.value, PoolTimeout)
        assert "down" in str(info.value)
        assert info.value.__cause__ is manager.connect_error
        stats = pool.stats()
        assert stats.database_down
        assert stats.failed_fast >= 1
        assert stats.waiting == 0
        # The database is back: the next checkout succeeds at once, with no error.
        manager.connect_error = None
        started = time.monotonic()
        conn = pool.getconn(timeout=LONG)
        assert time.monotonic() - started < well_under(LONG)
        assert not pool.stats().database_down
        pool.putconn(conn)
    finally:
        pool.close()


class RedactingFakeManager(FakeManager):
    """A fake manager that, like the PostgreSQL one, knows a secret to keep out of errors."""

    def redact(self, text: str) -> str:
        return text.replace("hunter2", "***")


def test_fail_fast_error_describes_the_connect_error_redacted() -> None:
    manager = RedactingFakeManager()
    error = FakeError("password hunter2 was refused\nDETAIL: more than the first line")
    error.add_note("hint: check the password")
    manager.connect_error = error
    manager.connect_gate.clear()  # the first attempt hangs until both callers queue
    pool = fake_pool(manager, name="down")
    try:
        pool.open(wait=False)
        callers = [Task(pool.getconn, 10.0), Task(pool.getconn, 10.0)]
        Flavour.wait_until(lambda: pool.stats().waiting == 2)
        manager.connect_gate.set()  # the attempt fails: nothing else can serve them
        failures: list[BaseException] = []
        for caller in callers:
            with pytest.raises(DatabaseUnavailable) as info:
                caller.join()
            failures.append(info.value)
        for failure in failures:
            text = str(failure)
            assert "pool 'down': the database is unavailable" in text
            assert "FakeError: password *** was refused" in text
            assert "hint: check the password" in text
            assert "hunter2" not in text
            assert "DETAIL" not in text  # the first line only
            assert failure.__cause__ is error
        assert failures[0] is not failures[1]  # one error per caller: tracebacks differ
    finally:
        pool.close()


def test_too_many_requests_with_max_waiting() -> None:
    with fake_pool(FakeManager(), max_size=1, max_waiting=1) as pool:
        conn = pool.getconn()
        waiter = Task(pool.getconn, 10.0)
        Flavour.wait_until(lambda: pool.stats().waiting == 1)
        started = time.monotonic()
        with pytest.raises(TooManyRequests, match="max_waiting"):
            pool.getconn(timeout=LONG)
        assert time.monotonic() - started < well_under(LONG)  # refused at once
        pool.putconn(conn)
        assert waiter.join() is conn  # the queued caller was served
        pool.putconn(conn)
        stats = pool.stats()
        assert stats.rejected == 1
        assert pool.get_stats()["requests_errors"] == 1


def test_waiters_are_served_first_come_first_served() -> None:
    with fake_pool(FakeManager(), max_size=1) as pool:
        conn = pool.getconn()
        first = Task(pool.getconn, 10.0)
        Flavour.wait_until(lambda: pool.stats().waiting == 1)
        second = Task(pool.getconn, 10.0)
        Flavour.wait_until(lambda: pool.stats().waiting == 2)
        pool.putconn(conn)
        assert first.join() is conn
        assert not second.done()
        pool.putconn(conn)
        assert second.join() is conn
        pool.putconn(conn)


def test_pool_grows_on_demand_up_to_max_size() -> None:
    manager = FakeManager()
    with fake_pool(manager, min_size=0, max_size=3) as pool:
        assert manager.connects == 0
        conns = [pool.getconn(timeout=PATIENCE) for _ in range(3)]
        assert len({id(conn) for conn in conns}) == 3
        assert manager.connects == 3
        with pytest.raises(PoolTimeout):
            pool.getconn(timeout=SHORT)
        assert manager.connect_attempts == 3  # never above max_size
        for conn in conns:
            pool.putconn(conn)
        assert pool.stats().idle == 3


# -- health --------------------------------------------------------------------------------


def test_broken_connection_on_return_is_discarded_and_replaced() -> None:
    manager = FakeManager()
    with fake_pool(manager, min_size=1, max_size=1) as pool:
        conn = pool.getconn()
        conn.broken = True
        pool.putconn(conn)
        assert conn.closed
        Flavour.wait_until(lambda: pool.stats().idle == 1)
        replacement = pool.getconn()
        assert replacement is not conn
        assert not replacement.closed
        pool.putconn(replacement)
        stats = pool.stats()
        assert stats.returns_broken == 1
        assert stats.connections_closed.get("broken") == 1
        assert pool.get_stats()["returns_bad"] == 1


def test_broken_idle_connection_is_not_lent() -> None:
    manager = FakeManager()
    with fake_pool(manager, min_size=1, max_size=1) as pool:
        [first] = manager.connections
        first.broken = True  # its socket died while it sat idle
        conn = pool.getconn(timeout=PATIENCE)
        assert conn is not first
        assert first.closed
        pool.putconn(conn)


def test_reset_failure_discards_the_connection() -> None:
    manager = FakeManager()
    with fake_pool(manager, min_size=1, max_size=1) as pool:
        conn = pool.getconn()
        conn.reset_fails = True
        pool.putconn(conn)  # no error for the caller
        assert conn.resets == 1
        assert conn.closed
        Flavour.wait_until(lambda: pool.stats().idle == 1)
        replacement = pool.getconn()
        assert replacement is not conn
        pool.putconn(replacement)
        assert pool.stats().returns_broken == 1


def test_reset_failure_in_connection_block() -> None:
    manager = FakeManager()
    with fake_pool(manager, min_size=1, max_size=1) as pool:
        with pool.connection() as conn:
            conn.reset_fails = True
        assert conn.closed
        with pool.connection(timeout=PATIENCE) as replacement:
            assert replacement is not conn


@pytest.mark.parametrize(("check_after_idle", "checks"), [(0, 1), (None, 0), (60.0, 0)])
def test_check_before_lending_after_idle(check_after_idle: float | None, checks: int) -> None:
    manager = FakeManager()
    with fake_pool(manager, check_after_idle=check_after_idle) as pool:
        conn = pool.getconn()
        assert conn.checks == checks
        pool.putconn(conn)
        assert pool.stats().checks == checks


def test_failed_check_lends_another_connection() -> None:
    manager = FakeManager()
    with fake_pool(manager, min_size=2, max_size=2, check_after_idle=0) as pool:
        manager.fail_checks = 1
        conn = pool.getconn(timeout=PATIENCE)  # no error for the caller
        assert not conn.closed
        [failed] = [c for c in manager.connections if c.closed]
        assert failed is not conn
        assert failed.checks == 1
        pool.putconn(conn)
        stats = pool.stats()
        assert stats.checks_failed == 1
        assert stats.checkouts == 1  # the failed attempt is not a checkout
        Flavour.wait_until(lambda: pool.stats().idle == 2)


def test_check_replaces_failing_idle_connections() -> None:
    manager = FakeManager()
    with fake_pool(manager, min_size=1, max_size=1) as pool:
        manager.fail_checks = 1
        pool.check()  # pool.check(): ping every idle connection now
        [first, *_] = manager.connections
        assert first.closed
        Flavour.wait_until(lambda: pool.stats().idle == 1)
        assert manager.connects == 2
        assert pool.stats().checks_failed == 1


def test_max_lifetime_replaces_old_connections() -> None:
    manager = FakeManager()
    with fake_pool(manager, max_lifetime=0.05) as pool:
        [first] = manager.connections
        Flavour.wait_until(lambda: first.closed and pool.stats().idle == 1)
        assert pool.stats().connections_closed.get("expired", 0) >= 1
        conn = pool.getconn()
        assert conn is not first
        pool.putconn(conn)


def test_max_idle_shrinks_to_min_size() -> None:
    manager = FakeManager()
    with fake_pool(manager, min_size=1, max_size=3, max_idle=0.05) as pool:
        conns = [pool.getconn(timeout=PATIENCE) for _ in range(3)]
        for conn in conns:
            pool.putconn(conn)
        Flavour.wait_until(lambda: pool.stats().size == 1)
        assert pool.stats().connections_closed.get("idle") == 2


# -- administration ----------------------------------------------------------------------


def test_resize() -> None:
    manager = FakeManager()
    with fake_pool(manager, min_size=1, max_size=1) as pool:
        pool.resize(3, 4)
        Flavour.wait_until(lambda: pool.stats().idle == 3)
        stats = pool.stats()
        assert (stats.min_size, stats.max_size, stats.size) == (3, 4, 3)
        pool.resize(1)  # max_size follows min_size
        stats = pool.stats()
        assert (stats.min_size, stats.max_size, stats.size) == (1, 1, 1)
        assert manager.closes == 2
        with pytest.raises(ValueError, match="max_size"):
            pool.resize(3, 2)
        assert (pool.stats().min_size, pool.stats().max_size) == (1, 1)  # unchanged


def test_drain_replaces_every_connection() -> None:
    manager = FakeManager()
    with fake_pool(manager, min_size=2, max_size=2) as pool:
        old = list(manager.connections)
        lent = pool.getconn()
        pool.drain()
        idle_old = [c for c in old if c is not lent]
        assert all(c.closed for c in idle_old)
        assert not lent.closed  # a lent connection is replaced when it comes back
        pool.putconn(lent)
        assert lent.closed
        Flavour.wait_until(lambda: pool.stats().idle == 2)
        conn = pool.getconn()
        assert conn not in old
        pool.putconn(conn)
        closed = pool.stats().connections_closed
        assert closed.get("drained") == 1
        assert closed.get("retired") == 1


def test_stats_and_get_stats() -> None:
    manager = FakeManager()
    with fake_pool(manager, min_size=1, max_size=2, name="stats") as pool:
        first = pool.getconn()
        second = pool.getconn(timeout=PATIENCE)  # waits for a new connection
        stats = pool.stats()
        assert (stats.size, stats.idle, stats.in_use, stats.waiting) == (2, 0, 2, 0)
        pool.putconn(first)
        pool.putconn(second)
        stats = pool.stats()
        assert stats.name == "stats"
        assert (stats.min_size, stats.max_size) == (1, 2)
        assert (stats.size, stats.idle, stats.in_use, stats.connecting) == (2, 2, 0, 0)
        assert (stats.checkouts, stats.checkouts_waited) == (2, 1)
        assert (stats.connections_created, stats.connect_errors) == (2, 0)
        assert stats.usage_time.count == 2
        assert stats.wait_time.count == 2
        assert stats.connect_time.count == 2
        with pytest.raises(dataclasses.FrozenInstanceError):
            stats.idle = 5  # type: ignore[misc]
        assert pool.get_stats() == {
            "pool_min": 1,
            "pool_max": 2,
            "pool_size": 2,
            "pool_available": 2,
            "requests_waiting": 0,
            "requests_num": 2,
            "requests_queued": 1,
            "requests_wait_ms": round(stats.wait_time.total * 1000),
            "requests_errors": 0,
            "usage_ms": round(stats.usage_time.total * 1000),
            "returns_bad": 0,
            "connections_num": 2,
            "connections_ms": round(stats.connect_time.total * 1000),
            "connections_errors": 0,
            "connections_lost": 0,
        }


def test_stats_count_connect_errors() -> None:
    manager = FakeManager()
    manager.connect_error = FakeError("refused")
    pool = fake_pool(manager)
    try:
        pool.open(wait=False)
        Flavour.wait_until(lambda: pool.stats().connect_errors >= 1)
        stats = pool.get_stats()
        assert stats["connections_errors"] >= 1
        assert stats["connections_num"] >= 1
    finally:
        pool.close()


def _hold_a_connection_for_a_while(pool: Pool[FakeConn]) -> FakeConn:
    return pool.getconn()


def test_leak_timeout_logs_the_checkout_stack(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pgfleet")
    with fake_pool(FakeManager(), leak_timeout=0.05, name="leaky") as pool:
        conn = _hold_a_connection_for_a_while(pool)

        def leak_records() -> list[logging.LogRecord]:
            return [
                record
                for record in caplog.records
                if record.levelno == logging.WARNING and "leak_timeout" in record.getMessage()
            ]

        Flavour.wait_until(leak_records)
        [record] = leak_records()
        message = record.getMessage()
        assert "leaky" in message
        # The stack shows where the connection was taken, down to the caller's own line.
        assert "in test_leak_timeout_logs_the_checkout_stack\n" in message
        assert "in _hold_a_connection_for_a_while\n" in message
        assert pool.stats().leaks == 1
        pool.putconn(conn)
    assert any("came back" in r.getMessage() for r in caplog.records)


def test_leak_timeout_in_connection_block(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pgfleet")
    with fake_pool(FakeManager(), leak_timeout=0.05) as pool, pool.connection():
        Flavour.wait_until(lambda: pool.stats().leaks == 1)
        Flavour.wait_until(lambda: caplog.records)
    [record] = [r for r in caplog.records if "leak_timeout" in r.getMessage()]
    assert "in test_leak_timeout_in_connection_block\n" in record.getMessage()
