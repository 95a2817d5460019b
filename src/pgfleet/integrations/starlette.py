"""pgfleet for Starlette and FastAPI (extra ``starlette``).

Four pieces, each usable alone:

- `pool_lifespan`: opens an `AsyncPool` at start-up (waiting for the database), puts it on
  ``app.state.pool`` and closes it at shutdown;
- a connection per request, given back when the request ends: `get_connection` or
  `connection_dependency` for FastAPI's ``Depends``, `request_connection` for plain Starlette;
- `install_exception_handlers`: `PoolTimeout` and `TooManyRequests` become 503 with
  ``Retry-After``, `DatabaseUnavailable` a 503 that says the database is down;
- `health_endpoint`: a readiness probe, 200 when the pool can lend, else 503.

Example (FastAPI)::

    from fastapi import Depends, FastAPI
    from pgfleet import AsyncPool
    from pgfleet.integrations.starlette import (
        get_connection, install_exception_handlers, health_endpoint, pool_lifespan,
    )

    pool = AsyncPool(min_size=2, max_size=10, timeout=2.0)
    app = FastAPI(lifespan=pool_lifespan(pool))
    install_exception_handlers(app)
    app.add_api_route("/health", health_endpoint(pool))

    @app.get("/now")
    async def now(conn=Depends(get_connection)):
        cur = await conn.execute("SELECT now()")
        return {"now": (await cur.fetchone())[0]}
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import psycopg
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from pgfleet._async.pool import AsyncPool
from pgfleet.errors import DatabaseUnavailable, PoolClosed, PoolTimeout, TooManyRequests

__all__ = [
    "DEFAULT_STATE_KEY",
    "connection_dependency",
    "get_connection",
    "get_pool",
    "health_endpoint",
    "install_exception_handlers",
    "pool_lifespan",
    "request_connection",
]

ConnT = TypeVar("ConnT")

#: The attribute of ``app.state`` that holds the pool.
DEFAULT_STATE_KEY = "pool"


def pool_lifespan(
    pool: AsyncPool[Any],
    *,
    wait: bool = True,
    timeout: float | None = None,
    state_key: str = DEFAULT_STATE_KEY,
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A ``lifespan=`` for Starlette or FastAPI that opens and closes `pool`.

    At start-up the pool is opened (with `wait`, until ``min_size`` connections are ready,
    for at most `timeout` seconds, default the pool's ``timeout``; a database that does not
    answer then fails the start-up with `PoolTimeout`) and stored on ``app.state.<state_key>``.
    At shutdown the pool is closed.

    Example::

        pool = AsyncPool("postgresql://app@db/app", min_size=2)
        app = Starlette(routes=[...], lifespan=pool_lifespan(pool))
    """

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await pool.open(wait=wait, timeout=pool.settings.timeout if timeout is None else timeout)
        try:
            setattr(app.state, state_key, pool)
            yield
        finally:
            await pool.close()

    return lifespan


def get_pool(request: HTTPConnection, state_key: str = DEFAULT_STATE_KEY) -> AsyncPool[Any]:
    """The pool `pool_lifespan` stored on the application's state.

    Example::

        stats = get_pool(request).stats()
    """
    pool = getattr(request.app.state, state_key, None)
    if not isinstance(pool, AsyncPool):
        raise RuntimeError(
            f"no pgfleet AsyncPool on app.state.{state_key}: use lifespan=pool_lifespan(pool)"
        )
    return pool


async def get_connection(request: Request) -> AsyncIterator[Any]:
    """FastAPI dependency: a connection from ``app.state.pool`` for the request.

    The connection is given back when the request ends (committed if the endpoint returned,
    rolled back if it raised).

    Example::

        @app.get("/count")
        async def count(conn: psycopg.AsyncConnection = Depends(get_connection)):
            cur = await conn.execute("SELECT count(*) FROM people")
            return {"count": (await cur.fetchone())[0]}
    """
    async with get_pool(request).connection() as conn:
        yield conn


