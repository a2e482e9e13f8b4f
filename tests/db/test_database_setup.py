"""Migrations from an empty database and the SQLite default."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import inspect

from app.config import Settings
from app.db.migrate import schema_status, upgrade_to_head
from app.db.session import make_engine
from app.main import create_app


def test_migrations_from_empty_database(database_url, settings):
    engine = make_engine(database_url)
    assert schema_status(engine, settings.migrations_dir) == (None, "0010")
    upgrade_to_head(engine, settings.migrations_dir)
    upgrade_to_head(engine, settings.migrations_dir)  # idempotent
    tables = set(inspect(engine).get_table_names())
    assert {"real_sets", "real_images", "match_batches", "generated_images"} <= tables
    assert schema_status(engine, settings.migrations_dir) == ("0010", "0010")
    engine.dispose()


def test_sqlite_default_is_created_with_wal(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    settings = Settings(data_dir=tmp_path / "fresh")
    with TestClient(create_app(settings)) as client:
        assert client.get("/ready").json()["database"] == "sqlite"
        with client.app.state.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert (tmp_path / "fresh" / "memaudit.db").exists()
