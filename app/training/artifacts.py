"""Train the model artifacts that model-backed methods load, and record them in the manifest."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path

import numpy as np

from app.scoring.artifacts import record_artifact

#: The default artifacts `memaudit rebuild-models` writes (the manifest names them too).
CNN_FILE = "cnn.onnx"
SIFT_KNN_FILE = "sift_knn.joblib"
EMBEDDING_FILE = "embedding.onnx"


#: Packages whose versions decide the bytes of a rebuilt artifact (recorded in its entry).
BUILD_PACKAGES = ("torch", "onnx", "numpy", "scipy", "opencv-python-headless", "scikit-learn")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_environment() -> dict[str, str | None]:
    """Versions of the packages that decide a rebuilt artifact's bytes (None: not installed)."""
    versions: dict[str, str | None] = {}
    for package in BUILD_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """One thread for torch, OpenCV and the BLAS/OpenMP pools, and torch's deterministic
    kernels: float sums then run in one order, so a rebuild does not depend on the core count."""
    import cv2
    import torch
    from threadpoolctl import threadpool_limits

    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    cv2.setNumThreads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        cv2.setNumThreads(cv_threads)


def train_cnn_artifact(
    used: Sequence[np.ndarray],
    unused: Sequence[np.ndarray],
    models_dir: Path,
    file: str,
    trained_on: str,
    epochs: int = 10,
) -> dict:
    """Train the paper's CNN, export it to ONNX and record it; returns the manifest entry."""
    from app.scoring.cnn import cnn_input
    from app.training.cnn import train_cnn

    metrics = train_cnn(
        cnn_input(used)[:, 0], cnn_input(unused)[:, 0], models_dir / file, epochs=epochs, log=_log
    )
    return record_artifact(
        models_dir,
        method="cnn",
        name="memaudit-cnn",
        version="1",
        file=file,
        trained_on=trained_on,
        metrics=metrics,
        extra={"built_with": build_environment()},
    )


def train_sift_knn_artifact(
    used: Sequence[np.ndarray],
    unused: Sequence[np.ndarray],
    generated: Sequence[np.ndarray],
    models_dir: Path,
    file: str,
    trained_on: str,
) -> dict:
    """Fit the SIFT vocabulary and KNN, write them as joblib and record them."""
    from app.scoring.sift_knn import train_sift_knn

    _log("sift-knn: extracting SIFT descriptors, fitting the vocabulary and the KNN")
    metrics = train_sift_knn(used, unused, generated, models_dir / file)
    return record_artifact(
        models_dir,
        method="sift_knn",
        name="memaudit-sift-knn",
        version="1",
        file=file,
        trained_on=trained_on,
        metrics=metrics,
        extra={"built_with": build_environment()},
    )


def rebuild_default_artifacts(
    models_dir: Path, seed: int = 0, epochs: int = 10, devset_sizes: dict[str, int] | None = None
) -> list[dict]:
    """Every default artifact from synthetic phantoms + a simulated generator, single-threaded
    so the bytes depend only on the seed and the BUILD_PACKAGES versions (recorded in each
    entry's ``built_with``); returns the manifest entries written. ``devset_sizes``: counts
    for app.training.synthetic.synthetic_devset (tests rebuild tiny ones)."""
    from app.training.synthetic import synthetic_devset

    with single_threaded():
        used, unused, generated = synthetic_devset(seed=seed, **(devset_sizes or {}))
        trained_on = (
            f"synthetic phantoms (app/training/synthetic.py, seed {seed}): "
            f"{len(used)} used, {len(unused)} unused, {len(generated)} simulated generated"
        )
        cnn = train_cnn_artifact(used, unused, models_dir, CNN_FILE, trained_on, epochs)
        sift_knn = train_sift_knn_artifact(
            used, unused, generated, models_dir, SIFT_KNN_FILE, trained_on
        )
    return [cnn, sift_knn]


def train_embedding_artifact(
    data_root: Path,
    devsets_root: Path | None,
    out: Path,
    *,
    seed: int = 0,
    threads: int = 1,
    minutes: float | None = None,
    steps: int | None = None,
    checkpoint: Path | None = None,
) -> dict:
    """Train the copy-detection embedding on ``data_root``'s folders minus every dev-set real
    image, export it to ``out`` and record it in ``out``'s folder's manifest."""
    from app.training.embedding import (
        AUGMENTATIONS,
        EmbeddingConfig,
        devset_originals,
        load_training_data,
        train_embedding,
    )

    excluded = devset_originals(devsets_root) if devsets_root else set()
    config = EmbeddingConfig() if steps is None else EmbeddingConfig(steps=steps)
    data = load_training_data(data_root, excluded, config.neighbours, log=_log)
    metrics = train_embedding(
        data,
        out,
        config=config,
        seed=seed,
        threads=threads,
        minutes=minutes,
        checkpoint=checkpoint,
        log=_log,
    )
    used = [name for name, folder in data.summary["folders"].items() if folder["images"]]
    trained_on = (
        f"{data.summary['images']} real CT slices under {data_root} "
        f"({', '.join(used)}), minus the {len(excluded)} slices in the real/ "
        f"folders of {devsets_root or 'no dev sets'}; self-supervised (no labels)"
    )
    training = {
        "data": data.summary,
        "excluded_devsets": str(devsets_root) if devsets_root else None,
        "excluded_images": len(excluded),
        "augmentations": list(AUGMENTATIONS),
        "objective": "InfoNCE between two edited views of a slice (other slices of the batch "
        "negatives, half of them near slices of the same scan or nearest by pixels) "
        "+ KoLeo entropy",
    }
    return record_artifact(
        out.parent,
        method="embedding",
        name="memaudit-copy-embedding",
        version="1",
        file=out.name,
        trained_on=trained_on,
        metrics=metrics,
        extra={
            "role": "copy-detection embedding",
            "training": training,
            "built_with": build_environment(),
        },
    )
