"""Typed rows: psycopg's row factories and adapters, and `pgfleet.rows` where they stop."""

from __future__ import annotations

import datetime as dt
import enum
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg.rows import class_row, dict_row
from psycopg.types.json import Jsonb, set_json_dumps

from pgfleet.rows import dataclass_row, json_dumps


class Kind(enum.Enum):
    MOBILE = "mobile"
    HOME = "home"


@dataclass(frozen=True)
class Phone:
    kind: Kind
    number: str


@dataclass(frozen=True)
class Address:
    city: str
    zip: str | None = None


@dataclass(frozen=True)
class Profile:
    email: str
    address: Address | None
    phones: list[Phone] = field(default_factory=list)
    tags: tuple[str, ...] = ()
    since: dt.date | None = None
    last_seen: dt.datetime | None = None
    friends: list[uuid.UUID] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Person:
    id: uuid.UUID
    name: str
    data: Profile | None


@dataclass
class Node:
    name: str
    children: list[Node] = field(default_factory=list)


PROFILE = Profile(
    email="ada@example.com",
    address=Address("London", "W1"),
    phones=[Phone(Kind.MOBILE, "+44 1"), Phone(Kind.HOME, "+44 2")],
    tags=("math", "engines"),
    since=dt.date(1842, 9, 1),
    last_seen=dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    friends=[uuid.UUID(int=1), uuid.UUID(int=2)],
    scores={"chess": 0.5},
)


@pytest.fixture
def conn(pg_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(
            "CREATE TEMPORARY TABLE people"
            " (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text NOT NULL, data jsonb)"
        )
        yield conn
        conn.rollback()


def test_json_dumps_writes_what_dataclass_row_reads() -> None:
    assert json.loads(json_dumps(PROFILE)) == {
        "email": "ada@example.com",
        "address": {"city": "London", "zip": "W1"},
        "phones": [{"kind": "mobile", "number": "+44 1"}, {"kind": "home", "number": "+44 2"}],
        "tags": ["math", "engines"],
        "since": "1842-09-01",
        "last_seen": "2024-01-02T03:04:05+00:00",
        "friends": [str(uuid.UUID(int=1)), str(uuid.UUID(int=2))],
        "scores": {"chess": 0.5},
    }
    assert json.loads(json_dumps({"at": dt.time(1, 2), "set": {3}})) == {
        "at": "01:02:00",
        "set": [3],
    }
    with pytest.raises(TypeError, match="not JSON serializable"):
        json_dumps(object())


def test_psycopg_alone_gives_uuid_columns_and_json_as_dicts(conn: psycopg.Connection[Any]) -> None:
    # The idiomatic part: Jsonb to write, class_row/dict_row to read, UUID for free.
    person_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO people VALUES (%s, %s, %s)",
        (person_id, "Ada", Jsonb({"email": "ada@example.com", "address": None})),
    )
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT id, name, data FROM people").fetchone()
    assert row == {
        "id": person_id,
        "name": "Ada",
        "data": {"email": "ada@example.com", "address": None},
    }
    with conn.cursor(row_factory=class_row(Person)) as cur:
        person = cur.execute("SELECT id, name, data FROM people").fetchone()
    assert person is not None
    assert isinstance(person.id, uuid.UUID)
    assert isinstance(person.data, dict)  # the gap: class_row does not build Profile


def test_dataclass_row_builds_nested_dataclasses_from_jsonb(conn: psycopg.Connection[Any]) -> None:
    set_json_dumps(json_dumps, context=conn)  # now Jsonb(a dataclass) just works
    conn.execute("INSERT INTO people (name, data) VALUES (%s, %s)", ("Ada", Jsonb(PROFILE)))
    conn.execute("INSERT INTO people (name, data) VALUES (%s, %s)", ("Bob", None))
    with conn.cursor(row_factory=dataclass_row(Person)) as cur:
        ada, bob = cur.execute("SELECT id, name, data FROM people ORDER BY name").fetchall()
    assert isinstance(ada.id, uuid.UUID)
    assert ada.data == PROFILE
    assert bob.data is None


def test_dataclass_row_takes_json_per_value_dumps_and_recursive_types(
    conn: psycopg.Connection[Any],
) -> None:
    tree = Node("root", [Node("a", [Node("a1")]), Node("b")])
    with conn.cursor(row_factory=dataclass_row(Node)) as cur:
        [(node)] = cur.execute(
            "SELECT %s::text AS name, %s::jsonb AS children",
            ("root", Jsonb(tree.children, dumps=json_dumps)),
        ).fetchall()
    assert node == tree


async def test_dataclass_row_on_an_async_cursor(pg_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_dsn) as aconn:
        cur = aconn.cursor(row_factory=dataclass_row(Person))
        await cur.execute(
            "SELECT gen_random_uuid() AS id, 'Ada' AS name, %s::jsonb AS data",
            [Jsonb(PROFILE, dumps=json_dumps)],
        )
        person = await cur.fetchone()
    assert person is not None
    assert person.data == PROFILE


def test_dataclass_row_refuses_what_it_cannot_map(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(TypeError, match="dataclass"):
        dataclass_row(dict)
    with conn.cursor(row_factory=dataclass_row(Person)) as cur:
        cur.execute("SELECT gen_random_uuid() AS id, 'x' AS name, NULL::jsonb AS data, 1 AS extra")
        with pytest.raises(TypeError, match="unexpected keyword argument 'extra'"):
            cur.fetchone()
        cur.execute(
            "SELECT gen_random_uuid() AS id, 'x' AS name, %s::jsonb AS data",
            [Jsonb({"email": "e", "address": None, "surprise": 1})],
        )
        with pytest.raises(TypeError, match="surprise"):
            cur.fetchone()
        # A statement without results still works.
        cur.execute("SET LOCAL application_name = 'typed-rows'")
