"""The one bulk writer: rows inserted inside the caller's transaction, COPY on PostgreSQL,
multi-row INSERTs elsewhere. A million /match summary rows took 55.8 s as multi-row INSERTs on
PostgreSQL.

Both paths store the same values: columns with a Python-side default (``default=``) that a
caller leaves out are filled as an ORM insert fills them, and every value goes through its
column type's bind processing (JSON columns take Python lists and dicts).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

#: Rows per multi-row INSERT (SQLite and others).
INSERT_CHUNK = 5000


def _table(model: Any) -> Table:
    return model.__table__


def _python_defaults(table: Table, columns: Sequence[str]) -> list[tuple[str, Callable[[], Any]]]:
    """(name, value maker) of each column with a Python-side default not in ``columns``."""
    given = set(columns)
    unknown = given - set(table.c.keys())
    if unknown:
        raise ValueError(f"{table.name} has no column(s) {sorted(unknown)}")
    filled: list[tuple[str, Callable[[], Any]]] = []
    for column in table.c:
        default = column.default
        if column.key in given or default is None:
            continue
        if default.is_scalar:
            filled.append((column.key, lambda value=default.arg: value))
        elif default.is_callable:
            # SQLAlchemy wraps a zero-argument default to take an execution context.
            filled.append((column.key, lambda make=default.arg: make(None)))
        else:
            raise ValueError(
                f"{table.name}.{column.key} has a SQL-side default that COPY cannot apply; "
                "pass the column explicitly"
            )
    return filled


def _copy_sql(table: Table, columns: Sequence[str]) -> str:
    names = ", ".join(table.c[name].name for name in columns)
    return f"COPY {table.name} ({names}) FROM STDIN"


@contextmanager
def copy_text(session: Session, model: Any, columns: Sequence[str]) -> Iterator[Any]:
    """A psycopg ``Copy`` into ``model``'s table for callers that write COPY text themselves
    (PostgreSQL only; a million rows built as bytes beat a tuple per row). Such a caller
    cannot have defaults filled for it: every column with a Python-side default must be
    among ``columns``."""
    table = _table(model)
    missing = [name for name, _ in _python_defaults(table, columns)]
    if missing:
        raise ValueError(f"COPY into {table.name} must give its defaulted column(s) {missing}")
    connection = session.connection().connection.driver_connection
    with connection.cursor() as cursor, cursor.copy(_copy_sql(table, columns)) as copy:
        yield copy


def insert_rows(
    session: Session, model: Any, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """Insert ``rows`` (tuples in the order of ``columns``) into ``model``'s table. Rows are
    consumed as they come: a generator never has all of them in memory at once. Columns left
    out get their Python-side default (evaluated per row) or their server default."""
    table = _table(model)
    defaults = _python_defaults(table, columns)
    if session.get_bind().dialect.name != "postgresql":
        # SQLAlchemy's INSERT fills the Python-side defaults itself.
        chunk: list[dict[str, Any]] = []
        for row in rows:
            chunk.append(dict(zip(columns, row, strict=True)))
            if len(chunk) == INSERT_CHUNK:
                session.execute(insert(model), chunk)
                chunk = []
        if chunk:
            session.execute(insert(model), chunk)
        return
    all_columns = (*columns, *(name for name, _ in defaults))
    dialect = session.get_bind().dialect
    processors = [
        table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in all_columns
    ]
    processed = [(i, p) for i, p in enumerate(processors) if p is not None]
    connection = session.connection().connection.driver_connection
    with connection.cursor() as cursor, cursor.copy(_copy_sql(table, all_columns)) as copy:
        for row in rows:
            if defaults:
                row = (*row, *(make() for _, make in defaults))
            if processed:
                row = list(row)
                for i, process in processed:
                    row[i] = process(row[i])
            copy.write_row(row)
