"""The people example (examples/people/) runs for real, in both flavours, with DATABASE_URL."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from psycopg import sql

from support.cluster import APP_USER, PgCluster

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "people"

EXPECTED = [
    "created Ada: True",
    "read Ada: Profile(email='ada@example.com', tags=['math'], address=None)",
    "updated Ada: True",
    "Ada lives in: Profile(email='ada@example.com', tags=['math', 'engines'],"
    " address=Address(city='London', country='UK'))",
    "bulk created: 1000",
    "census: 1001 people, 1001 in London",
    "deleted Ada: True",
    "Ada found after delete: 0",
    "transaction retries: 0",
]


@pytest.mark.parametrize("script", ["people.py", "people_async.py"])
def test_the_people_example_runs(pg: PgCluster, script: str) -> None:
    # A database of its own: the example creates `people` and leaves its rows.
    dbname = f"people_{uuid.uuid4().hex[:8]}"
    pg.execute(
        sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(dbname), sql.Identifier(APP_USER)
        )
    )
    try:
        env = {**os.environ, "DATABASE_URL": pg.url(dbname=dbname)}
        result = subprocess.run(
            [sys.executable, "-W", "error", str(EXAMPLE / script)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == EXPECTED
        rows = pg.execute("SELECT count(*) FROM people", dbname=dbname)
        assert rows == [(1000,)]
    finally:
        pg.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(dbname)))