def connection_dependency(
    pool: AsyncPool[ConnT], *, timeout: float | None = None
) -> Callable[[], AsyncIterator[ConnT]]:
    """FastAPI dependency factory: a connection from `pool` (not from ``app.state``).

    `timeout` bounds the checkout (default: the pool's ``timeout``).

    Example::

        db = connection_dependency(pool, timeout=1.0)

        @app.get("/one")
        async def one(conn=Depends(db)):
            return {"one": (await (await conn.execute("SELECT 1")).fetchone())[0]}
    """

    async def dependency() -> AsyncIterator[ConnT]:
        async with pool.connection(timeout) as conn:
            yield conn

    return dependency


@asynccontextmanager
async def request_connection(
    request: HTTPConnection, *, timeout: float | None = None
) -> AsyncIterator[Any]:
    """Plain Starlette: ``async with request_connection(request) as conn``.

    Borrows from ``app.state.pool`` and gives the connection back at the end of the block.

    Example::

        async def people(request: Request) -> JSONResponse:
            async with request_connection(request) as conn:
                cur = await conn.execute("SELECT name FROM people LIMIT 10")
                return JSONResponse([row[0] for row in await cur.fetchall()])
    """
    async with get_pool(request).connection(timeout) as conn:
        yield conn


def _retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


def install_exception_handlers(app: Any, *, retry_after: float = 1) -> None:
    """Turn the pool's errors into 503 responses on a Starlette or FastAPI `app`.

    - `PoolTimeout` and `TooManyRequests`: 503 with ``Retry-After: <retry_after>``;
    - `DatabaseUnavailable`: 503 (with ``Retry-After`` too) saying the database is down;
    - `PoolClosed`: 503 (the service is shutting down).

    The JSON body is ``{"error": <code>, "detail": <short reason>}``: never the exception's
    message, which may name hosts and users.

    Example::

        app = FastAPI(lifespan=pool_lifespan(pool))
        install_exception_handlers(app, retry_after=2)
    """
    headers = {"Retry-After": _retry_after(retry_after)}

    def handler(code: str, detail: str) -> Callable[[Request, Exception], Awaitable[Response]]:
        async def handle(request: Request, exc: Exception) -> Response:
            return JSONResponse({"error": code, "detail": detail}, status_code=503, headers=headers)

        return handle

    app.add_exception_handler(
        PoolTimeout,
        handler("pool_timeout", "no database connection was free in time; retry later"),
    )
    app.add_exception_handler(
        DatabaseUnavailable,
        handler("database_unavailable", "the database is unavailable; retry later"),
    )
    app.add_exception_handler(
        TooManyRequests,
        handler("too_many_requests", "too many requests are waiting for the database"),
    )
    app.add_exception_handler(PoolClosed, handler("pool_closed", "the service is shutting down"))


def _pool_numbers(pool: AsyncPool[Any]) -> dict[str, Any]:
    s = pool.stats()
    return {
        "pool": s.name,
        "size": s.size,
        "idle": s.idle,
        "in_use": s.in_use,
        "waiting": s.waiting,
        "max_size": s.max_size,
        "database_down": s.database_down,
    }


def health_endpoint(
    pool: AsyncPool[Any], *, timeout: float = 1.0
) -> Callable[[Request], Awaitable[Response]]:
    """A readiness endpoint: 200 ``{"status": "ok", ...}`` when `pool` can lend, else 503.

    Ready means: the pool is open, does not know the database to be down, and a checkout
    within `timeout` seconds succeeds (a psycopg connection also answers ``SELECT 1``).
    The body carries the pool's numbers (size, idle, in_use, waiting, ...).

    Example::

        app = Starlette(
            routes=[Route("/health", health_endpoint(pool))], lifespan=pool_lifespan(pool)
        )
    """

    async def health(request: Request) -> Response:
        status, reason = "ok", ""
        if pool.closed:
            status, reason = "unavailable", "the pool is closed"
        elif pool.stats().database_down:
            status, reason = "unavailable", "the database is down"
        else:
            try:
                async with pool.connection(timeout) as conn:
                    if isinstance(conn, psycopg.AsyncConnection):
                        await conn.execute("SELECT 1")
            except PoolTimeout:
                status, reason = "unavailable", f"no connection within {timeout:g} s"
            except (psycopg.Error, OSError):
                status, reason = "unavailable", "the database did not answer"
        body: dict[str, Any] = {"status": status, **_pool_numbers(pool)}
        if reason:
            body["reason"] = reason
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    return health
