"""Does a second fingerprint earn its place beside pHash? Attribution on the development sets:

    .venv/bin/python bench/bench_hash_kinds.py [DEVSETS_DIR]

For every generated image that sources.csv gives a source: is its nearest real image
(Hamming, ties to the lower index as /match breaks them) that source (top-1)? Then at each
kind's own label-free threshold (the 5% quantile of real-vs-real nearest distances, as
app/search/calibration.py learns it for a set): copies given the right source, copies given
a wrong one, and novel generated images (no source) given one. Kinds: pHash 8 and 16,
imagehash's dhash and whash at 8 and 16, and PDQ when the `pdqhash` package imports.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.search.calibration import calibrate  # noqa: E402
from app.search.hamming import nearest, pack_words  # noqa: E402

DEVSETS = ("lung-window", "iq-othnccd")
#: The service's default calibration quantile.
QUANTILE = 0.05

#: Kind -> bits of one image (a flat bool array whose length is a multiple of 64).
Fingerprint = Callable[[Image.Image], np.ndarray]


def _imagehash(function: Callable, size: int) -> Fingerprint:
    return lambda image: np.asarray(function(image, hash_size=size).hash, bool).reshape(-1)


def _kinds() -> dict[str, Fingerprint]:
    kinds: dict[str, Fingerprint] = {}
    for size in (8, 16):
        kinds[f"phash{size}"] = _imagehash(imagehash.phash, size)
        kinds[f"dhash{size}"] = _imagehash(imagehash.dhash, size)
        kinds[f"whash{size}"] = _imagehash(imagehash.whash, size)
    try:
        import pdqhash
    except ImportError:
        print("pdqhash not importable: PDQ skipped")
    else:

        def pdq(image: Image.Image) -> np.ndarray:
            rgb = np.asarray(image.convert("RGB"))
            bits, _quality = pdqhash.compute(rgb)
            return np.asarray(bits, bool)

        kinds["pdq"] = pdq
    return kinds


def _words(images: list[Image.Image], fingerprint: Fingerprint) -> np.ndarray:
    bits = np.stack([fingerprint(image) for image in images])
    return pack_words(np.packbits(bits, axis=1))


def _evaluate(devset: Path, kinds: dict[str, Fingerprint]) -> None:
    real_names = sorted(p.name for p in (devset / "real").glob("*.png"))
    with open(devset / "sources.csv", newline="") as f:
        sources = {row["generated"]: row["source"] or None for row in csv.DictReader(f)}
    gen_names = sorted(sources)
    reals = [Image.open(devset / "real" / n).convert("L") for n in real_names]
    gens = [Image.open(devset / "generated" / n).convert("L") for n in gen_names]
    index = {name: i for i, name in enumerate(real_names)}
    truth = np.array([index[sources[g]] if sources[g] else -1 for g in gen_names])
    copies = truth >= 0
    print(
        f"\n{devset.name}: {len(reals)} real, {len(gens)} generated "
        f"({int(copies.sum())} copies with a known source, {int((~copies).sum())} novel)"
    )
    print(
        f"{'kind':>8} {'bits':>5} {'top-1':>7} {'thresh':>6} "
        f"{'right':>6} {'wrong':>6} {'missed':>6} {'novel hit':>9}"
    )
    for kind, fingerprint in kinds.items():
        real_words, gen_words = _words(reals, fingerprint), _words(gens, fingerprint)
        found = nearest(gen_words, real_words, top_k=1)
        best, distance = found.indices[:, 0], found.distances[:, 0]
        calibration = calibrate(real_words, QUANTILE, 2, None)
        assert calibration is not None
        threshold = calibration.threshold
        matched = distance <= threshold
        right = int((copies & matched & (best == truth)).sum())
        wrong = int((copies & matched & (best != truth)).sum())
        missed = int((copies & ~matched).sum())
        novel_hit = int((~copies & matched).sum())
        top1 = float((best[copies] == truth[copies]).mean())
        print(
            f"{kind:>8} {real_words.shape[1] * 64:>5} {top1:>7.1%} {threshold:>6} "
            f"{right:>6} {wrong:>6} {missed:>6} {novel_hit:>9}"
        )


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared/data/devsets"
    kinds = _kinds()
    for name in DEVSETS:
        _evaluate(root / name, kinds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
