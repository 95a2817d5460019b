"""``pgfleet demo --serve``: the people web service, its metrics and a live pool page.

A Starlette application on an `AsyncPool` (through `pgfleet.integrations.starlette`), or on
an `AsyncClusterPool` when the conninfo names several hosts (reads go to the standbys,
writes to the primary), run by uvicorn on a socket bound up front, so that a taken port is
reported before anything else starts. A sampler reads the pool's `stats()` once a second
for the live page's history (`pgfleet.demo._live`); the page itself is `pgfleet.demo._page`.
Needs the ``demo`` extra (starlette, uvicorn, prometheus-client).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from uuid import UUID

import psycopg
import uvicorn
from prometheus_client import CollectorRegistry, generate_latest
from psycopg import sql
from psycopg.types.json import Jsonb
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from pgfleet import AsyncClusterPool, AsyncPool, PoolStats
from pgfleet._core.cluster import ClusterStats
from pgfleet._postgres.conninfo import redact as redact_secrets
from pgfleet._text import describe
from pgfleet.demo._live import (
    SAMPLE_EVERY,
    Health,
    History,
    HostBook,
    combined_stats,
    configured_hosts,
    snapshot,
)
from pgfleet.demo._page import PAGE
from pgfleet.demo._workload import PeopleTable
from pgfleet.errors import PoolError
from pgfleet.integrations.starlette import (
    health_endpoint,
    install_exception_handlers,
    pool_lifespan,
)
from pgfleet.metrics.prometheus import PoolCollector

__all__ = ["EventLog", "Lender", "ServeError", "build_app", "listen", "serve"]

#: What the service borrows from: one pool, or a pool per host of a cluster.
Lender = AsyncPool[Any] | AsyncClusterPool

logger = logging.getLogger("pgfleet.demo")

#: Recent events kept for the live page.
EVENTS = 50
#: Seconds a request may wait for a connection.
CHECKOUT_TIMEOUT = 5.0
#: Rows a list of people returns at most.
LIST_LIMIT = 50
MAX_NAME = 200
POOL_NAME = "pgfleet-demo-web"
#: Seconds an idle connection above the floor lives: short, so that the live page shows the
#: pool shrinking back after a burst.
MAX_IDLE = 30.0
#: Seconds without a checkout after which the sampler checks the idle connections, so that
#: the page shows an outage even when no request comes.
WATCH_AFTER = 2.0


class ServeError(RuntimeError):
    """The web service could not start (the message says why, without secrets)."""


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host`:`port`; `OSError` when the port is taken."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


# -- recent events ---------------------------------------------------------------------


class EventLog(logging.Handler):
    """A ring buffer of recent events, fed by the ``pgfleet`` logger and the service."""

    def __init__(self, size: int = EVENTS) -> None:
        super().__init__(logging.INFO)
        self.events: deque[dict[str, Any]] = deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage().splitlines()[0]
        except Exception:  # a bad format string must not break the pool's logging
            message = str(record.msg)
        self.add(message, record.levelname.lower(), record.created)

    def add(self, message: str, level: str = "info", when: float | None = None) -> None:
        """Record one event."""
        self.events.append(
            {"time": time.time() if when is None else when, "level": level, "message": message}
        )

    @classmethod
    @asynccontextmanager
    async def attached(cls, logger_name: str = "pgfleet") -> AsyncIterator[EventLog]:
        """A new log attached to `logger_name` (at INFO) for the block."""
        log = cls()
        logger = logging.getLogger(logger_name)
        level = logger.level
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        logger.addHandler(log)
        try:
            yield log
        finally:
            logger.removeHandler(log)
            logger.setLevel(level)


class _Watcher:
    """Turns changes of the pool's counters into events (timeouts, database down/back)."""

    def __init__(self, events: EventLog) -> None:
        self.events = events
        self.timeouts = 0
        self.rejected = 0
        self.state = "up"

    def see(self, s: PoolStats, state: str) -> None:
        if s.timeouts > self.timeouts:
            self.events.add(f"{s.timeouts - self.timeouts} checkout(s) timed out", "warning")
        if s.rejected > self.rejected:
            self.events.add(f"{s.rejected - self.rejected} request(s) rejected (queue full)")
        if state != self.state:
            if state == "down":
                self.events.add("database is down", "warning")
            elif state == "failing":
                self.events.add("checkouts are failing", "warning")
            else:
                self.events.add("database is back" if self.state == "down" else "checkouts ok")
        self.timeouts, self.rejected, self.state = s.timeouts, s.rejected, state


