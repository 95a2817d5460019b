"""Each README code block says which extra it needs, and that extra is enough.

The test environment has every extra installed; `support.extras_guard` runs code as if only
pgfleet and the named extra were (any other import fails). The FastAPI example is run as
the README says, ``DATABASE_URL=... uvicorn app:app``, against a real server.
"""

from __future__ import annotations

import ast
import os
import re
import signal
import socket
import subprocess
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from support.cluster import APP_USER, PgCluster
from support.extras_guard import distributions, guarded_command

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
EXTRAS: dict[str, list[str]] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
    "optional-dependencies"
]
#: "(needs `pgfleet`)" or "needs `pgfleet[fastapi]`" on the line above a block.
_NEEDS = re.compile(r"needs `pgfleet(?:\[([a-z0-9_,-]+)\])?`")
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)

#: Seconds uvicorn may take to serve, and to stop after SIGINT.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Block:
    line: int
    language: str
    code: str
    #: The line above it (HTML comments skipped).
    above: str

    @property
    def extras(self) -> list[str] | None:
        """The extras the block says it needs ([] for plain pgfleet); None if it says not."""
        match = _NEEDS.search(self.above)
        if match is None:
            return None
        return match.group(1).split(",") if match.group(1) else []

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.language})"


def readme_blocks() -> list[Block]:
    text = README.read_text()
    blocks = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].splitlines()
        above = ""
        for candidate in reversed(before):
            if candidate.strip() and not candidate.startswith("<!--"):
                above = candidate
                break
        line = len(before) + 1
        blocks.append(Block(line, match.group(1), match.group(2), above))
    return blocks


def needs_a_line(block: Block) -> bool:
    """Python blocks, and shell blocks that run pgfleet without installing it first (an
    install command names its extras itself)."""
    if block.language == "python":
        return True
    return block.language == "sh" and "pip install" not in block.code


def python_blocks() -> list[Block]:
    return [b for b in readme_blocks() if b.language == "python"]


def test_each_block_says_which_extra_it_needs() -> None:
    blocks = [b for b in readme_blocks() if needs_a_line(b)]
    assert len(blocks) >= 9, [str(b) for b in blocks]
    silent = [str(b) for b in blocks if b.extras is None]
    assert not silent, f"no 'needs `pgfleet[...]`' line above: {silent}"
    for block in blocks:
        unknown = set(block.extras or ()) - set(EXTRAS)
        assert not unknown, f"{block} names extras pyproject.toml lacks: {unknown}"


def test_the_fastapi_extra_installs_what_the_example_runs_on() -> None:
    [fastapi] = [b for b in python_blocks() if "from fastapi import" in b.code]
    assert fastapi.extras == ["fastapi"]
    installed = distributions(["fastapi"])
    assert {"fastapi", "starlette", "uvicorn", "psycopg"} <= installed
    assert "prometheus-client" not in installed  # the guard does not let everything in


def imports_of(code: str) -> str:
    """The block's top-level import statements, as code."""
    tree = ast.parse(code)
    nodes = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    return "\n".join(ast.unparse(n) for n in nodes)


@pytest.mark.parametrize("block", python_blocks(), ids=str)
def test_each_python_block_imports_with_only_its_extra(block: Block) -> None:
    assert block.extras is not None, f"{block} says nothing of what it needs"
    command, env = guarded_command(block.extras, imports_of(block.code))
    result = subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"{block} with pgfleet{block.extras}:\n{result.stderr}"


def test_the_guard_refuses_what_an_extra_does_not_install() -> None:
    # Without the fastapi extra, the FastAPI example's imports must fail: else the tests
    # above prove nothing.
    [fastapi] = [b for b in python_blocks() if "from fastapi import" in b.code]
    command, env = guarded_command(["starlette"], imports_of(fastapi.code))
    result = subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "No module named 'fastapi' (not in pgfleet[starlette])" in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(url: str, path: str) -> httpx.Response | None:
    try:
        return httpx.get(url + path, timeout=5)
    except httpx.TransportError:
        return None


def test_the_fastapi_example_runs_with_uvicorn_as_written(pg: PgCluster, tmp_path: Path) -> None:
    """``DATABASE_URL=... uvicorn app:app`` with only pgfleet[fastapi]: it serves ``/now``
    and ``/health`` from the database, and stops cleanly on Ctrl-C."""
    [fastapi] = [b for b in python_blocks() if "from fastapi import" in b.code]
    (tmp_path / "app.py").write_text(fastapi.code)
    port = _free_port()
    # `uvicorn app:app`, run as its console script does.
    code = (
        "import sys\n"
        f"sys.argv = ['uvicorn', 'app:app', '--port', '{port}']\n"
        "sys.path.insert(0, '')\n"
        "from uvicorn.main import main\n"
        "sys.exit(main())\n"
    )
    command, env = guarded_command(["fastapi"], code, warnings_are_errors=False)
    proc = subprocess.Popen(
        command,
        cwd=tmp_path,
        env={**os.environ, **env, "DATABASE_URL": pg.url()},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            health = _get(url, "/health")
            if health is not None:
                break
            time.sleep(0.1)
        assert health is not None, f"uvicorn did not serve within {START_TIMEOUT:g} s"
        assert health.status_code == 200, health.text
        assert health.json()["status"] == "ok"
        now = _get(url, "/now")
        assert now is not None
        assert now.status_code == 200, now.text
        assert now.json()["user"] == APP_USER
        proc.send_signal(signal.SIGINT)
        status = proc.wait(STOP_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        output = proc.stdout.read()
        proc.stdout.close()
    assert status == 0, output
    assert "Application shutdown complete" in output, output  # the lifespan closed the pool
    assert "Traceback" not in output, output
