"""Nearest-neighbour search over packed binary hashes by Hamming distance (XOR + popcount).

Hashes are rows of uint64 words. The search walks (query chunk x reference block) tiles so
memory stays bounded however many queries or references there are; no Python loop per pair.
Distances are summed in uint8, one vectorised add per word: a 256-bit distance of exactly 256
(a complement hash) wraps to 0, so results that could have picked such a pair are checked
against their true distances and the few wrong rows/columns are recomputed exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Pairs compared per tile. numpy's per-call cost (~1 us, several calls a tile) wants big
#: tiles; cache wants small ones. Measured best near 2**18 pairs (2 MiB of XOR words).
_BLOCK_PAIRS = 262_144
#: References compared per tile at most; with a million references one query row of the
#: tile would otherwise not fit in cache.
_REF_BLOCK = 32_768
#: Queries whose chosen candidates are verified at once (bounds the verification's memory).
_VERIFY_ROWS = 65_536
#: Queries whose tiles share one per-reference improvement check (see _Tiles._columns): with
#: narrow tiles that check, not the distances, was 13% of a 1,000,000 x 10,000 search.
_GROUP_QUERIES = 256
#: Keys for top-k > 1 pack (distance << _KEY_SHIFT) | column into a uint32 (uint64 for uint16).
_KEY_SHIFT = 24
#: Up to 4 words (256 bits) a uint8 sum wraps only at exactly 256, the largest distance, which
#: the repair relies on; wider hashes (never produced by the service) are summed in uint16.
_UINT8_MAX_WORDS = 4


def pack_words(hash_bytes: np.ndarray) -> np.ndarray:
    """(n, nbytes) uint8 -> (n, nbytes/8) uint64 words, the layout every search here uses."""
    hash_bytes = np.ascontiguousarray(hash_bytes, dtype=np.uint8)
    if hash_bytes.shape[1] % 8:
        raise ValueError("hash length must be a multiple of 64 bits")
    return hash_bytes.view(np.uint64)


def distance_block(
    queries: np.ndarray,
    references: np.ndarray,
    xor_buffer: np.ndarray | None = None,
    count_buffer: np.ndarray | None = None,
) -> np.ndarray:
    """Exact Hamming distances (len(queries), len(references)): uint8 for one word, else uint16.

    The slow, never-wrapping reference kernel; nearest() uses it only to repair wrapped rows.
    """
    n_q, n_r = len(queries), len(references)
    words = queries.shape[1]
    xor = np.empty((n_q, n_r), np.uint64) if xor_buffer is None else xor_buffer[:n_q]
    count = np.empty((n_q, n_r), np.uint8) if count_buffer is None else count_buffer[:n_q]
    np.bitwise_xor(queries[:, 0, None], references[None, :, 0], out=xor)
    np.bitwise_count(xor, out=count)
    if words == 1:
        return count
    acc = count.astype(np.uint16)  # 256-bit distances reach 256: more than uint8 holds
    for w in range(1, words):
        np.bitwise_xor(queries[:, w, None], references[None, :, w], out=xor)
        np.bitwise_count(xor, out=count)
        acc += count
    return acc


def _pair_distances(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """True distances of paired rows (same leading shape), as int32."""
    counts = np.bitwise_count(queries ^ references)
    return counts.sum(axis=-1, dtype=np.int32)


@dataclass
class SearchResult:
    """For each query: its top_k nearest references; for each reference: the closest query."""

    indices: np.ndarray  # (n_queries, k) int64, nearest first, ties broken by lower index
    distances: np.ndarray  # (n_queries, k) int32
    reference_min: np.ndarray  # (n_references,) int32; -1 when there are no queries
    reference_argmin: np.ndarray  # (n_references,) int64; -1 when there are no queries


def nearest(
    queries: np.ndarray,
    references: np.ndarray,
    top_k: int = 1,
    exclude_self: bool = False,
    exclude: np.ndarray | None = None,
) -> SearchResult:
    """Top-k nearest references for every query by Hamming distance.

    ``exclude_self`` (queries is references) skips the diagonal, for real-vs-real calibration;
    ``exclude[i]`` names one reference that query i must skip (a sample of the references).
    An excluded pair counts as the distance dtype's maximum (255 for 64-bit hashes, else
    65535), which is what ``reference_min`` reports for a reference no query could reach.
    """
    if exclude_self:
        exclude = np.arange(len(queries))
    n_q, n_r = len(queries), len(references)
    if queries.ndim != 2 or references.ndim != 2 or queries.shape[1] != references.shape[1]:
        raise ValueError("queries and references must be (n, words) arrays of equal width")
    k = min(top_k, n_r - (1 if exclude is not None else 0))
    indices = np.full((n_q, max(k, 0)), -1, dtype=np.int64)
    distances = np.full((n_q, max(k, 0)), -1, dtype=np.int32)
    ref_min = np.full(n_r, -1, dtype=np.int32)
    ref_arg = np.full(n_r, -1, dtype=np.int64)
    if n_q == 0 or n_r == 0 or k <= 0:
        return SearchResult(indices, distances, ref_min, ref_arg)
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=np.int64)
    words = queries.shape[1]
    wrapped = _Tiles(queries, references, k, exclude).run()
    best_d, best_i, col_min, col_arg = wrapped
    indices[:] = best_i
    ref_arg[:] = col_arg
    if words == 1 or words > _UINT8_MAX_WORDS:
        # Nothing wraps, and the exclusion mark (the dtype's max) is above every distance.
        distances[:] = best_d
        ref_min[:] = col_min
        return SearchResult(indices, distances, ref_min, ref_arg)
    _repair_rows(queries, references, k, exclude, best_d, indices, distances)
    _repair_columns(queries, references, exclude, col_min, ref_min, ref_arg)
    return SearchResult(indices, distances, ref_min, ref_arg)


class _Tiles:
    """The uint8 pass: per-query top-k and per-reference argmin of wrapped distances.

    Wrapped distances are true distances except that 256 reads as 0 and an excluded pair
    reads as 255; selection is by (wrapped distance, index), exactly what the repair assumes.
    Hashes wider than 256 bits are summed in uint16, which neither wraps nor needs repair.
    """

    def __init__(
        self, queries: np.ndarray, references: np.ndarray, k: int, exclude: np.ndarray | None
    ) -> None:
        self.n_q, self.n_r = len(queries), len(references)
        self.words = queries.shape[1]
        self.k = k
        self.exclude = exclude
        self.q_planes = queries.T  # (words, n_q) view: q_planes[w, s:e, None] is a column
        self.r_planes = np.ascontiguousarray(references.T)  # (words, n_r): contiguous rows
        self.ref_block = min(self.n_r, _REF_BLOCK)
        self.chunk = max(1, min(self.n_q, _BLOCK_PAIRS // self.ref_block))
        self.xor = np.empty((self.chunk, self.ref_block), np.uint64)
        dtype = np.uint8 if self.words <= _UINT8_MAX_WORDS else np.uint16
        self.mark = np.iinfo(dtype).max
        self.count = np.empty((self.chunk, self.ref_block), np.uint8)
        self.acc = np.empty((self.chunk, self.ref_block), dtype) if self.words > 1 else None
        self.block_min = np.empty(self.ref_block, dtype)
        self.better = np.empty(self.ref_block, bool)
        self.group = max(1, _GROUP_QUERIES // self.chunk)
        self.group_min = np.empty(self.ref_block, dtype)
        self.group_start = -1
        self.col_min = np.empty(self.n_r, dtype)
        self.col_arg = np.empty(self.n_r, np.int64)
        self.best_d = np.empty((self.n_q, k), dtype)
        self.best_i = np.empty((self.n_q, k), np.int64)
        if k > 1:
            self.key_dtype = np.uint32 if dtype == np.uint8 else np.uint64
            self.key = np.empty((self.chunk, self.ref_block), self.key_dtype)
            self.columns = np.arange(self.ref_block, dtype=np.uint32)
            self.best_key = np.full((self.n_q, k), np.iinfo(np.int64).max, dtype=np.int64)

    def run(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        for r0 in range(0, self.n_r, self.ref_block):
            r1 = min(r0 + self.ref_block, self.n_r)
            self.group_start = -1
            for start in range(0, self.n_q, self.chunk):
                stop = min(start + self.chunk, self.n_q)
                dist = self._distances(start, stop, r0, r1)
                self._columns(dist, start, stop, r0, r1)
                if self.k == 1:
                    self._top1(dist, start, stop, r0)
                else:
                    self._topk(dist, start, stop, r0)
            self._flush_group(self.n_q, r0, r1)
        if self.k > 1:
            self.best_d[:] = self.best_key // self.n_r
            self.best_i[:] = self.best_key % self.n_r
        return self.best_d, self.best_i, self.col_min, self.col_arg

    def _distances(self, start: int, stop: int, r0: int, r1: int) -> np.ndarray:
        rows, width = stop - start, r1 - r0
        xor = self.xor[:rows, :width]
        count = self.count[:rows, :width]
        dist = count if self.acc is None else self.acc[:rows, :width]
        np.bitwise_xor(self.q_planes[0, start:stop, None], self.r_planes[0, r0:r1], out=xor)
        np.bitwise_count(xor, out=dist)
        for w in range(1, self.words):
            np.bitwise_xor(self.q_planes[w, start:stop, None], self.r_planes[w, r0:r1], out=xor)
            np.bitwise_count(xor, out=count)
            np.add(dist, count, out=dist)  # uint8: wraps only at exactly 256
        if self.exclude is not None:
            local = self.exclude[start:stop] - r0
            inside = np.flatnonzero((local >= 0) & (local < width))
            dist[inside, local[inside]] = self.mark
        return dist

    def _columns(self, dist: np.ndarray, start: int, stop: int, r0: int, r1: int) -> None:
        """Per-reference closest query; chunks come in ascending order, so strict < keeps
        the lowest query index among ties, and the argmin runs only where a column improves.

        Tiles of few queries are checked in groups of about _GROUP_QUERIES queries: their
        column minima are merged first, and the improved columns' argmin is recomputed over
        the group's queries (few columns improve once many queries have been seen)."""
        width = r1 - r0
        col_min = self.col_min[r0:r1]
        if start == 0:
            np.minimum.reduce(dist, axis=0, out=col_min)
            self.col_arg[r0:r1] = dist.argmin(axis=0)
            return
        if self.group > 1:
            group_min = self.group_min[:width]
            if self.group_start < 0:
                self.group_start = start
                np.minimum.reduce(dist, axis=0, out=group_min)
            else:
                np.minimum.reduce(dist, axis=0, out=self.block_min[:width])
                np.minimum(group_min, self.block_min[:width], out=group_min)
            if stop - self.group_start >= self.group * self.chunk:
                self._flush_group(stop, r0, r1)
            return
        block_min = self.block_min[:width]
        better = self.better[:width]
        np.minimum.reduce(dist, axis=0, out=block_min)
        np.less(block_min, col_min, out=better)
        if better.any():
            cols = np.flatnonzero(better)
            col_min[cols] = block_min[cols]
            self.col_arg[r0 + cols] = dist[:, cols].argmin(axis=0) + start

    def _flush_group(self, stop: int, r0: int, r1: int) -> None:
        """Apply a group's merged column minima (queries group_start..stop)."""
        start, self.group_start = self.group_start, -1
        if start < 0:
            return
        width = r1 - r0
        col_min = self.col_min[r0:r1]
        group_min = self.group_min[:width]
        better = np.less(group_min, col_min, out=self.better[:width])
        if not better.any():
            return
        cols = np.flatnonzero(better)
        col_min[cols] = group_min[cols]
        self.col_arg[r0 + cols] = self._wrapped(start, stop, r0 + cols).argmin(axis=0) + start

    def _wrapped(self, start: int, stop: int, ref_ids: np.ndarray) -> np.ndarray:
        """The tiles' (wrapped, exclusion-marked) distances for some queries x references."""
        refs = self.r_planes[:, ref_ids]
        dist = np.bitwise_count(self.q_planes[0, start:stop, None] ^ refs[0])
        dist = dist.astype(self.best_d.dtype)
        for w in range(1, self.words):
            dist += np.bitwise_count(self.q_planes[w, start:stop, None] ^ refs[w])
        if self.exclude is not None:
            dist[self.exclude[start:stop, None] == ref_ids[None, :]] = self.mark
        return dist

    def _top1(self, dist: np.ndarray, start: int, stop: int, r0: int) -> None:
        best_i = self.best_i[start:stop, 0]
        if r0 == 0:
            dist.argmin(axis=1, out=best_i)
            self.best_d[start:stop, 0] = dist[np.arange(stop - start), best_i]
            return
        local = dist.argmin(axis=1)
        value = dist[np.arange(stop - start), local]
        best_d = self.best_d[start:stop, 0]
        improve = value < best_d  # earlier blocks hold lower indices: keep them on ties
        np.copyto(best_d, value, where=improve)
        np.copyto(best_i, local + r0, where=improve)

    def _topk(self, dist: np.ndarray, start: int, stop: int, r0: int) -> None:
        rows, width = dist.shape
        key = self.key[:rows, :width]
        np.left_shift(dist, _KEY_SHIFT, out=key, dtype=self.key_dtype)
        np.bitwise_or(key, self.columns[:width], out=key)
        kk = min(self.k, width)
        part = np.partition(key, kk - 1, axis=1)[:, :kk] if kk < width else key.copy()
        found_d = (part >> _KEY_SHIFT).astype(np.int64)
        found_i = (part & ((1 << _KEY_SHIFT) - 1)).astype(np.int64) + r0
        # Global keys distance * n_r + index (n_r * 256 fits int64), merged with earlier blocks.
        merged = np.concatenate([self.best_key[start:stop], found_d * self.n_r + found_i], axis=1)
        merged.sort(axis=1)
        self.best_key[start:stop] = merged[:, : self.k]


