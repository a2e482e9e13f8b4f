"""The one threshold policy of pHash source matching: the request's value, else the set's
calibrated value (learned from its own real-vs-real distances), else the paper's.

Two different real images of a set (neighbouring slices of one patient, say) are the closest
that unrelated-by-copying images get. Taking a low quantile q of each real image's distance to
its nearest *other* real image as the threshold means a generated image is called a copy only
when it is closer to a real image than all but q of the real images are to each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from app.search.hamming import nearest

#: The seed paper's threshold (Hamming distance) for 256-bit pHashes.
PAPER_THRESHOLD_256_BITS = 50
#: Real-vs-real queries used at most; beyond this a fixed-seed sample keeps calibration fast.
MAX_CALIBRATION_QUERIES = 4000
#: ... and at most this many hash comparisons (a 1,000,000-image set gets 500 queries).
MAX_CALIBRATION_PAIRS = 500_000_000


def paper_threshold(hash_size: int) -> int:
    """The paper's 50 of 256 bits, scaled to the hash length (12 for 64-bit hashes)."""
    return int(PAPER_THRESHOLD_256_BITS * hash_size * hash_size / 256)


@dataclass(frozen=True)
class Calibration:
    threshold: int
    quantile: float
    n_images: int
    n_queries: int
    nn_percentiles: dict[str, int]

    def as_json(self) -> dict:
        return {
            "method": "real-vs-real nearest-neighbour quantile",
            "threshold": self.threshold,
            "quantile": self.quantile,
            "n_images": self.n_images,
            "n_queries": self.n_queries,
            "nn_distance_percentiles": self.nn_percentiles,
        }


def real_nn_distances(words: np.ndarray) -> np.ndarray:
    """The real-vs-real null: each real image's distance to its nearest *other* real image
    of the set, for a fixed-seed sample of the images when the set is big (at most
    MAX_CALIBRATION_QUERIES queries and MAX_CALIBRATION_PAIRS comparisons). Empty below 2."""
    n = len(words)
    if n < 2:
        return np.empty(0, np.int64)
    queries = min(MAX_CALIBRATION_QUERIES, max(100, MAX_CALIBRATION_PAIRS // n))
    if n > queries:
        rng = np.random.default_rng(0)
        picked = np.sort(rng.choice(n, queries, replace=False))
        return nearest(words[picked], words, top_k=1, exclude=picked).distances[:, 0]
    return nearest(words, words, top_k=1, exclude_self=True).distances[:, 0]


def calibrate(
    words: np.ndarray, quantile: float, min_images: int, hash_size: int | None
) -> Calibration | None:
    """Largest threshold at which at most ``quantile`` of real images match another real one,
    never looser than the paper's threshold (small or very diverse sets would otherwise get
    thresholds near the distance of unrelated images).

    Returns None when the set has fewer than ``min_images`` images.
    """
    n = len(words)
    if n < max(min_images, 2):
        return None
    nn_sorted = np.sort(real_nn_distances(words))
    allowed = int(np.floor(quantile * len(nn_sorted)))
    threshold = int(nn_sorted[allowed]) - 1 if allowed < len(nn_sorted) else int(nn_sorted[-1])
    percentiles = {
        f"p{p}": int(np.percentile(nn_sorted, p, method="lower")) for p in (0, 5, 25, 50, 75, 95)
    }
    if hash_size is not None:  # None: another fingerprint than pHash (bench_hash_kinds)
        threshold = min(threshold, paper_threshold(hash_size))
    return Calibration(
        threshold=max(threshold, 0),
        quantile=quantile,
        n_images=n,
        n_queries=len(nn_sorted),
        nn_percentiles=percentiles,
    )


def describe_calibration(calibration: dict) -> str:
    q = calibration["quantile"]
    t = calibration["threshold"]
    n = calibration["n_images"]
    median = calibration["nn_distance_percentiles"]["p50"]
    return (
        f"calibrated on this set's real-vs-real distances: at most {q:.0%} of its {n} real "
        f"images have another real image within {t} bits (median nearest-real distance "
        f"{median}; never above the paper's threshold), so a generated image that close is "
        "called a copy"
    )


def describe_paper_default(hash_size: int, n_images: int, min_images: int) -> str:
    bits = hash_size * hash_size
    scaled = "" if bits == 256 else f", scaled to {paper_threshold(hash_size)} for {bits}-bit"
    images = "image" if n_images == 1 else "images"
    return (
        f"the set has {n_images} {images}, fewer than the {min_images} needed to calibrate; "
        f"using the seed paper's threshold of {PAPER_THRESHOLD_256_BITS} for 256-bit hashes"
        f"{scaled}"
    )


ThresholdSource = Literal["request", "calibrated", "paper_default"]


@dataclass(frozen=True)
class Threshold:
    """The Hamming distance at or under which a generated image is called a copy, and why."""

    value: int
    source: ThresholdSource
    reason: str


def resolve_threshold(
    hash_size: int,
    n_images: int,
    min_images: int,
    calibration: dict | None,
    requested: int | None = None,
    requested_reason: str = "threshold given in the request",
) -> Threshold:
    """The threshold /match, the CLI and the pHash scorer apply: ``requested`` when given,
    else the set's ``calibration`` (:meth:`Calibration.as_json`), else the paper's."""
    if requested is not None:
        return Threshold(requested, "request", requested_reason)
    if calibration:
        return Threshold(
            int(calibration["threshold"]), "calibrated", describe_calibration(calibration)
        )
    return Threshold(
        paper_threshold(hash_size),
        "paper_default",
        describe_paper_default(hash_size, n_images, min_images),
    )
