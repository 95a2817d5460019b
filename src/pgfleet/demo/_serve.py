"""``pgfleet demo --serve``: the people web service, its metrics and a live pool page.

A Starlette application on an `AsyncPool` (through `pgfleet.integrations.starlette`), run
by uvicorn on a socket bound up front, so that a taken port is reported before anything
else starts. Needs the ``demo`` extra (starlette, uvicorn, prometheus-client).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
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

from pgfleet import AsyncPool
from pgfleet._core.stats import PoolStats
from pgfleet._postgres.conninfo import redact as redact_secrets
from pgfleet._text import describe
from pgfleet.demo._workload import PeopleTable
from pgfleet.integrations.starlette import (
    health_endpoint,
    install_exception_handlers,
    pool_lifespan,
    request_connection,
)
from pgfleet.metrics.prometheus import PoolCollector

__all__ = ["EventLog", "ServeError", "build_app", "listen", "serve"]

#: Recent events kept for the live page.
EVENTS = 50
#: Seconds a request may wait for a connection.
CHECKOUT_TIMEOUT = 5.0
#: Rows a list of people returns at most.
LIST_LIMIT = 50
MAX_NAME = 200
POOL_NAME = "pgfleet-demo-web"


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
        self.down = False

    def see(self, s: PoolStats) -> None:
        if s.timeouts > self.timeouts:
            self.events.add(f"{s.timeouts - self.timeouts} checkout(s) timed out", "warning")
        if s.rejected > self.rejected:
            self.events.add(f"{s.rejected - self.rejected} request(s) rejected (queue full)")
        if s.database_down != self.down:
            self.events.add(
                "database is down" if s.database_down else "database is back",
                "warning" if s.database_down else "info",
            )
        self.timeouts, self.rejected, self.down = s.timeouts, s.rejected, s.database_down


# -- metrics ---------------------------------------------------------------------------


def _metrics_registry(pool: AsyncPool[Any]) -> CollectorRegistry:
    """A registry reporting on the demo's pool (`pgfleet.metrics.prometheus`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PoolCollector(pool))
    return registry


# -- the application -------------------------------------------------------------------


def _person(row: tuple[Any, ...]) -> dict[str, Any]:
    return {"id": str(row[0]), "name": row[1], "data": row[2]}


def _snapshot(s: PoolStats, events: EventLog) -> dict[str, Any]:
    h = s.wait_time
    return {
        "name": s.name,
        "min_size": s.min_size,
        "max_size": s.max_size,
        "size": s.size,
        "idle": s.idle,
        "in_use": s.in_use,
        "waiting": s.waiting,
        "connecting": s.connecting,
        "checkouts": s.checkouts,
        "timeouts": s.timeouts,
        "connections_created": s.connections_created,
        "connect_errors": s.connect_errors,
        "database_down": s.database_down,
        "wait_time": {
            "buckets": [
                {"le": bound, "count": count}
                for bound, count in zip((*h.buckets, None), h.counts, strict=True)
            ],
            "count": h.count,
            "maximum": h.maximum,
            "p50": h.quantile(0.5),
            "p99": h.quantile(0.99),
        },
        "events": list(reversed(events.events)),
    }