# -- metrics ---------------------------------------------------------------------------


def _metrics_registry(pool: Lender) -> CollectorRegistry:
    """A registry reporting on the demo's pool, or on each host's pool of a cluster pool
    (`pgfleet.metrics.prometheus`)."""
    registry = CollectorRegistry(auto_describe=False)
    pools = pool.pools if isinstance(pool, AsyncClusterPool) else (pool,)
    registry.register(PoolCollector(*pools))
    return registry


def _cluster_lifespan(
    pool: AsyncClusterPool,
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """`pool_lifespan` for a cluster pool: opened (until a primary is known), then closed."""

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await pool.open(wait=True, timeout=pool.timeout)
        try:
            yield
        finally:
            await pool.close()

    return lifespan


def _cluster_health(pool: AsyncClusterPool) -> Callable[[Request], Awaitable[Response]]:
    """`health_endpoint` for a cluster pool: ready while a primary is known."""

    async def health(request: Request) -> Response:
        s = pool.stats()
        ok = not pool.closed and s.primary is not None
        body: dict[str, Any] = {
            "status": "ok" if ok else "unavailable",
            "pool": s.name,
            "primary": s.primary,
            "hosts": [{"address": h.label, "role": h.role} for h in s.hosts],
        }
        if not ok:
            body["reason"] = "the pool is closed" if pool.closed else "no primary is known"
        return JSONResponse(body, status_code=200 if ok else 503)

    return health


# -- the application -------------------------------------------------------------------


def _person(row: tuple[Any, ...]) -> dict[str, Any]:
    return {"id": str(row[0]), "name": row[1], "data": row[2]}


class _Live:
    """What the live page reads: the pool's history, health and hosts, kept up to date by
    a sampler task while the application runs. A cluster pool's hosts' pools are added up
    for the charts; its `ClusterStats` give the hosts' rows and the failover marks."""

    def __init__(self, pool: Lender, events: EventLog, hosts: HostBook) -> None:
        self.pool = pool
        self.events = events
        self.hosts = hosts
        self.health = Health()
        self.history = History()
        self.watcher = _Watcher(events)
        self._last_checkouts = -1
        self._quiet_since = time.monotonic()
        self._checking: asyncio.Task[None] | None = None

    def stats(self) -> tuple[PoolStats, ClusterStats | None]:
        """The pool's stats (a cluster's added up), and a cluster pool's own."""
        if isinstance(self.pool, AsyncClusterPool):
            cluster = self.pool.stats()
            return combined_stats(cluster.name, [h.pool for h in cluster.hosts]), cluster
        return self.pool.stats(), None

    def _borrow(self, read_only: bool) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        if isinstance(self.pool, AsyncClusterPool):
            return self.pool.connection(read_only=read_only)
        return self.pool.connection()

    @asynccontextmanager
    async def connection(
        self, *, read_only: bool = False
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection for one request (on a cluster pool, `read_only` ones from a
        standby), noting whether the checkout succeeded (for the banner) and which server
        the connection goes to (for the hosts' rows)."""
        lent = False
        try:
            async with self._borrow(read_only) as conn:
                lent = True
                self.health.checkout_succeeded()
                key = self.hosts.lent(conn)
                try:
                    yield conn
                finally:
                    self.hosts.returned(key)
        except PoolError as exc:
            if not lent:  # the checkout failed, not the request's own work
                self.health.checkout_failed(exc, self.stats()[0])
            raise

    def sample(self) -> None:
        """Take one sample (the sampler calls this every `SAMPLE_EVERY` seconds)."""
        stats, cluster = self.stats()
        now = time.time()
        state = self.health.evaluate(stats, now)
        self.watcher.see(stats, state)
        self.history.observe(stats, now, state)
        if cluster is not None:
            mark = self.history.observe_cluster(cluster, now)
            if mark is not None:
                self.events.add(mark.text, "warning")
        self._watch_idle(stats)

    def _watch_idle(self, stats: PoolStats) -> None:
        """With no checkout for a while, check the idle connections: an outage shows on the
        page even when nobody sends a request (the pool itself only notices at a checkout)."""
        moment = time.monotonic()
        if stats.checkouts != self._last_checkouts:
            self._last_checkouts, self._quiet_since = stats.checkouts, moment
            return
        busy = self._checking is not None and not self._checking.done()
        if moment - self._quiet_since >= WATCH_AFTER and stats.idle and not busy:
            self._quiet_since = moment
            self._checking = asyncio.create_task(self._check_idle())

    async def _check_idle(self) -> None:
        pools = self.pool.pools if isinstance(self.pool, AsyncClusterPool) else (self.pool,)
        try:
            for pool in pools:
                await pool.check()
        except Exception as exc:  # closing, say: the next sample tries again
            logger.debug("checking the idle connections failed: %s", exc)

    async def run(self) -> None:
        """Sample until cancelled."""
        try:
            while True:
                try:
                    self.sample()
                except Exception:  # the page must keep its history going
                    logger.exception("sampling the pool failed")
                await asyncio.sleep(SAMPLE_EVERY)
        finally:
            if self._checking is not None:
                self._checking.cancel()

    def snapshot(self, since: float) -> dict[str, Any]:
        """The body of ``/api/pool``."""
        stats, cluster = self.stats()
        now = time.time()
        self.health.evaluate(stats, now)
        return snapshot(
            stats,
            now=now,
            health=self.health,
            history=self.history,
            hosts=self.hosts,
            events=reversed(self.events.events),
            since=since,
            cluster=cluster,
        )


def build_app(
    pool: Lender,
    events: EventLog,
    table: PeopleTable,
    hosts: HostBook,
    on_ready: Callable[[], None] | None = None,
) -> Starlette:
    """The people web service on `pool` (opened and closed by the app's lifespan), on
    `table`; `hosts` must be the pool's ``configure`` callback's book. On a cluster pool,
    the reads go to the standbys: a person just added may take a moment to be listed."""
    live = _Live(pool, events, hosts)
    registry = _metrics_registry(pool)
    opened = _cluster_lifespan(pool) if isinstance(pool, AsyncClusterPool) else pool_lifespan(pool)
    health = _cluster_health(pool) if isinstance(pool, AsyncClusterPool) else health_endpoint(pool)
    t = table.table
    by_name = sql.SQL("SELECT id, name, data FROM {t} WHERE name = %s ORDER BY id LIMIT %s")
    some = sql.SQL("SELECT id, name, data FROM {t} ORDER BY name LIMIT %s")
    by_id = sql.SQL("SELECT id, name, data FROM {t} WHERE id = %s")
    insert = sql.SQL("INSERT INTO {t} (name, data) VALUES (%s, %s) RETURNING id, name, data")
    by_name_q, some_q = by_name.format(t=t), some.format(t=t)
    by_id_q, insert_q = by_id.format(t=t), insert.format(t=t)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with opened(app):
            events.add(f"pool {pool.name!r} open")
            sampler = asyncio.create_task(live.run())
            try:
                if on_ready is not None:
                    on_ready()
                yield
            finally:
                sampler.cancel()
                try:
                    await sampler
                except asyncio.CancelledError:
                    pass

    async def list_people(request: Request) -> Response:
        name = request.query_params.get("name")
        async with live.connection(read_only=True) as conn:
            if name is None:
                cur = await conn.execute(some_q, (LIST_LIMIT,))
            else:
                cur = await conn.execute(by_name_q, (name, LIST_LIMIT))
            rows = await cur.fetchall()
        return JSONResponse([_person(row) for row in rows])

    async def add_person(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "the body must be JSON"}, status_code=400)
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
            return JSONResponse(
                {"error": f"'name' must be a string of 1 to {MAX_NAME} characters"},
                status_code=400,
            )
        data = body.get("data")
        async with live.connection() as conn:
            cur = await conn.execute(insert_q, (name, None if data is None else Jsonb(data)))
            row = await cur.fetchone()
        assert row is not None
        return JSONResponse(_person(row), status_code=201)

    async def get_person(request: Request) -> Response:
        try:
            person_id = UUID(request.path_params["id"])
        except ValueError:
            return JSONResponse({"error": "not found"}, status_code=404)
        async with live.connection(read_only=True) as conn:
            cur = await conn.execute(by_id_q, (person_id,))
            row = await cur.fetchone()
        if row is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse(_person(row))

    async def api_pool(request: Request) -> Response:
        try:
            since = float(request.query_params.get("since", "0"))
        except ValueError:
            return JSONResponse({"error": "'since' must be a number"}, status_code=400)
        return JSONResponse(live.snapshot(since), headers={"Cache-Control": "no-store"})

    async def metrics(request: Request) -> Response:
        return Response(
            generate_latest(registry), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE)

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/people", list_people, methods=["GET"]),
            Route("/people", add_person, methods=["POST"]),
            Route("/people/{id}", get_person, methods=["GET"]),
            Route("/health", health),
            Route("/metrics", metrics),
            Route("/api/pool", api_pool),
        ],
        lifespan=lifespan,
    )
    install_exception_handlers(app)
    return app


