"""How far can any bar on today's descriptors take attribution on a dev set? (issue 14)

    .venv/bin/python bench/attribution_ceiling.py [--sets lung-window,iq-othnccd]
        [--onnx candidate.onnx]

A diagnostic, not a rule: it reads the labels to place an *oracle* bar at the 98th and 99th
percentile of the novel images' own figures (the issue allows 2% of them a source), then
counts the copies above it whose nearest real image is their true source. No label-free
rule can do better with the same descriptor. Two descriptors, each against the generated
image's nearest real image by the copy-detection embedding:

* the embedding's cosine similarity (models/embedding.onnx, as /match's bar uses it);
* SIFT + RANSAC inliers (app.imaging.features, as /match's verification counts them).

It also finds which slice under ../shared/data/ct each novel image was made from (the
nearest slice of the whole collection by the embedding) and counts the novel images made
from a slice within ``--near`` file numbers of a registered IQ-OTH/NCCD slice: neighbouring
slices of one scan, which carry the registered patient's anatomy at nearly the same level.
Without --onnx the shipped, sha256-verified models/embedding.onnx is used. Needs ../shared/data.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.imaging.decode import decode_grayscale  # noqa: E402
from app.imaging.features import sift_keypoints, verified_inliers  # noqa: E402
from app.scoring.artifacts import ModelArtifacts, file_sha256  # noqa: E402
from app.scoring.base import ModelInfo  # noqa: E402
from app.scoring.embedding import EmbeddingModel  # noqa: E402
from bench.control_batches import DATA, MAX_PIXELS, devset_rows  # noqa: E402

IQ_NAME = re.compile(r"iq_othnccd_lung_cancer/([a-z]+)_(\d+)\.png$")


def read(path: Path) -> np.ndarray:
    return decode_grayscale(path.read_bytes(), MAX_PIXELS)


def ceiling(name: str, figure: np.ndarray, nearest, truth, is_copy) -> str:
    novel = figure[~is_copy]
    parts = []
    for q in (0.98, 0.99):
        bar = float(np.quantile(novel, q))
        above = figure > bar
        right = int((above & is_copy & (nearest == truth)).sum())
        wrong = int((above & is_copy & (nearest != truth)).sum())
        parts.append(
            f"bar {bar:.3f} (novel q{q:.2f}): right {right}/{int(is_copy.sum())} "
            f"({right / is_copy.sum():.1%}), wrong {wrong}"
        )
    copies_q = np.round(np.percentile(figure[is_copy], [25, 50, 75]), 3).tolist()
    novel_q = np.round(np.percentile(novel, [50, 95, 99]), 3).tolist()
    return f"  {name:<20} copies p25/p50/p75 {copies_q}, novel p50/p95/p99 {novel_q}\n" + "".join(
        f"  {'':<20} {p}\n" for p in parts
    )


def neighbour(name: str, registered: list[tuple[str, int]], within: int) -> bool:
    """Is this IQ-OTH/NCCD slice another slice numbered within ``within`` of a registered one
    (the same class folder; its names carry no patient id)?"""
    m = IQ_NAME.search(name)
    return bool(m) and any(
        kind == m.group(1) and 0 < abs(number - int(m.group(2))) <= within
        for kind, number in registered
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", default="lung-window,iq-othnccd")
    parser.add_argument("--near", type=int, default=2, help="file numbers counted as a neighbour")
    parser.add_argument("--onnx", help="an embedding file to measure instead of the shipped one")
    args = parser.parse_args()
    if args.onnx:
        info = ModelInfo("candidate", "-", file_sha256(Path(args.onnx)))
        embedder = EmbeddingModel(Path(args.onnx), info, want_cuda=False)
    else:
        embedder = ModelArtifacts(ROOT / "models", want_cuda=False).load().embedding()
    ct_paths = sorted((DATA / "ct").glob("*/*.png"))
    ct_names = [str(p.relative_to(DATA / "ct")) for p in ct_paths]
    ct_vectors = embedder.embed([read(p) for p in ct_paths])
    for set_name in args.sets.split(","):
        devset = DATA / "devsets" / set_name
        rows = devset_rows(devset)
        real_names = [r["real"] for r in rows]
        real = [read(devset / "real" / n) for n in real_names]
        generated_paths = sorted((devset / "generated").glob("*.png"))
        generated = [read(p) for p in generated_paths]
        with (devset / "sources.csv").open() as fh:
            source = dict(line.strip().split(",", 1) for line in fh.readlines()[1:])
        index = {n: i for i, n in enumerate(real_names)}
        truth = np.array([index.get(source.get(p.name, ""), -1) for p in generated_paths])
        is_copy = truth >= 0

        real_vec, gen_vec = embedder.embed(real), embedder.embed(generated)
        similarity = gen_vec @ real_vec.T
        nearest, best = similarity.argmax(axis=1), similarity.max(axis=1)
        real_kp = [sift_keypoints(r) for r in real]
        inliers = np.array(
            [
                verified_inliers(sift_keypoints(g), real_kp[nearest[j]])
                for j, g in enumerate(generated)
            ],
            np.float64,
        )
        print(
            f"{set_name}: {int(is_copy.sum())} copies, {int((~is_copy).sum())} novel; "
            f"the embedding's nearest real image is the true source of "
            f"{(nearest[is_copy] == truth[is_copy]).mean():.1%} of the copies"
        )
        print(ceiling("embedding similarity", best, nearest, truth, is_copy), end="")
        print(ceiling("SIFT inliers", inliers, nearest, truth, is_copy), end="")

        registered = [IQ_NAME.search(r["original"]) for r in rows]
        registered = [(m.group(1), int(m.group(2))) for m in registered if m]
        if not registered:
            continue
        made_from = (gen_vec[~is_copy] @ ct_vectors.T).argmax(axis=1)

        near = np.array([neighbour(ct_names[i], registered, args.near) for i in made_from])
        novel_best = best[~is_copy]
        print(
            f"  novel images made from a slice within {args.near} file numbers of a registered "
            f"one: {int(near.sum())}/{len(near)}; their similarity to the nearest real image: "
            f"median {np.median(novel_best[near]):.3f} (other novel images "
            f"{np.median(novel_best[~near]):.3f}, true copies to their source "
            f"{np.median(similarity[is_copy, truth[is_copy]]):.3f})"
        )


if __name__ == "__main__":
    main()
