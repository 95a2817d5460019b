"""The suite's rules for missing system tools and skipped tests (``support.requirements``).

Whatever this machine has installed, these tests fake it: ``PATH`` points at a directory of
stand-in executables, and the skip policy is checked on a small pytest run of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support.requirements import in_ci, require_tool

TESTS = Path(__file__).resolve().parent


def fake_path(directory: Path, *commands: str) -> str:
    """A ``PATH`` of one directory holding executables named `commands` (and nothing else)."""
    directory.mkdir(exist_ok=True)
    for command in commands:
        tool = directory / command
        tool.write_text("#!/bin/sh\nexit 0\n")
        tool.chmod(0o755)
    return str(directory)


@pytest.fixture
def no_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        ("", False),
        ("0", False),
        ("false", False),
        ("No", False),
        ("true", True),
        ("1", True),
        ("yes", True),
    ],
)
def test_in_ci_reads_the_ci_variable(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: bool
) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert in_ci() is expected


def test_require_tool_finds_the_first_available(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_ci: None
) -> None:
    monkeypatch.setenv("PATH", fake_path(tmp_path / "bin", "nft"))
    assert require_tool("iptables", "nft", package="iptables") == str(tmp_path / "bin" / "nft")
    fake_path(tmp_path / "bin", "iptables")
    assert require_tool("iptables", "nft", package="iptables") == str(tmp_path / "bin" / "iptables")


def test_a_missing_tool_skips_naming_the_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_ci: None
) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "iptables").write_text("not executable")  # does not count
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(pytest.skip.Exception) as info:
        require_tool("iptables", "nft", package="iptables")
    assert str(info.value) == "needs iptables or nft: apt-get install iptables"


def test_a_missing_tool_fails_in_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", fake_path(tmp_path / "bin"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception) as info:
        require_tool("chromedriver", package="chromium-driver")
    message = str(info.value)
    assert "needs chromedriver: apt-get install chromium-driver" in message
    assert "CI=true" in message


def test_require_tool_needs_a_command() -> None:
    with pytest.raises(ValueError):
        require_tool(package="iptables")


# -- the skip policy, on a pytest run of its own ---------------------------------------------

CONFTEST = """
from support.requirements import SkipPolicy, in_ci, require_pg


def pytest_configure(config):
    config.pluginmanager.register(SkipPolicy(ci=in_ci(), pg_required=require_pg()))
"""

MODULE = """
import pytest

from support.requirements import require_tool


def test_runs():
    pass


def test_needs_a_tool():
    require_tool("pgfleet-no-such-tool", package="pgfleet-no-such-package")


@pytest.mark.pg
def test_real_server():
    pytest.skip("no server here")


@pytest.mark.xfail(reason="known", strict=True)
def test_known_bug():
    raise AssertionError
"""

SKIPPED_MODULE = """
import pytest

pytest.importorskip("pgfleet_no_such_module")
"""


def run_policy(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """pytest on `MODULE` and `SKIPPED_MODULE` with the policy, in a clean environment."""
    (tmp_path / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (tmp_path / "test_sample.py").write_text(textwrap.dedent(MODULE))
    (tmp_path / "test_skipped_module.py").write_text(textwrap.dedent(SKIPPED_MODULE))
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    pg: a real server\n")
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "PGFLEET_REQUIRE_PG")}
    clean["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p
    )
    clean["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # no plugin of the outer run is needed
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-rfEs", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def policy_section(out: str, title: str) -> list[str]:
    """The lines of the policy's section of the terminal summary (empty if absent)."""
    lines = out.splitlines()
    starts = [n for n, line in enumerate(lines) if title in line and line.startswith("=")]
    if not starts:
        return []
    section = []
    for line in lines[starts[0] + 1 :]:
        if line.startswith("="):
            break
        if line:
            section.append(line)
    return section


def test_skips_pass_outside_ci(tmp_path: Path) -> None:
    result = run_policy(tmp_path)
    assert result.returncode == 0, result.stdout
    assert "needs pgfleet-no-such-tool: apt-get install pgfleet-no-such-package" in result.stdout
    assert "1 passed, 3 skipped, 1 xfailed" in result.stdout
    assert "fail the run" not in result.stdout


def test_in_ci_a_missing_tool_fails_and_any_skip_fails_the_run(tmp_path: Path) -> None:
    result = run_policy(tmp_path, CI="true")
    assert result.returncode == 1, result.stdout
    # require_tool fails the test itself; the other skips are listed and fail the run.
    assert "FAILED test_sample.py::test_needs_a_tool" in result.stdout
    assert "1 failed, 1 passed, 2 skipped, 1 xfailed" in result.stdout
    listed = policy_section(result.stdout, "CI=true: every test must run")
    assert sorted(listed) == [
        "SKIPPED test_sample.py::test_real_server: no server here",
        "SKIPPED test_skipped_module.py: could not import 'pgfleet_no_such_module':"
        " No module named 'pgfleet_no_such_module'",
    ], result.stdout


def test_require_pg_fails_the_run_on_skipped_pg_tests_only(tmp_path: Path) -> None:
    result = run_policy(tmp_path, PGFLEET_REQUIRE_PG="1")
    assert result.returncode == 1, result.stdout
    assert "1 passed, 3 skipped, 1 xfailed" in result.stdout
    listed = policy_section(result.stdout, "PGFLEET_REQUIRE_PG=1: skipped pg tests fail the run")
    assert listed == ["SKIPPED test_sample.py::test_real_server: no server here"], result.stdout
