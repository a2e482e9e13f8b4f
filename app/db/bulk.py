"""Bulk inserts inside the caller's transaction: COPY on PostgreSQL, multi-row INSERTs
elsewhere. A million /match summary rows took 55.8 s as multi-row INSERTs on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

#: Rows per multi-row INSERT (SQLite and others).
INSERT_CHUNK = 5000


def insert_rows(
    session: Session, model: Any, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """Insert ``rows`` (tuples in the order of ``columns``: plain ints, strings, bytes,
    datetimes or None - not JSON columns) into ``model``'s table. Rows are consumed as they
    come: a generator never has all of them in memory at once. Column defaults set on the
    Python side (``default=``) are not applied: pass every NOT NULL column."""
    if session.get_bind().dialect.name == "postgresql":
        table = model.__table__.name
        connection = session.connection().connection.driver_connection
        with (
            connection.cursor() as cursor,
            cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        return
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(dict(zip(columns, row, strict=True)))
        if len(chunk) == INSERT_CHUNK:
            session.execute(insert(model), chunk)
            chunk = []
    if chunk:
        session.execute(insert(model), chunk)
