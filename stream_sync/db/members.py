"""`column IN (...)` for a list of any length, as one statement text on PostgreSQL.

SQLAlchemy renders IN with a bound parameter per member, so each list length is
another statement, which asyncpg prepares anew on each pooled connection. The
batches of a storm of admissions have a new length almost every time, and those
prepares cost more than the queries. `= ANY(:array)` is one parameter whatever the
length. SQLite has no arrays and prepares nothing ahead: it keeps IN.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Integer, String, any_, bindparam, literal, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.elements import ColumnElement

Column = ColumnElement[Any] | QueryableAttribute[Any]  # a table's column or a model's


def member_of(column: ColumnElement[Any], name: str, *, postgresql: bool) -> ColumnElement[bool]:
    """The condition with a named parameter (a list), for statements built once."""
    if postgresql:
        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))


def one_of(column: Column, values: Collection[Any], *, postgresql: bool) -> ColumnElement[bool]:
    """The condition with its values bound now."""
    column = column.expression
    if postgresql:
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(list(values))


# A statement with a parameter of each array type used above.
_ARRAY_TYPES = select(literal(1)).where(
    literal(0) == any_(bindparam("ints", type_=ARRAY(Integer))),
    literal("") == any_(bindparam("strings", type_=ARRAY(String))),
)


async def introduce_types(connection: AsyncConnection) -> None:
    """asyncpg looks an array type up (a query) on each connection's first use of it:
    done here on a warm-up, not inside the first admissions."""
    await connection.execute(_ARRAY_TYPES, {"ints": [], "strings": []})
