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

    root = Path(__file__).resolve().parents[2]
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


def test_downgrade_from_0003_keeps_batches_and_refuses_packed_ones(client, settings) -> None:
    """Going back to 0002 drops the packed-summary column without touching any batch's rows
    (a SQLite table rebuild would cascade), and refuses while a batch keeps packed results."""
    import pytest
    from alembic import command
    from sqlalchemy import func, select, update

    from app.db.migrate import alembic_config, schema_status
    from app.db.models import GeneratedImage, MatchBatch, RealSummary
    from tests.helpers import real_images, register, zip_bytes

    real_set = register(client, real_images(6))
    gen = {f"g{i}.png": data for i, data in enumerate(real_images(4, offset=50).values())}
    batch = client.post(
        "/match",
        data={"real_set_id": str(real_set["id"])},
        files=[("files", ("g.zip", zip_bytes(gen), "application/zip"))],
    ).json()
    engine = client.app.state.engine
    config = alembic_config(settings.migrations_dir, engine.url.render_as_string(False))

    def downgrade() -> None:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0002")

    def counts() -> tuple[int, int]:
        with engine.connect() as connection:
            return tuple(
                connection.scalar(select(func.count()).select_from(model))
                for model in (GeneratedImage, RealSummary)
            )

    with engine.begin() as connection:
        connection.execute(
            update(MatchBatch)
            .where(MatchBatch.id == batch["batch_id"])
            .values(real_summary_packed=b"x")
        )
    with pytest.raises(RuntimeError, match="delete those batches"):
        downgrade()
    with engine.begin() as connection:
        connection.execute(update(MatchBatch).values(real_summary_packed=None))
    before = counts()
    assert before == (4, 6)
    downgrade()
    assert schema_status(engine, settings.migrations_dir)[0] == "0002"
    assert counts() == before
