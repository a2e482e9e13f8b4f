"""Candidate copy_of rules compared offline on the dev sets and the negative controls (issue 14).

    .venv/bin/python bench/attribution_rules.py [DEVSETS_DIR] [--sets ...] [--probes 8]

Every rule is calibrated label-free, from what a user has (the registered real images):
- today: cosine similarity to the nearest real >= the 95th percentile of the reals' nearest
  other-real similarities (app.search.copies.calibrate_copies);
- (a1) augmented null: the same bar at the 99th percentile of a leave-one-out null: ``--probes``
  edited copies of each real (app.training.embedding.generator_edit) judged against the other
  real images, as if their source were not registered;
- (a4) similarity and margin: a logistic line on (nearest similarity, margin over the second
  nearest) fitted on those edited copies judged with (copy) and without (null) their source,
  placed so that 1% of the null passes;
- (b) geometric verification: SIFT + RANSAC inliers (app.imaging.features) between a generated
  image and its nearest real by embedding above the most inliers any real image has with its
  nearest other real; alone, and gated by today's bar.
Per rule: copies given the true source / a wrong one, novel images given one, and the share of
the two negative controls of bench/negative_controls.py (outside, reverse) given one. Also the
cost of SIFT per image and per verified pair on this machine. Embeddings are as stored (float16).

``--variants sift-256-300,sift-128-300,orb-256-500`` compares instead rule (b) alone for
cheaper keypoints (app.imaging.features.CopyVerifier: detector-side-features), each with its
ms per image and per verified pair on this machine, beside today's bar.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from control_batches import outside_pool  # noqa: E402
from negative_controls import outside_batch  # noqa: E402

from app.imaging.features import CopyVerifier, sift_keypoints, verified_inliers  # noqa: E402
from app.scoring.artifacts import ModelArtifacts  # noqa: E402
from app.training.embedding import generator_edit  # noqa: E402

#: False-positive rate allowed on the augmented null.
ALPHA = 0.01

Rule = Callable[[dict], np.ndarray]


def read(paths: list[Path]) -> list[np.ndarray]:
    return [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths]


def top2(queries: np.ndarray, reals: np.ndarray, leave_out: np.ndarray | None = None):
    """Nearest real index, its similarity and the second nearest similarity per query."""
    sims = queries @ reals.T
    if leave_out is not None:
        sims[np.arange(len(queries)), leave_out] = -np.inf
    order = np.argsort(-sims, axis=1)[:, :2]
    best = np.take_along_axis(sims, order, axis=1)
    return order[:, 0], best[:, 0], best[:, 1]


def fit_line(copies: np.ndarray, null: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Logistic regression (Newton steps) of copies vs null on standardised features."""
    x = np.r_[copies, null]
    y = np.r_[np.ones(len(copies)), np.zeros(len(null))]
    mean, scale = x.mean(0), x.std(0) + 1e-9

    def design(f: np.ndarray) -> np.ndarray:
        return np.c_[(f - mean) / scale, np.ones(len(f))]

    z, w = design(x), np.zeros(x.shape[1] + 1)
    for _ in range(100):
        p = 1 / (1 + np.exp(-z @ w))
        hessian = (z * (p * (1 - p))[:, None]).T @ z + 1e-3 * np.eye(len(w))
        w -= np.linalg.solve(hessian, z.T @ (p - y) + 1e-3 * w)
    return lambda f: design(f) @ w


