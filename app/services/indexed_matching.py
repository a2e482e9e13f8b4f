"""Source matching through the pHash index, for sets at or above MEMAUDIT_INDEX_MIN_IMAGES.

Exactly as brute force (app.services.source_matching.match_sources) within the threshold:
every generated image's source, its candidates within the threshold (same order, same
ties), every real image's verdict and matched count, and its closest generated image where
that one is within the threshold. Beyond the threshold an index does not scan: a generated
image's ``distance`` and remaining candidates are the nearest real images the index reached
(true distances, not necessarily the nearest; a generated image that reached none is
scanned, exactly), and a real image no generated image came within the threshold of lists
the closest generated image reached, or none.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from app.search.hamming import nearest
from app.search.hash_index import HashIndex, Pairs
from app.services.ingest import HashedImage
from app.services.source_matching import MatchOutcome, match_row, words_from_hex


def match_sources_indexed(
    real_names: Sequence[str],
    index: HashIndex,
    generated: Sequence[HashedImage],
    hash_size: int,
    threshold: int,
    top_k: int = 1,
) -> MatchOutcome | None:
    """The match through ``index``; None when probing would cost more than a scan at this
    threshold (the caller scans: app.services.source_matching.match_sources)."""
    gen_words = words_from_hex([g.phash for g in generated], hash_size)
    if not index.prunes(gen_words, threshold):
        return None
    pairs = _with_unreached_scanned(index.search(gen_words, threshold), gen_words, index, top_k)
    starts = np.searchsorted(pairs.query, np.arange(len(generated) + 1))
    matches: list[dict] = []
    counts = np.zeros(len(real_names), dtype=np.int64)
    for i, gen in enumerate(generated):
        rows = slice(starts[i], min(starts[i + 1], starts[i] + top_k))
        candidates = [
            (real_names[j], int(d))
            for j, d in zip(
                pairs.reference[rows].tolist(), pairs.distance[rows].tolist(), strict=True
            )
        ]
        best_name, best_distance = candidates[0] if candidates else (None, None)
        source = best_name if best_distance is not None and best_distance <= threshold else None
        if source is not None:
            counts[pairs.reference[starts[i]]] += 1
        matches.append(match_row(gen.filename, gen.phash, source, best_distance, candidates))
    # Each real image's closest generated image among the pairs: lowest query on ties.
    by_reference = np.lexsort((pairs.query, pairs.distance, pairs.reference))
    reference = pairs.reference[by_reference]
    first = np.concatenate(([True], reference[1:] != reference[:-1])) if len(reference) else []
    min_distances = np.full(len(real_names), -1, np.int64)
    closest = np.full(len(real_names), -1, np.int64)
    min_distances[reference[first]] = pairs.distance[by_reference][first]
    closest[reference[first]] = pairs.query[by_reference][first]
    gen_names = [g.filename for g in generated]
    return MatchOutcome(
        matches,
        real_names,
        counts,
        min_distances,
        [gen_names[c] if c >= 0 else None for c in closest.tolist()],
    )


def _with_unreached_scanned(
    pairs: Pairs, gen_words: np.ndarray, index: HashIndex, top_k: int
) -> Pairs:
    """Add, for generated images the probes reached no real image for, their exact top_k."""
    reached = np.zeros(len(gen_words), bool)
    reached[pairs.query] = True
    unreached = np.flatnonzero(~reached)
    if not len(unreached):
        return pairs
    found = nearest(gen_words[unreached], np.asarray(index.words), top_k=top_k)
    query = np.repeat(unreached, found.indices.shape[1])
    keep = found.indices.ravel() >= 0
    query = np.concatenate([pairs.query, query[keep]])
    reference = np.concatenate([pairs.reference, found.indices.ravel()[keep]])
    distance = np.concatenate([pairs.distance, found.distances.ravel()[keep]])
    order = np.lexsort((reference, distance, query))
    return Pairs(query[order], reference[order], distance[order].astype(np.int32))
