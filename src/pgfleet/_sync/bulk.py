# WARNING: this file is generated from src/pgfleet/_async/bulk.py by tools/gen_sync.py.
# Do not edit it: edit the source and run `python tools/gen_sync.py`.

"""Bulk inserts over COPY and multi-row VALUES.

Public as ``copy_rows_async`` and ``insert_values_async`` in `pgfleet.bulk`;
the threaded twin (``_sync/bulk.py``) is generated from this file.

Both functions first read the target columns' types from the catalog (one round
trip), which lets them do what psycopg cannot guess from Python values alone:
send COPY in binary when every column type has a binary dumper, turn ``str``
values of ``uuid`` columns into `uuid.UUID` for it, and send the Python values
of ``json``/``jsonb`` columns as JSON (wrapping them in `Json`/`Jsonb`). They
run in the caller's transaction and never commit.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import pq, sql
from psycopg.rows import tuple_row
from psycopg.types.json import Json, Jsonb

__all__ = ["MAX_PARAMETERS", "copy_rows", "insert_values"]

#: The most bind parameters one statement may carry (the protocol counts them in 16 bits).
MAX_PARAMETERS = 65_535
#: Rows per VALUES statement when the caller does not choose (and the columns allow).
DEFAULT_BATCH_ROWS = 1_000

#: A table: ``"name"``, ``"schema.name"``, a tuple ``("schema", "name")`` (for names
#: that contain a dot), or a `psycopg.sql.Identifier`.
TableName = str | tuple[str, ...] | sql.Identifier

_JSON_OID = 114
_JSONB_OID = 3802
_UUID_OID = 2950

Convert = Callable[[Any], Any]


def copy_rows(
    conn: psycopg.Connection[Any],
    table: TableName,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
) -> int:
    """Insert `rows` into `table` with ``COPY ... FROM STDIN``; return the rows written.

    Binary COPY when every column type has a binary dumper (the built-in types
    do), text COPY otherwise (enums, domains, extension types). JSON columns
    take Python values (dicts, lists...) or `Jsonb`/`Json` wrappers; UUID
    columns take `uuid.UUID` or its text.

    Raises:
        ValueError: a bad table or column name, or a row of the wrong length.
    """
    target, names = _names(table, columns)
    oids = _column_oids(conn, target, names)
    binary = _binary_ok(conn, oids)
    converters: list[Convert | None]
    if binary:
        converters = [_uuid_from_text if oid == _UUID_OID else None for oid in oids]
        fmt = sql.SQL("BINARY")
    else:
        converters = [_json_wrapper(oid) for oid in oids]
        fmt = sql.SQL("TEXT")
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {})").format(
        target, sql.SQL(", ").join(map(sql.Identifier, names)), fmt
    )
    written = 0
    with conn.cursor() as cursor:
        with cursor.copy(statement) as copy:
            if binary:
                copy.set_types(oids)
            for row in _prepared(rows, len(names), converters):
                copy.write_row(row)
                written += 1
        return cursor.rowcount if cursor.rowcount >= 0 else written


def insert_values(
    conn: psycopg.Connection[Any],
    table: TableName,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    batch_size: int | None = None,
) -> int:
    """Insert `rows` into `table` with multi-row ``INSERT ... VALUES``; return the rows written.

    Rows go in batches of `batch_size` rows per statement; the default is the
    largest batch up to 1,000 rows whose parameters fit the protocol's limit
    of 65,535 per statement. JSON and UUID values as for `copy_rows`.

    Raises:
        ValueError: a bad name, a row of the wrong length, or a `batch_size` whose
            parameters would exceed the limit.
    """
    target, names = _names(table, columns)
    width = len(names)
    most = MAX_PARAMETERS // width
    if batch_size is None:
        batch_size = min(DEFAULT_BATCH_ROWS, most)
    elif isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    elif batch_size > most:
        raise ValueError(
            f"batch_size={batch_size} with {width} columns needs {batch_size * width}"
            f" parameters per statement; the limit is {MAX_PARAMETERS} (at most {most} rows)"
        )
    oids = _column_oids(conn, target, names)
    converters = [_json_wrapper(oid) for oid in oids]
    head = (
        sql.SQL("INSERT INTO {} ({}) VALUES ")
        .format(target, sql.SQL(", ").join(map(sql.Identifier, names)))
        .as_bytes(conn)
    )
    statements: dict[int, bytes] = {}  # rows per statement -> its text (two at most)
    written = 0
    prepared = _prepared(rows, width, converters)
    # A raw cursor takes PostgreSQL's own $n placeholders: psycopg parses a %s query
    # on every execute once it has more than 50 parameters, which costs more than
    # the insert itself at this size.
    with psycopg.RawCursor(conn) as cursor:
        while batch := list(itertools.islice(prepared, batch_size)):
            statement = statements.get(len(batch))
            if statement is None:
                statement = statements[len(batch)] = head + _values_list(len(batch), width)
            cursor.execute(statement, [value for row in batch for value in row])
            written += cursor.rowcount
    return written


# -- helpers ------------------------------------------------------------------------------


def _names(table: TableName, columns: Sequence[str]) -> tuple[sql.Identifier, list[str]]:
    """The table as an identifier and the checked column names."""
    if isinstance(table, sql.Identifier):
        target = table
    else:
        if isinstance(table, str):
            parts: tuple[str, ...] = tuple(table.split("."))
            if len(parts) > 2:
                raise ValueError(
                    f"table {table!r}: use 'schema.table', or a tuple for names with dots"
                )
        elif isinstance(table, tuple):
            parts = table
            if not 1 <= len(parts) <= 2:
                raise ValueError(f"table {table!r}: expected (table,) or (schema, table)")
        else:
            raise TypeError(f"table must be a str, a tuple or a sql.Identifier, got {table!r}")
        if not all(isinstance(part, str) and part for part in parts):
            raise ValueError(f"table {table!r}: empty or non-str name part")
        target = sql.Identifier(*parts)
    if isinstance(columns, str | bytes):
        raise TypeError(f"columns must be a sequence of names, not a single string: {columns!r}")
    names = list(columns)
    if not names:
        raise ValueError("columns must name at least one column")
    if not all(isinstance(name, str) and name for name in names):
        raise ValueError(f"columns: empty or non-str name in {names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"columns: duplicate names in {names!r}")
    return target, names


def _column_oids(
    conn: psycopg.Connection[Any], target: sql.Identifier, names: list[str]
) -> list[int]:
    """The type oid of each column, in order (one catalog query)."""
    with conn.cursor(row_factory=tuple_row) as cursor:  # whatever the connection's rows
        cursor.execute(
            "SELECT attname, atttypid::int FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            [target.as_string(conn)],
        )
        found: dict[str, int] = dict(cursor.fetchall())
    missing = [name for name in names if name not in found]
    if missing:
        raise ValueError(f"table {target.as_string(conn)} has no column(s) {missing!r}")
    return [found[name] for name in names]


def _binary_ok(conn: psycopg.Connection[Any], oids: list[int]) -> bool:
    """True when psycopg can dump every column type in binary (set_types will work)."""
    for oid in oids:
        try:
            conn.adapters.get_dumper_by_oid(oid, pq.Format.BINARY)
        except psycopg.ProgrammingError:
            return False
    return True


def _values_list(rows: int, width: int) -> bytes:
    """``($1, $2), ($3, $4)...`` for `rows` rows of `width` values."""
    numbers = iter(range(1, rows * width + 1))
    return b", ".join(
        b"(" + b", ".join(b"$%d" % next(numbers) for _ in range(width)) + b")" for _ in range(rows)
    )


def _prepared(
    rows: Iterable[Sequence[Any]], width: int, converters: Sequence[Convert | None]
) -> Iterator[Sequence[Any]]:
    """The rows, length-checked, with the column converters applied (copied only if changed)."""
    active = [(index, convert) for index, convert in enumerate(converters) if convert is not None]
    for number, row in enumerate(rows, 1):
        if len(row) != width:
            raise ValueError(f"row {number} has {len(row)} values, expected {width}: {row!r}")
        copied: list[Any] | None = None
        for index, convert in active:
            value = row[index]
            if value is not None:
                converted = convert(value)
                if converted is not value:
                    if copied is None:
                        copied = list(row)
                    copied[index] = converted
        yield row if copied is None else copied


def _json_wrapper(oid: int) -> Convert | None:
    """Wrap the Python values of a JSON column so that psycopg sends them as JSON."""
    if oid == _JSONB_OID:
        return _as_jsonb
    if oid == _JSON_OID:
        return _as_json
    return None


def _as_jsonb(value: Any) -> Any:
    return value if isinstance(value, Jsonb | Json) else Jsonb(value)


def _as_json(value: Any) -> Any:
    return value if isinstance(value, Jsonb | Json) else Json(value)


def _uuid_from_text(value: Any) -> Any:
    return uuid.UUID(value) if isinstance(value, str) else value
