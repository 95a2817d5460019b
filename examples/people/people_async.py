"""The people example, asyncio: CRUD, bulk inserts and a retried transaction with pgfleet.

Run it against any database you may create a table in::

    DATABASE_URL=postgresql://user:password@localhost/db python examples/people/people_async.py

The threaded flavour is ``people.py``, line for line the same program.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

import pgfleet
from pgfleet.bulk import copy_rows_async
from pgfleet.rows import dataclass_row, json_dumps

SCHEMA = """
CREATE TABLE IF NOT EXISTS people (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL,
    data jsonb
)
"""


@dataclass(frozen=True)
class Address:
    city: str
    country: str


@dataclass(frozen=True)
class Profile:
    """What the ``data`` jsonb column holds."""

    email: str
    tags: list[str] = field(default_factory=list)
    address: Address | None = None


@dataclass(frozen=True)
class Person:
    """One row of ``people``; `dataclass_row` builds the nested `Profile` from jsonb."""

    id: uuid.UUID
    name: str
    data: Profile | None


Conn = psycopg.AsyncConnection[Any]


def as_json(profile: Profile | None) -> Jsonb | None:
    """A profile as a jsonb parameter (json_dumps writes dataclasses)."""
    return None if profile is None else Jsonb(profile, dumps=json_dumps)


async def create_schema(pool: pgfleet.AsyncPool[Conn]) -> None:
    async with pool.connection() as conn:
        await conn.execute(SCHEMA)


async def create_person(
    pool: pgfleet.AsyncPool[Conn], name: str, profile: Profile | None
) -> uuid.UUID:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO people (name, data) VALUES (%s, %s) RETURNING id",
            (name, as_json(profile)),
        )
        row = await cur.fetchone()
    assert row is not None
    person_id: uuid.UUID = row[0]
    return person_id


async def find_by_name(pool: pgfleet.AsyncPool[Conn], name: str) -> list[Person]:
    async with pool.connection() as conn, conn.cursor(row_factory=dataclass_row(Person)) as cur:
        await cur.execute("SELECT id, name, data FROM people WHERE name = %s ORDER BY id", [name])
        return await cur.fetchall()


async def update_profile(
    pool: pgfleet.AsyncPool[Conn], person_id: uuid.UUID, profile: Profile
) -> bool:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "UPDATE people SET data = %s WHERE id = %s", (as_json(profile), person_id)
        )
        return cur.rowcount == 1


async def delete_person(pool: pgfleet.AsyncPool[Conn], person_id: uuid.UUID) -> bool:
    async with pool.connection() as conn:
        cur = await conn.execute("DELETE FROM people WHERE id = %s", [person_id])
        return cur.rowcount == 1


async def bulk_create(
    pool: pgfleet.AsyncPool[Conn], people: Iterable[tuple[str, Profile | None]]
) -> int:
    async with pool.connection() as conn:  # committed when the block ends
        return await copy_rows_async(
            conn, "people", ["name", "data"], ((name, as_json(p)) for name, p in people)
        )


async def census(conn: Conn, city: str) -> tuple[int, int]:
    """How many people, and how many of them live in `city`: one consistent snapshot."""
    cur = await conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE data -> 'address' ->> 'city' = %s) FROM people",
        [city],
    )
    row = await cur.fetchone()
    assert row is not None
    return row[0], row[1]


async def main() -> None:
    # No conninfo: the pool reads DATABASE_URL (else libpq's PG* variables).
    async with pgfleet.AsyncPool(min_size=1, max_size=4, name="people") as pool:
        await create_schema(pool)

        ada_id = await create_person(pool, "Ada", Profile("ada@example.com", ["math"]))
        print(f"created Ada: {isinstance(ada_id, uuid.UUID)}")

        [ada] = await find_by_name(pool, "Ada")
        print(f"read Ada: {ada.data}")

        moved = Profile("ada@example.com", ["math", "engines"], Address("London", "UK"))
        print(f"updated Ada: {await update_profile(pool, ada_id, moved)}")
        print(f"Ada lives in: {(await find_by_name(pool, 'Ada'))[0].data}")

        many = (
            (f"person {i}", Profile(f"p{i}@example.com", address=Address("London", "UK")))
            for i in range(1000)
        )
        print(f"bulk created: {await bulk_create(pool, many)}")

        # A read in a serializable, read-only, deferrable transaction: it sees one
        # snapshot and would be retried if the server rolled it back.
        total, londoners = await pool.run_transaction(
            census, "London", isolation_level="serializable", read_only=True, deferrable=True
        )
        print(f"census: {total} people, {londoners} in London")

        print(f"deleted Ada: {await delete_person(pool, ada_id)}")
        print(f"Ada found after delete: {len(await find_by_name(pool, 'Ada'))}")
        print(f"transaction retries: {pool.stats().transaction_retries}")


if __name__ == "__main__":
    asyncio.run(main())
