"""The seed paper's pHash rule as a membership score: a real image is `used` when some
generated image maps to it (its nearest real image) within the Hamming threshold."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from app.imaging.phash import bits_to_bytes, phash_batch
from app.scoring.base import ModelInfo, Progress, ScoreResult
from app.search.calibration import Threshold, calibrate, resolve_threshold
from app.search.hamming import nearest, pack_words


class PHashRuleScorer:
    name = "phash"
    needs_generated = True

    def __init__(
        self,
        hash_size: int = 16,
        threshold: Threshold | None = None,
        quantile: float = 0.05,
        min_images: int = 10,
    ) -> None:
        """``threshold``: the one a /match applied (else calibrated on the real images)."""
        self.hash_size = hash_size
        self.threshold = threshold
        self.quantile = quantile
        self.min_images = min_images

    def score(
        self,
        real: Sequence[np.ndarray],
        generated: Sequence[np.ndarray] | None,
        progress: Progress | None = None,
    ) -> ScoreResult:
        if not generated:
            raise ValueError("the pHash rule needs generated images")
        bits = self.hash_size * self.hash_size
        real_w = pack_words(bits_to_bytes(phash_batch(real, self.hash_size)))
        gen_w = pack_words(bits_to_bytes(phash_batch(generated, self.hash_size)))
        rule = self.threshold
        if rule is None:
            cal = calibrate(real_w, self.quantile, self.min_images, self.hash_size)
            rule = resolve_threshold(
                self.hash_size, len(real), self.min_images, cal.as_json() if cal else None
            )
        threshold = rule.value
        result = nearest(gen_w, real_w, top_k=1)
        sourced = np.zeros(len(real), bool)
        within = result.distances[:, 0] <= threshold
        sourced[result.indices[within, 0]] = True
        # Score: closeness of the closest generated image (bits - distance); images that are
        # some generated image's source within the threshold are lifted above the bar.
        closeness = (bits - result.reference_min).astype(float)
        bar = float(bits - threshold)
        scores = np.where(sourced, np.maximum(closeness, bar), np.minimum(closeness, bar - 0.5))
        return ScoreResult(
            scores=scores,
            threshold=bar,
            threshold_reason=f"used when a generated image maps to it within Hamming distance "
            f"{threshold} ({rule.reason}); score = {bits} - distance to the closest generated "
            "image",
            models=[ModelInfo(f"phash-{bits}", "1", sha256="")],
        )
