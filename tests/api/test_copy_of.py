"""`copy_of` in /match: the copy-detection embedding, computed at upload, names the real image a
generated image copies, calibrated on the set; without an embedding it says why not."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.cli import main as cli_main
from app.config import Settings
from app.main import create_app
from app.training.synthetic import perturbed_copy
from tests.helpers import REPO_MODELS, file_parts, register
from tests.imagegen import phantom, png

REALS = 30


def _reals() -> dict[str, bytes]:
    return {f"real_{i:03d}.png": png(phantom(i, 128)) for i in range(REALS)}


def _generated() -> dict[str, bytes]:
    """Ten shifted, re-lit, noisy copies of real_000..real_009 and ten novel images."""
    out = {f"copy_{i}.png": png(perturbed_copy(phantom(i, 128), seed=i)) for i in range(10)}
    out.update({f"novel_{i}.png": png(phantom(9000 + i, 128)) for i in range(10)})
    return out


def _match(client, set_id: int, verify: str = "auto") -> dict:
    r = client.post(
        "/match",
        data={"real_set_id": str(set_id), "verify": verify},
        files=file_parts(_generated()),
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_copy_of_names_the_source_by_embedding(client):
    real_set = register(client, _reals())
    batch = _match(client, real_set["id"], verify="never")
    assert batch["copy_threshold"] is not None and "calibrated" in batch["copy_rule"]
    by_name = {m["generated"]: m for m in batch["matches"]}
    for i in range(10):
        copy = by_name[f"copy_{i}.png"]["copy_of"]
        assert copy is not None and copy["real"] == f"real_{i:03d}.png", copy
        assert copy["similarity"] >= batch["copy_threshold"] and copy["decided_by"] == "embedding"
        assert 0 <= copy["phash_distance"] <= 256
    novel_copies = [n for n, m in by_name.items() if n.startswith("novel") and m["copy_of"]]
    assert len(novel_copies) <= 1, novel_copies
    assert batch["copied_count"] == sum(1 for m in batch["matches"] if m["copy_of"])
    # Stored as answered; exports carry it.
    stored = client.get(f"/match/{batch['batch_id']}").json()
    assert stored["matches"] == batch["matches"]
    assert (stored["copy_threshold"], stored["copy_rule"]) == (
        batch["copy_threshold"],
        batch["copy_rule"],
    )
    csv_text = client.get(f"/match/{batch['batch_id']}", params={"format": "csv"}).text
    assert "copy_0.png,,," not in csv_text and ",real_000.png," in csv_text
    text = client.get(f"/match/{batch['batch_id']}", params={"format": "text"}).text
    assert "The copy-detection embedding finds copy_0.png a copy of real_000.png" in text


def test_without_an_embedding_copy_of_is_not_decided_and_says_why(tmp_path, database_url):
    models = tmp_path / "models"
    shutil.copytree(REPO_MODELS, models)
    (models / "embedding.onnx").unlink()
    settings = Settings(
        data_dir=tmp_path / "data", database_url=database_url, models_dir=models, hash_workers=0
    )
    with TestClient(create_app(settings)) as client:
        listed = {m["method"]: m for m in client.get("/models").json()}
        assert listed["embedding"]["status"] == "missing"
        real_set = register(client, _reals())
        batch = _match(client, real_set["id"])
        assert (
            batch["copy_threshold"] is None and "no copy-detection embedding" in batch["copy_rule"]
        )
        assert all(m["copy_of"] is None for m in batch["matches"])


def test_a_set_without_descriptors_says_so(tmp_path, database_url):
    """Images registered while no embedding was loaded get none; a later /match says why."""
    models = tmp_path / "models"
    shutil.copytree(REPO_MODELS, models)
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, hash_workers=0)
    without = settings.model_copy(update={"models_dir": Path(tmp_path / "none")})
    with TestClient(create_app(without)) as client:
        set_id = register(client, _reals())["id"]
    with TestClient(create_app(settings.model_copy(update={"models_dir": models}))) as client:
        batch = _match(client, set_id)
        assert (
            batch["copy_threshold"] is None
            and "no copy-detection descriptors" in batch["copy_rule"]
        )


def _inlier_bar(batch: dict) -> int:
    """The set's inlier bar as the batch's copy_rule states it."""
    found = re.search(r"when more than (\d+) of their SIFT keypoints match", batch["copy_rule"])
    assert found, batch["copy_rule"]
    return int(found.group(1))


def test_copies_are_verified_geometrically_by_default(client):
    """A small batch is verified: copies have more inliers with their source than any real
    image has with its nearest other real image; novel images stay (almost all) without."""
    real_set = register(client, _reals())
    batch = _match(client, real_set["id"])
    bar = _inlier_bar(batch)
    assert f"any of {REALS} real images of this set" in batch["copy_rule"]
    assert batch["copy_threshold"] is not None  # the embedding bar, still reported
    by_name = {m["generated"]: m for m in batch["matches"]}
    for i in range(10):
        copy = by_name[f"copy_{i}.png"]["copy_of"]
        assert copy is not None and copy["real"] == f"real_{i:03d}.png", copy
        assert copy["decided_by"] == "verified" and copy["verified_inliers"] > bar, copy
    novel_copies = [n for n, m in by_name.items() if n.startswith("novel") and m["copy_of"]]
    assert len(novel_copies) <= 1, novel_copies
    # pHash's answer does not depend on verification.
    unverified = _match(client, real_set["id"], verify="never")
    assert [(m["source"], m["distance"], m["phash"]) for m in batch["matches"]] == [
        (m["source"], m["distance"], m["phash"]) for m in unverified["matches"]
    ]
    assert all(
        m["copy_of"] is None or m["copy_of"]["decided_by"] == "embedding"
        for m in unverified["matches"]
    )
    assert unverified["copy_rule"].endswith("not verified geometrically (verify=never)")
    # Stored as answered; the same bar next time (kept with the set); exports carry it.
    stored = client.get(f"/match/{batch['batch_id']}").json()
    assert stored["matches"] == batch["matches"] and stored["copy_rule"] == batch["copy_rule"]
    assert _inlier_bar(_match(client, real_set["id"], verify="always")) == bar
    rows = list(
        csv.DictReader(
            io.StringIO(client.get(f"/match/{batch['batch_id']}", params={"format": "csv"}).text)
        )
    )
    copy_0 = next(r for r in rows if r["generated"] == "copy_0.png")
    assert (
        int(copy_0["copy_verified_inliers"]) == by_name["copy_0.png"]["copy_of"]["verified_inliers"]
    )
    text = client.get(f"/match/{batch['batch_id']}", params={"format": "text"}).text
    assert "finds copy_0.png a copy of real_000.png with similarity" in text
    assert "verified by" in text


def test_the_inlier_bar_is_learned_from_the_set(client):
    """Two near-identical real images (a scan's neighbouring slices, say) raise the bar to
    at least their own inliers: the rule adapts to the set without labels."""
    reals = _reals()
    plain = _inlier_bar(_match(client, register(client, reals, name="plain")["id"]))
    twin = png(perturbed_copy(phantom(0, 128), seed=99))
    with_twin = register(client, {**reals, "real_twin.png": twin}, name="twin")
    batch = _match(client, with_twin["id"])
    raised = _inlier_bar(batch)
    assert raised > plain
    # The twin and real_000 verify each other above the plain set's bar, so the copy of
    # real_000 needs more than that to count.
    copy_0 = next(m for m in batch["matches"] if m["generated"] == "copy_0.png")["copy_of"]
    assert copy_0 is None or copy_0["verified_inliers"] > raised


def test_auto_verifies_only_batches_within_the_budget(tmp_path, database_url):
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        hash_workers=0,
        match_verify_max_images=5,
    )
    with TestClient(create_app(settings)) as client:
        set_id = register(client, _reals())["id"]
        auto = _match(client, set_id)
        assert "more than the 5 verify=auto checks per request" in auto["copy_rule"]
        assert all(
            m["copy_of"] is None or m["copy_of"]["verified_inliers"] is None
            for m in auto["matches"]
        )
        always = _match(client, set_id, verify="always")
        assert always["copy_rule"].startswith("verified geometrically")
        refused = client.post(
            "/match",
            data={"real_set_id": str(set_id), "verify": "sometimes"},
            files=file_parts(_generated()),
        )
        assert refused.status_code == 422


def _models_with_another_embedding(tmp_path: Path) -> Path:
    """The shipped models, with an embedding file that computes the same function but is
    another file (another sha256, as a retrained model of the same size would be): a
    doc_string field appended to the ONNX protobuf, and the manifest updated to match."""
    models = tmp_path / "other-models"
    shutil.copytree(REPO_MODELS, models)
    onnx_path = models / "embedding.onnx"
    note = b"another embedding"
    onnx_path.write_bytes(onnx_path.read_bytes() + bytes([0x32, len(note)]) + note)
    manifest = json.loads((models / "manifest.json").read_text())
    for entry in manifest["models"]:
        if entry["file"] == "embedding.onnx":
            entry["sha256"] = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    (models / "manifest.json").write_text(json.dumps(manifest))
    return models


@pytest.mark.parametrize("index_min_images", [0, 10], ids=["in memory", "indexed"])
def test_descriptors_of_two_embeddings_are_never_compared(tmp_path, database_url, index_min_images):
    """A set registered under one embedding and matched after it was replaced by another
    of the same size: copy_of is not decided and says why (comparing them would give
    plausible, meaningless similarities); /classify computes the set's descriptors again;
    images added under the new embedding make the set mixed; registered again, it works.
    Sets held in memory and sets searched through an embedding index alike."""
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, hash_workers=0)
    if index_min_images:
        settings = settings.model_copy(update={"index_min_images": index_min_images})
    with TestClient(create_app(settings)) as client:
        set_id = register(client, _reals())["id"]
    other = settings.model_copy(update={"models_dir": _models_with_another_embedding(tmp_path)})
    with TestClient(create_app(other)) as client:
        listed = {m["method"]: m for m in client.get("/models").json()}
        assert listed["embedding"]["status"] == "loaded", listed["embedding"]
        batch = _match(client, set_id)
        assert batch["copy_threshold"] is None, batch["copy_rule"]
        assert "another copy-detection embedding" in batch["copy_rule"]
        assert all(m["copy_of"] is None for m in batch["matches"])
        # The pHash source (the paper's rule) is answered as always.
        assert any(m["source"] for m in batch["matches"])
        # A release gate does not release what it could not check: 409, nothing stored.
        batches_before = client.get("/match").json()["total"]
        gate = client.post(
            "/filter", data={"real_set_id": str(set_id)}, files=file_parts(_generated())
        )
        assert gate.status_code == 409, gate.text
        assert "memaudit reembed" in gate.json()["detail"]
        assert client.get("/match").json()["total"] == batches_before

        body = client.post(
            "/classify",
            data={"real_set_id": str(set_id), "batch_id": str(batch["batch_id"])},
        ).json()
        by_name = {r["filename"]: r for r in body["results"]}
        evidence = by_name["real_000.png"]["evidence"][0]
        assert evidence["generated"] == "copy_0.png" and evidence["similarity"] > 0.5, evidence

        added = client.post(
            f"/real-sets/{set_id}/images", files=file_parts({"extra.png": png(phantom(777, 128))})
        )
        assert added.status_code == 201, added.text
        assert "more than one copy-detection embedding" in _match(client, set_id)["copy_rule"]

        again = register(client, _reals(), name="again")["id"]
        decided = _match(client, again)
        assert decided["copy_threshold"] is not None
        copied = {m["copy_of"]["real"] for m in decided["matches"] if m["copy_of"]}
        assert copied >= {f"real_{i:03d}.png" for i in range(10)}

        # Or the stored images are given the new embedding's descriptors where they are.
        cli = ["reembed", "--db", database_url, "--data-dir", str(settings.data_dir)]
        cli += ["--models-dir", str(other.models_dir)]
        assert cli_main([*cli, "--dry-run"]) == 0
        mixed = _match(client, set_id)["copy_rule"]  # the dry run changed nothing
        assert "more than one copy-detection embedding" in mixed
        assert cli_main(cli) == 0
        reembedded = _match(client, set_id)
        assert reembedded["copy_threshold"] is not None, reembedded["copy_rule"]
        found = {m["copy_of"]["real"] for m in reembedded["matches"] if m["copy_of"]}
        assert found >= {f"real_{i:03d}.png" for i in range(10)}
        gate = client.post(
            "/filter", data={"real_set_id": str(set_id)}, files=file_parts(_generated())
        )
        assert gate.status_code == 200 and gate.json()["withheld_count"] >= 10, gate.text
