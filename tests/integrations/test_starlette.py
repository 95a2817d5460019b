"""pgfleet.integrations.starlette on a real server: lifespan, per-request connections,
503s with Retry-After when the pool cannot lend, and a readiness endpoint that follows the
database down and back up."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
fastapi = pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx  # noqa: E402
import psycopg  # noqa: E402
from fastapi import Depends, FastAPI  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from pgfleet import AsyncPool  # noqa: E402
from pgfleet.errors import TooManyRequests  # noqa: E402
from pgfleet.integrations.starlette import (  # noqa: E402
    connection_dependency,
    get_connection,
    get_pool,
    health_endpoint,
    install_exception_handlers,
    pool_lifespan,
    request_connection,
)
from support.cluster import ClusterFactory  # noqa: E402
from support.timing import deadline_bound, well_under  # noqa: E402

README = Path(__file__).resolve().parents[2] / "README.md"

AsyncConn = psycopg.AsyncConnection[Any]


@asynccontextmanager
async def running(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan (as a server would) and yield a client bound to it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def _pid(conn: AsyncConn) -> int:
    cur = await conn.execute("SELECT pg_backend_pid()")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


def _fastapi_app(pool: AsyncPool[AsyncConn], release: asyncio.Event | None = None) -> FastAPI:
    app = FastAPI(lifespan=pool_lifespan(pool))
    install_exception_handlers(app, retry_after=2)
    app.add_api_route("/health", health_endpoint(pool, timeout=0.5))
    db = connection_dependency(pool)

    @app.get("/pid")
    async def pid(conn: AsyncConn = Depends(get_connection)) -> dict[str, int]:  # noqa: B008
        return {"pid": await _pid(conn)}

    @app.get("/pid2")
    async def pid2(conn: AsyncConn = Depends(db)) -> dict[str, int]:  # noqa: B008
        return {"pid": await _pid(conn)}

    @app.get("/hold")
    async def hold(conn: AsyncConn = Depends(get_connection)) -> dict[str, int]:  # noqa: B008
        assert release is not None
        await release.wait()
        return {"pid": await _pid(conn)}

    return app


async def test_lifespan_opens_the_pool_and_closes_it(pg_dsn: str) -> None:
    pool: AsyncPool[AsyncConn] = AsyncPool(pg_dsn, min_size=2, max_size=2, name="lifespan")
    app = Starlette(lifespan=pool_lifespan(pool))
    assert pool.stats().size == 0
    async with app.router.lifespan_context(app):
        assert app.state.pool is pool
        stats = pool.stats()
        assert stats.idle == 2  # opened waiting for min_size
        assert not pool.closed
    assert pool.closed


async def test_a_connection_per_request_is_given_back(pg_dsn: str) -> None:
    pool: AsyncPool[AsyncConn] = AsyncPool(pg_dsn, min_size=1, max_size=1, timeout=2.0)
    app = _fastapi_app(pool)

    async def starlette_pid(request: Request) -> JSONResponse:
        async with request_connection(request) as conn:
            return JSONResponse(
                {"pid": await _pid(conn), "in_use": get_pool(request).stats().in_use}
            )

    app.add_route("/starlette", starlette_pid)
    async with running(app) as client:
        pids = set()
        for path in ("/pid", "/pid2", "/starlette", "/pid", "/starlette"):
            response = await client.get(path)
            assert response.status_code == 200, response.text
            pids.add(response.json()["pid"])
            assert pool.stats().in_use == 0
        assert len(pids) == 1  # max_size=1: every request reused the one connection
        assert (await client.get("/starlette")).json()["in_use"] == 1
        assert pool.stats().checkouts >= 6


async def test_an_exhausted_pool_answers_503_with_retry_after_in_time(pg_dsn: str) -> None:
    release = asyncio.Event()
    timeout = 0.5
    pool: AsyncPool[AsyncConn] = AsyncPool(pg_dsn, min_size=1, max_size=1, timeout=timeout)
    app = _fastapi_app(pool, release)
    async with running(app) as client:
        holder = asyncio.create_task(client.get("/hold"))
        deadline = time.monotonic() + 5
        while pool.stats().in_use < 1:
            assert time.monotonic() < deadline, "the holder never got the connection"
            await asyncio.sleep(0.01)
        started = time.monotonic()
        responses = await asyncio.wait_for(
            asyncio.gather(*(client.get("/pid") for _ in range(5))), timeout=5
        )
        elapsed = time.monotonic() - started
        assert elapsed < deadline_bound(timeout), elapsed  # together, each within its timeout
        for response in responses:
            assert response.status_code == 503, response.text
            assert response.headers["Retry-After"] == "2"
            body = response.json()
            assert body["error"] == "pool_timeout"
            assert "password" not in response.text
            assert "127.0.0.1" not in response.text
        assert pool.stats().timeouts >= 5
        release.set()
        held = await asyncio.wait_for(holder, timeout=5)
        assert held.status_code == 200
        assert (await client.get("/pid")).status_code == 200


async def test_too_many_requests_answers_503(pg_dsn: str) -> None:
    release = asyncio.Event()
    timeout = 3.0
    pool: AsyncPool[AsyncConn] = AsyncPool(
        pg_dsn, min_size=1, max_size=1, timeout=timeout, max_waiting=1
    )
    app = _fastapi_app(pool, release)
    async with running(app) as client:
        holder = asyncio.create_task(client.get("/hold"))
        deadline = time.monotonic() + 5
        while pool.stats().in_use < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        waiter = asyncio.create_task(client.get("/pid"))
        while pool.stats().waiting < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        started = time.monotonic()
        rejected = await asyncio.wait_for(client.get("/pid"), timeout=5)
        assert time.monotonic() - started < well_under(timeout)  # refused at once
        assert rejected.status_code == 503, rejected.text
        assert rejected.headers["Retry-After"] == "2"
        assert rejected.json()["error"] == "too_many_requests"
        assert pool.stats().rejected >= 1
        release.set()
        assert (await asyncio.wait_for(holder, 5)).status_code == 200
        assert (await asyncio.wait_for(waiter, 5)).status_code == 200


async def test_a_handler_turns_too_many_requests_raised_anywhere_into_503() -> None:
    async def busy(request: Request) -> JSONResponse:
        raise TooManyRequests("queue full on host secret-host")

    app = Starlette(routes=[Route("/busy", busy)])
    install_exception_handlers(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/busy")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert "secret-host" not in response.text


async def _poll_health(client: httpx.AsyncClient, status: int, within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        response = await client.get("/health")
        assert response.status_code in (200, 503), response.text
        if response.status_code == status:
            body: dict[str, Any] = response.json()
            return body
        assert time.monotonic() < deadline, f"/health stayed {response.status_code}"
        await asyncio.sleep(0.05)


async def test_health_follows_the_database_down_and_back(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster()
    pool: AsyncPool[AsyncConn] = AsyncPool(
        cluster.conninfo(), min_size=1, max_size=2, timeout=0.5, reconnect_max_delay=0.5
    )
    app = _fastapi_app(pool)
    async with running(app) as client:
        ok = await _poll_health(client, 200, 5)
        assert ok["status"] == "ok"
        assert {"size", "idle", "in_use", "waiting"} <= ok.keys()
        await asyncio.to_thread(cluster.stop)
        down = await _poll_health(client, 503, 15)
        assert down["status"] == "unavailable"
        assert down["reason"]
        await asyncio.to_thread(cluster.start)
        await _poll_health(client, 200, 15)
        assert (await client.get("/pid")).status_code == 200


def _readme_example() -> str:
    text = README.read_text()
    match = re.search(r"<!-- example: fastapi -->\s*```python\n(.*?)```", text, re.DOTALL)
    assert match is not None, "README.md lost its FastAPI example"
    return match.group(1)


async def test_the_readme_fastapi_example_runs(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", pg_dsn)
    path = tmp_path / "readme_fastapi_app.py"
    path.write_text(_readme_example())
    spec = importlib.util.spec_from_file_location("readme_fastapi_app", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "readme_fastapi_app", module)
    spec.loader.exec_module(module)
    async with running(module.app) as client:
        health = await client.get("/health")
        assert health.status_code == 200, health.text
        now = await client.get("/now")
        assert now.status_code == 200, now.text
        assert now.json()["user"] == "app"
        assert module.pool.stats().in_use == 0
    assert module.pool.closed
