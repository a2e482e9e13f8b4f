"""Source matching proper: generated hashes -> nearest real hashes -> verdicts (no DB, no HTTP)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.imaging.phash import hex_to_bytes
from app.search.hamming import nearest, pack_words
from app.services.ingest import HashedImage


@dataclass
class MatchOutcome:
    matches: list[dict]
    real_summary: list[dict]

    @property
    def matched_count(self) -> int:
        return sum(1 for m in self.matches if m["source"] is not None)


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
        dist = result.distances[i]
        candidates = [
            {"filename": real_names[j], "distance": int(d)}
            for j, d in zip(idx, dist, strict=True)
            if j >= 0
        ]
        best = candidates[0] if candidates else None
        source = best["filename"] if best and best["distance"] <= threshold else None
        if source is not None:
            counts[idx[0]] += 1
        matches.append(
            {
                "generated": gen.filename,
                "phash": gen.phash,
                "source": source,
                "distance": best["distance"] if best else None,
                "candidates": candidates,
            }
        )
    summary = []
    for j, name in enumerate(real_names):
        closest = int(result.reference_argmin[j])
        summary.append(
            {
                "filename": name,
                "matched_count": int(counts[j]),
                "min_distance": int(result.reference_min[j]) if closest >= 0 else None,
                "closest_generated": generated[closest].filename if closest >= 0 else None,
                "verdict": "used" if counts[j] > 0 else "unused",
            }
        )
    return MatchOutcome(matches, summary)


def paper_lines(matches: Sequence[dict]) -> list[str]:
    """The seed paper's output lines (its figures 4 and 5)."""
    return [
        f"The source image for {m['generated']} is {m['source'] or 'None'} with {m['distance']}"
        for m in matches
    ]
