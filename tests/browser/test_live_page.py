"""The live page of ``pgfleet demo --serve`` in a real (headless) browser.

Starts ``python -m pgfleet demo --serve-only`` against the session's PostgreSQL, opens ``/``
in Chromium, loads ``/people`` from a background thread and checks that the page's pool numbers
(refreshed from ``/api/pool`` every second) move. Saves a screenshot outside the repository:
``$PGFLEET_ARTIFACTS/live-page.png`` (default ``/tmp/pgfleet-artifacts``).
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

#: Seconds the server may take to print its "serving on" line.
START_TIMEOUT = 30.0
#: Seconds the server may take to exit after SIGINT.
EXIT_AFTER_SIGNAL = 10.0
#: Seconds the page may take to show (or update) its numbers; it polls every second.
PAGE_WAIT = 15.0
#: Seconds of load on /people (at least, and at most), and how many clients send it.
LOAD_SECONDS = 2.0
LOAD_MAX_SECONDS = 8.0
LOAD_CLIENTS = 6
#: Seconds one HTTP request of the load may take.
REQUEST_TIMEOUT = 5.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NUMBER_IDS = ("idle", "in_use", "waiting", "checkouts")

_SERVING = re.compile(r"demo: serving on (http://\S+)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def output(self) -> str:
        return "".join(self.lines)

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def wait_for_url(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                pytest.fail(
                    f"the server exited (status {self.process.wait(1)}) before serving:\n"
                    f"{self.output()}",
                    pytrace=False,
                )
            if match := _SERVING.search(line):
                return match.group(1)
        pytest.fail(f"no 'serving on' line within {timeout:g} s:\n{self.output()}", pytrace=False)


@contextlib.contextmanager
def serve(dsn: str, port: int) -> Iterator[Server]:
    """``pgfleet demo --serve-only`` in a subprocess (stdout and stderr merged), killed at the
    end if still running."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    command = [sys.executable, "-m", "pgfleet", "demo", "--serve-only"]
    command += ["--dsn", dsn, "--port", str(port)]
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,  # a Ctrl-C of pytest does not reach it: the test signals it
    )
    server = Server(process)
    reader = threading.Thread(target=server._drain, name="serve-output", daemon=True)
    reader.start()
    try:
        yield server
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(EXIT_AFTER_SIGNAL)
        reader.join(EXIT_AFTER_SIGNAL)
        assert process.stdout is not None
        process.stdout.close()


@dataclass
class Load:
    """Clients sending POST /people and GET /people?name= until stopped (at the latest after
    LOAD_MAX_SECONDS), each request bounded by REQUEST_TIMEOUT."""

    base_url: str
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _client(self, deadline: float) -> None:
        name = f"browser-{uuid.uuid4().hex[:12]}"
        with httpx.Client(base_url=self.base_url, timeout=REQUEST_TIMEOUT) as client:
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    responses = [
                        client.post("/people", json={"name": name}),
                        client.get("/people", params={"name": name}),
                    ]
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                with self._lock:
                    for response in responses:
                        code = response.status_code
                        self.statuses[code] = self.statuses.get(code, 0) + 1

    def start(self, clients: int) -> list[threading.Thread]:
        deadline = time.monotonic() + LOAD_MAX_SECONDS
        workers = [
            threading.Thread(target=self._client, args=(deadline,), name=f"load-{i}", daemon=True)
            for i in range(clients)
        ]
        for worker in workers:
            worker.start()
        return workers


def _numbers(driver: Any) -> dict[str, int | None]:
    """The page's pool numbers by element id (None while an element is missing or shows
    no integer yet)."""
    texts = driver.execute_script(
        "return arguments[0].map(id => {"
        "  const el = document.getElementById(id); return el ? el.textContent : null; });",
        list(NUMBER_IDS),
    )
    numbers: dict[str, int | None] = {}
    for name, text in zip(NUMBER_IDS, texts, strict=True):
        cleaned = (text or "").strip().replace(",", "").replace("\u202f", "")
        numbers[name] = int(cleaned) if re.fullmatch(r"\d+", cleaned) else None
    return numbers


def _save_screenshot(driver: Any, directory: Path) -> Path:
    """A screenshot of the whole page (the window grown to its height)."""
    height = driver.execute_script(
        "return Math.max(document.documentElement.scrollHeight, document.body.scrollHeight);"
    )
    width = driver.get_window_size()["width"]
    driver.set_window_size(width, min(max(int(height) + 40, 600), 4000))
    path = directory / "live-page.png"
    path.unlink(missing_ok=True)
    assert driver.save_screenshot(str(path)), "selenium could not write the screenshot"
    return path


