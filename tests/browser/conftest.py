"""Browser fixtures: headless Debian Chromium driven by selenium through chromedriver.

Without ``chromium`` or ``chromedriver`` on PATH the browser tests skip, naming the Debian
packages to install (``chromium``, ``chromium-driver``); in CI (``CI`` set, as CI services
do) they fail instead: ``.ci/run`` installs both (``support.requirements``).

``make_replication`` (a real primary and standbys) is the cluster tests' fixture.

The browser may fetch nothing but 127.0.0.1: background networking is off, names other than
127.0.0.1 do not resolve, and any other address goes through a proxy that is not there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# The cluster tests' replication fixtures (a primary and streaming standbys, copied from a
# template built once per session), for the live page's cluster view.
from cluster.conftest import make_replication, repl_template  # noqa: F401
from support.requirements import require_tool

#: Seconds a page load or a script may take.
PAGE_TIMEOUT = 20
WINDOW_SIZE = (1280, 1000)

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # we run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-default-browser-check",
    "--disable-extensions",
    # Only 127.0.0.1: other names do not resolve, other addresses go to a dead proxy
    # (loopback always bypasses the proxy).
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",
    f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}",
)


@pytest.fixture
def artifacts() -> Path:
    """Where browser tests save screenshots: $PGFLEET_ARTIFACTS, else outside the repo."""
    path = Path(os.environ.get("PGFLEET_ARTIFACTS") or "/tmp/pgfleet-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat), None once it is gone (or a
    zombie: nothing left to kill)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat.rpartition(")")[2].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _descendants(root: int) -> dict[int, str]:
    """Live descendants of ``root`` as {pid: start time} (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        for pid in children.get(todo.pop(), ()):
            start = _start_time(pid)
            if start is not None and pid not in found:
                found[pid] = start
                todo.append(pid)
    return found


def _kill_leftovers(processes: dict[int, str]) -> list[int]:
    """SIGKILL those of ``processes`` still alive (same pid and start time); their pids."""
    killed = []
    for pid, start in processes.items():
        if _start_time(pid) == start:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    return killed


@pytest.fixture
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A headless Chromium (selenium WebDriver), quit at the end with every process it ran."""
    chromium = require_tool("chromium", package="chromium chromium-driver")
    chromedriver = require_tool("chromedriver", package="chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tmp_path_factory.mktemp("chromium-profile")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--disk-cache-dir={profile / 'cache'}")
    log = tmp_path_factory.mktemp("chromedriver") / "chromedriver.log"
    service = Service(chromedriver, log_output=str(log))
    driver = webdriver.Chrome(service=service, options=options)
    driver_pid = service.process.pid if service.process is not None else None
    processes: dict[int, str] = {}
    try:
        driver.set_page_load_timeout(PAGE_TIMEOUT)
        driver.set_script_timeout(PAGE_TIMEOUT)
        yield driver
    finally:
        if driver_pid is not None:
            processes = _descendants(driver_pid)
            start = _start_time(driver_pid)
            if start is not None:
                processes[driver_pid] = start
        try:
            driver.quit()
        finally:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(
                _start_time(pid) == start for pid, start in processes.items()
            ):
                time.sleep(0.1)
            _kill_leftovers(processes)
