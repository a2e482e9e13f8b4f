"""The one small interface every membership-scoring method implements."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    sha256: str
    provider: str | None = None


@dataclass
class ScoreResult:
    """Per real image: ``scores`` (higher = more likely used) and ``labels`` at ``threshold``."""

    scores: np.ndarray
    threshold: float
    threshold_reason: str
    models: list[ModelInfo] = field(default_factory=list)
    #: Optional per-image extra figures (e.g. the reference auditor's components).
    components: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        return self.scores >= self.threshold

    def with_threshold(self, threshold: float) -> ScoreResult:
        """This result labelled at a threshold given in the request instead."""
        return replace(
            self,
            threshold=threshold,
            threshold_reason=f"threshold {threshold:g} given in the request; the method's own "
            f"rule: {self.threshold_reason}",
        )


class Scorer(Protocol):
    name: str
    needs_generated: bool

    def score(
        self,
        real: Sequence[np.ndarray],
        generated: Sequence[np.ndarray] | None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> ScoreResult:
        """Score grayscale uint8 real images, optionally against generated ones; report
        progress as (stage, done, total)."""
        ...