def calibrate(reals: np.ndarray, probes: np.ndarray, probe_source: np.ndarray, rr_inliers):
    """The label-free rules of one registered set: name -> rule on a query's figures."""
    pairs = reals @ reals.T
    np.fill_diagonal(pairs, -np.inf)
    today = np.quantile(pairs.max(1), 0.95)
    _, with_source, with_second = top2(probes, reals)
    _, null_first, null_second = top2(probes, reals, probe_source)
    a1 = np.quantile(null_first, 1 - ALPHA)
    line = fit_line(
        np.c_[with_source, with_source - with_second], np.c_[null_first, null_first - null_second]
    )
    a4 = np.quantile(line(np.c_[null_first, null_first - null_second]), 1 - ALPHA)
    inlier_bar = rr_inliers.max()
    return {
        "today: s1 >= real-real p95": lambda q: q["s1"] >= today,
        "a1: s1 >= augmented null p99": lambda q: q["s1"] >= a1,
        "a4: line(s1, margin), null 1%": lambda q: line(np.c_[q["s1"], q["s1"] - q["s2"]]) >= a4,
        "b: inliers > max real-real": lambda q: q["inliers"]() > inlier_bar,
        "b + today's bar": lambda q: (q["s1"] >= today) & (q["inliers"]() > inlier_bar),
    }


def query(vectors, keypoints, reals, real_keypoints) -> dict:
    nearest, s1, s2 = top2(vectors, reals)
    cache: list[np.ndarray] = []

    def inliers() -> np.ndarray:
        if not cache:
            cache.append(
                np.array(
                    [
                        verified_inliers(k, real_keypoints[j])
                        for k, j in zip(keypoints, nearest, strict=True)
                    ]
                )
            )
        return cache[0]

    return {"nearest": nearest, "s1": s1, "s2": s2, "inliers": inliers}


def rr_inliers(reals: np.ndarray, keypoints: list, members: np.ndarray) -> np.ndarray:
    """Inliers of each member real image with its nearest other member by embedding."""
    pairs = reals[members] @ reals[members].T
    np.fill_diagonal(pairs, -np.inf)
    return np.array(
        [
            verified_inliers(keypoints[i], keypoints[members[j]])
            for i, j in zip(members, pairs.argmax(1), strict=True)
        ]
    )


def parse_variant(text: str) -> CopyVerifier:
    detector, side, features = text.split("-")
    return CopyVerifier(detector, int(side), int(features))


