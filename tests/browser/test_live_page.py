"""The live page of ``pgfleet demo --serve`` in a real (headless) browser.

Starts ``python -m pgfleet demo --serve-only`` against a real PostgreSQL, opens ``/`` in
Chromium, loads ``/people`` from background threads and checks what the page draws from
``/api/pool`` (polled every second): the numbers move; the throughput, wait and size charts
fill; the legends say what the colours and marks mean; the wait histogram shows every
non-empty bucket on a log scale with its count; the servers table has the DSN's host; and a
banner says the database is down while its server is stopped, and goes once it is back.
With a primary and a standby in the DSN, the page shows a cluster pool: one row per host
with its role, reads going to the standby and writes to the primary; after the primary
crashes and the standby is promoted, a failover mark and the new roles.
Saves screenshots outside the repository: ``$PGFLEET_ARTIFACTS/live-page.png``,
``live-page-down.png`` and ``live-page-failover.png`` (default ``/tmp/pgfleet-artifacts``).
"""

from __future__ import annotations

import contextlib
import itertools
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from psycopg.conninfo import conninfo_to_dict

from cluster.conftest import ReplicationFactory
from support.cluster import APP_PASSWORD, ClusterFactory

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
#: The pool's size for the load test: smaller than LOAD_CLIENTS, so that requests wait.
POOL_SIZE = 3
#: Pixels: the least height of a histogram bar that holds anything.
MIN_BAR = 3.0
#: What the legends must explain.
LEGEND_WORDS = (
    "checkouts per second",
    "p50",
    "p99",
    "in use",
    "idle",
    "connecting",
    "waiting requests",
    "max size",
    "grew",
    "shrank",
    "reconnect",
    "checkout timed out",
    "database down",
)

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
def serve(dsn: str, port: int, *args: str) -> Iterator[Server]:
    """``pgfleet demo --serve-only`` in a subprocess (stdout and stderr merged), killed at the
    end if still running. Its schema is one of its own, dropped at exit."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    command = [sys.executable, "-m", "pgfleet", "demo", "--serve-only"]
    command += ["--dsn", dsn, "--port", str(port), "--schema", f"browser_{uuid.uuid4().hex[:8]}"]
    command += args
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


def _save_screenshot(driver: Any, directory: Path, name: str = "live-page.png") -> Path:
    """A screenshot of the whole page (the window grown to its height, the page redrawn)."""
    from selenium.webdriver.support.ui import WebDriverWait

    width = driver.get_window_size()["width"]
    for _ in range(3):  # a redraw for the new size may change the height again
        height = driver.execute_script(
            "return Math.max(document.documentElement.scrollHeight, document.body.scrollHeight);"
        )
        inner = driver.execute_script("return window.innerHeight;")
        wanted = min(max(int(height), 600), 4000)
        if inner >= wanted:
            break
        frame = driver.get_window_size()["height"] - inner  # the window's own bars, if any
        driver.set_window_size(width, wanted + frame)
        # The charts are drawn for the window: wait for the next poll to redraw them.
        _until(WebDriverWait(driver, PAGE_WAIT, 0.1), _redrawn(_text(driver, "updated")))
    path = directory / name
    path.unlink(missing_ok=True)
    assert driver.save_screenshot(str(path)), "selenium could not write the screenshot"
    assert path.read_bytes()[:8] == PNG_MAGIC, f"{path} is not a PNG"
    return path


def _redrawn(shown: str) -> Callable[[Any], bool]:
    """A wait condition: the page's "updated" line is no longer `shown`."""
    return lambda driver: _text(driver, "updated") != shown


def _text(driver: Any, element_id: str) -> str:
    text: str = driver.execute_script(
        "const el = document.getElementById(arguments[0]); return el ? el.textContent : '';",
        element_id,
    )
    return text


def _banner(driver: Any) -> dict[str, Any]:
    """The alert banner: shown or not, its text, and its role."""
    banner: dict[str, Any] = driver.execute_script(
        "const b = document.getElementById('banner');"
        "return {shown: !b.hidden && b.offsetHeight > 0, text: b.textContent,"
        " role: b.getAttribute('role')};"
    )
    return banner


def _hosts(driver: Any) -> list[list[str]]:
    """The servers table's rows, as the cells' texts."""
    rows: list[list[str]] = driver.execute_script(
        "return [...document.querySelectorAll('#hosts tbody tr.host')].map("
        "  tr => [...tr.cells].map(td => td.textContent.trim()));"
    )
    return rows


