"""/classify through the API: sets and batches, uploads, errors, shipped models."""

from __future__ import annotations

import csv
import io
import shutil

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.scoring.artifacts import ModelArtifacts
from app.scoring.reference import ReferenceConfig, ReferenceScorer
from tests.helpers import REPO_MODELS, file_parts, labelled_real_files, register
from tests.imagegen import png


def test_classify_reference_and_phash_with_set_and_batch(client, devset):
    used, unused, generated = devset
    real_set = register(client, labelled_real_files(used, unused), name="candidates")
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
    embedder = ModelArtifacts(REPO_MODELS, want_cuda=False).load().embedding()
    full = ReferenceScorer(ReferenceConfig(verify_round=0), embedder=embedder).score(
        used + unused, generated
    )
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


def test_classify_names_its_evidence_in_json_and_csv(client, devset):
    """Every result lists the generated images behind its verdict with their figures; a
    used image's strongest evidence is a verified copy, and the CSV carries it, with a
    formula-like generated name neutralised."""
    # a used image's strongest evidence: a verified copy, else its most similar by embedding
    used, unused, generated = devset
    real_set = register(client, labelled_real_files(used[:6], unused[:6]), name="ev")
    gen = {f"generated_{i:04d}.png": png(g) for i, g in enumerate(generated[:20])}
    gen["=cmd.png"] = png(generated[20])
    batch = client.post(
        "/match", data={"real_set_id": str(real_set["id"])}, files=file_parts(gen)
    ).json()
    body = client.post(
        "/classify",
        data={"real_set_id": str(real_set["id"]), "batch_id": str(batch["batch_id"])},
    ).json()
    assert body["method"] == "reference"
    # pHash distances as /match stored the hashes (real: the set's images; generated: the batch)
    real_hash = {
        image["filename"]: image["phash"]
        for image in client.get(f"/real-sets/{real_set['id']}").json()["images"]
    }
    gen_hash = {m["generated"]: m["phash"] for m in batch["matches"]}
    for item in body["results"]:
        assert 1 <= len(item["evidence"]) <= 3
        for ev in item["evidence"]:
            assert ev["generated"] in gen and ev["similarity"] is not None
            stored = int(real_hash[item["filename"]], 16) ^ int(gen_hash[ev["generated"]], 16)
            assert ev["phash_distance"] == stored.bit_count()
        sims = [ev["similarity"] for ev in item["evidence"] if not ev["verified_copy"]]
        assert sims == sorted(sims, reverse=True)
    used_items = [r for r in body["results"] if r["label"] == "used"]
    assert used_items and all(
        r["evidence"][0]["verified_copy"]
        or r["evidence"][0]["similarity"]
        == pytest.approx(r["components"]["best_similarity"], abs=1e-3)
        for r in used_items
    )
    again = client.get(f"/classify/{body['classification_id']}").json()
    assert again["results"] == body["results"]
    text = client.get(f"/classify/{body['classification_id']}", params={"format": "csv"}).text
    rows = list(csv.DictReader(io.StringIO(text)))
    first = body["results"][0]["evidence"][0]
    assert rows[0]["evidence"].lstrip("'").startswith(f"{first['generated']} (similarity ")
    assert not any(r["evidence"].startswith("=") for r in rows)


def test_classify_with_uploaded_images_and_errors(client, devset):
    used, unused, generated = devset
    files = file_parts(labelled_real_files(used[:4], unused[:4]))
    files += [
        ("generated_files", (f"g{i}.png", png(g), "image/png"))
        for i, g in enumerate(generated[:10])
    ]
    r = client.post("/classify", data={"method": "reference"}, files=files)
    assert r.status_code == 200, r.text
    assert r.json()["real_count"] == 8 and r.json()["generated_count"] == 10
    r = client.post(
        "/classify",
        data={"method": "reference"},
        files=file_parts(labelled_real_files(used[:2], [])),
    )
    assert r.status_code == 422 and "generated" in r.json()["detail"]["message"]
    r = client.post(
        "/classify",
        data={"method": "reference"},
        files=[
            *file_parts(labelled_real_files(used[:2], [])),
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
    real_set = register(client, labelled_real_files(used, unused), hash_size=8)
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
    real_set = register(client, labelled_real_files(used, unused), name="for models")
    for method in ("cnn", "sift_knn"):
        r = client.post("/classify", data={"method": method, "real_set_id": str(real_set["id"])})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["models"][0]["sha256"] == listed[method]["sha256"]
        assert all(0.0 <= x["score"] <= 1.0 for x in body["results"])
    assert body["models"][0]["name"] == "memaudit-sift-knn"


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