def compare_variants(
    variants: list[CopyVerifier], reals, generated, outside, images, truth, unused, margin=False
):
    """Rule (b) per keypoint variant: figures and cost (``images``: real, generated, outside)."""
    real_images, generated_images, outside_images = images
    copies = truth >= 0
    nearest, _s1, _ = top2(generated, reals)
    out_nearest, _, _ = top2(outside, reals)
    rev_nearest, _, _ = top2(generated, reals[unused])
    for verifier in variants:
        started = time.perf_counter()
        real_kp = [verifier.keypoints(g) for g in real_images]
        generated_kp = [verifier.keypoints(g) for g in generated_images]
        image_ms = 1000 * (time.perf_counter() - started) / (len(real_kp) + len(generated_kp))
        outside_kp = [verifier.keypoints(g) for g in outside_images]

        def own_inliers(members: np.ndarray, real_kp=real_kp, verifier=verifier) -> np.ndarray:
            """Inliers of each member real image with its nearest other member."""
            pairs = reals[members] @ reals[members].T
            np.fill_diagonal(pairs, -np.inf)
            return np.array(
                [
                    verifier.inliers(real_kp[i], real_kp[members[j]])
                    for i, j in zip(members, pairs.argmax(1), strict=True)
                ]
            )

        everyone = np.arange(len(reals))
        own_all, own_unused = own_inliers(everyone), own_inliers(unused)
        started = time.perf_counter()
        inliers = np.array(
            [verifier.inliers(k, real_kp[j]) for k, j in zip(generated_kp, nearest, strict=True)]
        )
        pair_ms = 1000 * (time.perf_counter() - started) / len(generated_kp)
        outside_in = np.array(
            [verifier.inliers(k, real_kp[j]) for k, j in zip(outside_kp, out_nearest, strict=True)]
        )
        reverse_in = np.array(
            [
                verifier.inliers(k, real_kp[unused[j]])
                for k, j in zip(generated_kp, rev_nearest, strict=True)
            ]
        )
        print(f"  {verifier.kind}: {image_ms:.1f} ms/image, {pair_ms:.2f} ms/pair")
        if margin:
            # The runner-up by embedding: inliers shared with any image of the set (the
            # scanner table, the body outline) are not evidence of one source.
            def runner_up(queries, kps, members, inl, real_kp=real_kp, verifier=verifier):
                sims = queries @ reals[members].T
                second = np.argsort(-sims, axis=1)[:, 1]
                return inl - np.array(
                    [
                        verifier.inliers(k, real_kp[members[j]])
                        for k, j in zip(kps, second, strict=True)
                    ]
                )

            def rr_margin(members, real_kp=real_kp, verifier=verifier) -> int:
                sims = reals[members] @ reals[members].T
                np.fill_diagonal(sims, -np.inf)
                order = np.argsort(-sims, axis=1)[:, :2]
                return max(
                    verifier.inliers(real_kp[i], real_kp[members[a]])
                    - verifier.inliers(real_kp[i], real_kp[members[b]])
                    for i, (a, b) in zip(members, order, strict=True)
                )

            gen_m = runner_up(generated, generated_kp, everyone, inliers)
            out_m = runner_up(outside, outside_kp, everyone, outside_in)
            rev_m = runner_up(generated, generated_kp, unused, reverse_in)
            bar_all, bar_unused = rr_margin(everyone), rr_margin(unused)
            for label, given, out, rev in (
                ("margin > max margin", gen_m > bar_all, out_m > bar_all, rev_m > bar_unused),
                (
                    "b and margin > max",
                    (gen_m > bar_all) & (inliers > own_all.max()),
                    (out_m > bar_all) & (outside_in > own_all.max()),
                    (rev_m > bar_unused) & (reverse_in > own_unused.max()),
                ),
            ):
                right = int((given & copies & (nearest == truth)).sum())
                novel = int((given & ~copies).sum())
                print(
                    f"    {label:<26} (bar {bar_all}) right {right}/{copies.sum()} "
                    f"({right / copies.sum():.1%}), novel given {novel} | outside "
                    f"{out.mean():.1%} | reverse {rev.mean():.1%}"
                )
        for label, bars in bar_rules(own_all, own_unused).items():
            everyone_bar, unused_bar = bars
            given = inliers > everyone_bar[nearest]
            right = int((given & copies & (nearest == truth)).sum())
            wrong = int((given & copies & (nearest != truth)).sum())
            novel = int((given & ~copies).sum())
            print(
                f"    {label:<26} right {right}/{copies.sum()} ({right / copies.sum():.1%}), "
                f"wrong {wrong}, novel given {novel}/{(~copies).sum()} "
                f"({novel / (~copies).sum():.1%}) | outside "
                f"{(outside_in > everyone_bar[out_nearest]).mean():.1%} | reverse "
                f"{(reverse_in > unused_bar[rev_nearest]).mean():.1%}"
            )