#: What the page's charts hold, read from the SVG the script drew.
_CHARTS_JS = """
const bbox = (el) => { const b = el.getBoundingClientRect(); return [b.width, b.height]; };
const series = (svg, key) => {
  const el = document.querySelector('#' + svg + ' [data-series="' + key + '"]');
  return el ? {points: Number(el.dataset.points || 0), max: Number(el.dataset.max || 0),
               size: bbox(el), hidden: el.getAttribute('visibility') === 'hidden'} : null;
};
const charts = {};
for (const id of ['chart-throughput', 'chart-wait', 'chart-size', 'histogram']) {
  const svg = document.getElementById(id);
  const label = (svg.getAttribute('aria-labelledby') || '').split(' ')
    .map((x) => document.getElementById(x)).filter(Boolean).map((x) => x.textContent).join(' ');
  const desc = document.getElementById(svg.getAttribute('aria-describedby') || '');
  charts[id] = {role: svg.getAttribute('role'), label: label,
                description: desc ? desc.textContent : '', size: bbox(svg)};
}
return {
  charts: charts,
  throughput: series('chart-throughput', 'throughput'),
  p50: series('chart-wait', 'wait_p50'),
  p99: series('chart-wait', 'wait_p99'),
  in_use: series('chart-size', 'in_use'),
  idle: series('chart-size', 'idle'),
  maxLine: document.querySelector('#chart-size .max-line') !== null,
  legends: [...document.querySelectorAll('ul.legend')].map((u) => u.textContent).join(' | '),
  bars: [...document.querySelectorAll('#histogram rect.bar')].map((r) => ({
    count: Number(r.dataset.count), le: r.dataset.le, height: r.getBoundingClientRect().height,
    label: r.nextElementSibling ? r.nextElementSibling.textContent : null})),
  bucketLabels: [...document.querySelectorAll('#histogram text')].length,
  headings: [...document.querySelectorAll('h1, h2, h3')].map((h) => h.textContent.trim()),
};
"""


def _charts(driver: Any) -> dict[str, Any]:
    charts: dict[str, Any] = driver.execute_script(_CHARTS_JS)
    return charts


def _compact(n: int) -> str:
    """The page's short form of a count (1234 -> 1.2k)."""
    for value, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= value:
            x = n / value
            return (f"{x:.1f}".removesuffix(".0") if x < 10 else str(round(x))) + unit
    return str(n)


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
    with serve(pg_dsn, port, "--pool-size", str(POOL_SIZE)) as server:
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

        _check_charts(browser)
        _check_log_histogram(browser)
        rows = _hosts(browser)
        dsn_port = conninfo_to_dict(pg_dsn)["port"]
        assert len(rows) == 1, f"one server, one row: {rows}"
        assert rows[0][0] == f"127.0.0.1:{dsn_port}", rows
        assert rows[0][2] == "up", rows
        assert not _banner(browser)["shown"], _banner(browser)

        path = _save_screenshot(browser, artifacts)
        assert path.is_file(), f"no screenshot at {path}"

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


def _check_charts(driver: Any) -> None:
    """After the load: the three time charts and the histogram hold data, say what they
    show (role, label, description) and explain their colours and marks."""
    from selenium.webdriver.support.ui import WebDriverWait

    def filled(d: Any) -> dict[str, Any] | None:
        c = _charts(d)
        ready = c["throughput"] and c["throughput"]["points"] >= 3 and c["bars"]
        return c if ready and c["p99"] and c["p99"]["points"] >= 1 else None

    charts = _until(WebDriverWait(driver, PAGE_WAIT, 0.2), filled) or _charts(driver)
    throughput = charts["throughput"]
    assert throughput, f"no throughput line: {charts}"
    assert throughput["points"] >= 3, f"a throughput line of a point or two: {throughput}"
    # Not flat: the load came and went within the window.
    assert throughput["size"][1] > 5, f"a flat throughput line: {throughput}"
    assert charts["p99"]["points"] >= 1, f"no p99 point: {charts['p99']}"
    assert charts["p50"]["points"] >= 1, f"no p50 point: {charts['p50']}"
    in_use = charts["in_use"]
    assert in_use, f"no in-use area: {charts}"
    assert in_use["max"] >= 1, f"nothing in use in the size chart: {in_use}"
    assert not in_use["hidden"], in_use
    assert in_use["size"][1] > 5, f"the in-use area has no height: {in_use}"
    assert charts["idle"] is not None
    assert charts["maxLine"], "no max-size line"
    for name, chart in charts["charts"].items():
        assert chart["role"] == "img", f"{name} has no role=img"
        assert chart["label"].strip(), f"{name} has no label"
        assert chart["description"].strip(), f"{name} has no text description"
        assert chart["size"][0] > 300, f"{name} is narrow: {chart}"
        assert chart["size"][1] > 120, f"{name} is flat: {chart}"
    legends = charts["legends"]
    missing = [word for word in LEGEND_WORDS if word not in legends]
    assert not missing, f"legends lack {missing}: {legends}"
    assert {"Throughput", "Pool size", "Servers"} <= set(charts["headings"]), charts["headings"]

    # The whole run's histogram: every bucket that holds anything has a visible bar with its
    # count above it, and a bigger count never has a lower bar.
    bars = charts["bars"]
    assert bars, "no histogram bar after the load"
    for bar in bars:
        assert bar["count"] >= 1
        assert bar["height"] >= MIN_BAR, f"an invisible bar: {bar}"
        assert bar["label"] == _compact(bar["count"]), bar
    by_count = sorted(bars, key=lambda b: b["count"])
    for low, high in itertools.pairwise(by_count):
        assert low["height"] <= high["height"] + 0.5, f"heights disagree with counts: {bars}"


