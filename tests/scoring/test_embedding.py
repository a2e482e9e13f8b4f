"""The copy-detection embedding: training, ONNX export, serving from verified artifacts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.scoring.artifacts import ModelArtifacts
from app.scoring.embedding import EmbeddingModel, embedding_input
from app.training.embedding import (
    EmbeddingConfig,
    build_model,
    devset_originals,
    export_onnx,
    load_training_data,
    train_embedding,
)
from app.training.synthetic import perturbed_copy, phantom
from tests.helpers import REPO_MODELS

torch = pytest.importorskip("torch")

#: A network small enough to train a few steps in a second.
TINY = EmbeddingConfig(
    side=48, dim=16, widths=(8, 16, 16, 32), spatial_channels=4, batch_slices=8, steps=3
)


def _write_slices(root: Path, count: int = 12) -> Path:
    """data/ct-shaped folders: one folder of phantom slices with a manifest, one dev set whose
    real/ folder holds two of them."""
    folder = root / "ct" / "phantoms"
    folder.mkdir(parents=True)
    lines = ["filename,patient_or_scan_id,license"]
    for i in range(count):
        cv2.imwrite(str(folder / f"p_{i:03d}.png"), phantom(i, 256))
        lines.append(f"p_{i:03d}.png,scan{i // 4},CC0 (synthetic)")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    devset = root / "devsets" / "d1"
    devset.mkdir(parents=True)
    (devset / "labels.csv").write_text(
        "real,used,original\nreal_0.png,1,phantoms/p_000.png\nreal_1.png,0,phantoms/p_005.png\n"
    )
    return root


def _edited(image: np.ndarray, seed: int) -> np.ndarray:
    """A generator-like copy: rotated, scaled, shifted, re-lit, noisy."""
    rng = np.random.default_rng(seed)
    side = image.shape[0]
    matrix = cv2.getRotationMatrix2D(
        (side / 2, side / 2), rng.uniform(-6, 6), rng.uniform(0.95, 1.05)
    )
    matrix[:, 2] += rng.uniform(-5, 5, 2)
    warped = cv2.warpAffine(image, matrix, (side, side), borderMode=cv2.BORDER_REFLECT)
    return perturbed_copy(warped, seed, strength=2.0)


def test_training_leaves_out_dev_set_reals_and_finds_near_slices(tmp_path):
    root = _write_slices(tmp_path)
    excluded = devset_originals(root / "devsets")
    assert excluded == {"phantoms/p_000.png", "phantoms/p_005.png"}
    data = load_training_data(root / "ct", excluded, neighbours=4, log=lambda _: None)
    assert len(data.names) == 10 and "phantoms/p_000.png" not in data.names
    assert data.summary["folders"]["phantoms"] == {
        "images": 10,
        "excluded_devset_reals": 2,
        "licences": ["CC0 (synthetic)"],
    }
    # Each slice's first neighbours are its scan's adjacent slices (p_000 is excluded).
    at = {name: i for i, name in enumerate(data.names)}
    assert data.neighbours[at["phantoms/p_001.png"]][0] == at["phantoms/p_002.png"]
    assert data.neighbours[at["phantoms/p_006.png"]][:2].tolist() == [
        at["phantoms/p_007.png"],
        at["phantoms/p_004.png"],
    ]
    assert all(i not in row for i, row in enumerate(data.neighbours))


def test_tiny_training_run_is_deterministic_resumable_and_served_by_onnxruntime(tmp_path):
    root = _write_slices(tmp_path)
    data = load_training_data(root / "ct", set(), log=lambda _: None)
    probe = [phantom(100 + i, 256) for i in range(5)]

    def embed(path: Path) -> np.ndarray:
        return EmbeddingModel(path, _info(), want_cuda=False).embed(probe)

    straight = train_embedding(data, tmp_path / "a.onnx", config=TINY, seed=1, log=print)
    assert straight["steps"] == 3 and straight["onnx_parity_max_abs"] < 1e-4
    again = train_embedding(data, tmp_path / "b.onnx", config=TINY, seed=1, log=print)
    checkpoint = tmp_path / "run.ckpt"
    train_embedding(
        data, tmp_path / "c.onnx", config=TINY, seed=1, max_steps=1, checkpoint=checkpoint
    )
    resumed = train_embedding(
        data, tmp_path / "c.onnx", config=TINY, seed=1, checkpoint=checkpoint, log=print
    )
    other_seed = train_embedding(data, tmp_path / "d.onnx", config=TINY, seed=2, log=print)
    assert resumed["steps"] == 3
    vectors = embed(tmp_path / "a.onnx")
    assert vectors.shape == (5, 16) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vectors, embed(tmp_path / "b.onnx"))
    np.testing.assert_allclose(vectors, embed(tmp_path / "c.onnx"), atol=1e-6)
    assert not np.allclose(vectors, embed(tmp_path / "d.onnx"), atol=1e-3)
    assert again["final_loss"] == straight["final_loss"] != other_seed["final_loss"]


def _info():
    from app.scoring.base import ModelInfo

    return ModelInfo("memaudit-copy-embedding", "test", "none")


def test_onnx_export_matches_torch_on_served_input(tmp_path):
    torch.manual_seed(0)
    model = build_model(TINY)
    model.train()
    model(torch.rand(8, 1, TINY.side, TINY.side))  # move the batch-norm statistics off init
    model.eval()
    export_onnx(model, tmp_path / "e.onnx", TINY)
    images = [_edited(phantom(i, 256), i) for i in range(6)] + [phantom(7, 300)]
    served = EmbeddingModel(tmp_path / "e.onnx", _info(), want_cuda=False).embed(images, batch=4)
    with torch.no_grad():
        expected = model(torch.from_numpy(embedding_input(images, TINY.side))).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_cli_trains_into_a_chosen_folder_and_a_fresh_app_serves_it(tmp_path, capsys):
    from app.cli import main as cli_main

    root = _write_slices(tmp_path)
    out = tmp_path / "models" / "embedding.onnx"
    code = cli_main(
        [
            "train", "embedding", "--data", str(root / "ct"), "--exclude-devsets",
            str(root / "devsets"), "--out", str(out), "--steps", "1", "--seed", "0",
            "--threads", "1",
        ]
    )  # fmt: skip
    assert code == 0 and "sha256" in capsys.readouterr().out
    entry = json.loads((out.parent / "manifest.json").read_text())["models"][0]
    assert entry["method"] == "embedding" and entry["role"] == "copy-detection embedding"
    assert entry["metrics"]["steps"] == 1 and entry["training"]["excluded_images"] == 2
    assert entry["training"]["data"]["images"] == 10
    settings = Settings(
        data_dir=tmp_path / "data",
        models_dir=out.parent,
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        use_cuda=False,
    )
    with TestClient(create_app(settings)) as client:
        rows = {m["method"]: m for m in client.get("/models").json()}
        assert rows["embedding"]["status"] == "loaded" and rows["embedding"]["available"]
        assert rows["embedding"]["role"] == "copy-detection embedding"
        assert rows["embedding"]["execution_provider"] == "CPUExecutionProvider"
        assert rows["cnn"]["role"] == "membership scoring method"
        r = client.post("/classify", data={"method": "embedding", "real_set_id": "1"})
        assert r.status_code == 422  # a model, not a /classify method
        vectors = client.app.state.models.embedding().embed([phantom(1, 256)])
    assert vectors.shape == (1, 128)


@pytest.fixture(scope="module")
def shipped() -> EmbeddingModel:
    return ModelArtifacts(REPO_MODELS, want_cuda=False).load().embedding()


def test_shipped_embedding_places_an_edited_copy_nearest_its_original(shipped):
    assert (REPO_MODELS / "embedding.onnx").stat().st_size < 5 * 2**20
    assert shipped.dim == 128 and shipped.execution_provider == "CPUExecutionProvider"
    originals = [phantom(300 + i, 256) for i in range(30)]
    copies = [_edited(img, 900 + i) for i, img in enumerate(originals)]
    similarity = shipped.embed(copies) @ shipped.embed(originals).T
    assert (similarity.argmax(axis=1) == np.arange(30)).all()
    others = similarity[~np.eye(30, dtype=bool)].reshape(30, 29)
    assert (np.diag(similarity) > others.max(axis=1)).all()


def test_tampered_embedding_is_refused_and_reported(tmp_path):
    models = tmp_path / "models"
    shutil.copytree(REPO_MODELS, models)
    blob = bytearray((models / "embedding.onnx").read_bytes())
    blob[len(blob) // 2] ^= 0x01
    (models / "embedding.onnx").write_bytes(bytes(blob))
    artifacts = ModelArtifacts(models, want_cuda=False).load()
    with pytest.raises(LookupError, match="refused"):
        artifacts.embedding()
    settings = Settings(
        data_dir=tmp_path / "data",
        models_dir=models,
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
    )
    with TestClient(create_app(settings)) as client:
        listed = {m["method"]: m for m in client.get("/models").json()}
    assert listed["embedding"]["status"] == "refused" and not listed["embedding"]["available"]
    assert "sha256 of embedding.onnx" in listed["embedding"]["detail"]
    assert listed["cnn"]["status"] == "loaded"
