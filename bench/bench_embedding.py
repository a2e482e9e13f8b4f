"""The copy-detection embedding on the dev sets, beside pHash-16 from the same run (issue 14).

    .venv/bin/python bench/bench_embedding.py [--root ../shared/data/devsets]
        [--onnx build/embedding.onnx] [--out bench/results/embedding.json]

(a) attribution (lung-window, iq-othnccd, `sources.csv`): is the nearest real image of each
    generated image with a source its true source (embedding cosine vs pHash-16 Hamming);
    nearest similarities of copies, of novel images and of real-vs-real nearest neighbours;
    and at label-free thresholds taken from the real-vs-real statistics, how many copies get
    the right source, a wrong one, and how many novel images get one.
(b) membership: ROC AUC of each real image's best generated similarity vs `memorized`
    (unused as negatives, as bench/eval_devsets.py) or vs `used` (iq-ddpm), raw and with a
    hubness correction.
(c) speed: ms per 256x256 image on one core, onnxruntime in batches of 64 beside pHash-16
    batch hashing (app.imaging.phash.phash_batch), medians of repeated runs.
Without --onnx the shipped, sha256-verified models/embedding.onnx is used.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.evaluation import roc_auc  # noqa: E402
from app.imaging.decode import decode_grayscale  # noqa: E402
from app.imaging.phash import phash_batch  # noqa: E402
from app.scoring.artifacts import ModelArtifacts, file_sha256  # noqa: E402
from app.scoring.base import ModelInfo  # noqa: E402
from app.scoring.embedding import EmbeddingModel  # noqa: E402

#: Neighbours averaged by the hubness correction (CSLS).
CSLS_K = 10


def read_devset(folder: Path) -> dict:
    """Real and generated images (sorted by name), labels and sources."""

    def decode(path: Path) -> np.ndarray:
        return decode_grayscale(path.read_bytes(), 10**8)

    with (folder / "labels.csv").open(newline="") as fh:
        labels = list(csv.DictReader(fh))
    real_names = [row["real"] for row in labels]
    generated_paths = sorted((folder / "generated").glob("*.png"))
    sources: dict[str, str] = {}
    if (folder / "sources.csv").exists():
        with (folder / "sources.csv").open(newline="") as fh:
            sources = {row["generated"]: row["source"] for row in csv.DictReader(fh)}
    return {
        "real_names": real_names,
        "real": [decode(folder / "real" / name) for name in real_names],
        "generated": [decode(p) for p in generated_paths],
        "source": [sources.get(p.name, "") for p in generated_paths],
        "used": np.array([int(row["used"]) for row in labels]),
        "memorized": np.array(
            [int(row["memorized"]) if row.get("memorized") else -1 for row in labels]
        ),
    }


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Hamming distances of boolean bit rows."""
    a8, b8 = a.astype(np.float32), b.astype(np.float32)
    return a8 @ (1 - b8).T + (1 - a8) @ b8.T


def quantiles(values: np.ndarray) -> dict:
    if len(values) == 0:
        return {}
    q = np.percentile(values, [0, 5, 50, 95, 100])
    return dict(zip(("min", "p5", "median", "p95", "max"), np.round(q, 4).tolist(), strict=True))


def at_threshold(nearest, best, truth, is_copy, accept) -> dict:
    """Copies given the right / a wrong source and novel images given one, where ``accept``."""
    return {
        "copies_right": int((accept & is_copy & (nearest == truth)).sum()),
        "copies_wrong": int((accept & is_copy & (nearest != truth)).sum()),
        "novel_given_one": int((accept & ~is_copy).sum()),
        "copies": int(is_copy.sum()),
        "novel": int((~is_copy).sum()),
    }


def attribution(data: dict, real_vectors, generated_vectors, real_bits, generated_bits) -> dict:
    index = {name: i for i, name in enumerate(data["real_names"])}
    truth = np.array([index.get(s, -1) for s in data["source"]])
    is_copy = truth >= 0
    similarity = generated_vectors @ real_vectors.T
    nearest, best = similarity.argmax(axis=1), similarity.max(axis=1)
    real_real = real_vectors @ real_vectors.T
    np.fill_diagonal(real_real, -np.inf)
    null = real_real.max(axis=1)
    distance = hamming(generated_bits, real_bits)
    phash_nearest, phash_best = distance.argmin(axis=1), distance.min(axis=1)
    real_distance = hamming(real_bits, real_bits)
    np.fill_diagonal(real_distance, np.inf)
    phash_null = real_distance.min(axis=1)
    out = {
        "copies": int(is_copy.sum()),
        "novel": int((~is_copy).sum()),
        "top1_embedding": round(float((nearest[is_copy] == truth[is_copy]).mean()), 4),
        "top1_phash16": round(float((phash_nearest[is_copy] == truth[is_copy]).mean()), 4),
        "nearest_similarity": {
            "copies": quantiles(best[is_copy]),
            "novel": quantiles(best[~is_copy]),
            "real_vs_real": quantiles(null),
        },
        "embedding_thresholds": {},
        "phash16_thresholds": {},
    }
    for label, value in (
        ("real-vs-real p95", np.percentile(null, 95)),
        ("real-vs-real p99", np.percentile(null, 99)),
        ("real-vs-real max", null.max()),
    ):
        row = at_threshold(nearest, best, truth, is_copy, best > value)
        out["embedding_thresholds"][label] = {"threshold": round(float(value), 4), **row}
    for label, value in (
        ("real-vs-real p5", np.percentile(phash_null, 5)),
        ("real-vs-real p1", np.percentile(phash_null, 1)),
        ("real-vs-real min", phash_null.min()),
    ):
        row = at_threshold(phash_nearest, phash_best, truth, is_copy, phash_best < value)
        out["phash16_thresholds"][label] = {"threshold": float(value), **row}
    return out


