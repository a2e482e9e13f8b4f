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


def _documented(spec: dict, method: str, path: str, status: int):
    response = spec["paths"][path][method]["responses"][str(status)]
    return response["content"]["application/json"]["example"]


def test_each_documented_error_example_is_what_the_route_answers(client):
    """/docs shows under each status an answer the route really gives (one example for
    every route showed a /match form error under /real-sets/{id}'s 404 and 409)."""
    spec = client.get("/openapi.json").json()
    png = {"files": ("x.png", b"not a png", "image/png")}
    job = "0123456789abcdef0123456789abcdef"
    probes = [
        ("get", "/real-sets/{real_set_id}", client.get("/real-sets/42")),
        ("get", "/real-sets/{real_set_id}", client.get("/real-sets/abc")),
        ("delete", "/match/{batch_id}", client.delete("/match/7")),
        ("get", "/match/{batch_id}/report", client.get("/match/abc/report")),
        ("get", "/classify/{classification_id}", client.get("/classify/7")),
        ("get", "/filter/{batch_id}", client.get("/filter/7")),
        ("get", "/match", client.get("/match?offset=abc")),
        ("get", "/jobs/{job_id}", client.get("/jobs/abc")),
        ("post", "/real-sets", client.post("/real-sets", data={"name": "x"}, files=png)),
        ("post", "/match", client.post("/match", data={"real_set_id": "42"}, files=png)),
        (
            "post",
            "/match",
            client.post("/match", data={"real_set_id": "1", "top_k": "0"}, files=png),
        ),
        ("post", "/match", client.post("/match", json={"real_set_id": 1})),
        (
            "post",
            "/match",
            client.post("/match", content=b"x", headers={"Content-Type": "multipart/form-data"}),
        ),
        ("post", "/classify", client.post("/classify", data={"method": "nope"})),
        (
            "post",
            "/match",
            client.post("/match", data={f"f{i}": "1" for i in range(101)}, files=png),
        ),
    ]
    jobs_404 = client.get(f"/jobs/{job}")
    assert jobs_404.status_code == 404
    assert _documented(spec, "get", "/jobs/{job_id}", 404) == {
        "detail": jobs_404.json()["detail"].replace(job, "3f2c9a0e8b7d4c1fa6e5d4c3b2a19087")
    }
    for method, path, answer in probes:
        assert answer.status_code >= 400, (path, answer.text)
        expected = answer.json()
        if path == "/real-sets/{real_set_id}" and answer.status_code == 404:
            assert expected == {"detail": "real set 42 does not exist"}
        assert _documented(spec, method, path, answer.status_code) == expected, (path, answer)
