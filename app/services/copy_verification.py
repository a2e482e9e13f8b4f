"""Geometric verification of ``copy_of`` (issue 14): a generated image copies its most similar
real image (by the copy-detection embedding) when their keypoints agree geometrically — RANSAC
inliers — more than any real image of the set agrees with its own nearest other real image.

Label-free, like the pHash and embedding bars: neighbouring slices of one scan are the closest
that images unrelated by copying get, so the most inliers a real image has with its nearest
other real image is the bar. Cost (bench/attribution_rules.py --variants): keypoints once per
real image (kept in the feature store) and per generated image, and one verified pair per
generated image; /match runs it when the batch is small enough (its ``verify`` field).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np

from app.config import Settings
from app.imaging.decode import decode_grayscale
from app.imaging.features import CopyVerifier, Keypoints
from app.search.copies import nearest_others, nearest_real, null_sample
from app.services import jobs
from app.storage import FeatureStore, ImageStore

VerifyMode = Literal["auto", "always", "never"]
VERIFY_MODES: tuple[str, ...] = ("auto", "always", "never")

#: The keypoints copies are verified with: SIFT on the image brought to 128 px keeps the
#: figures of SIFT at 256 px on the dev sets at a fraction of the cost (bench/README.md).
VERIFIER = CopyVerifier("sift", 128, 300)
#: Real images whose inliers with their nearest other real image make the bar, at most;
#: a larger set is sampled (fixed seed), as the embedding's real-vs-real null is.
MAX_BAR_PAIRS = 2000


class CannotVerify(Exception):
    """Verification is impossible for this set or batch (no pixels kept); the message says why."""


@dataclass(frozen=True)
class InlierBar:
    """A copy needs more verified inliers than ``inliers``: the most that any of ``pairs``
    real images had with its embedding-nearest other real image (keypoints ``kind``)."""

    inliers: int
    pairs: int
    kind: str

    def as_json(self) -> dict:
        return {"inliers": self.inliers, "pairs": self.pairs, "kind": self.kind}

    @classmethod
    def from_json(cls, data: object, kind: str) -> InlierBar | None:
        """The stored bar when it was measured with ``kind`` keypoints, else None."""
        if not isinstance(data, dict) or data.get("kind") != kind:
            return None
        return cls(int(data["inliers"]), int(data["pairs"]), kind)


@dataclass(frozen=True)
class Verification:
    """Per generated image: its most similar real image by the embedding, that similarity and
    their verified inliers; a copy when the inliers exceed ``bar``."""

    nearest: np.ndarray
    similarity: np.ndarray
    inliers: np.ndarray
    bar: InlierBar

    def copies(self) -> np.ndarray:
        return np.flatnonzero(self.inliers > self.bar.inliers)


@dataclass(frozen=True)
class VerifyConfig:
    """Where pixels and cached keypoints are, and how large a batch ``auto`` verifies."""

    images: ImageStore
    features: FeatureStore
    max_pixels: int
    #: ``verify=auto`` verifies batches of at most this many generated images.
    max_images: int
    verifier: CopyVerifier = VERIFIER

    @classmethod
    def of(cls, settings: Settings, images: ImageStore, features: FeatureStore) -> VerifyConfig:
        return cls(images, features, settings.max_image_pixels, settings.match_verify_max_images)

    def wants(self, mode: VerifyMode, generated: int) -> bool:
        return mode == "always" or (mode == "auto" and generated <= self.max_images)

    def keypoints(self, sha256: str | None, keep: bool) -> Keypoints:
        """An image's keypoints from the image store; ``keep``: cached in the feature store."""
        kind = self.verifier.kind
        if sha256 is None:
            raise CannotVerify("some of its images were registered by hash alone (no pixels)")
        if keep and (cached := self.features.load(kind, sha256)) is not None:
            return Keypoints.from_arrays(cached)
        try:
            data = self.images.get(sha256)
        except KeyError:
            raise CannotVerify("some of its images are no longer in the image store") from None
        found = self.verifier.keypoints(decode_grayscale(data, self.max_pixels))
        if keep:
            self.features.save(kind, sha256, found.to_arrays())
        return found


def _threads() -> int:
    """One thread per usable core: OpenCV releases the GIL in SIFT and RANSAC."""
    return max(1, len(os.sched_getaffinity(0)))


def _run(work: Callable, items: Sequence, stage: str | None = None) -> list:
    """``work`` of every item on the cores; with ``stage``, reported to the current job (if
    any) as it goes, which may stop it (the items not begun are dropped)."""
    pool = ThreadPoolExecutor(_threads())
    out: list = []
    try:
        for done, result in enumerate(pool.map(work, items), start=1):
            out.append(result)
            if stage is not None and (done % 32 == 0 or done == len(items)):
                jobs.report_progress(stage, done, len(items))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return out


def inlier_bar(
    vectors: np.ndarray, sha256s: Sequence[str | None], config: VerifyConfig
) -> InlierBar:
    """The set's bar: the most inliers any (sampled) real image has with its nearest other."""
    picked = null_sample(len(vectors), MAX_BAR_PAIRS)
    partners = nearest_others(vectors, picked)[0]
    members = np.unique(np.r_[picked, partners]).tolist()
    found = dict(
        zip(members, _run(lambda j: config.keypoints(sha256s[j], True), members), strict=True)
    )
    inliers = _run(
        lambda pair: config.verifier.inliers(found[pair[0]], found[pair[1]]),
        list(zip(picked.tolist(), partners.tolist(), strict=True)),
    )
    return InlierBar(max(inliers, default=0), len(picked), config.verifier.kind)


def verify_batch(
    generated_vectors: np.ndarray,
    generated_sha256s: Sequence[str],
    real_vectors: np.ndarray,
    real_sha256s: Sequence[str | None],
    bar: InlierBar,
    config: VerifyConfig,
) -> Verification:
    """Each generated image verified against its most similar real image (one pair each)."""
    nearest, similarity = nearest_real(generated_vectors, real_vectors)
    needed = np.unique(nearest).tolist()
    real_kp = dict(
        zip(needed, _run(lambda j: config.keypoints(real_sha256s[j], True), needed), strict=True)
    )

    def check(i: int) -> int:
        query = config.keypoints(generated_sha256s[i], False)
        return config.verifier.inliers(query, real_kp[int(nearest[i])])

    inliers = np.asarray(
        _run(check, range(len(generated_sha256s)), "verifying copies (SIFT)"), np.int64
    )
    return Verification(nearest, similarity, inliers, bar)


def verified_reason(bar: InlierBar, embedding_reason: str) -> str:
    """``copy_rule`` in words when copies were verified."""
    return (
        f"verified geometrically: a generated image is called a copy of its most similar real "
        f"image by the copy-detection embedding when more than {bar.inliers} of their SIFT "
        f"keypoints match under one rotation, scale and shift (RANSAC) — more than any of "
        f"{bar.pairs} real images of this set has with its own most similar other real image "
        f"(calibrated on the set, no labels). Without verification the embedding bar would "
        f"apply: {embedding_reason}"
    )


def unverified_note(generated: int, mode: VerifyMode, max_images: int) -> str:
    """Why a batch's copies were decided by the embedding bar alone."""
    if mode == "never":
        return "not verified geometrically (verify=never)"
    return (
        f"not verified geometrically: the batch has {generated} generated images, more than "
        f"the {max_images} verify=auto checks per request (MEMAUDIT_MATCH_VERIFY_MAX_IMAGES); "
        "send verify=always to check every one"
    )