def _until(wait: Any, condition: Any) -> Any:
    """``wait.until(condition)``, or None when it times out."""
    from selenium.common.exceptions import TimeoutException

    try:
        return wait.until(condition)
    except TimeoutException:
        return None


@pytest.mark.timeout(120)
def test_live_page_follows_the_pool(browser: Any, pg_dsn: str, artifacts: Path) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    port = _free_port()
    with serve(pg_dsn, port) as server:
        url = server.wait_for_url(START_TIMEOUT)
        assert url == f"http://127.0.0.1:{port}/", f"serving on {url}, not on --port {port}"
        browser.get(url)
        wait = WebDriverWait(
            browser, PAGE_WAIT, 0.1, ignored_exceptions=[StaleElementReferenceException]
        )

        def showing_numbers(driver: Any) -> dict[str, int | None] | None:
            numbers = _numbers(driver)
            return numbers if None not in (numbers["in_use"], numbers["idle"]) else None

        shown = _until(wait, showing_numbers)
        if shown is None:
            pytest.fail(
                f"#in_use and #idle show no numbers after {PAGE_WAIT:g} s: {_numbers(browser)}\n"
                f"server output:\n{server.output()}",
                pytrace=False,
            )
        before = shown["checkouts"]
        assert before is not None, f"#checkouts shows no number: {shown}"

        # Load for LOAD_SECONDS, longer (up to LOAD_MAX_SECONDS) until a poll of the page has
        # shown a connection in use or a request waiting.
        load = Load(url)
        started = time.monotonic()
        workers = load.start(LOAD_CLIENTS)
        busiest = {"in_use": 0, "waiting": 0}
        try:
            while any(worker.is_alive() for worker in workers):
                now = _numbers(browser)
                for key in busiest:
                    busiest[key] = max(busiest[key], now[key] or 0)
                elapsed = time.monotonic() - started
                if elapsed >= LOAD_SECONDS and (
                    any(busiest.values()) or elapsed >= LOAD_MAX_SECONDS
                ):
                    break
                time.sleep(0.1)
        finally:
            load.stop.set()
        for worker in workers:
            worker.join(REQUEST_TIMEOUT * 2 + 1)
        assert not any(worker.is_alive() for worker in workers), "the load did not stop"
        assert not load.errors, f"HTTP errors under load: {load.errors[:5]}"
        bad = {code: n for code, n in load.statuses.items() if code >= 400}
        assert not bad, f"error responses under load: {load.statuses}"
        assert load.statuses, "the load sent no request"

        # Each request to /people checks out one connection: once the page has caught up, it
        # shows at least that many more checkouts, and nothing in use or waiting.
        expected = before + sum(load.statuses.values())

        def settled(driver: Any) -> dict[str, int | None] | None:
            numbers = _numbers(driver)
            checkouts = numbers["checkouts"]
            done = checkouts is not None and checkouts >= expected
            return numbers if done and numbers["in_use"] == numbers["waiting"] == 0 else None

        after = _until(wait, settled)
        if after is None:
            pytest.fail(
                f"after the load ({sum(load.statuses.values())} requests), the page did not "
                f"show {expected} or more checkouts with none in use or waiting within "
                f"{PAGE_WAIT:g} s: {_numbers(browser)}",
                pytrace=False,
            )
        assert any(busiest.values()), (
            f"no poll of the page showed a connection in use or a request waiting under load "
            f"({LOAD_CLIENTS} clients, {sum(load.statuses.values())} requests)"
        )
        print(
            f"page: checkouts {before} -> {after['checkouts']}, busiest poll seen {busiest}, "
            f"responses {load.statuses}"
        )

        path = _save_screenshot(browser, artifacts)
        assert path.is_file(), f"no screenshot at {path}"
        assert path.read_bytes()[:8] == PNG_MAGIC, f"{path} is not a PNG"

        server.process.send_signal(signal.SIGINT)
        try:
            status = server.process.wait(EXIT_AFTER_SIGNAL)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"the server did not exit within {EXIT_AFTER_SIGNAL:g} s of SIGINT:\n"
                f"{server.output()}",
                pytrace=False,
            )
        assert status in (0, 130, -signal.SIGINT), f"exit status {status}:\n{server.output()}"
