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


def test_replicas_starting_together_migrate_once(postgres_url: str) -> None:
    """API replicas started at once (compose --scale) each run the migrations, as the
    container entrypoint does: on PostgreSQL they take turns under an advisory lock instead
    of racing to create the same tables."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from app.db.migrate import schema_status

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, DATABASE_URL=postgres_url, PYTHONPATH=str(root))
    command = [sys.executable, "-m", "alembic", "-c", str(root / "alembic.ini"), "upgrade", "head"]
    replicas = [
        subprocess.Popen(command, env=env, cwd=root, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outcomes = [(p.wait(timeout=120), p.stderr.read()) for p in replicas]
    assert [code for code, _ in outcomes] == [0] * 4, outcomes
    engine = create_engine(postgres_url)
    try:
        current, head = schema_status(engine, Settings().migrations_dir)
        assert current == head
    finally:
        engine.dispose()
