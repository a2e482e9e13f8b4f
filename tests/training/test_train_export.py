"""Real training, ONNX export, loading and scoring end to end."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.helpers import labelled_real_files, register
from tests.imagegen import png


def test_train_export_load_classify_end_to_end(tmp_path, devset):
    """memaudit train (PyTorch -> ONNX, SIFT -> joblib) -> manifest -> served by the API."""
    from app.cli import main as cli_main

    used, unused, generated = devset
    for name, images in (("used", used), ("unused", unused), ("generated", generated)):
        (tmp_path / name).mkdir()
        for i, img in enumerate(images):
            (tmp_path / name / f"{name}_{i:03d}.png").write_bytes(png(img))
    models = tmp_path / "models"
    assert (
        cli_main(
            [
                "train",
                "cnn",
                "--used",
                str(tmp_path / "used"),
                "--unused",
                str(tmp_path / "unused"),
                "--out",
                str(models / "cnn.onnx"),
                "--epochs",
                "2",
            ]
        )
        == 0
    )
    assert (
        cli_main(
            [
                "train",
                "sift-knn",
                "--used",
                str(tmp_path / "used"),
                "--unused",
                str(tmp_path / "unused"),
                "--generated",
                str(tmp_path / "generated"),
                "--out",
                str(models / "sift_knn.joblib"),
            ]
        )
        == 0
    )
    manifest = json.loads((models / "manifest.json").read_text())
    assert {m["method"] for m in manifest["models"]} == {"cnn", "sift_knn"}
    settings = Settings(
        data_dir=tmp_path / "data",
        models_dir=models,
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
    )
    with TestClient(create_app(settings)) as client:
        real_set = register(client, labelled_real_files(used, unused))
        for method in ("cnn", "sift_knn"):
            r = client.post(
                "/classify", data={"method": method, "real_set_id": str(real_set["id"])}
            )
            assert r.status_code == 200, r.text
            entry = next(m for m in manifest["models"] if m["method"] == method)
            assert r.json()["models"][0]["sha256"] == entry["sha256"]
