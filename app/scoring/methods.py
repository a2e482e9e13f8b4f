"""The table of membership-scoring methods: the one place that lists them.

The /classify form's enum, the service's validation, the CLI's choices and GET /models all
read this table. A new method is a module with its scorer (see ``base.Scorer``) plus one
``register(ScoringMethod(...))`` line at the bottom of this file.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from app.scoring.base import ArtifactScorer, ModelInfo, Scorer
from app.scoring.phash_rule import PHashRuleScorer
from app.scoring.reference import ReferenceConfig, ReferenceScorer

if TYPE_CHECKING:
    from app.scoring.artifacts import ModelArtifacts
    from app.search.calibration import Threshold

#: The method /classify and `memaudit evaluate` use when none is named.
DEFAULT_METHOD = "reference"
#: Method names: lower-case identifiers that fit the classifications.method column.
_NAME = re.compile(r"[a-z][a-z0-9_]{0,19}")


@dataclass(frozen=True)
class ScoringContext:
    """What the service resolved for one /classify call; each method's factory takes what it
    needs."""

    artifacts: ModelArtifacts | None = None  # verified models/ artifacts
    requested_threshold: float | None = None  # /classify's `threshold` field
    #: app.search.calibration.Threshold for the pHash rule (batch's or set's); None = calibrate
    #: on the real images.
    match_threshold: Threshold | None = None
    hash_size: int = 16
    calibration_quantile: float = 0.05
    min_calibration_images: int = 10


class ArtifactLoader(Protocol):
    """Turns an artifact file whose SHA-256 matched the manifest into a scorer."""

    def __call__(self, artifact: Path, info: ModelInfo, *, want_cuda: bool) -> ArtifactScorer: ...


@dataclass(frozen=True)
class ScoringMethod:
    """One method: either built per request from the context (``build``), or loaded once at
    start from its verified ``models/`` artifact (``load_artifact``)."""

    name: str
    #: One line for the CLI help and GET /models.
    description: str
    #: Compares the real images with the generator's output (a batch or generated files).
    needs_generated: bool
    build: Callable[[ScoringContext], Scorer] | None = None
    load_artifact: ArtifactLoader | None = None
    #: Reads the verified copy-detection embedding from the context's artifacts when they
    #: hold one (images without stored descriptors are embedded with it).
    uses_embedding: bool = False

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"method name {self.name!r}: lower-case identifier, <= 20 chars")
        if (self.build is None) == (self.load_artifact is None):
            raise ValueError(f"method {self.name}: give exactly one of build, load_artifact")

    @property
    def uses_artifact(self) -> bool:
        return self.load_artifact is not None


_METHODS: dict[str, ScoringMethod] = {}
#: The registered names in order, one list object updated in place: what holds it (the
#: /classify form's documented enum, rendered when an app first serves /openapi.json) also
#: lists methods registered after it was imported. Read it, never modify it.
LIVE_NAMES: list[str] = []


def register(method: ScoringMethod) -> ScoringMethod:
    if method.name in _METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    _METHODS[method.name] = method
    LIVE_NAMES.append(method.name)
    return method


def unregister(name: str) -> None:
    """Remove a method (tests; a plug-in being unloaded)."""
    del _METHODS[name]
    LIVE_NAMES.remove(name)


def get_method(name: str) -> ScoringMethod:
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown method {name!r}; choose one of {', '.join(LIVE_NAMES)}"
        ) from None


def method_names() -> tuple[str, ...]:
    return tuple(LIVE_NAMES)


def all_methods() -> tuple[ScoringMethod, ...]:
    return tuple(_METHODS.values())


def build_scorer(name: str, context: ScoringContext) -> Scorer:
    """The scorer for one call: ValueError for an unknown name, LookupError (with the reason)
    when the method's model artifact is unavailable."""
    method = get_method(name)
    if method.build is not None:
        return method.build(context)
    if context.artifacts is None:
        raise LookupError(f"no model artifacts were loaded: the {name} model is unavailable")
    return context.artifacts.scorer(name)


def _embedder(context: ScoringContext):
    """The verified copy-detection embedding, or None when none was loaded."""
    if context.artifacts is None:
        return None
    try:
        return context.artifacts.embedding()
    except LookupError:
        return None


def _reference(context: ScoringContext) -> Scorer:
    if context.requested_threshold is None:
        return ReferenceScorer(embedder=_embedder(context))
    # The auditor stops verifying an image once it is conclusive; with a threshold,
    # conclusive at that threshold, so its labels there are (but for rare cases, see
    # ReferenceScorer._verify_shortlist) those of a full check.
    return ReferenceScorer(
        ReferenceConfig(conclusive_score=max(1.0, context.requested_threshold)),
        embedder=_embedder(context),
    )


def _phash(context: ScoringContext) -> Scorer:
    return PHashRuleScorer(
        hash_size=context.hash_size,
        threshold=context.match_threshold,
        quantile=context.calibration_quantile,
        min_images=context.min_calibration_images,
    )


# The model-backed scorers import onnxruntime and scikit-learn (seconds): only when loaded.
def _load_cnn(artifact: Path, info: ModelInfo, *, want_cuda: bool) -> ArtifactScorer:
    from app.scoring.cnn import CnnScorer

    return CnnScorer(artifact, info, want_cuda=want_cuda)


def _load_sift_knn(artifact: Path, info: ModelInfo, *, want_cuda: bool) -> ArtifactScorer:
    from app.scoring.sift_knn import SiftKnnScorer

    return SiftKnnScorer(artifact, info)


register(
    ScoringMethod(
        "reference",
        "recommended: verified copies of the real image in the generated batch, its most "
        "similar generated image by the copy-detection embedding, or its hubness-corrected "
        "share of the batch's nearest-neighbour votes, each against the real set's own null",
        needs_generated=True,
        build=_reference,
        uses_embedding=True,
    )
)
register(
    ScoringMethod(
        "phash",
        "the paper's rule: used when a generated image maps to it within the pHash threshold",
        needs_generated=True,
        build=_phash,
    )
)
register(
    ScoringMethod(
        "cnn",
        "the paper's CNN on the real image alone (models/cnn.onnx, onnxruntime)",
        needs_generated=False,
        load_artifact=_load_cnn,
    )
)
register(
    ScoringMethod(
        "sift_knn",
        "the paper's SIFT bag-of-visual-words KNN on the real image alone (models/sift_knn.joblib)",
        needs_generated=False,
        load_artifact=_load_sift_knn,
    )
)
