"""Probes and OpenAPI docs."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app


def test_health_and_ready(client):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["schema_revision"] == ready.json()["head_revision"] == "0010"


def test_ready_reports_unmigrated_database(tmp_path):
    settings = Settings(
        data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'x.db'}", auto_migrate=False
    )
    with TestClient(create_app(settings)) as client:
        r = client.get("/ready")
    assert r.status_code == 503
    assert "migration" in r.json()["detail"]


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
        "verify",
        "window_center",
        "window_width",
        "files",
    }
    assert all(p.get("description") for p in form["properties"].values())
