"""Alembic environment: uses the connection handed over by app.db.migrate, or DATABASE_URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from app.config import get_settings
from app.db.models import Base
from app.db.session import make_engine

config = context.config
target_metadata = Base.metadata
#: pg_advisory_xact_lock key: API replicas started together (`docker compose up --scale
#: api=N`) each migrate at start; the lock makes them take turns, so the first upgrades and
#: the others find the schema at head instead of racing to create the same tables.
MIGRATION_LOCK = 0x6D656D61  # "mema"


def _sqlite_transactional_ddl(connection) -> None:
    """pysqlite opens a transaction only before INSERT/UPDATE/DELETE, so every CREATE, ALTER
    or DROP before the first of them commits at once: a downgrade refused by one revision
    after another had dropped its columns left the schema changed under the old version
    number. An explicit BEGIN makes a run's migrations commit or roll back together, as on
    PostgreSQL (SQLite's DDL is transactional)."""
    if not connection.connection.driver_connection.in_transaction:
        connection.exec_driver_sql("BEGIN")


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
        elif connection.dialect.name == "sqlite":
            _sqlite_transactional_ddl(connection)
        context.run_migrations()


def run_migrations_offline() -> None:
    url = config.get_main_option("sqlalchemy.url") or get_settings().effective_database_url
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or get_settings().effective_database_url
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