def build_app(
    pool: AsyncPool[Any],
    events: EventLog,
    table: PeopleTable,
    on_ready: Callable[[], None] | None = None,
) -> Starlette:
    """The people web service on `pool` (opened and closed by the app's lifespan), on
    `table`."""
    watcher = _Watcher(events)
    t = table.table
    by_name = sql.SQL("SELECT id, name, data FROM {t} WHERE name = %s ORDER BY id LIMIT %s")
    some = sql.SQL("SELECT id, name, data FROM {t} ORDER BY name LIMIT %s")
    by_id = sql.SQL("SELECT id, name, data FROM {t} WHERE id = %s")
    insert = sql.SQL("INSERT INTO {t} (name, data) VALUES (%s, %s) RETURNING id, name, data")
    by_name_q, some_q = by_name.format(t=t), some.format(t=t)
    by_id_q, insert_q = by_id.format(t=t), insert.format(t=t)
    registry = _metrics_registry(pool)
    opened = pool_lifespan(pool)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with opened(app):
            events.add(f"pool {pool.name!r} open")
            if on_ready is not None:
                on_ready()
            yield

    async def list_people(request: Request) -> Response:
        name = request.query_params.get("name")
        async with request_connection(request) as conn:
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
        async with request_connection(request) as conn:
            cur = await conn.execute(insert_q, (name, None if data is None else Jsonb(data)))
            row = await cur.fetchone()
        assert row is not None
        return JSONResponse(_person(row), status_code=201)

    async def get_person(request: Request) -> Response:
        try:
            person_id = UUID(request.path_params["id"])
        except ValueError:
            return JSONResponse({"error": "not found"}, status_code=404)
        async with request_connection(request) as conn:
            cur = await conn.execute(by_id_q, (person_id,))
            row = await cur.fetchone()
        if row is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse(_person(row))

    async def api_pool(request: Request) -> Response:
        stats = pool.stats()
        watcher.see(stats)
        return JSONResponse(_snapshot(stats, events), headers={"Cache-Control": "no-store"})

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
            Route("/health", health_endpoint(pool)),
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
            pool: AsyncPool[psycopg.AsyncConnection[Any]] = AsyncPool(
                conninfo,
                min_size=min(2, pool_size),
                max_size=pool_size,
                timeout=CHECKOUT_TIMEOUT,
                name=POOL_NAME,
            )
            app = build_app(pool, events, table, on_ready)
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


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pgfleet demo: live pool</title>
<link rel="icon" href="data:,">
<style>
body{font-family:system-ui,sans-serif;margin:2rem;background:#f7f7f9;color:#222}
h1{font-size:1.4rem;margin:0 0 .3rem} .sub{color:#666;margin-bottom:1.2rem}
.row{display:flex;gap:1rem;flex-wrap:wrap;margin-bottom:1rem}
.card{background:#fff;border:1px solid #ddd;border-radius:8px;padding:.8rem 1rem;min-width:9rem}
.card .n{font-size:2rem;font-weight:600} .card .l{color:#666;font-size:.85rem}
#slots{display:flex;gap:4px;flex-wrap:wrap;margin:.5rem 0 1rem}
.slot{width:22px;height:22px;border-radius:4px;border:1px solid #bbb}
.idle{background:#8fd19e}.in_use{background:#f0ad4e}.waiting{background:#d9534f}
.connecting{background:#9ecbf0}
#hist{display:flex;align-items:flex-end;gap:3px;height:120px;background:#fff;
border:1px solid #ddd;border-radius:8px;padding:.5rem}
#hist div{background:#5b8def;flex:1;min-height:1px}
#hist-labels{display:flex;gap:3px;padding:0 .5rem;font-size:.6rem;color:#666}
#hist-labels span{flex:1;overflow:hidden;text-align:center}
.stale .n{opacity:.35}
#events{list-style:none;padding:0;font-family:monospace;font-size:.85rem;max-width:60rem}
#events li{padding:.15rem 0;border-bottom:1px solid #eee}
.warning{color:#a94442} .down{color:#d9534f;font-weight:600}
</style></head><body>
<h1>pgfleet demo: <span id="name">pool</span></h1>
<div class="sub">Updated every second from <a href="/api/pool">/api/pool</a> &middot;
<a href="/metrics">/metrics</a> &middot; <a href="/health">/health</a> &middot;
<span id="status">?</span></div>
<div class="row" id="cards">
<div class="card"><div class="n" id="idle">-</div><div class="l">idle</div></div>
<div class="card"><div class="n" id="in_use">-</div><div class="l">in use</div></div>
<div class="card"><div class="n" id="waiting">-</div><div class="l">waiting</div></div>
<div class="card"><div class="n" id="size">-</div><div class="l">size (max
<span id="max_size">-</span>)</div></div>
<div class="card"><div class="n" id="checkouts">-</div><div class="l">checkouts</div></div>
<div class="card"><div class="n" id="timeouts">-</div><div class="l">timeouts</div></div>
</div>
<div id="slots"></div>
<h2 style="font-size:1rem">Wait time (p50 <span id="p50">-</span> ms,
p99 <span id="p99">-</span> ms, max <span id="wait_max">-</span> ms)</h2>
<div id="hist"></div><div id="hist-labels"></div>
<h2 style="font-size:1rem">Recent events (newest first)</h2>
<ul id="events"></ul>
<script>
"use strict";
function text(id, v) { document.getElementById(id).textContent = String(v); }
function ms(s) { return (s * 1000).toFixed(2); }
function label(le) {
  if (le === null) return "inf";
  return le < 0.001 ? (le * 1e6) + "\u00b5s" : le < 1 ? (le * 1000) + "ms" : le + "s";
}
function draw(p) {
  text("name", p.name); text("idle", p.idle); text("in_use", p.in_use);
  text("waiting", p.waiting); text("size", p.size); text("max_size", p.max_size);
  text("checkouts", p.checkouts); text("timeouts", p.timeouts);
  var st = document.getElementById("status");
  st.textContent = p.database_down ? "database: DOWN" : "database: up";
  st.className = p.database_down ? "down" : "";
  document.getElementById("cards").className = "row";
  var slots = document.getElementById("slots"); slots.replaceChildren();
  function add(cls, n) {
    for (var i = 0; i < n; i++) {
      var d = document.createElement("div"); d.className = "slot " + cls; d.title = cls;
      slots.appendChild(d);
    }
  }
  add("in_use", p.in_use); add("idle", p.idle); add("connecting", p.connecting);
  add("waiting", p.waiting);
  var w = p.wait_time; text("p50", ms(w.p50)); text("p99", ms(w.p99));
  text("wait_max", ms(w.maximum));
  var hist = document.getElementById("hist"), labels = document.getElementById("hist-labels");
  hist.replaceChildren(); labels.replaceChildren();
  var top = Math.max.apply(null, w.buckets.map(function (b) { return b.count; }).concat([1]));
  w.buckets.forEach(function (b) {
    var bar = document.createElement("div");
    // At least 3 px for a bucket that holds anything: a rare slow wait stays visible.
    bar.style.height = (b.count ? Math.max(3, Math.round(100 * b.count / top)) : 0) + "px";
    bar.title = "<= " + label(b.le) + ": " + b.count;
    hist.appendChild(bar);
    var l = document.createElement("span"); l.textContent = label(b.le); labels.appendChild(l);
  });
  var list = document.getElementById("events"); list.replaceChildren();
  p.events.forEach(function (e) {
    var li = document.createElement("li"); li.className = e.level;
    li.textContent = new Date(e.time * 1000).toLocaleTimeString() + "  " + e.message;
    list.appendChild(li);
  });
}
function poll() {
  fetch("/api/pool", {cache: "no-store"}).then(function (r) { return r.json(); })
    .then(draw).catch(function () {
      var st = document.getElementById("status");
      st.textContent = "the demo service is unreachable (numbers below are stale)";
      st.className = "down";
      document.getElementById("cards").className = "row stale";
    })
    .finally(function () { setTimeout(poll, 1000); });
}
poll();
</script></body></html>
"""