# -- running it ------------------------------------------------------------------------


def serve(
    conninfo: str,
    sock: socket.socket,
    *,
    pool_size: int,
    table: PeopleTable,
    announce: Callable[[str], None],
    redact: Callable[[str], str] = redact_secrets,
    open_timeout: float = 10.0,
) -> None:
    """Serve on `sock` until SIGINT/SIGTERM; `announce` gets the URL once ready.

    Raises `ServeError` when the service cannot start (the pool cannot open).
    """
    host, port = sock.getsockname()[:2]
    display = f"[{host}]" if ":" in host else host
    url = f"http://{display}:{port}/"
    ready = False

    def on_ready() -> None:
        nonlocal ready
        ready = True

    async def main() -> None:
        async with EventLog.attached() as events:
            hosts = HostBook(conninfo, os.environ)
            options: dict[str, Any] = {
                "min_size": min(2, pool_size),
                "max_size": pool_size,
                "timeout": CHECKOUT_TIMEOUT,
                "max_idle": MAX_IDLE,
                "configure": hosts.configure,
                "name": POOL_NAME,
            }
            # Several hosts in the conninfo itself (not PGHOST): a pool per host, and the
            # page shows the cluster (roles, lag, failovers).
            pool: Lender = (
                AsyncClusterPool(conninfo, **options)
                if len(configured_hosts(conninfo, {})) > 1
                else AsyncPool(conninfo, **options)
            )
            app = build_app(pool, events, table, hosts, on_ready)
            config = uvicorn.Config(
                app,
                lifespan="on",
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=3,
            )
            server = uvicorn.Server(config)
            failure: list[str] = []

            async def announce_when_started() -> None:
                while not server.started and not server.should_exit:
                    await asyncio.sleep(0.02)
                if server.started:
                    announce(url)

            announcer = asyncio.create_task(announce_when_started())
            try:
                # Opened here, so that a failure is one clear line (the lifespan's open
                # is then a no-op).
                await pool.open(wait=True, timeout=open_timeout)
                await server.serve(sockets=[sock])
            except (psycopg.Error, OSError) as exc:
                failure.append(describe(exc, redact=redact))
            finally:
                announcer.cancel()
                if not pool.closed:
                    await pool.close()
            if not ready:
                reason = failure[0] if failure else "the pool could not open (see the log above)"
                raise ServeError(f"the web service could not start: {reason}")

    asyncio.run(main())
