"""Fast bulk inserts: COPY and multi-row VALUES, for threaded and asyncio code.

    from pgfleet.bulk import copy_rows, insert_values

    with pool.connection() as conn:
        copy_rows(conn, "people", ["name", "data"], rows)          # COPY, binary when it can
        insert_values(conn, ("app", "people"), ["name"], names)    # INSERT ... VALUES (...), ...

`copy_rows_async` and `insert_values_async` take a `psycopg.AsyncConnection`.
Both run in the caller's transaction (they never commit) and return the rows
written. Tables are ``"name"``, ``"schema.name"`` or a tuple of names; all names
are quoted with `psycopg.sql`. Values of ``json``/``jsonb`` columns are Python
data (or `psycopg.types.json.Jsonb` wrappers); ``uuid`` columns take `uuid.UUID`.
"""

from pgfleet._async.bulk import copy_rows as copy_rows_async
from pgfleet._async.bulk import insert_values as insert_values_async
from pgfleet._sync.bulk import MAX_PARAMETERS, TableName, copy_rows, insert_values

__all__ = [
    "MAX_PARAMETERS",
    "TableName",
    "copy_rows",
    "copy_rows_async",
    "insert_values",
    "insert_values_async",
]