def bar_rules(own_all: np.ndarray, own_unused: np.ndarray) -> dict:
    """Per real image, the inliers a copy of it must exceed, by rule (set, reverse set): the
    set's maximum (rule b), or the image's own inliers with its nearest other real image
    floored at a quantile of the set's."""
    rules = {"max over the set (b)": lambda own: np.full(len(own), own.max())}
    for q in (0.5, 0.9, 0.95):
        rules[f"own, floor p{round(100 * q)}"] = lambda own, q=q: np.maximum(
            own, np.quantile(own, q)
        )
    return {label: (rule(own_all), rule(own_unused)) for label, rule in rules.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("devsets", nargs="?", default=str(ROOT.parent / "shared/data/devsets"))
    parser.add_argument("--sets", default="lung-window,iq-othnccd")
    parser.add_argument("--probes", type=int, default=8)
    parser.add_argument("--variants", default="", help="e.g. sift-128-300,orb-256-500")
    parser.add_argument("--margin", action="store_true", help="also the runner-up margin rules")
    args = parser.parse_args()
    model = ModelArtifacts(ROOT / "models", want_cuda=False).load().embedding()

    def embed(images: list[np.ndarray]) -> np.ndarray:
        return model.embed(images).astype(np.float16).astype(np.float32)

    for name in args.sets.split(","):
        folder = Path(args.devsets) / name
        with (folder / "labels.csv").open(newline="") as fh:
            labels = list(csv.DictReader(fh))
        with (folder / "sources.csv").open(newline="") as fh:
            sources = {r["generated"]: r["source"] for r in csv.DictReader(fh)}
        real_names = [r["real"] for r in labels]
        index = {n: i for i, n in enumerate(real_names)}
        generated_names = sorted(sources)
        truth = np.array([index[sources[g]] if sources[g] else -1 for g in generated_names])
        unused = np.array([i for i, r in enumerate(labels) if r["used"] == "0"])
        real_images = read([folder / "real" / n for n in real_names])
        generated_images = read([folder / "generated" / n for n in generated_names])
        with tempfile.TemporaryDirectory() as tmp:
            outside_batch(
                outside_pool(labels, Path(args.devsets).parent / "ct"), 400, 7, Path(tmp) / "o"
            )
            outside_images = read(sorted((Path(tmp) / "o").glob("*.png")))
        if args.variants:
            print(f"{name}:")
            compare_variants(
                [parse_variant(v) for v in args.variants.split(",")],
                embed(real_images),
                embed(generated_images),
                embed(outside_images),
                (real_images, generated_images, outside_images),
                truth,
                unused,
                args.margin,
            )
            continue
        rng = np.random.default_rng(0)
        halves = [cv2.resize(g, (128, 128), interpolation=cv2.INTER_AREA) for g in real_images]
        probe_source = np.tile(np.arange(len(halves)), args.probes)
        probes = embed(
            [
                generator_edit(halves[i], halves[rng.integers(len(halves))], rng)
                for i in probe_source
            ]
        )
        reals, generated, outside = (
            embed(real_images),
            embed(generated_images),
            embed(outside_images),
        )
        started = time.perf_counter()
        real_kp = [sift_keypoints(g) for g in real_images]
        sift_ms = 1000 * (time.perf_counter() - started) / len(real_images)
        generated_kp = [sift_keypoints(g) for g in generated_images]
        outside_kp = [sift_keypoints(g) for g in outside_images]

        everyone = np.arange(len(reals))
        rules = calibrate(reals, probes, probe_source, rr_inliers(reals, real_kp, everyone))
        keep = np.isin(probe_source, unused)
        remap = np.full(len(reals), -1)
        remap[unused] = np.arange(len(unused))
        rules_reverse = calibrate(
            reals[unused],
            probes[keep],
            remap[probe_source[keep]],
            rr_inliers(reals, real_kp, unused),
        )
        on_generated = query(generated, generated_kp, reals, real_kp)
        on_outside = query(outside, outside_kp, reals, real_kp)
        on_reverse = query(generated, generated_kp, reals[unused], [real_kp[i] for i in unused])
        started = time.perf_counter()
        on_generated["inliers"]()
        pair_ms = 1000 * (time.perf_counter() - started) / len(generated)
        print(f"{name}: SIFT {sift_ms:.1f} ms per image, {pair_ms:.2f} ms per verified pair")
        copies = truth >= 0
        for label, rule in rules.items():
            given = rule(on_generated)
            right = int((given & copies & (on_generated["nearest"] == truth)).sum())
            wrong = int((given & copies & (on_generated["nearest"] != truth)).sum())
            novel = int((given & ~copies).sum())
            print(
                f"  {label:<32} right {right}/{copies.sum()} ({right / copies.sum():.1%}), "
                f"wrong {wrong}, novel given {novel}/{(~copies).sum()} "
                f"({novel / (~copies).sum():.1%}) | outside given {rule(on_outside).mean():.1%}"
                f" | reverse given {rules_reverse[label](on_reverse).mean():.1%}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
