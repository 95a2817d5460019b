# WARNING: this file is generated from tests/bulk/test_bulk_async.py by tools/gen_sync.py.
# Do not edit it: edit the source and run `python tools/gen_sync.py`.

"""`pgfleet.bulk` on `psycopg.Connection`, against a real server.

This file is the source of ``tests/bulk/test_bulk_sync.py`` (``python tools/gen_sync.py``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pgfleet._sync.bulk import MAX_PARAMETERS, copy_rows, insert_values

COLUMNS = ["id", "name", "data", "doc", "tags", "n", "at"]


@pytest.fixture
def conn(pg_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection whose work is rolled back at the end: every test leaves nothing behind."""
    with psycopg.Connection.connect(pg_dsn) as conn:
        yield conn
        conn.rollback()


def make_table(conn: psycopg.Connection[Any], name: str | None = None) -> str:
    table = name or f"bulk_{uuid.uuid4().hex[:10]}"
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (id uuid PRIMARY KEY, name text NOT NULL, data jsonb, doc json,"
            " tags text[], n bigint, at timestamptz)"
        ).format(sql.Identifier(table))
    )
    return table


def sample_rows(count: int) -> list[tuple[Any, ...]]:
    at = dt.datetime(2024, 2, 29, 12, 30, tzinfo=dt.UTC)
    rows: list[tuple[Any, ...]] = []
    for i in range(count):
        data: Any = {
            "address": {"city": "Zürich", "zip": f"80{i % 100:02d}"},
            "phones": [{"kind": "mobile", "number": f"+41 {i}"}],
            "vip": i % 2 == 0,
            "score": i / 4,
            "nothing": None,
        }
        rows.append(
            (
                uuid.uuid4() if i % 3 else str(uuid.uuid4()),  # UUID objects and their text
                f"person {i} ' \" \\ \t",
                Jsonb(data) if i % 5 == 0 else data,  # wrapped or not
                ["a", {"b": [1, 2.5, None]}] if i % 2 else None,
                ["x", "y z"] if i % 4 else [],
                i * 10**12,
                at + dt.timedelta(seconds=i),
            )
        )
    return rows


def expected(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """What reading `rows` back gives (UUIDs as UUID, JSON unwrapped), in id order."""
    out = []
    for id, name, data, doc, tags, n, at in rows:
        data = data.obj if isinstance(data, Jsonb) else data
        out.append((uuid.UUID(str(id)), name, data, doc, tags, n, at))
    return sorted(out, key=lambda row: row[0])


def read_back(conn: psycopg.Connection[Any], table: str) -> list[tuple[Any, ...]]:
    cursor = conn.execute(
        sql.SQL("SELECT {} FROM {} ORDER BY id").format(
            sql.SQL(", ").join(map(sql.Identifier, COLUMNS)), sql.Identifier(table)
        )
    )
    return list(cursor.fetchall())


def test_copy_rows_round_trips_uuid_and_nested_json(
    conn: psycopg.Connection[Any],
) -> None:
    table = make_table(conn)
    rows = sample_rows(300)
    assert copy_rows(conn, table, COLUMNS, rows) == 300
    assert read_back(conn, table) == expected(rows)


def test_insert_values_round_trips_uuid_and_nested_json(
    conn: psycopg.Connection[Any],
) -> None:
    table = make_table(conn)
    rows = sample_rows(300)
    assert insert_values(conn, table, COLUMNS, iter(rows), batch_size=7) == 300
    assert read_back(conn, table) == expected(rows)


def test_copy_falls_back_to_text_for_types_without_a_binary_dumper(
    conn: psycopg.Connection[Any],
) -> None:
    mood = f"mood_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE TYPE {} AS ENUM ('ok', 'meh')").format(sql.Identifier(mood)))
    table = f"bulk_{uuid.uuid4().hex[:10]}"
    conn.execute(
        sql.SQL("CREATE TABLE {} (id uuid, mood {}, data jsonb)").format(
            sql.Identifier(table), sql.Identifier(mood)
        )
    )
    ids = [uuid.uuid4(), uuid.uuid4()]
    rows = [(ids[0], "ok", {"nested": {"list": [1, "two"]}}), (str(ids[1]), "meh", None)]
    assert copy_rows(conn, table, ["id", "mood", "data"], rows) == 2
    cursor = conn.execute(
        sql.SQL("SELECT id, mood::text, data FROM {} ORDER BY mood::text DESC").format(
            sql.Identifier(table)
        )
    )
    assert cursor.fetchall() == [
        (ids[0], "ok", {"nested": {"list": [1, "two"]}}),
        (ids[1], "meh", None),
    ]