def _check_log_histogram(driver: Any) -> None:
    """Counts of 1 and 1000 side by side: both bars visible, on a log scale (a linear one
    would draw the 1 a thousand times lower than the 1000)."""
    counts = [1000, 0, 1, 10, 100] + [0] * 12
    bounds: list[float | None] = [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05]
    bounds += [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, None]
    buckets = [{"le": le, "count": n} for le, n in zip(bounds, counts, strict=True)]
    drawn = driver.execute_script(
        "window.pgfleetLive.drawHistogram({buckets: arguments[0], count: 1111});"
        "return [...document.querySelectorAll('#histogram rect.bar')].map((r) => ["
        "  Number(r.dataset.count), r.getBoundingClientRect().height,"
        "  r.nextElementSibling.textContent]);",
        buckets,
    )
    heights = {count: height for count, height, _ in drawn}
    labels = {count: label for count, _, label in drawn}
    assert set(heights) == {1, 10, 100, 1000}, drawn
    assert heights[1] >= 10, f"the bar of 1 is hardly visible: {drawn}"
    assert heights[1] < heights[10] < heights[100] < heights[1000], drawn
    # log10(2) / log10(1001) of the 1000's height, give or take a pixel or two.
    assert heights[1] == pytest.approx(heights[1000] * 0.1003, abs=2.5), drawn
    assert labels == {1: "1", 10: "10", 100: "100", 1000: "1k"}, drawn


@pytest.mark.timeout(150)
def test_down_banner_follows_the_server(
    browser: Any, make_cluster: ClusterFactory, artifacts: Path
) -> None:
    """Stop the server under an idle pool: the page says the database is down (banner,
    status, the server's row) within seconds, and says it is back once it is."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    cluster = make_cluster()
    port = _free_port()
    with serve(cluster.conninfo(), port, "--pool-size", "4") as server:
        url = server.wait_for_url(START_TIMEOUT)
        browser.get(url)
        wait = WebDriverWait(
            browser, PAGE_WAIT, 0.1, ignored_exceptions=[StaleElementReferenceException]
        )
        up = _until(wait, lambda d: _hosts(d) if _hosts(d) and "up" in _hosts(d)[0] else None)
        assert up is not None, f"no server row: {_hosts(browser)}\n{server.output()}"
        assert up[0][0] == f"127.0.0.1:{cluster.port}", up
        assert not _banner(browser)["shown"], _banner(browser)

        cluster.stop()
        # No request comes: the service's own check of its idle connections notices.
        down = _until(wait, lambda d: _banner(d) if _banner(d)["shown"] else None)
        if down is None:
            pytest.fail(
                f"no banner within {PAGE_WAIT:g} s of the server stopping: "
                f"{_banner(browser)}\n{server.output()}",
                pytrace=False,
            )
        assert down["role"] == "alert"
        assert "database is down" in down["text"].lower(), down
        assert "DOWN" in _text(browser, "status"), _text(browser, "status")
        rows = _until(wait, lambda d: _hosts(d) if "down" in _hosts(d)[0] else None)
        assert rows is not None, f"the server's row does not say down: {_hosts(browser)}"
        # Requests meanwhile fail fast with a 503, and the banner stays.
        with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT) as client:
            assert client.get("/people", params={"name": "x"}).status_code == 503
        _save_screenshot(browser, artifacts, "live-page-down.png")
        assert _banner(browser)["shown"]

        cluster.start()
        back = _until(wait, lambda d: True if not _banner(d)["shown"] else None)
        if back is None:
            pytest.fail(
                f"the banner stayed {PAGE_WAIT:g} s after the server came back: "
                f"{_banner(browser)}\n{server.output()}",
                pytrace=False,
            )
        assert "up" in _text(browser, "status"), _text(browser, "status")
        rows = _until(wait, lambda d: _hosts(d) if "up" in _hosts(d)[0] else None)
        assert rows is not None, f"the server's row does not say up: {_hosts(browser)}"
        # The outage stays in the history: a shaded band and a reconnect mark.
        marks = browser.execute_script(
            "return {bands: document.querySelectorAll('#chart-size rect.down-band').length,"
            " kinds: [...document.querySelectorAll('#chart-size text.mark')]"
            "   .map((m) => m.dataset.kind)};"
        )
        assert marks["bands"] >= 1, marks
        assert "reconnect" in marks["kinds"], marks

        def back_in_events(d: Any) -> str | None:
            events = _text(d, "events")
            return events if "database is back" in events else None

        events = _until(wait, back_in_events)
        assert events is not None, f"no 'database is back' event: {_text(browser, 'events')}"
        assert "database is down" in events, events


#: Cells of a cluster host's row (see the page's servers table).
ADDRESS, ROLE, STATE, READS, WRITES, FENCING = 0, 1, 2, 9, 10, 11


def _roles(driver: Any) -> dict[str, str]:
    return {row[ADDRESS]: row[ROLE] for row in _hosts(driver)}


def _mark_kinds(driver: Any) -> list[str]:
    kinds: list[str] = driver.execute_script(
        "return [...document.querySelectorAll('#chart-size text.mark')].map((m) => m.dataset.kind);"
    )
    return kinds


def _no_password(driver: Any, url: str) -> None:
    """Neither the page (as drawn) nor its data holds the DSN's password."""
    assert APP_PASSWORD not in driver.page_source
    assert APP_PASSWORD not in httpx.get(url + "api/pool", timeout=REQUEST_TIMEOUT).text


