"""The Alembic migrations build exactly the schema the ORM models describe, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from app.config import Settings
from app.db.migrate import upgrade_to_head
from app.db.models import Base


def test_migrations_match_models(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        upgrade_to_head(engine, Settings().migrations_dir)
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == []
    finally:
        engine.dispose()
