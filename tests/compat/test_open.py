"""How psycopg_pool 3.3 opens a pool when the code does not say, and what an asyncio pool
does without a running event loop (issue #16). Flavour-specific, so written per flavour."""

from __future__ import annotations

import asyncio

import pytest

import pgfleet
from compat.helpers import PROMPT, Impl

SYNC = pytest.mark.parametrize("kind", ["ConnectionPool", "NullConnectionPool"])
ASYNC = pytest.mark.parametrize("kind", ["AsyncConnectionPool", "AsyncNullConnectionPool"])


def min_size(kind: str) -> int:
    return 0 if "Null" in kind else 1


# -- threads --------------------------------------------------------------------------------


@SYNC
def test_implicit_open_warns_on_first_use(impl: Impl, kind: str, pg_dsn: str) -> None:
    # No `open` argument: the pool opens at once, and warns (once) that the default will
    # change when it is first used without having been opened explicitly.
    pool = getattr(impl, kind)(pg_dsn, min_size=min_size(kind), max_size=2)
    try:
        assert pool.closed is False
        with (
            pytest.warns(DeprecationWarning, match="open"),
            pool.connection(timeout=PROMPT * 2) as conn,
        ):
            assert conn.execute("SELECT 1").fetchone() == (1,)
        # Warned once only (warnings are errors in this suite).
        with pool.connection(timeout=PROMPT) as conn:
            assert conn.execute("SELECT 2").fetchone() == (2,)
    finally:
        pool.close()
    assert pool.closed is True


@SYNC
def test_implicit_open_warns_on_getconn_too(impl: Impl, kind: str, pg_dsn: str) -> None:
    pool = getattr(impl, kind)(pg_dsn, min_size=min_size(kind), max_size=2)
    try:
        with pytest.warns(DeprecationWarning, match="open"):
            conn = pool.getconn(timeout=PROMPT * 2)
        pool.putconn(conn)
    finally:
        pool.close()


@SYNC
def test_implicit_open_warns_on_wait_too(impl: Impl, kind: str, pg_dsn: str) -> None:
    pool = getattr(impl, kind)(pg_dsn, min_size=min_size(kind), max_size=2)
    try:
        with pytest.warns(DeprecationWarning, match="open"):
            pool.wait(timeout=PROMPT * 2)
    finally:
        pool.close()


@SYNC
def test_context_manager_does_not_warn(impl: Impl, kind: str, pg_dsn: str) -> None:
    # `with` is the documented form: no `open` argument, no warning (warnings are errors).
    with getattr(impl, kind)(pg_dsn, min_size=min_size(kind), max_size=2) as pool:
        pool.wait(timeout=PROMPT * 2)
        with pool.connection(timeout=PROMPT) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


@SYNC
def test_explicit_open_true_does_not_warn(impl: Impl, kind: str, pg_dsn: str) -> None:
    pool = getattr(impl, kind)(pg_dsn, min_size=min_size(kind), max_size=2, open=True)
    try:
        assert pool.closed is False
        with pool.connection(timeout=PROMPT * 2) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.close()


@SYNC
def test_open_method_does_not_warn(impl: Impl, kind: str, pg_dsn: str) -> None:
    pool = getattr(impl, kind)(pg_dsn, min_size=min_size(kind), max_size=2, open=False)
    pool.open()
    try:
        with pool.connection(timeout=PROMPT * 2) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.close()


# -- asyncio --------------------------------------------------------------------------------


@ASYNC
def test_async_pool_without_a_running_loop(impl: Impl, kind: str, pg_dsn: str) -> None:
    cls = getattr(impl, kind)
    # No `open` argument means "open now", which needs a running loop.
    with pytest.raises(RuntimeError, match="no running loop"):
        cls(pg_dsn, min_size=min_size(kind), max_size=2)
    with (
        pytest.warns(RuntimeWarning, match="constructor"),
        pytest.raises(RuntimeError, match="no running loop"),
    ):
        cls(pg_dsn, min_size=min_size(kind), max_size=2, open=True)
    # open=False: created here, opened later inside a loop.
    pool = cls(pg_dsn, min_size=min_size(kind), max_size=2, open=False)
    assert pool.closed is True

    async def use() -> int:
        async with pool, pool.connection(timeout=PROMPT * 2) as conn:
            cur = await conn.execute("SELECT 1")
            row = await cur.fetchone()
            assert row is not None
            return int(row[0])

    assert asyncio.run(use()) == 1
    assert pool.closed is True


@ASYNC
async def test_async_implicit_open_warns_on_first_use(impl: Impl, kind: str, pg_dsn: str) -> None:
    # Inside a loop, no `open` argument opens the pool in the constructor, silently; the
    # first checkout warns (once) that opening in the constructor is deprecated.
    pool = getattr(impl, kind)(pg_dsn, min_size=min_size(kind), max_size=2)
    try:
        assert pool.closed is False
        with pytest.warns(RuntimeWarning, match="constructor"):
            async with pool.connection(timeout=PROMPT * 2) as conn:
                await conn.execute("SELECT 1")
        async with pool.connection(timeout=PROMPT) as conn:
            await conn.execute("SELECT 2")
    finally:
        await pool.close()
    assert pool.closed is True


@ASYNC
async def test_async_open_true_warns_in_the_constructor(impl: Impl, kind: str, pg_dsn: str) -> None:
    with pytest.warns(RuntimeWarning, match="constructor"):
        pool = getattr(impl, kind)(pg_dsn, min_size=min_size(kind), max_size=2, open=True)
    try:
        assert pool.closed is False
        async with pool.connection(timeout=PROMPT * 2) as conn:  # no second warning
            await conn.execute("SELECT 1")
    finally:
        await pool.close()


@ASYNC
async def test_async_open_method_does_not_warn(impl: Impl, kind: str, pg_dsn: str) -> None:
    pool = getattr(impl, kind)(pg_dsn, min_size=min_size(kind), max_size=2, open=False)
    await pool.open()
    try:
        async with pool.connection(timeout=PROMPT * 2) as conn:
            await conn.execute("SELECT 1")
    finally:
        await pool.close()


def test_pgfleet_async_pool_without_a_running_loop(pg_dsn: str) -> None:
    # pgfleet's own AsyncPool says it as clearly (it never opens by default).
    with pytest.raises(RuntimeError, match="AsyncPool open with no running loop"):
        pgfleet.AsyncPool(pg_dsn, min_size=1, open=True)
    pool = pgfleet.AsyncPool(pg_dsn, min_size=1)
    assert pool.closed is True

    async def use() -> None:
        async with pool, pool.connection() as conn:
            await conn.execute("SELECT 1")

    asyncio.run(use())
    assert pool.closed is True


def test_pgfleet_open_default_warning_names_the_callers_line(pg_dsn: str) -> None:
    pool = pgfleet.ConnectionPool(pg_dsn, min_size=1, max_size=1)
    try:
        with pytest.warns(DeprecationWarning, match="open") as record:
            conn = pool.getconn(timeout=PROMPT * 2)
        pool.putconn(conn)
    finally:
        pool.close()
    assert record[0].filename == __file__


async def test_pgfleet_async_open_warning_names_the_callers_line(pg_dsn: str) -> None:
    with pytest.warns(RuntimeWarning, match="constructor") as record:
        pool = pgfleet.AsyncConnectionPool(pg_dsn, min_size=1, max_size=1, open=True)
    await pool.close()
    assert record[0].filename == __file__
