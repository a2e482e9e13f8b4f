"""Write N distinct 256x256 PNGs derived from the shared CT slices (or phantoms) to a folder.

    .venv/bin/python bench/make_generated.py OUT_DIR [--count 10000] [--real-count 200]

OUT_DIR/real gets --real-count slices, OUT_DIR/generated gets --count shifted/re-lit variants,
so benchmarks can upload ImageCLEF-2023-sized batches. Nothing from shared/ is committed.
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--real-count", type=int, default=200)
    args = parser.parse_args()
    files = sorted(glob.glob(str(ROOT.parent / "shared/data/ct/*/*.png")))
    if files:
        slices = [cv2.imread(f, cv2.IMREAD_GRAYSCALE) for f in files]
    else:
        sys.path.insert(0, str(ROOT))
        from tests.imagegen import phantom

        slices = [phantom(i, 256) for i in range(500)]
    (args.out / "real").mkdir(parents=True, exist_ok=True)
    (args.out / "generated").mkdir(parents=True, exist_ok=True)
    for i in range(args.real_count):
        cv2.imwrite(str(args.out / "real" / f"real_{i:04d}.png"), slices[i % len(slices)])
    rng = np.random.default_rng(0)
    for i in range(args.count):
        img = slices[int(rng.integers(len(slices)))]
        m = np.float32([[1, 0, rng.uniform(-4, 4)], [0, 1, rng.uniform(-4, 4)]])
        out = cv2.warpAffine(img, m, img.shape[::-1], borderMode=cv2.BORDER_REFLECT)
        out = np.clip(out * rng.uniform(0.9, 1.1) + rng.normal(0, 3, out.shape), 0, 255)
        cv2.imwrite(str(args.out / "generated" / f"generated_{i:05d}.png"), out.astype(np.uint8))
    print(f"wrote {args.real_count} real and {args.count} generated PNGs under {args.out}")


if __name__ == "__main__":
    main()
