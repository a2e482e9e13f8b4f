"""Copy attribution by the copy-detection embedding, with a label-free threshold.

Like the pHash threshold (app.search.calibration), the bar is learned from the real set
itself: two different real images (neighbouring slices of one scan, say) are the most
similar that images unrelated by copying get. A generated image is called a copy of its
most similar real image when it is more similar to it than all but ``quantile`` of the
real images are to their nearest other real image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Real-vs-real queries used at most; beyond this a fixed-seed sample keeps it fast.
MAX_NULL_QUERIES = 4000
#: Similarities held at once (float32): queries are compared with every real image in
#: blocks of rows this size allows (2048 rows for a 200-image set, 40 for 200,000).
BLOCK_SIMILARITIES = 8_000_000


@dataclass(frozen=True)
class CopyRule:
    """The cosine similarity at or above which the nearest real image is called the source."""

    threshold: float
    quantile: float
    n_images: int
    null_percentiles: dict[str, float]

    def reason(self) -> str:
        median = self.null_percentiles["p50"]
        return (
            f"calibrated on this set's real-vs-real similarities: at most {self.quantile:.0%} "
            f"of its {self.n_images} real images have another real image with embedding "
            f"similarity {self.threshold:.3f} or more (median nearest-real similarity "
            f"{median:.3f}), so a generated image that similar to a real image is called a "
            "copy of it"
        )

    def as_json(self) -> dict:
        return {
            "threshold": self.threshold,
            "quantile": self.quantile,
            "n_images": self.n_images,
            "null_percentiles": self.null_percentiles,
        }


#: A stored descriptor names the embedding that computed it: a version byte, the first 8
#: bytes of the model file's sha256, then its float16 components (an odd length in all).
#: Descriptors of two embeddings must never be compared (a retrained model of the same size
#: would give plausible, meaningless similarities).
DESCRIPTOR_TAG_VERSION = 1
DESCRIPTOR_TAG_BYTES = 9
#: Untagged descriptors (an even length) were stored before the tag existed, all by the one
#: embedding shipped then: memaudit-copy-embedding v1, this prefix of its sha256.
UNTAGGED_MODEL = "46af2d5a410c6299"


#: Begins every explanation that a set's descriptors are another embedding's (or several):
#: `memaudit client match` recognises it and fails instead of counting pHash sources alone.
STALE_DESCRIPTORS = "the set's descriptors come from"


def model_tag(model_sha256: str) -> str:
    """How a stored descriptor names its model: the first 16 hex digits of its sha256."""
    return model_sha256[:16].lower()


def pack_descriptor(vector: np.ndarray, model_sha256: str) -> bytes:
    """One descriptor as stored: tagged with its model, components in float16."""
    tag = bytes([DESCRIPTOR_TAG_VERSION]) + bytes.fromhex(model_tag(model_sha256))
    return tag + np.asarray(vector, np.float16).tobytes()


def descriptor_model(blob: bytes) -> str:
    """The model tag (see :func:`model_tag`) of a stored descriptor."""
    return UNTAGGED_MODEL if len(blob) % 2 == 0 else blob[1:DESCRIPTOR_TAG_BYTES].hex()


def descriptors_model(blobs: list[bytes | None]) -> str | None:
    """The one model all these stored descriptors come from; None when any is missing or
    they come from more than one."""
    if not blobs or any(b is None for b in blobs):
        return None
    models = {descriptor_model(b) for b in blobs}  # type: ignore[arg-type]
    return models.pop() if len(models) == 1 else None


def unit_vectors(blobs: list[bytes | None], model: str | None = None) -> np.ndarray | None:
    """Stored descriptors as float32 rows; None when any is missing, when they come from
    more than one embedding, or (``model``: a sha256 or tag) from another than ``model``."""
    found = descriptors_model(blobs)
    if found is None or (model is not None and found != model_tag(model)):
        return None
    # The v1 model's descriptors may be stored tagged (since the tag) and untagged (before).
    joined = b"".join(b[DESCRIPTOR_TAG_BYTES:] if len(b) % 2 else b for b in blobs)  # type: ignore[arg-type]
    return np.frombuffer(joined, np.float16).reshape(len(blobs), -1).astype(np.float32)


def null_sample(n: int, cap: int) -> np.ndarray:
    """The rows a set's null is measured on: all n, or a fixed (seeded, sorted) sample of
    ``cap`` of them, so a set revision always gets the same null."""
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, cap, replace=False))


def nearest_other_similarity(vectors: np.ndarray) -> np.ndarray:
    """Each (sampled) real image's cosine similarity to its nearest other real image."""
    return nearest_others(vectors, null_sample(len(vectors), MAX_NULL_QUERIES))[1]


def nearest_others(vectors: np.ndarray, picked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each picked row of ``vectors``: the index of its most similar other row and that
    similarity, in blocks of bounded size."""
    index = np.empty(len(picked), np.int64)
    similarity = np.empty(len(picked), np.float32)
    rows = _block_rows(len(vectors))
    for lo in range(0, len(picked), rows):
        chunk = picked[lo : lo + rows]
        sims = vectors[chunk] @ vectors.T
        sims[np.arange(len(chunk)), chunk] = -np.inf
        best = sims.argmax(axis=1)
        index[lo : lo + len(chunk)] = best
        similarity[lo : lo + len(chunk)] = sims[np.arange(len(chunk)), best]
    return index, similarity


def _block_rows(references: int) -> int:
    return max(1, BLOCK_SIMILARITIES // max(references, 1))


def calibrate_copies(vectors: np.ndarray, quantile: float, min_images: int) -> CopyRule | None:
    """The set's copy rule; None when it has fewer than ``min_images`` images."""
    if len(vectors) < max(min_images, 2):
        return None
    return rule_from_null(nearest_other_similarity(vectors), quantile, len(vectors))


def rule_from_null(null: np.ndarray, quantile: float, n_images: int) -> CopyRule:
    """The rule from real images' similarities to their nearest other real image (exact
    here, through the embedding index for sets too large to compare with every image)."""
    null = np.sort(null)
    # The similarity exceeded by at most `quantile` of the real images' nearest neighbours.
    allowed = int(np.floor(quantile * len(null)))
    threshold = float(np.nextafter(null[-1 - allowed], np.inf)) if allowed < len(null) else 1.0
    percentiles = {
        f"p{p}": round(float(np.percentile(null, p)), 4) for p in (5, 25, 50, 75, 95, 100)
    }
    return CopyRule(min(threshold, 1.0), quantile, n_images, percentiles)


def nearest_real(generated: np.ndarray, real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per generated vector: the index of the most similar real vector, and the similarity."""
    best = np.empty(len(generated), np.int64)
    sim = np.empty(len(generated), np.float32)
    rows = _block_rows(len(real))
    for lo in range(0, len(generated), rows):
        block = generated[lo : lo + rows] @ real.T
        best[lo : lo + rows] = block.argmax(axis=1)
        sim[lo : lo + rows] = block[np.arange(len(block)), best[lo : lo + rows]]
    return best, sim
