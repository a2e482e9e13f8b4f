"""Source matching proper: generated hashes -> nearest real hashes -> verdicts (no DB, no HTTP)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from app.imaging.phash import hex_to_bytes
from app.search.copies import CopyRule, nearest_real, unit_vectors
from app.search.hamming import nearest, pack_words
from app.services.copy_verification import Verification
from app.services.ingest import HashedImage


def verdict(matched_count: int) -> str:
    """A real image is ``used`` when some generated image has it as its source."""
    return "used" if matched_count > 0 else "unused"


def summary_row(
    filename: str, matched_count: int, min_distance: int, closest_generated: str | None
) -> dict:
    """One real image's entry of an answer's ``real_summary``; ``min_distance`` -1 (no
    generated image at all) is listed as None."""
    return {
        "filename": filename,
        "matched_count": int(matched_count),
        "min_distance": int(min_distance) if min_distance >= 0 else None,
        "closest_generated": closest_generated,
        "verdict": verdict(matched_count),
    }


def match_row(
    generated: str,
    phash: str,
    source: str | None,
    distance: int | None,
    candidates: Iterable[Sequence],
    copy_of: dict | None = None,
) -> dict:
    """One generated image's entry of an answer's ``matches``; ``candidates`` are
    (real filename, distance) pairs, nearest first."""
    return {
        "generated": generated,
        "phash": phash,
        "source": source,
        "distance": distance,
        "candidates": [{"filename": name, "distance": int(d)} for name, d in candidates],
        "copy_of": copy_of,
    }


def copy_row(
    real: str, similarity: float, phash_distance: int, verified_inliers: int | None = None
) -> dict:
    """A generated image's ``copy_of``: the real image it copies and the figures behind it;
    decided by verified keypoint inliers when they were counted, else by the embedding."""
    return {
        "real": real,
        "similarity": round(float(similarity), 4),
        "phash_distance": int(phash_distance),
        "decided_by": "embedding" if verified_inliers is None else "verified",
        "verified_inliers": None if verified_inliers is None else int(verified_inliers),
    }


def verified_words(copy: dict) -> str:
    """``, verified by N matching keypoints`` for a verified ``copy_of``, else nothing."""
    inliers = copy.get("verified_inliers")
    return "" if inliers is None else f", verified by {inliers} matching keypoints"


@dataclass(frozen=True)
class CopyDecision:
    """The similarity threshold ``copy_of`` was decided at (None: not decided) and why."""

    threshold: float | None
    rule: str


@dataclass
class MatchOutcome:
    """Per generated image its match; per real image arrays, not dicts: a set can hold a
    million images, and only the rows an answer lists are ever built as dicts."""

    matches: list[dict]
    real_names: Sequence[str]
    #: Generated images whose source is each real image.
    matched_counts: np.ndarray
    #: Distance to each real image's closest generated image, -1 when there is none.
    min_distances: np.ndarray
    #: Name of each real image's closest generated image, None when there is none.
    closest_generated: list[str | None]

    @property
    def matched_count(self) -> int:
        return sum(1 for m in self.matches if m["source"] is not None)

    @property
    def used_count(self) -> int:
        return int(np.count_nonzero(self.matched_counts))

    @property
    def copied_count(self) -> int:
        return sum(1 for m in self.matches if m.get("copy_of") is not None)

    def summary_rows(self, only_used: bool = False) -> list[dict]:
        """Real images' verdicts: ``used`` if some generated image maps to it."""
        picked = np.flatnonzero(self.matched_counts) if only_used else range(len(self.real_names))
        return [
            summary_row(
                self.real_names[j],
                self.matched_counts[j],
                self.min_distances[j],
                self.closest_generated[j],
            )
            for j in picked
        ]


def words_from_hex(hexes: Sequence[str], hash_size: int) -> np.ndarray:
    return pack_words(hex_to_bytes(hexes, hash_size))


