"""The people example, threaded: CRUD, bulk inserts and a retried transaction with pgfleet.

Run it against any database you may create a table in::

    DATABASE_URL=postgresql://user:password@localhost/db python examples/people/people.py

The asyncio flavour is ``people_async.py``, line for line the same program.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

import pgfleet
from pgfleet.bulk import copy_rows
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


Conn = psycopg.Connection[Any]


def as_json(profile: Profile | None) -> Jsonb | None:
    """A profile as a jsonb parameter (json_dumps writes dataclasses)."""
    return None if profile is None else Jsonb(profile, dumps=json_dumps)


def create_schema(pool: pgfleet.Pool[Conn]) -> None:
    with pool.connection() as conn:
        conn.execute(SCHEMA)


def create_person(pool: pgfleet.Pool[Conn], name: str, profile: Profile | None) -> uuid.UUID:
    with pool.connection() as conn:
        row = conn.execute(
            "INSERT INTO people (name, data) VALUES (%s, %s) RETURNING id",
            (name, as_json(profile)),
        ).fetchone()
    assert row is not None
    person_id: uuid.UUID = row[0]
    return person_id


def find_by_name(pool: pgfleet.Pool[Conn], name: str) -> list[Person]:
    with pool.connection() as conn, conn.cursor(row_factory=dataclass_row(Person)) as cur:
        cur.execute("SELECT id, name, data FROM people WHERE name = %s ORDER BY id", [name])
        return cur.fetchall()


def update_profile(pool: pgfleet.Pool[Conn], person_id: uuid.UUID, profile: Profile) -> bool:
    with pool.connection() as conn:
        cur = conn.execute(
            "UPDATE people SET data = %s WHERE id = %s", (as_json(profile), person_id)
        )
        return cur.rowcount == 1


def delete_person(pool: pgfleet.Pool[Conn], person_id: uuid.UUID) -> bool:
    with pool.connection() as conn:
        return conn.execute("DELETE FROM people WHERE id = %s", [person_id]).rowcount == 1


def bulk_create(pool: pgfleet.Pool[Conn], people: Iterable[tuple[str, Profile | None]]) -> int:
    with pool.connection() as conn:  # committed when the block ends
        return copy_rows(
            conn, "people", ["name", "data"], ((name, as_json(p)) for name, p in people)
        )


def census(conn: Conn, city: str) -> tuple[int, int]:
    """How many people, and how many of them live in `city`: one consistent snapshot."""
    row = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE data -> 'address' ->> 'city' = %s) FROM people",
        [city],
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def main() -> None:
    # No conninfo: the pool reads DATABASE_URL (else libpq's PG* variables).
    with pgfleet.Pool(min_size=1, max_size=4, name="people") as pool:
        create_schema(pool)

        ada_id = create_person(pool, "Ada", Profile("ada@example.com", ["math"]))
        print(f"created Ada: {isinstance(ada_id, uuid.UUID)}")

        [ada] = find_by_name(pool, "Ada")
        print(f"read Ada: {ada.data}")

        moved = Profile("ada@example.com", ["math", "engines"], Address("London", "UK"))
        print(f"updated Ada: {update_profile(pool, ada_id, moved)}")
        print(f"Ada lives in: {find_by_name(pool, 'Ada')[0].data}")

        many = (
            (f"person {i}", Profile(f"p{i}@example.com", address=Address("London", "UK")))
            for i in range(1000)
        )
        print(f"bulk created: {bulk_create(pool, many)}")

        # A read in a serializable, read-only, deferrable transaction: it sees one
        # snapshot and would be retried if the server rolled it back.
        total, londoners = pool.run_transaction(
            census, "London", isolation_level="serializable", read_only=True, deferrable=True
        )
        print(f"census: {total} people, {londoners} in London")

        print(f"deleted Ada: {delete_person(pool, ada_id)}")
        print(f"Ada found after delete: {len(find_by_name(pool, 'Ada'))}")
        print(f"transaction retries: {pool.stats().transaction_retries}")


if __name__ == "__main__":
    main()
