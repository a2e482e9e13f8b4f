"""The shipped ONNX models on CUDA beside CPU, in one run on one machine (issue 14, item 5).

    python bench/bench_cuda.py [--images 8192] [--out results.json]

Loads models/ the way the service does (ModelArtifacts: sha256-verified, CUDA when asked
for and usable) and reports, per artifact, the providers the session really got; then
images/s of the copy-detection embedding and of the paper's CNN:
  - model only: session.run on prepared input tensors, batches of 64 / 256 / 1024;
  - end to end: EmbeddingModel.embed on 256x256 uint8 images (resizing on the CPU included);
  - upload path: decode_and_hash.hash_blobs on PNG bytes (decode, pHash-16, thumbnail,
    embedding) in one process, as one hash worker runs it, with the embedding on CUDA vs on
    one CPU thread (what a worker uses);
and the agreement of CUDA and CPU descriptors (max |difference|, min cosine). Medians of
repeated runs. Images are synthetic CT-like slices (no data leaves the machine it runs on).
Needs only numpy, opencv, pillow, scipy and onnxruntime(-gpu): it runs on a bare GPU host.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import onnxruntime as ort  # noqa: E402

from app.scoring.artifacts import ModelArtifacts  # noqa: E402
from app.scoring.base import ModelInfo  # noqa: E402
from app.scoring.cnn import CnnScorer, cnn_input  # noqa: E402
from app.scoring.embedding import EmbeddingModel, embedding_input  # noqa: E402
from app.services import decode_and_hash  # noqa: E402
from app.services.decode_and_hash import EmbeddingSpec, hash_blobs  # noqa: E402

REPEATS = 5


def synthetic_slices(count: int, side: int = 256, seed: int = 0) -> list[np.ndarray]:
    """CT-like uint8 slices: a bright ellipse body with smooth blobs and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    out = []
    for _ in range(count):
        cx, cy, rx, ry = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6), *rng.uniform(0.3, 0.45, 2)
        body = (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1).astype(np.float32) * 120
        for _ in range(6):
            bx, by, s = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.02, 0.1)
            body += rng.uniform(-80, 100) * np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / s**2)
        body += rng.normal(0, 6, body.shape)
        out.append(np.clip(body, 0, 255).astype(np.uint8))
    return out


def rate(run: Callable[[], object], items: int) -> float:
    """Median items/s over REPEATS runs after one warm-up."""
    run()
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return items / statistics.median(times)


def session_rates(session: ort.InferenceSession, x: np.ndarray) -> dict[str, float]:
    """Model-only images/s at several batch sizes on an already prepared input."""
    rates = {}
    for batch in (64, 256, 1024):

        def run(batch: int = batch) -> None:
            for lo in range(0, len(x), batch):
                session.run(None, {"image": x[lo : lo + batch]})

        rates[f"batch_{batch}"] = round(rate(run, len(x)), 1)
    return rates


def gpu_name() -> str | None:
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--upload-images", type=int, default=1024)
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    report: dict = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "gpu": gpu_name(),
            "onnxruntime": ort.__version__,
            "available_providers": ort.get_available_providers(),
        }
    }
    print(json.dumps(report["machine"], indent=1), flush=True)

    # The service's own loading path: which provider each verified artifact really runs on.
    loaded = {}
    for want_cuda in (True, False):
        artifacts = ModelArtifacts(args.models, want_cuda=want_cuda).load()
        for method, item in artifacts.loaded.items():
            scorer = item.scorer
            loaded[f"{method}/{'cuda' if want_cuda else 'cpu'}"] = {
                "status": item.status,
                "provider": getattr(scorer, "execution_provider", None),
                "session_providers": (
                    scorer.session.get_providers() if hasattr(scorer, "session") else None
                ),
                "note": item.detail,
            }
    report["artifacts"] = loaded
    print(json.dumps(loaded, indent=1), flush=True)

    manifest = json.loads((args.models / "manifest.json").read_text())["models"]
    files = {entry["method"]: args.models / entry["file"] for entry in manifest}
    shas = {entry["method"]: entry["sha256"] for entry in manifest}
    info = ModelInfo("bench", "bench", "")
    images = synthetic_slices(args.images)

    # Embedding: CUDA, CPU on every core, CPU on one thread (a hash worker's setting).
    embedders = {
        "cuda": EmbeddingModel(files["embedding"], info, want_cuda=True),
        "cpu_all_threads": EmbeddingModel(files["embedding"], info, want_cuda=False),
        "cpu_1_thread": EmbeddingModel(files["embedding"], info, want_cuda=False, threads=1),
    }
    x = embedding_input(images, embedders["cuda"].side)
    emb: dict = {"input": list(x.shape[1:])}
    for name, model in embedders.items():
        sub = images if name != "cpu_1_thread" else images[:1024]
        xs = x if name != "cpu_1_thread" else x[:1024]
        emb[name] = {
            "provider": model.execution_provider,
            "model_only_images_per_s": session_rates(model.session, xs),
            "end_to_end_images_per_s": round(rate(lambda m=model, s=sub: m.embed(s), len(sub)), 1),
        }
        print(name, json.dumps(emb[name]), flush=True)
    prep = rate(lambda: embedding_input(images, embedders["cuda"].side), len(images))
    emb["cpu_preprocessing_images_per_s_one_thread"] = round(prep, 1)
    a = embedders["cuda"].embed(images[:2048])
    b = embedders["cpu_all_threads"].embed(images[:2048])
    emb["cuda_vs_cpu"] = {
        "max_abs_difference": float(np.abs(a - b).max()),
        "min_cosine": float((a * b).sum(axis=1).min()),
        "same_nearest_neighbour_share": float(
            np.mean(
                np.argsort(-(a[:256] @ a.T), axis=1)[:, 1]
                == np.argsort(-(b[:256] @ b.T), axis=1)[:, 1]
            )
        ),
    }
    report["embedding"] = emb
    print("embedding agreement", json.dumps(emb["cuda_vs_cpu"]), flush=True)

    # The paper's CNN (64 px input), same comparison.
    cnn: dict = {}
    xc = cnn_input(images)
    for name, want in (("cuda", True), ("cpu_all_threads", False)):
        scorer = CnnScorer(files["cnn"], info, want_cuda=want)
        cnn[name] = {
            "provider": scorer.execution_provider,
            "model_only_images_per_s": session_rates(scorer.session, xc),
        }
        print("cnn", name, json.dumps(cnn[name]), flush=True)
    report["cnn"] = cnn

    # One hash worker's loop: decode + pHash-16 + thumbnail + embedding on PNG bytes.
    blobs = [cv2.imencode(".png", im)[1].tobytes() for im in images[: args.upload_images]]
    upload: dict = {}
    for name, want in (("embedding_on_cuda", True), ("embedding_on_cpu_1_thread", False)):
        spec = EmbeddingSpec(str(files["embedding"]), want, shas["embedding"])
        decode_and_hash._EMBEDDERS.clear()  # a worker keeps one session per artifact path

        def run(spec: EmbeddingSpec = spec) -> None:
            for lo in range(0, len(blobs), 64):
                hash_blobs(blobs[lo : lo + 64], 16, 50_000_000, embedding=spec)

        upload[name] = round(rate(run, len(blobs)), 1)
    upload["pHash_only"] = round(
        rate(
            lambda: [
                hash_blobs(blobs[i : i + 64], 16, 50_000_000) for i in range(0, len(blobs), 64)
            ],
            len(blobs),
        ),
        1,
    )
    report["one_worker_upload_images_per_s"] = upload
    print("one worker, images/s", json.dumps(upload), flush=True)

    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