def membership(data: dict, real_vectors, generated_vectors, real_bits, generated_bits) -> dict:
    has_memorized = (data["memorized"] >= 0).all()
    positive = data["memorized"] == 1 if has_memorized else data["used"] == 1
    keep = positive | (data["used"] == 0)
    similarity = generated_vectors @ real_vectors.T  # (generated, real)
    k = min(CSLS_K, len(data["generated"]), len(data["real"]))
    real_hub = -np.sort(-similarity, axis=0)[:k].mean(axis=0)  # per real: its k nearest gen.
    generated_hub = -np.sort(-similarity, axis=1)[:, :k].mean(axis=1)
    csls = 2 * similarity - real_hub[None, :] - generated_hub[:, None]
    votes = np.bincount(similarity.argmax(axis=1), minlength=len(data["real"]))
    distance = hamming(generated_bits, real_bits)
    scores = {
        "embedding best similarity": similarity.max(axis=0),
        f"embedding best - mean of its {k} nearest generated": similarity.max(axis=0) - real_hub,
        f"embedding best CSLS (k={k})": csls.max(axis=0),
        "embedding nearest-neighbour votes": votes.astype(float),
        "phash16 best (-Hamming)": -distance.min(axis=0),
    }
    return {
        "against": "memorized" if has_memorized else "used",
        "positives": int((positive & keep).sum()),
        "negatives": int((~positive & keep).sum()),
        "auc": {
            name: round(float(roc_auc(positive[keep], score[keep])), 4)
            for name, score in scores.items()
        },
    }


def speed(model: EmbeddingModel, images: list[np.ndarray], repeats: int = 5) -> dict:
    """Median ms per image on one core: embedding (batches of 64) and pHash-16 batch hashing."""
    images = [
        img
        if img.shape == (256, 256)
        else cv2.resize(img, (256, 256), interpolation=cv2.INTER_AREA)
        for img in images
    ]
    cv2.setNumThreads(1)
    timings: dict[str, list[float]] = {"embedding": [], "phash16": []}
    with threadpool_limits(1):
        model.embed(images[:64])
        phash_batch(images[:64], 16)
        for _ in range(repeats):
            for name, run in (
                ("embedding", lambda: model.embed(images, batch=64)),
                (
                    "phash16",
                    lambda: [
                        phash_batch(images[i : i + 64], 16) for i in range(0, len(images), 64)
                    ],
                ),
            ):
                start = time.perf_counter()
                run()
                timings[name].append((time.perf_counter() - start) * 1000 / len(images))
    return {
        "images": len(images),
        "ms_per_image_embedding": round(float(np.median(timings["embedding"])), 4),
        "ms_per_image_phash16": round(float(np.median(timings["phash16"])), 4),
        "all_runs_ms": {k: [round(v, 4) for v in vs] for k, vs in timings.items()},
        "provider": model.execution_provider,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=str(ROOT.parent / "shared/data/devsets"))
    parser.add_argument("--onnx", help="an embedding file to bench instead of the shipped one")
    parser.add_argument("--out", help="write the figures as JSON here")
    parser.add_argument("--speed-images", type=int, default=512)
    args = parser.parse_args()
    if args.onnx:
        path, info = Path(args.onnx), ModelInfo("candidate", "-", file_sha256(Path(args.onnx)))
    else:  # verified against the manifest first
        path = ROOT / "models" / "embedding.onnx"
        info = ModelArtifacts(ROOT / "models", want_cuda=False).load().embedding().info
    model = EmbeddingModel(path, info, want_cuda=False, threads=1)  # one core
    root = Path(args.root)
    report: dict = {"model": model.info.sha256, "attribution": {}, "membership": {}}
    speed_pool: list[np.ndarray] = []
    for name in ("lung-window", "iq-othnccd", "iq-ddpm"):
        data = read_devset(root / name)
        real_vectors, generated_vectors = model.embed(data["real"]), model.embed(data["generated"])
        real_bits, generated_bits = (
            phash_batch(data["real"], 16),
            phash_batch(data["generated"], 16),
        )
        figures = (data, real_vectors, generated_vectors, real_bits, generated_bits)
        if any(data["source"]):
            report["attribution"][name] = attribution(*figures)
        report["membership"][name] = membership(*figures)
        speed_pool += data["generated"]
    report["speed"] = speed(model, speed_pool[: args.speed_images])
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
