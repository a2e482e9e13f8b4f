"""TEMPORARY shim until the scoring-method table lands (branch methods)."""

from __future__ import annotations

from dataclasses import dataclass

from app.scoring.base import Scorer
from app.scoring.registry import METHODS
from app.scoring.registry import build_scorer as _build
from app.search.calibration import Threshold


@dataclass(frozen=True)
class ScoringContext:
    artifacts: object | None = None
    requested_threshold: float | None = None
    match_threshold: Threshold | None = None
    hash_size: int = 16
    calibration_quantile: float = 0.05
    min_calibration_images: int = 10


def method_names() -> tuple[str, ...]:
    return METHODS


def build_scorer(name: str, context: ScoringContext) -> Scorer:
    if name not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}")
    if name == "phash":
        return _build(
            "phash",
            hash_size=context.hash_size,
            threshold=context.match_threshold,
            quantile=context.calibration_quantile,
            min_images=context.min_calibration_images,
        )
    options = {}
    if name == "reference" and context.requested_threshold is not None:
        options = {"conclusive_score": max(1.0, context.requested_threshold)}
    return _build(name, models=context.artifacts, **options)