@pytest.mark.timeout(150)
def test_live_page_follows_a_failover(
    browser: Any, make_replication: ReplicationFactory, artifacts: Path
) -> None:
    """A DSN naming a primary and a standby: the service runs on a cluster pool and the page
    shows both hosts with their roles, reads on the standby and writes on the primary. Crash
    the primary and promote the standby: the page marks a failover and shows the new roles."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    rs = make_replication(standbys=1)
    primary, standby = rs.primary, rs.standbys[0]
    old, new = f"127.0.0.1:{primary.port}", f"127.0.0.1:{standby.port}"
    port = _free_port()
    with serve(rs.conninfo(), port, "--pool-size", "3") as server:
        url = server.wait_for_url(START_TIMEOUT)
        with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT) as client:
            added = client.post("/people", json={"name": "cluster-visitor"})
            assert added.status_code == 201, added.text
            listed = client.get("/people", params={"name": "cluster-visitor"})
            assert listed.status_code == 200, listed.text
        browser.get(url)
        wait = WebDriverWait(
            browser, PAGE_WAIT, 0.1, ignored_exceptions=[StaleElementReferenceException]
        )
        roles = _until(
            wait, lambda d: _roles(d) if _roles(d) == {old: "primary", new: "standby"} else None
        )
        assert roles is not None, f"rows: {_hosts(browser)}\n{server.output()}"
        rows = {row[ADDRESS]: row for row in _hosts(browser)}
        # The write went to the primary, the read to the standby.
        assert int(rows[old][WRITES]) >= 1, rows
        assert int(rows[new][READS]) >= 1, rows
        assert rows[old][STATE] == rows[new][STATE] == "up", rows
        assert "failover" not in _mark_kinds(browser)
        assert "primary " + old in _text(browser, "cluster-summary")
        _no_password(browser, url)

        rs.crash(primary)
        rs.promote(standby)

        def failed_over(d: Any) -> dict[str, str] | None:
            roles = _roles(d)
            return roles if roles.get(new) == "primary" and roles.get(old) != "primary" else None

        roles = _until(wait, failed_over)
        assert roles is not None, f"roles after the failover: {_hosts(browser)}"
        marked = _until(wait, lambda d: "failover" in _mark_kinds(d) or None)
        assert marked, f"no failover mark: {_mark_kinds(browser)}\n{server.output()}"
        assert "primary " + new in _text(browser, "cluster-summary")
        # Writes go to the new primary.
        with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT) as client:
            added = client.post("/people", json={"name": "after-failover"})
            assert added.status_code == 201, added.text
        _save_screenshot(browser, artifacts, "live-page-failover.png")
        _no_password(browser, url)
        events = _text(browser, "events")
        assert "failover" in events, events

        server.process.send_signal(signal.SIGINT)
        status = server.process.wait(EXIT_AFTER_SIGNAL)
        assert status in (0, 130, -signal.SIGINT), f"exit status {status}:\n{server.output()}"
        assert APP_PASSWORD not in server.output()
