"""Alembic migrations run from code: at service start, from the CLI, and checked by /ready."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine


def alembic_config(migrations_dir: Path, url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_to_head(engine: Engine, migrations_dir: Path) -> None:
    """Bring the database schema to the newest revision (a no-op when already there)."""
    config = alembic_config(migrations_dir, engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def schema_status(engine: Engine, migrations_dir: Path) -> tuple[str | None, str | None]:
    """(current revision in the database, head revision of the scripts)."""
    script = ScriptDirectory.from_config(
        alembic_config(migrations_dir, engine.url.render_as_string(hide_password=False))
    )
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return current, script.get_current_head()