def test_insert_values_splits_batches_at_the_parameter_limit(
    conn: psycopg.Connection[Any],
) -> None:
    table = f"bulk_{uuid.uuid4().hex[:10]}"
    conn.execute(sql.SQL("CREATE TABLE {} (a int, b int, c int)").format(sql.Identifier(table)))
    count = 30_000  # 90,000 parameters: more than one statement may carry
    rows = ((i, i * 2, i * 3) for i in range(count))
    most = MAX_PARAMETERS // 3
    assert insert_values(conn, table, ["a", "b", "c"], rows, batch_size=most) == count
    cursor = conn.execute(
        sql.SQL("SELECT count(*), sum(a), sum(c) - 3 * sum(a) FROM {}").format(
            sql.Identifier(table)
        )
    )
    assert cursor.fetchone() == (count, count * (count - 1) // 2, 0)
    with pytest.raises(ValueError, match="65535"):
        insert_values(conn, table, ["a", "b", "c"], [(1, 2, 3)], batch_size=most + 1)
    assert insert_values(conn, table, ["a", "b", "c"], []) == 0  # the default batch


def test_schema_qualified_and_odd_names_are_quoted(
    conn: psycopg.Connection[Any],
) -> None:
    schema = f'odd "schema" {uuid.uuid4().hex[:6]}'
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    conn.execute(
        sql.SQL('CREATE TABLE {} ("we.ird col" text, "Upper" int)').format(
            sql.Identifier(schema, "a.table; DROP")
        )
    )
    columns = ["we.ird col", "Upper"]
    assert copy_rows(conn, (schema, "a.table; DROP"), columns, [("x", 1)]) == 1
    assert insert_values(conn, (schema, "a.table; DROP"), columns, [("y", 2)]) == 1
    conn.execute(sql.SQL("CREATE TABLE {} (v int)").format(sql.Identifier(schema, "plain")))
    assert copy_rows(conn, sql.Identifier(schema, "plain"), ["v"], [(1,)]) == 1
    conn.execute("CREATE TEMPORARY TABLE dotted (v int)")
    assert insert_values(conn, "pg_temp.dotted", ["v"], [(1,), (2,)]) == 2
    cursor = conn.execute(
        sql.SQL("""SELECT string_agg("we.ird col", ',' ORDER BY "Upper") FROM {}""").format(
            sql.Identifier(schema, "a.table; DROP")
        )
    )
    assert cursor.fetchone() == ("x,y",)


def test_works_whatever_the_connections_row_factory(pg_dsn: str) -> None:
    with psycopg.Connection.connect(pg_dsn, row_factory=dict_row) as conn:
        table = make_table(conn)
        rows = sample_rows(3)
        assert copy_rows(conn, table, COLUMNS, rows) == 3
        assert insert_values(conn, table, COLUMNS, sample_rows(2)) == 2
        conn.rollback()


def test_misuse_is_reported_before_anything_is_sent(
    conn: psycopg.Connection[Any],
) -> None:
    table = make_table(conn)
    with pytest.raises(TypeError, match="single string"):
        copy_rows(conn, table, "name", [("x",)])
    with pytest.raises(ValueError, match="no column"):
        copy_rows(conn, table, ["name", "nope"], [("x", 1)])
    with pytest.raises(ValueError, match="duplicate"):
        insert_values(conn, table, ["name", "name"], [("x", "y")])
    with pytest.raises(ValueError, match=r"schema\.table"):
        insert_values(conn, "a.b.c", ["name"], [("x",)])
    with pytest.raises(ValueError, match="batch_size"):
        insert_values(conn, table, ["name"], [("x",)], batch_size=0)
    with pytest.raises(ValueError, match=r"row 2 has 1 values, expected 2"):
        insert_values(conn, table, ["id", "name"], [(uuid.uuid4(), "x"), ("y",)])
