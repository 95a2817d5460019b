"""The README's "Transactions, rows and bulk" examples run as written, against a real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

from psycopg import sql

from support.cluster import APP_USER, PgCluster

README = Path(__file__).resolve().parents[2] / "README.md"


def section_blocks() -> list[str]:
    text = README.read_text()
    section = text.split("## Transactions, rows and bulk", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_the_data_layer_examples_run_as_written(pg: PgCluster) -> None:
    blocks = section_blocks()
    assert len(blocks) == 2
    dbname = f"readme_{uuid.uuid4().hex[:8]}"
    pg.execute(
        sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(dbname), sql.Identifier(APP_USER)
        )
    )
    try:
        env = {**os.environ, "DATABASE_URL": pg.url(dbname=dbname)}
        outputs = []
        for block in blocks:
            result = subprocess.run(
                [sys.executable, "-W", "error", "-c", block],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert result.returncode == 0, result.stderr
            outputs.append(result.stdout.splitlines())
    finally:
        pg.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(dbname)))
    assert outputs[0] == ["2 rows", "ada 70 Profile(tags=['vip'])", "bob 30 None"]
    assert outputs[1] == ["('serializable',) after 1 attempt(s)"]
