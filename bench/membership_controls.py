"""Membership false alarms on negative controls (issue 14): the share of real images the
default /classify method labels used when the generator copied nothing (target <= 5%).

    .venv/bin/python bench/membership_controls.py [--devsets ...] [--count 300]

Controls (bench/control_batches.py): each dev set's real images against a batch
re-synthesised from slices of other patients; and its unused real images against its own
generated batch (the reverse split). Needs ../shared/data.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.imaging.decode import decode_grayscale  # noqa: E402
from app.scoring.artifacts import ModelArtifacts  # noqa: E402
from app.scoring.methods import DEFAULT_METHOD, ScoringContext, build_scorer  # noqa: E402
from bench.control_batches import (  # noqa: E402
    DATA,
    MAX_PIXELS,
    devset_rows,
    resynthesised_batch,
    reverse_split,
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devsets", default="lung-window,iq-othnccd,iq-ddpm")
    parser.add_argument("--count", type=int, default=300, help="generated images per control")
    args = parser.parse_args()
    artifacts = ModelArtifacts(ROOT / "models", want_cuda=False).load()
    scorer = build_scorer(DEFAULT_METHOD, ScoringContext(artifacts=artifacts))
    for name in args.devsets.split(","):
        devset = DATA / "devsets" / name
        real = [
            decode_grayscale((devset / "real" / r["real"]).read_bytes(), MAX_PIXELS)
            for r in devset_rows(devset)
        ]
        controls = {
            "outside patients, re-synthesised": (real, resynthesised_batch(devset, args.count)),
            "reverse split (unused reals vs the batch)": reverse_split(devset),
        }
        for label, (reals, generated) in controls.items():
            start = time.perf_counter()
            result = scorer.score(reals, generated)
            used = int(result.labels.sum())
            print(
                f"{name:12s} {label:42s} {used}/{len(reals)} real labelled used "
                f"({used / len(reals):.1%}); {len(generated)} generated "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
