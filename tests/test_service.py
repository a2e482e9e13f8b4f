"""Migrations, probes, OpenAPI docs and the CLI."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect

from app.cli import main as cli_main
from app.config import Settings
from app.db.migrate import schema_status, upgrade_to_head
from app.db.session import make_engine
from app.main import create_app
from tests.imagegen import perturbed_copy, phantom, png


def test_migrations_from_empty_database(database_url, settings):
    engine = make_engine(database_url)
    assert schema_status(engine, settings.migrations_dir) == (None, "0005")
    upgrade_to_head(engine, settings.migrations_dir)
    upgrade_to_head(engine, settings.migrations_dir)  # idempotent
    tables = set(inspect(engine).get_table_names())
    assert {"real_sets", "real_images", "match_batches", "generated_images"} <= tables
    assert schema_status(engine, settings.migrations_dir) == ("0005", "0005")
    engine.dispose()


def test_health_and_ready(client):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["schema_revision"] == ready.json()["head_revision"] == "0005"


def test_ready_reports_unmigrated_database(tmp_path):
    settings = Settings(
        data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'x.db'}", auto_migrate=False
    )
    with TestClient(create_app(settings)) as client:
        r = client.get("/ready")
    assert r.status_code == 503
    assert "migration" in r.json()["detail"]


def test_sqlite_default_is_created_with_wal(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    settings = Settings(data_dir=tmp_path / "fresh")
    with TestClient(create_app(settings)) as client:
        assert client.get("/ready").json()["database"] == "sqlite"
        with client.app.state.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert (tmp_path / "fresh" / "memaudit.db").exists()


def test_docs_describe_every_endpoint(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in [
        "/real-sets",
        "/real-sets/{real_set_id}",
        "/real-sets/{real_set_id}/images",
        "/match",
        "/match/{batch_id}",
        "/health",
        "/ready",
    ]:
        assert path in paths
        for operation in paths[path].values():
            assert operation.get("summary")
    form = paths["/match"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(form["properties"]) == {
        "real_set_id",
        "threshold",
        "top_k",
        "real_summary",
        "window_center",
        "window_width",
        "files",
    }
    assert all(p.get("description") for p in form["properties"].values())


def test_cli_match_prints_paper_lines_and_json(tmp_path, capsys):
    real_dir, gen_dir = tmp_path / "real", tmp_path / "generated"
    real_dir.mkdir()
    gen_dir.mkdir()
    for i in range(12):
        (real_dir / f"used_{i:04d}.png").write_bytes(png(phantom(i)))
    (gen_dir / "generated_0001.png").write_bytes(png(perturbed_copy(phantom(3), 5, 0.3)))
    (gen_dir / "generated_0002.png").write_bytes(png(phantom(999)))
    assert cli_main(["match", str(real_dir), str(gen_dir), "--quiet", "--threshold", "40"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("The source image for generated_0001.png is used_0003.png with ")
    assert lines[1].startswith("The source image for generated_0002.png is ")
    assert (
        cli_main(["match", str(real_dir), str(gen_dir), "--quiet", "--json", "--hash-size", "8"])
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["hash_size"] == 8 and doc["threshold_source"] == "calibrated"
    assert doc["matches"][0]["source"] == "used_0003.png"


def test_cli_rejects_missing_folder(tmp_path):
    with pytest.raises(SystemExit, match="not a directory"):
        cli_main(["match", str(tmp_path / "nope"), str(tmp_path), "--quiet"])
