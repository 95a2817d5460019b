"""``pgfleet demo --serve-only`` in a subprocess: the people service, its pages, SIGINT."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from psycopg import sql

from support.cluster import APP_DBNAME, PgCluster

pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

#: Seconds the service may take to say it is serving.
START_TIMEOUT = 30.0
#: Seconds the demo may take to exit after SIGINT.
EXIT_AFTER_SIGNAL = 10.0

_SERVING = re.compile(r"^demo: serving on (http://\S+/)$")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def serve_schema(pg: PgCluster) -> Iterator[str]:
    """A schema name of the test's own for the demo (dropped after the test if left)."""
    schema = f"serve_{uuid.uuid4().hex[:12]}"
    yield schema
    pg.execute(
        sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)),
        dbname=APP_DBNAME,
    )


class Demo:
    """A running ``pgfleet demo --serve-only``; its stderr lines arrive on a queue."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pgfleet", "demo", "--serve-only", *args],
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for_url(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                break
            match = _SERVING.match(line)
            if match:
                return match.group(1)
        pytest.fail(f"no 'serving on' line; stderr:\n{''.join(self.stderr)}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(EXIT_AFTER_SIGNAL)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(5)
            if self.proc.stderr is not None:
                self.proc.stderr.close()


def _wait_for(client: httpx.Client, ready: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """GET /api/pool until `ready` says yes (within START_TIMEOUT)."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        snapshot: dict[str, Any] = client.get("/api/pool").json()
        if ready(snapshot):
            return snapshot
        if time.monotonic() > deadline:
            pytest.fail(f"/api/pool never got there: {snapshot}")
        time.sleep(0.2)


def test_serve_only_answers_then_stops_on_sigint(pg: PgCluster, serve_schema: str) -> None:
    port = _free_port()
    args = ("--dsn", pg.conninfo(), "--schema", serve_schema, "--port", str(port))
    demo = Demo(*args, "--pool-size", "3")
    try:
        url = demo.wait_for_url()
        assert url == f"http://127.0.0.1:{port}/"
        with httpx.Client(base_url=url, timeout=10) as client:
            health = client.get("/health")
            assert health.status_code == 200, health.text
            assert health.json()["status"] == "ok"

            created = client.post("/people", json={"name": "Ada", "data": {"lang": "en"}})
            assert created.status_code == 201, created.text
            person = created.json()
            assert person["name"] == "Ada"
            assert person["data"] == {"lang": "en"}
            fetched = client.get(f"/people/{person['id']}")
            assert fetched.status_code == 200
            assert fetched.json() == person
            found = client.get("/people", params={"name": "Ada"})
            assert found.status_code == 200
            assert [p["id"] for p in found.json()] == [person["id"]]
            assert client.get(f"/people/{uuid.uuid4()}").status_code == 404
            assert client.get("/people/not-a-uuid").status_code == 404
            assert client.post("/people", json={"name": ""}).status_code == 400

            snapshot = client.get("/api/pool").json()
            for key in ("size", "idle", "in_use", "waiting", "checkouts", "timeouts"):
                assert isinstance(snapshot[key], int), key
            assert snapshot["database_down"] is False
            assert snapshot["checkouts"] >= 4
            assert snapshot["max_size"] == 3
            buckets = snapshot["wait_time"]["buckets"]
            assert buckets
            assert buckets[-1]["le"] is None
            assert sum(b["count"] for b in buckets) == snapshot["wait_time"]["count"]
            assert any("open" in e["message"] for e in snapshot["events"])
            assert snapshot["health"]["state"] == "up"
            assert snapshot["recent"]["checkouts_per_s"] >= 0

            # One row per server: today the one of the DSN, with the pool's connections.
            [host] = snapshot["hosts"]
            assert host["address"] == f"127.0.0.1:{pg.port}"
            assert host["state"] == "up"
            assert 1 <= host["connections"] <= 3
            assert host["role"] == "primary"

            # The sampler adds a sample a second; `since` returns only the newer ones.
            sampled = _wait_for(client, lambda p: len(p["history"]["samples"]) >= 2)
            samples = sampled["history"]["samples"]
            assert [s["t"] for s in samples] == sorted(s["t"] for s in samples)
            assert all(s["max_size"] == 3 and s["state"] == "up" for s in samples)
            newer = client.get("/api/pool", params={"since": samples[-1]["t"]}).json()
            assert all(s["t"] > samples[-1]["t"] for s in newer["history"]["samples"])
            assert client.get("/api/pool", params={"since": "soon"}).status_code == 400

            metrics = client.get("/metrics")
            assert metrics.status_code == 200
            assert metrics.headers["content-type"].startswith("text/plain")
            assert re.search(r"^pgfleet_\w+\{[^}]*pool=", metrics.text, re.MULTILINE)
            assert re.search(
                r"^pgfleet_pool_waiting\{pool=\"pgfleet-demo-web\"\} 0\.0$",
                metrics.text,
                re.MULTILINE,
            ), metrics.text
            assert "_bucket{" in metrics.text

            page = client.get("/")
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            for element in ('id="in_use"', 'id="idle"', 'id="waiting"', 'id="checkouts"'):
                assert element in page.text
            assert "/api/pool" in page.text
            assert "http://" not in page.text
            assert "https://" not in page.text
    finally:
        started = time.monotonic()
        code = demo.stop()
    assert time.monotonic() - started < EXIT_AFTER_SIGNAL
    assert code == 128 + signal.SIGINT, "".join(demo.stderr)
    assert "interrupted by SIGINT" in "".join(demo.stderr)
    assert "Traceback" not in "".join(demo.stderr)
    # The demo's schema goes at exit, after the service has stopped.
    assert f"dropped schema {serve_schema!r}" in "".join(demo.stderr)
    gone = pg.execute(
        "SELECT 1 FROM pg_namespace WHERE nspname = %s", serve_schema, dbname=APP_DBNAME
    )
    assert not gone


def test_a_taken_port_exits_2_with_the_reason(pg_dsn: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable, "-m", "pgfleet", "demo", "--serve-only",
                "--dsn", pg_dsn, "--port", str(port),
            ],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "port is taken" in result.stderr
    assert "Traceback" not in result.stderr
