"""The one small interface every membership-scoring method implements."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

#: Progress of a long scoring run: (stage, done, total).
Progress = Callable[[str, int, int], None]


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
    #: Optional per real image: the generated images that support its verdict, strongest
    #: first, as dicts of figures with ``generated_index`` (the service names the file).
    evidence: list[list[dict]] | None = None

    @property
    def labels(self) -> np.ndarray:
        return self.scores >= self.threshold

    def with_threshold(self, value: float) -> ScoreResult:
        """A copy labelled at a threshold the request gave; the reason keeps the method's own."""
        return replace(
            self,
            threshold=value,
            threshold_reason=f"threshold {value:g} given in the request; the method's own "
            f"rule: {self.threshold_reason}",
        )


class Scorer(Protocol):
    """Scores real images; ``needs_generated``: it compares them with the generator's output."""

    name: str
    needs_generated: bool

    def score(
        self,
        real: Sequence[np.ndarray],
        generated: Sequence[np.ndarray] | None,
        progress: Progress | None = None,
    ) -> ScoreResult:
        """Score grayscale uint8 real images, optionally against generated ones; report
        progress as (stage, done, total)."""
        ...


class ArtifactScorer(Scorer, Protocol):
    """A scorer loaded from a verified ``models/`` artifact: it says what it runs on."""

    #: What really computes the scores, e.g. onnxruntime's ``CPUExecutionProvider``.
    execution_provider: str
    #: Why it does not run where it was asked to (e.g. no usable CUDA), else None.
    load_note: str | None
