"""`memaudit rebuild-models`: the same bytes whatever the caller's thread settings, and the
shipped artifacts are replaced only when asked to."""

from __future__ import annotations

import hashlib
from importlib import metadata

import cv2
import pytest
import torch

from app.cli import main as cli_main
from app.cli.training import SHIPPED_MODELS
from app.training.artifacts import rebuild_default_artifacts

TINY = {"n_used": 12, "n_unused": 12, "n_generated": 30}


def test_rebuild_is_byte_identical_and_restores_thread_settings(tmp_path):
    """Two tiny rebuilds, one with torch and OpenCV set to 2 threads beforehand and one
    with 1, give byte-identical artifacts and leave the caller's settings as they were.
    (At this size the thread count does not change the bytes anyway; at full size
    scikit-learn's k-means on 2 threads gave another sift_knn.joblib than on 1.)"""
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    try:
        digests = []
        for preset in (2, 1):
            torch.set_num_threads(preset)
            cv2.setNumThreads(preset)
            entries = rebuild_default_artifacts(
                tmp_path / f"t{preset}", seed=3, epochs=2, devset_sizes=TINY
            )
            digests.append({e["method"]: e["sha256"] for e in entries})
            assert torch.get_num_threads() == preset  # the caller's setting is restored
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)
    assert digests[0] == digests[1]
    assert set(digests[0]) == {"cnn", "sift_knn"}
    entry = entries[0]
    assert entry["built_with"]["torch"] == metadata.version("torch")
    data = (tmp_path / "t1" / entry["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]


def test_rebuild_refuses_the_shipped_folder_without_replace(capsys):
    before = {p.name: p.read_bytes() for p in SHIPPED_MODELS.iterdir() if p.is_file()}
    with pytest.raises(SystemExit, match="--replace"):
        cli_main(["rebuild-models", "--out", str(SHIPPED_MODELS)])
    after = {p.name: p.read_bytes() for p in SHIPPED_MODELS.iterdir() if p.is_file()}
    assert after == before
