"""The bulk writer stores what an ORM insert would, on SQLite (INSERT) and PostgreSQL (COPY):
Python-side defaults of left-out columns filled, JSON columns given Python values."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import JSON, Integer, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from app.db.bulk import copy_text, insert_rows

_serials = itertools.count(100)


class _TestBase(DeclarativeBase):
    pass


class Defaulted(_TestBase):
    """A test-only table whose NOT NULL columns have Python-side defaults only."""

    __tablename__ = "bulk_defaults_test"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    kind: Mapped[str] = mapped_column(String(20), default="phash")
    serial: Mapped[int] = mapped_column(Integer, default=lambda: next(_serials))
    extra: Mapped[dict] = mapped_column(JSON, default=dict)


def test_insert_rows_fills_python_defaults_and_json(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        _TestBase.metadata.create_all(engine)
        with Session(engine) as session, session.begin():
            insert_rows(session, Defaulted, ("name",), [("a",), ("b",)])
            insert_rows(
                session,
                Defaulted,
                ("name", "kind", "extra"),
                [("c", "dhash", {"scores": [1.5, 2]})],
            )
        with Session(engine) as session:
            rows = session.execute(
                select(Defaulted.name, Defaulted.kind, Defaulted.serial, Defaulted.extra).order_by(
                    Defaulted.id
                )
            ).all()
    finally:
        engine.dispose()
    assert [(r.name, r.kind, r.extra) for r in rows] == [
        ("a", "phash", {}),
        ("b", "phash", {}),
        ("c", "dhash", {"scores": [1.5, 2]}),
    ]
    serials = [r.serial for r in rows]
    assert len(set(serials)) == 3  # a callable default is evaluated per row


def test_copy_text_refuses_to_leave_out_defaulted_columns(postgres_url: str) -> None:
    """A caller writing COPY text itself cannot have defaults filled, so it must name them."""
    engine = create_engine(postgres_url)
    try:
        _TestBase.metadata.create_all(engine)
        with Session(engine) as session, session.begin():
            with (
                pytest.raises(ValueError, match=r"\['kind', 'serial', 'extra'\]"),
                copy_text(session, Defaulted, ("name",)),
            ):
                pass
            with copy_text(session, Defaulted, ("name", "kind", "serial", "extra")) as copy:
                copy.write(b'x\tpdq\t7\t{"a": 1}\n')
        with Session(engine) as session:
            row = session.execute(select(Defaulted.name, Defaulted.kind, Defaulted.extra)).one()
    finally:
        engine.dispose()
    assert tuple(row) == ("x", "pdq", {"a": 1})
