"""Method name -> scorer instance."""

from __future__ import annotations

from app.scoring.phash_rule import PHashRuleScorer
from app.scoring.reference import ReferenceScorer

METHODS = ("reference", "phash", "cnn", "sift_knn")


def build_scorer(method: str, **options):
    if method == "reference":
        return ReferenceScorer()
    if method == "phash":
        return PHashRuleScorer(**options)
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
