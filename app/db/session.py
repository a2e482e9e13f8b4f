"""Engine and session factory; SQLite gets WAL mode and foreign keys on every connection."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """Create an engine; for a file-based SQLite URL the parent directory is created too."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work is committed on success and rolled back on any exception.

    On SQLite it starts with ``BEGIN IMMEDIATE``: the write lock is taken before the first
    read, so two writers to one set run one after the other (the second waits up to the
    busy timeout) and each reads what the other committed. Without it the driver begins
    only at the first INSERT, after the reads (``SELECT ... FOR UPDATE`` is a no-op there):
    concurrent appends computed the same positions (409s) and listed each other's images.
    PostgreSQL serialises the same work with ``SELECT ... FOR UPDATE``.
    """
    with factory() as session, session.begin():
        if session.get_bind().dialect.name == "sqlite":
            # The driver sees the open transaction and emits no BEGIN of its own.
            session.execute(text("BEGIN IMMEDIATE"))
        yield session