def match_sources(
    real_names: Sequence[str],
    real_words: np.ndarray,
    generated: Sequence[HashedImage],
    hash_size: int,
    threshold: int,
    top_k: int = 1,
) -> MatchOutcome:
    """Map every generated image to its nearest real image; None when above ``threshold``."""
    gen_words = words_from_hex([g.phash for g in generated], hash_size)
    result = nearest(gen_words, real_words, top_k=top_k)
    matches: list[dict] = []
    counts = np.zeros(len(real_names), dtype=np.int64)
    for i, gen in enumerate(generated):
        idx = result.indices[i]
        candidates = [
            (real_names[j], int(d)) for j, d in zip(idx, result.distances[i], strict=True) if j >= 0
        ]
        best_name, best_distance = candidates[0] if candidates else (None, None)
        source = best_name if best_distance is not None and best_distance <= threshold else None
        if source is not None:
            counts[idx[0]] += 1
        matches.append(match_row(gen.filename, gen.phash, source, best_distance, candidates))
    closest = result.reference_argmin
    has_closest = closest >= 0
    gen_names = [g.filename for g in generated]
    return MatchOutcome(
        matches,
        real_names,
        counts,
        np.where(has_closest, result.reference_min, -1),
        [gen_names[c] if c >= 0 else None for c in closest.tolist()],
    )


def paper_lines(matches: Sequence[dict]) -> list[str]:
    """The seed paper's output lines (its figures 4 and 5)."""
    return [
        f"The source image for {m['generated']} is {m['source'] or 'None'} with {m['distance']}"
        for m in matches
    ]


def attribute_copies(
    outcome: MatchOutcome,
    generated: Sequence[HashedImage],
    real_words: np.ndarray,
    real_vectors: np.ndarray | None,
    rule: CopyRule,
    hash_size: int,
    find_nearest: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
) -> None:
    """Fill each match's ``copy_of`` by the copy-detection embedding: its most similar real
    image when the similarity reaches ``rule.threshold`` (a generated image without a
    descriptor keeps None). ``find_nearest`` (an embedding index's search, for sets too
    large to hold their descriptors) replaces the exact search over ``real_vectors``."""
    gen_vectors = unit_vectors([g.embedding for g in generated])
    if gen_vectors is None:
        return
    if find_nearest is not None:
        best, similarity = find_nearest(gen_vectors)
    else:
        best, similarity = nearest_real(gen_vectors, real_vectors)
    copies = np.flatnonzero(similarity >= rule.threshold)
    _fill_copies(outcome, generated, real_words, hash_size, copies, best, similarity, None)


def attribute_verified(
    outcome: MatchOutcome,
    generated: Sequence[HashedImage],
    real_words: np.ndarray,
    verification: Verification,
    hash_size: int,
) -> None:
    """Fill ``copy_of`` where the keypoints of a generated image and its most similar real
    image agree beyond the set's bar (app.services.copy_verification)."""
    v = verification
    copies = v.copies()
    _fill_copies(
        outcome, generated, real_words, hash_size, copies, v.nearest, v.similarity, v.inliers
    )


def _fill_copies(
    outcome: MatchOutcome,
    generated: Sequence[HashedImage],
    real_words: np.ndarray,
    hash_size: int,
    copies: np.ndarray,
    nearest: np.ndarray,
    similarity: np.ndarray,
    inliers: np.ndarray | None,
) -> None:
    """``copy_of`` rows for the ``copies`` (generated indices), with their pHash distance."""
    if not len(copies):
        return
    gen_words = words_from_hex([generated[i].phash for i in copies], hash_size)
    distances = np.bitwise_count(gen_words ^ real_words[nearest[copies]]).sum(axis=1)
    for i, distance in zip(copies.tolist(), distances.tolist(), strict=True):
        real = outcome.real_names[nearest[i]]
        verified = None if inliers is None else int(inliers[i])
        outcome.matches[i]["copy_of"] = copy_row(real, similarity[i], distance, verified)
