"""Typed rows: dataclasses with nested JSON, where psycopg's own row factories stop.

psycopg already covers most of the way (use it directly):

* ``conn.cursor(row_factory=class_row(Person))`` builds a `Person` per row from its
  column names; ``dict_row`` gives dicts;
* ``uuid`` columns load as `uuid.UUID`, ``timestamptz`` as aware `datetime`,
  ``json``/``jsonb`` as Python data (dicts, lists...);
* ``Jsonb(value)`` sends Python data to a ``jsonb`` column (``Json`` for ``json``).

What is left is the JSON inside a row: `class_row` hands a ``jsonb`` column to
the dataclass as a plain dict, and json.dumps cannot write a dataclass, a UUID
or a datetime. `dataclass_row` builds the nested dataclasses, UUIDs, datetimes,
dates, times and enums that the field types declare; `json_dumps` writes them.
Register `json_dumps` once (``psycopg.types.json.set_json_dumps(json_dumps)``,
globally or per connection) and ``Jsonb(some_dataclass)`` just works.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import json
import types
import typing
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from psycopg.rows import BaseRowFactory, RowMaker, no_result

__all__ = ["dataclass_row", "json_dumps"]

T = TypeVar("T")

Convert = Callable[[Any], Any]

#: Types that JSON carries as text, and how to read them back.
_FROM_TEXT: dict[type, Convert] = {
    uuid.UUID: uuid.UUID,
    dt.datetime: dt.datetime.fromisoformat,
    dt.date: dt.date.fromisoformat,
    dt.time: dt.time.fromisoformat,
}


def dataclass_row(cls: type[T]) -> BaseRowFactory[T]:
    """A row factory that makes a `cls` dataclass per row, nested JSON included.

    Like psycopg's ``class_row(cls)`` (columns are passed by name to ``cls``), plus:
    a column whose field is typed as a dataclass, ``list[...]``, ``tuple[...]``,
    ``dict[str, ...]``, `uuid.UUID`, `datetime.datetime`, `datetime.date`,
    `datetime.time` or an `enum.Enum` (or ``X | None`` of one) is converted from
    the JSON that psycopg loaded, recursively. Other values pass through as
    psycopg loaded them. A JSON object with a key the dataclass has no field for
    raises TypeError, as a missing column would.

    Example::

        @dataclass
        class Person:
            id: UUID
            name: str
            data: Profile | None  # jsonb column -> Profile, with its nested fields

        cur = conn.cursor(row_factory=dataclass_row(Person))
        people = cur.execute("SELECT id, name, data FROM people").fetchall()

    Raises:
        TypeError: `cls` is not a dataclass type.
    """
    columns = _field_converters(cls)

    def factory(cursor: Any) -> RowMaker[T]:
        description = cursor.description
        if description is None:
            return no_result
        plan = [(column.name, columns.get(column.name)) for column in description]

        def make_row(values: Sequence[Any]) -> T:
            kwargs = {}
            for (name, convert), value in zip(plan, values, strict=True):
                kwargs[name] = value if convert is None or value is None else convert(value)
            return cls(**kwargs)

        return make_row

    return factory


def json_dumps(obj: Any) -> str:
    """`json.dumps` that also writes dataclasses, UUIDs, datetimes, dates, times, enums and sets.

    The reverse of what `dataclass_row` reads. Use it as psycopg's JSON dumper
    (``psycopg.types.json.set_json_dumps(json_dumps)``) or per value
    (``Jsonb(value, dumps=json_dumps)``).
    """
    return json.dumps(obj, default=_json_default)


def _json_default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        # One level: json.dumps comes back here for what the fields hold.
        return {field.name: getattr(obj, field.name) for field in dataclasses.fields(obj)}
    if isinstance(obj, uuid.UUID):
        return str(obj)
    if isinstance(obj, dt.date | dt.time):  # datetime is a date
        return obj.isoformat()
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, set | frozenset):
        return list(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


# -- converters ---------------------------------------------------------------------------


#: Per dataclass: its fields' converters (built once; forgotten with the class).
_PLANS: weakref.WeakKeyDictionary[type, dict[str, Convert | None]] = weakref.WeakKeyDictionary()


def _field_converters(cls: type[Any]) -> dict[str, Convert | None]:
    """For each init field of the dataclass `cls`: how to convert its value (None: as is)."""
    plan = _PLANS.get(cls)
    if plan is not None:
        return plan
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"dataclass_row needs a dataclass type, got {cls!r}")
    memo: dict[type, Convert] = {}
    hints = typing.get_type_hints(cls)
    plan = _PLANS[cls] = {
        field.name: _converter(hints[field.name], memo)
        for field in dataclasses.fields(cls)
        if field.init
    }
    return plan


def _converter(hint: Any, memo: dict[type, Convert]) -> Convert | None:
    """How to turn JSON-loaded data into `hint`; None when it needs nothing."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        return _converter(args[0], memo)
    if origin is typing.Union or origin is types.UnionType:
        members = [arg for arg in args if arg is not type(None)]
        # X | None converts as X; a real union is ambiguous: left as loaded.
        return _converter(members[0], memo) if len(members) == 1 else None
    if origin in (list, Sequence, set, frozenset):
        item = _converter(args[0], memo) if args else None
        if item is None:
            return None if origin in (list, Sequence) else origin
        container = list if origin is Sequence else origin
        return functools.partial(_each, container, item)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = _converter(args[0], memo)
            return tuple if item is None else functools.partial(_each, tuple, item)
        items = [_converter(arg, memo) for arg in args]
        return functools.partial(_fixed_tuple, items)
    if origin in (dict, Mapping):
        value = _converter(args[1], memo) if len(args) == 2 else None
        return None if value is None else functools.partial(_values, value)
    if isinstance(hint, type):
        if dataclasses.is_dataclass(hint):
            return _dataclass_converter(hint, memo)
        if issubclass(hint, enum.Enum):
            return functools.partial(_enum, hint)
        from_text = _FROM_TEXT.get(hint)
        if from_text is not None:
            return functools.partial(_text, from_text)
    return None


def _dataclass_converter(cls: type[Any], memo: dict[type, Convert]) -> Convert:
    known = memo.get(cls)
    if known is not None:
        return known  # a recursive type: the converter being built
    fields: dict[str, Convert | None] = {}

    def convert(value: Any) -> Any:
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(f"{cls.__name__}: expected a JSON object, got {value!r}")
        kwargs = {}
        for key, item in value.items():
            field = fields.get(key)
            kwargs[key] = item if field is None or item is None else field(item)
        return cls(**kwargs)

    memo[cls] = convert
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.init:
            fields[field.name] = _converter(hints[field.name], memo)
    return convert


def _each(container: Callable[[Any], Any], item: Convert, value: Any) -> Any:
    return container(None if element is None else item(element) for element in value)


def _fixed_tuple(items: list[Convert | None], value: Any) -> tuple[Any, ...]:
    if len(value) != len(items):
        raise TypeError(f"expected {len(items)} items, got {value!r}")
    return tuple(
        element if convert is None or element is None else convert(element)
        for convert, element in zip(items, value, strict=True)
    )


def _values(item: Convert, value: Any) -> dict[Any, Any]:
    return {key: None if element is None else item(element) for key, element in value.items()}


def _enum(cls: type[enum.Enum], value: Any) -> Any:
    return value if isinstance(value, cls) else cls(value)


def _text(parse: Convert, value: Any) -> Any:
    # psycopg already loads top-level uuid/timestamp columns; JSON carries text.
    return parse(value) if isinstance(value, str) else value
