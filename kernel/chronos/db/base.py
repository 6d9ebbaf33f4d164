"""The shared declarative base: kernel and plugin models share one MetaData.

Constraint names follow one convention so that migrations are deterministic on
SQLite and PostgreSQL alike, and foreign keys between owners resolve by table
name (``ForeignKey("events.id")``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ColumnElement,
    DateTime,
    Integer,
    MetaData,
    String,
    TypeDecorator,
    any_,
    bindparam,
    func,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Base(DeclarativeBase):
    """Subclass this for every table, in the kernel and in plugins."""

    metadata = metadata


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned timezone-aware.

    SQLite has no timezone type; naive values read back are UTC by contract.
    Naive values written are refused, so local time can never sneak in.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


#: JSON on SQLite, JSONB on PostgreSQL.
JSONType = JSON().with_variant(JSONB(), "postgresql")

#: A 64-bit auto-incrementing key (INTEGER on SQLite so it aliases the rowid).
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


def one_of(column: ColumnElement[Any], values: Iterable[Any], dialect: str) -> ColumnElement[bool]:
    """``column IN values`` with the values as ONE bound parameter (a JSON array read by
    ``json_each`` on SQLite, ``column = ANY(array)`` on PostgreSQL).

    For the lookups of a whole batch (hundreds of keys): ``column.in_(list)`` builds and expands
    one bind parameter per value on every execution and needs chunking under the drivers'
    parameter limits; this costs one parameter whatever the length, and both databases still
    probe the column's index once per value. ``dialect`` is ``session.get_bind().dialect.name``.

    PostgreSQL gets a real array, not a set-returning function over JSON: the planner knows an
    array's length, while it guesses a function's rows and, on a table without statistics yet
    (a fresh database before autovacuum), chose to scan the whole table once per key.
    """
    if dialect == "sqlite":
        param = bindparam(None, json.dumps(list(values)), type_=String())
        return column.in_(select(literal_column("value")).select_from(func.json_each(param)))
    return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
