"""The database an offline command (report, gc) works on, as the server would see it."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from app.config import Settings


@contextmanager
def database_at_head(args: argparse.Namespace, refusal: str) -> Iterator[tuple[Settings, Engine]]:
    """The settings (environment, overridden by ``--db`` / ``--data-dir``) and an engine on
    their database, which must be at this memaudit's schema head: otherwise the command ends
    saying so, ``refusal`` added (what it did not do)."""
    from app.config import Settings
    from app.db.migrate import schema_status
    from app.db.session import make_engine

    overrides: dict = {}
    if args.db:
        overrides["database_url"] = args.db
    if args.data_dir:
        overrides["data_dir"] = Path(args.data_dir)
    settings = Settings(**overrides)
    engine = make_engine(settings.effective_database_url)
    try:
        current, head = schema_status(engine, settings.migrations_dir)
        if current != head:
            raise SystemExit(
                f"memaudit: the database is at schema revision {current}, this memaudit expects "
                f"{head}: check --db, or run `memaudit migrate`{refusal}"
            )
        yield settings, engine
    finally:
        engine.dispose()


def add_database_arguments(command: argparse.ArgumentParser) -> None:
    """The options naming the database and data directory :func:`database_at_head` reads."""
    command.add_argument("--db", default=None, help="database URL (default DATABASE_URL)")
    command.add_argument(
        "--data-dir", default=None, help="data directory (default MEMAUDIT_DATA_DIR)"
    )
