"""The README's quickstart runs as written, against a real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from support.cluster import PgCluster

README = Path(__file__).resolve().parents[2] / "README.md"


def quickstart_blocks() -> list[str]:
    """The Python code blocks of the README's Quickstart section."""
    text = README.read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_readme_has_a_sync_and_an_async_quickstart() -> None:
    blocks = quickstart_blocks()
    assert len(blocks) == 2
    assert "pgfleet.Pool(" in blocks[0]
    assert "pgfleet.AsyncPool(" in blocks[1]


def test_quickstart_blocks_run_as_written(pg: PgCluster) -> None:
    env = {**os.environ, "DATABASE_URL": pg.url()}
    outputs = []
    for block in quickstart_blocks():
        result = subprocess.run(
            [sys.executable, "-W", "error", "-c", block],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert "('hello',)" in outputs[0]
    assert re.search(r"^\d+ checkouts$", outputs[0], flags=re.MULTILINE)
    assert "('hello',)" in outputs[1]
