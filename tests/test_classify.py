"""/classify and /models end to end: real onnxruntime sessions, real training and export."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.scoring.reference import ReferenceConfig, ReferenceScorer
from app.training.synthetic import simulated_generator, synthetic_devset
from tests.helpers import file_parts, register
from tests.imagegen import phantom, png

REPO_MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.fixture(scope="module")
def devset():
    """A small synthetic development set: 12 used, 12 unused, 40 generated."""
    used = [phantom(i, 128) for i in range(12)]
    unused = [phantom(500 + i, 128) for i in range(12)]
    generated = simulated_generator(used, 40, seed=3, copy_share=0.8)
    return used, unused, generated


def _real_files(used, unused) -> dict[str, bytes]:
    files = {f"used_{i:03d}.png": png(img) for i, img in enumerate(used)}
    files.update({f"unused_{i:03d}.png": png(img) for i, img in enumerate(unused)})
    return files


def test_reference_scorer_separates_copied_images(devset):
    used, unused, generated = devset
    result = ReferenceScorer().score(used + unused, generated)
    truth = np.array([1] * len(used) + [0] * len(unused))
    from app.evaluation import roc_auc

    assert roc_auc(truth, result.scores) >= 0.9
    assert result.labels[len(used) :].mean() <= 0.25


def test_classify_reference_and_phash_with_set_and_batch(client, devset):
    used, unused, generated = devset
    real_set = register(client, _real_files(used, unused), name="candidates")
    gen = {f"generated_{i:04d}.png": png(g) for i, g in enumerate(generated)}
    batch = client.post(
        "/match", data={"real_set_id": str(real_set["id"])}, files=file_parts(gen)
    ).json()
    for method in ("reference", "phash"):
        r = client.post(
            "/classify",
            data={
                "method": method,
                "real_set_id": str(real_set["id"]),
                "batch_id": str(batch["batch_id"]),
            },
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["method"] == method and body["real_count"] == 24
        assert body["generated_count"] == 40
        assert len(body["results"]) == 24
        for item in body["results"]:
            assert item["label"] == ("used" if item["score"] >= body["threshold"] else "unused")
        again = client.get(f"/classify/{body['classification_id']}").json()
        assert again["results"] == body["results"]
    lines = client.get(
        f"/classify/{body['classification_id']}", params={"format": "imageclef"}
    ).text.splitlines()
    assert len(lines) == 24 and all(line.rsplit(",", 1)[1] in {"0", "1"} for line in lines)
    assert lines[0].startswith("used_000,")
    rows = list(
        csv.DictReader(
            io.StringIO(
                client.get(f"/classify/{body['classification_id']}", params={"format": "csv"}).text
            )
        )
    )
    assert [r["filename"] for r in rows][:2] == ["used_000.png", "used_001.png"]

    # A threshold above 1 reaches the auditor: it verifies until that bar, so the labels are
    # those of checking every shortlisted image.
    full = ReferenceScorer(ReferenceConfig(verify_round=0)).score(used + unused, generated)
    strict = client.post(
        "/classify",
        data={
            "method": "reference",
            "real_set_id": str(real_set["id"]),
            "batch_id": str(batch["batch_id"]),
            "threshold": "2",
        },
    ).json()
    assert [r["label"] == "used" for r in strict["results"]] == list(full.scores >= 2)


def test_classify_with_uploaded_images_and_errors(client, devset):
    used, unused, generated = devset
    files = file_parts(_real_files(used[:4], unused[:4]))
    files += [
        ("generated_files", (f"g{i}.png", png(g), "image/png"))
        for i, g in enumerate(generated[:10])
    ]
    r = client.post("/classify", data={"method": "reference"}, files=files)
    assert r.status_code == 200, r.text
    assert r.json()["real_count"] == 8 and r.json()["generated_count"] == 10
    r = client.post(
        "/classify", data={"method": "reference"}, files=file_parts(_real_files(used[:2], []))
    )
    assert r.status_code == 422 and "generated" in r.json()["detail"]["message"]
    r = client.post(
        "/classify",
        data={"method": "reference"},
        files=[
            *file_parts(_real_files(used[:2], [])),
            ("generated_files", ("notes.txt", b"not an image", "text/plain")),
        ],
    )
    assert r.status_code == 422
    assert r.json()["detail"]["rejected"][0]["filename"] == "notes.txt"
    r = client.post("/classify", data={"method": "magic", "real_set_id": "1"})
    assert r.status_code == 422 and "method" in r.json()["detail"]
    r = client.post(
        "/classify", data={"method": "reference", "real_set_id": "999", "batch_id": "1"}
    )
    assert r.status_code == 404
    assert client.get("/classify/999").status_code == 404
    assert client.get("/classify/99999999999999999999").status_code == 422
    r = client.post("/classify", data={"method": "reference", "real_set_id": "1", "tresh": "2"})
    assert r.status_code == 422 and "tresh" in r.json()["detail"]


def test_classify_phash_follows_the_match_batch(client, devset):
    """method=phash applies the batch's own hash size and threshold, as /match did."""
    used, unused, generated = devset
    real_set = register(client, _real_files(used, unused), hash_size=8)
    gen = {f"g_{i:03d}.png": png(g) for i, g in enumerate(generated)}
    batch = client.post(
        "/match", data={"real_set_id": str(real_set["id"]), "threshold": "0"}, files=file_parts(gen)
    ).json()
    r = client.post(
        "/classify",
        data={
            "method": "phash",
            "batch_id": str(batch["batch_id"]),
            "real_set_id": str(real_set["id"]),
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["models"][0]["name"] == "phash-64"
    assert body["used_count"] == batch["used_count"]
    verdicts = {s["filename"]: s["verdict"] for s in batch["real_summary"]}
    assert {x["filename"]: x["label"] for x in body["results"]} == verdicts


def test_shipped_models_load_and_classify(client, devset):
    used, unused, _ = devset
    listed = {m["method"]: m for m in client.get("/models").json()}
    assert listed["cnn"]["status"] == "loaded"
    assert listed["cnn"]["execution_provider"] == "CPUExecutionProvider"
    assert listed["sift_knn"]["status"] == "loaded"
    real_set = register(client, _real_files(used, unused), name="for models")
    for method in ("cnn", "sift_knn"):
        r = client.post("/classify", data={"method": method, "real_set_id": str(real_set["id"])})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["models"][0]["sha256"] == listed[method]["sha256"]
        assert all(0.0 <= x["score"] <= 1.0 for x in body["results"])
    assert body["models"][0]["name"] == "memaudit-sift-knn"


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
        real_set = register(client, _real_files(used, unused))
        for method in ("cnn", "sift_knn"):
            r = client.post(
                "/classify", data={"method": method, "real_set_id": str(real_set["id"])}
            )
            assert r.status_code == 200, r.text
            entry = next(m for m in manifest["models"] if m["method"] == method)
            assert r.json()["models"][0]["sha256"] == entry["sha256"]


def test_tampered_artifact_is_refused(tmp_path):
    models = tmp_path / "models"
    shutil.copytree(REPO_MODELS, models)
    with (models / "sift_knn.joblib").open("ab") as fh:
        fh.write(b"tampered")
    settings = Settings(
        data_dir=tmp_path / "data",
        models_dir=models,
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
    )
    with TestClient(create_app(settings)) as client:
        listed = {m["method"]: m for m in client.get("/models").json()}
        assert listed["sift_knn"]["status"] == "refused"
        assert "sha256" in listed["sift_knn"]["detail"]
        assert listed["cnn"]["status"] == "loaded"
        r = client.post("/classify", data={"method": "sift_knn", "real_set_id": "1"})
        assert r.status_code == 503 and "refused" in r.json()["detail"]


def test_evaluate_prints_table_and_roc(tmp_path, capsys, devset):
    from app.cli import main as cli_main

    used, unused, generated = devset
    (tmp_path / "real").mkdir()
    (tmp_path / "gen").mkdir()
    rows = ["real,used,memorized"]
    for i, img in enumerate(used + unused):
        (tmp_path / "real" / f"real_{i:03d}.png").write_bytes(png(img))
        rows.append(f"real_{i:03d}.png,{int(i < len(used))},{int(i < len(used))}")
    for i, img in enumerate(generated):
        (tmp_path / "gen" / f"g_{i:03d}.png").write_bytes(png(img))
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    assert (
        cli_main(
            [
                "evaluate",
                "--labels",
                str(tmp_path / "labels.csv"),
                "--real",
                str(tmp_path / "real"),
                "--generated",
                str(tmp_path / "gen"),
                "--method",
                "reference",
                "--against",
                "memorized",
                "--roc",
                str(tmp_path / "roc.png"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    header = out[1].split("\t")
    assert header[:5] == ["accuracy", "precision", "specificity", "recall", "f1"]
    values = dict(zip(header, out[2].split("\t"), strict=True))
    assert float(values["roc_auc"]) >= 0.9
    assert int(values["tp"]) + int(values["fn"]) == len(used)
    assert (tmp_path / "roc.png").stat().st_size > 1000


def test_synthetic_devset_shape():
    used, unused, generated = synthetic_devset(n_used=3, n_unused=2, n_generated=5, size=64)
    assert len(used) == 3 and len(unused) == 2 and len(generated) == 5
    assert all(g.shape == (64, 64) and g.dtype == np.uint8 for g in generated)


def test_reference_scores_are_deterministic(devset):
    used, unused, generated = devset
    first = ReferenceScorer().score(used + unused, generated)
    second = ReferenceScorer().score(used + unused, generated)
    assert np.array_equal(first.scores, second.scores)


def test_reference_stops_verifying_images_once_conclusive(devset):
    """Rounds skip the rest of a copied image's shortlist: fewer SIFT/RANSAC checks, same
    verdicts as verifying every shortlisted generated image."""
    used, unused, generated = devset
    generated = generated + simulated_generator(used, 80, seed=4, copy_share=1.0)

    def run(verify_round: int, conclusive_score: float = 1.0):
        seen: list[tuple[str, int, int]] = []
        config = ReferenceConfig(verify_round=verify_round, conclusive_score=conclusive_score)
        result = ReferenceScorer(config).score(
            used + unused, generated, lambda *step: seen.append(step)
        )
        verified = [done for stage, done, _ in seen if stage == "verified generated images"]
        return result, verified[-1]

    everything, checked_all = run(0)
    in_rounds, checked_in_rounds = run(4)
    assert checked_in_rounds < checked_all
    assert np.array_equal(everything.labels, in_rounds.labels)
    assert everything.labels[: len(used)].mean() >= 0.75
    assert f"checked {checked_in_rounds} generated" in in_rounds.threshold_reason
    # Deciding at a higher threshold: conclusive only there, the same labels as a full check.
    stricter, checked_stricter = run(4, conclusive_score=2.5)
    assert checked_in_rounds < checked_stricter <= checked_all
    assert np.array_equal(stricter.scores >= 2.5, everything.scores >= 2.5)
    assert (everything.scores >= 2.5).any() and not (everything.scores >= 2.5).all()
