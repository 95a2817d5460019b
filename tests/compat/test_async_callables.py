"""What only the asyncio pools accept: coroutine functions as ``conninfo``, ``kwargs`` and
``reconnect_failed`` (psycopg_pool 3.3 awaits them)."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg.conninfo import make_conninfo

from compat.helpers import PROMPT, Impl, unique_app
from support.flavours import AsyncFlavour

ASYNC = pytest.mark.parametrize("kind", ["AsyncConnectionPool", "AsyncNullConnectionPool"])


def make(impl: Impl, kind: str, conninfo: Any, **options: Any) -> Any:
    min_size = 0 if "Null" in kind else 1
    return getattr(impl, kind)(conninfo, min_size=min_size, open=False, **options)


async def application_name(pool: Any) -> str:
    async with pool.connection(timeout=PROMPT * 2) as conn:
        cur = await conn.execute("SHOW application_name")
        row = await cur.fetchone()
        assert row is not None
        return str(row[0])


@ASYNC
async def test_async_conninfo_callable(impl: Impl, kind: str, pg_dsn: str) -> None:
    app = unique_app()
    calls: list[str] = []

    async def conninfo() -> str:
        calls.append(f"{app}-{len(calls) + 1}")
        return make_conninfo(pg_dsn, application_name=calls[-1])

    async with make(impl, kind, conninfo, max_size=1) as pool:
        assert pool.conninfo is conninfo
        assert await application_name(pool) == f"{app}-1"
    assert calls == [f"{app}-1"]


@ASYNC
async def test_async_kwargs_callable(impl: Impl, kind: str, pg_dsn: str) -> None:
    app = unique_app()
    calls: list[str] = []

    async def kwargs() -> dict[str, Any]:
        calls.append(f"{app}-{len(calls) + 1}")
        return {"application_name": calls[-1]}

    async with make(impl, kind, pg_dsn, kwargs=kwargs, max_size=1) as pool:
        assert pool.kwargs is kwargs
        assert await application_name(pool) == f"{app}-1"
    assert calls == [f"{app}-1"]


@ASYNC
async def test_async_kwargs_callable_returning_connect_timeout(
    impl: Impl, kind: str, pg_dsn: str
) -> None:
    # libpq's connect_timeout, as psycopg_pool passes it to connect(); pgfleet bounds
    # each attempt itself and must not refuse the connection settings.
    app = unique_app()

    async def kwargs() -> dict[str, Any]:
        return {"connect_timeout": 5, "application_name": app}

    async with make(impl, kind, pg_dsn, kwargs=kwargs, max_size=1, timeout=PROMPT * 2) as pool:
        assert pool.kwargs is kwargs
        assert await application_name(pool) == app


async def test_async_reconnect_failed_callback(impl: Impl, dead_dsn: str) -> None:
    failed: list[Any] = []

    async def reconnect_failed(pool: Any) -> None:
        failed.append(pool)

    async with make(
        impl,
        "AsyncConnectionPool",
        dead_dsn,
        max_size=1,
        reconnect_timeout=0.1,
        reconnect_failed=reconnect_failed,
    ) as pool:
        await AsyncFlavour.wait_until(lambda: failed)
        assert failed[0] is pool
