"""Membership-scoring quality on the labelled development sets (issue 3 figures).

    .venv/bin/python bench/eval_devsets.py [--methods reference,phash] [--devsets ...]

For each devset: ROC AUC against `memorized` (unused as negatives) where known, else against
`used`; and at each method's own default threshold, the share of positives found and of
unused images labelled used. Needs ../shared/data/devsets (not shipped with the project).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.evaluation import binary_metrics, roc_auc  # noqa: E402
from app.imaging.decode import decode_grayscale  # noqa: E402
from app.scoring.methods import ScoringContext, build_scorer  # noqa: E402

DEVSETS = ROOT.parent / "shared/data/devsets"


def load(devset: Path):
    with open(devset / "labels.csv") as fh:
        rows = list(csv.DictReader(fh))
    real = [decode_grayscale((devset / "real" / r["real"]).read_bytes(), 10**8) for r in rows]
    gen_files = sorted((devset / "generated").glob("*.png"))
    gen = [decode_grayscale(p.read_bytes(), 10**8) for p in gen_files]
    used = np.array([int(r["used"]) for r in rows])
    mem = np.array([int(r["memorized"]) if r["memorized"] else -1 for r in rows])
    return real, gen, used, mem


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", default="reference,phash")
    parser.add_argument("--devsets", default="lung-window,iq-othnccd,iq-ddpm")
    args = parser.parse_args()
    for name in args.devsets.split(","):
        real, gen, used, mem = load(DEVSETS / name)
        has_mem = (mem >= 0).all()
        positive = mem == 1 if has_mem else used == 1
        keep = positive | (used == 0)
        against = "memorized" if has_mem else "used"
        print(
            f"\n== {name}: {len(real)} real ({used.sum()} used), {len(gen)} generated; "
            f"positives = {against} ({positive.sum()}), negatives = unused ({(used == 0).sum()})"
        )
        for method in args.methods.split(","):
            scorer = build_scorer(method, ScoringContext())
            start = time.perf_counter()
            result = scorer.score(real, gen)
            elapsed = time.perf_counter() - start
            s, y = result.scores[keep], positive[keep]
            pred = result.labels[keep]
            m = binary_metrics(y, pred)
            print(
                f"{method:10s} AUC {roc_auc(y, s):.4f}  at default threshold: "
                f"found {m['recall']:.2%} of {against}, {m['fpr']:.2%} of unused labelled used, "
                f"F1 {m['f1']:.3f}  ({elapsed:.1f} s)"
            )


if __name__ == "__main__":
    main()
