"""What the test suite needs from the machine, and what happens when it is missing.

A few tests use system tools that no ``pip install`` brings: iptables or nft (the kernel
blackhole), util-linux's ``unshare``, Chromium and chromedriver (the live page). On a
developer's machine a test that lacks one *skips*, with a reason that names the Debian package
to install; in CI (``CI`` set, as ``.ci/run`` and CI services do) it *fails*: CI installs them
all, and a test that silently stops running is a test lost.

`require_tool` and `unavailable` are the only ways a test should say "not here". `SkipPolicy`
(registered by ``tests/conftest.py``) backs them up for every other skip: in CI any skipped
test fails the run, and with ``PGFLEET_REQUIRE_PG=1`` any skipped ``pg`` test does; the
terminal summary lists them with their reasons.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import NoReturn

import pytest

#: Set to ``1`` (as ``.ci/run`` does): the real-server (``pg``) tests must run, not skip.
REQUIRE_PG_ENV = "PGFLEET_REQUIRE_PG"


def in_ci() -> bool:
    """Whether the suite runs in CI: ``CI`` is set to anything but empty, 0, false or no."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_pg() -> bool:
    """Whether ``PGFLEET_REQUIRE_PG=1``: a skipped real-server test fails the run."""
    return os.environ.get(REQUIRE_PG_ENV) == "1"


def unavailable(reason: str) -> NoReturn:
    """Skip the running test because the machine lacks something; in CI, fail it instead.

    `reason` says what is missing and how to get it (``"needs X: apt-get install x"``).
    """
    if in_ci():
        pytest.fail(f"{reason} (CI={os.environ['CI']}: CI must provide it)", pytrace=False)
    pytest.skip(reason)


def require_tool(*commands: str, package: str) -> str:
    """The full path of the first of `commands` found on ``PATH``.

    When none is there, the test skips (fails in CI) with a reason naming `package`, the
    Debian package(s) to install: ``require_tool("iptables", "nft", package="iptables")``
    skips with "needs iptables or nft: apt-get install iptables".
    """
    if not commands:
        raise ValueError("require_tool() needs at least one command")
    for command in commands:
        path = shutil.which(command)
        if path is not None:
            return path
    unavailable(f"needs {' or '.join(commands)}: apt-get install {package}")


@dataclass(eq=False)  # a plugin must be hashable
class SkipPolicy:
    """A pytest plugin: skipped tests fail the run in CI (and ``pg`` ones when required)."""

    ci: bool
    pg_required: bool
    #: (node id, reason) of every skip that fails the run.
    offenders: list[tuple[str, str]] = field(default_factory=list)

    def _note(self, report: pytest.TestReport | pytest.CollectReport, is_pg: bool) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):
            return  # an xfail is reported as a skip, but it ran
        if self.ci or (self.pg_required and is_pg):
            longrepr = report.longrepr
            reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
            self.offenders.append((report.nodeid, reason.removeprefix("Skipped: ")))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._note(report, "pg" in report.keywords)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """A module that skips as a whole (``pytest.importorskip`` at its top)."""
        self._note(report, False)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.offenders and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.offenders:
            return
        if self.ci:
            title = f"CI={os.environ.get('CI')}: every test must run, a skipped test fails the run"
        else:
            title = f"{REQUIRE_PG_ENV}=1: skipped pg tests fail the run"
        terminalreporter.section(title, red=True)
        for nodeid, reason in self.offenders:
            terminalreporter.line(f"SKIPPED {nodeid}: {reason}", red=True)
