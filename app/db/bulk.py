"""Bulk inserts inside the caller's transaction: COPY on PostgreSQL, multi-row INSERTs
elsewhere. Row-by-row ORM flushes cost ~20x more; a million summary rows took a minute."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

#: Rows per multi-row INSERT (SQLite and others).
INSERT_CHUNK = 5000


def insert_rows(session: Session, model: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys: plain ints, strings, bytes, datetimes or
    None - not JSON columns) into ``model``'s table."""
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        columns = list(rows[0])
        table = model.__table__.name
        cursor = session.connection().connection.driver_connection.cursor()
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row[c] for c in columns])
        return
    for lo in range(0, len(rows), INSERT_CHUNK):
        session.execute(insert(model), rows[lo : lo + INSERT_CHUNK])
