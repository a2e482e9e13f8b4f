"""Method name -> scorer instance (model-backed methods come from the artifact registry)."""

from __future__ import annotations

from app.scoring.phash_rule import PHashRuleScorer
from app.scoring.reference import ReferenceConfig, ReferenceScorer

METHODS = ("reference", "phash", "cnn", "sift_knn")


def build_scorer(method: str, models=None, **options):
    if method == "reference":
        return ReferenceScorer(ReferenceConfig(**options))
    if method == "phash":
        return PHashRuleScorer(**options)
    if method in ("cnn", "sift_knn"):
        if models is None:
            raise LookupError(f"no model registry: the {method} model is unavailable")
        return models.scorer(method)
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