def _repair_rows(
    queries: np.ndarray,
    references: np.ndarray,
    k: int,
    exclude: np.ndarray | None,
    wrapped_d: np.ndarray,
    indices: np.ndarray,
    distances: np.ndarray,
) -> None:
    """True distances of the chosen candidates; rows whose choice involved a wrapped (256)
    or excluded pair are recomputed exactly.

    Why this suffices: wrapped order equals true order on every other pair, and in the true
    order those pairs come after all others (256 is the largest distance, exclusion larger
    still). So if no chosen candidate is one of them, the choice is the true top-k.
    """
    bad: list[np.ndarray] = []
    for s in range(0, len(queries), _VERIFY_ROWS):
        e = min(s + _VERIFY_ROWS, len(queries))
        chosen = indices[s:e]
        true = _pair_distances(queries[s:e, None, :], references[chosen])
        distances[s:e] = true
        wrong = np.any(true != wrapped_d[s:e], axis=1)
        if exclude is not None:
            wrong |= np.any(chosen == exclude[s:e, None], axis=1)
        bad.append(np.flatnonzero(wrong) + s)
    rows = np.concatenate(bad)
    if rows.size:
        sub_exclude = None if exclude is None else exclude[rows]
        indices[rows], distances[rows] = _exact_topk(queries[rows], references, k, sub_exclude)


def _repair_columns(
    queries: np.ndarray,
    references: np.ndarray,
    exclude: np.ndarray | None,
    wrapped_min: np.ndarray,
    ref_min: np.ndarray,
    ref_arg: np.ndarray,
) -> None:
    """The same check for each reference's closest query (see _repair_rows)."""
    true = _pair_distances(queries[ref_arg], references)
    ref_min[:] = true
    wrong = true != wrapped_min
    if exclude is not None:
        wrong |= exclude[ref_arg] == np.arange(len(references))
    cols = np.flatnonzero(wrong)
    if cols.size:
        ref_min[cols], ref_arg[cols] = _exact_column_min(queries, references, cols, exclude)


def _exact_topk(
    queries: np.ndarray, references: np.ndarray, k: int, exclude: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by (true distance, index) with the never-wrapping kernel, in bounded blocks."""
    n_q, n_r = len(queries), len(references)
    mark = np.iinfo(np.uint16).max
    best = np.full((n_q, k), np.iinfo(np.int64).max, dtype=np.int64)
    ref_block = min(n_r, _REF_BLOCK)
    chunk = max(1, min(n_q, _BLOCK_PAIRS // ref_block))
    for r0 in range(0, n_r, ref_block):
        r1 = min(r0 + ref_block, n_r)
        for s in range(0, n_q, chunk):
            e = min(s + chunk, n_q)
            dist = distance_block(queries[s:e], references[r0:r1]).astype(np.int64)
            if exclude is not None:
                local = exclude[s:e] - r0
                inside = np.flatnonzero((local >= 0) & (local < r1 - r0))
                dist[inside, local[inside]] = mark
            key = dist * n_r + np.arange(r0, r1)
            kk = min(k, r1 - r0)
            part = np.partition(key, kk - 1, axis=1)[:, :kk] if kk < r1 - r0 else key
            merged = np.concatenate([best[s:e], part], axis=1)
            merged.sort(axis=1)
            best[s:e] = merged[:, :k]
    return best % n_r, (best // n_r).astype(np.int32)


def _exact_column_min(
    queries: np.ndarray, references: np.ndarray, cols: np.ndarray, exclude: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Closest query (lowest index on ties) for the references ``cols``, exactly."""
    refs = references[cols]
    mark = np.iinfo(np.uint16).max
    col_min = np.full(len(cols), np.iinfo(np.int32).max, dtype=np.int32)
    col_arg = np.full(len(cols), -1, dtype=np.int64)
    chunk = max(1, _BLOCK_PAIRS // max(1, len(cols)))
    for s in range(0, len(queries), chunk):
        e = min(s + chunk, len(queries))
        dist = distance_block(queries[s:e], refs).astype(np.int32)
        if exclude is not None:
            dist[exclude[s:e, None] == cols[None, :]] = mark
        block_min = dist.min(axis=0)
        better = np.flatnonzero(block_min < col_min)
        col_min[better] = block_min[better]
        col_arg[better] = dist[:, better].argmin(axis=0) + s
    return col_min, col_arg
