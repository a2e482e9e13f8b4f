"""Exact Hamming radius search over millions of packed hashes by multi-index hashing.

Every hash is cut into m chunks of 16 bits (16 chunks for 256-bit pHashes, 4 for 64-bit) and,
per chunk, the references are listed sorted by that chunk's value (one table of 65,536
buckets per chunk). Pigeonhole: if a reference is within ``radius`` bits of a query, then for
any choice of per-chunk radii t_c with sum(t_c + 1) >= radius + 1, some chunk c differs in at
most t_c bits. So probing, in each chosen chunk, the buckets within t_c bits of the query's
chunk finds every reference within ``radius``: the index prunes, it never misses. Every
candidate is then checked with its true distance.

Per query the probe plan spends exactly radius + 1 units, giving the extra unit to the chunks
whose buckets are emptiest for that query (real pHashes are clustered: some chunk values are
shared by a large share of an archive, so which chunks are probed matters more than how many).
From radius chunks/4 to chunks - 1 every chunk's own bucket is probed instead, and only
references found in at least chunks - radius of them are checked: a reference within the
radius differs in at most radius chunks (the count filter of multi-index hashing).
When the plan would reach more references than a scan costs, :meth:`HashIndex.prunes` says so
and the caller scans (app.search.hamming), which is exact too.

Nothing here knows about sets, HTTP or the database: app.services.search_indices keeps one
index per set revision on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHUNK_BITS = 16
KEYS = 1 << CHUNK_BITS
#: Probing a chunk at most this many bits from the query's value (2,517 buckets at 4).
MAX_CHUNK_RADIUS = 4
#: A scan costs about this many candidate checks per compared pair: a checked candidate is a
#: random gather of its hash (a cache miss), a scanned pair a streamed XOR + popcount.
CANDIDATE_COST_IN_PAIRS = 40
#: Candidates gathered at once (bounds the search's memory: ~40 bytes each).
MAX_CANDIDATES = 4_000_000
#: References kept per query that no reference reached often enough (see _enough_hits).
_KEEP_UNMATCHED = 16
#: Queries planned and probed together.
_QUERY_BLOCK = 256
#: Hashes whose bits are reordered at once while building.
_BUILD_BLOCK = 1 << 20
FORMAT_VERSION = 1

_CHUNK_WEIGHT = np.bitwise_count(np.arange(KEYS, dtype=np.uint16))
#: XOR masks of each shell: values with exactly t bits set, t = 0..MAX_CHUNK_RADIUS.
_SHELLS = [
    np.flatnonzero(np.equal(_CHUNK_WEIGHT, t)).astype(np.uint16)
    for t in range(MAX_CHUNK_RADIUS + 1)
]


@dataclass(frozen=True)
class Pairs:
    """(query, reference, distance) rows with their true distances, sorted by (query,
    distance, reference): every pair within the searched radius, and other pairs the probes
    happened to reach (so each query's first row beyond the radius is a real image at that
    distance, not necessarily the nearest one)."""

    query: np.ndarray  # int64
    reference: np.ndarray  # int64
    distance: np.ndarray  # int32


class HashIndex:
    """Packed hashes (n, words) uint64 and, per 16-bit chunk, the references sorted by it."""

    def __init__(
        self, words: np.ndarray, bit_order: np.ndarray, order: np.ndarray, starts: np.ndarray
    ) -> None:
        self.words = words
        #: Bits, most variable first dealt round-robin to the chunks (see chunk_bit_order).
        self.bit_order = bit_order
        #: (chunks, n) uint32: reference ids sorted by the chunk's value (stable: ascending).
        self.order = order
        #: (chunks, KEYS + 1) int64: bucket k of chunk c is order[c, starts[c,k]:starts[c,k+1]].
        self.starts = starts
        self.counts = np.diff(starts, axis=1).astype(np.int64)

    @property
    def size(self) -> int:
        return len(self.words)

    @property
    def chunks(self) -> int:
        return self.order.shape[0]

    @property
    def nbytes(self) -> int:
        """Memory the index holds: hashes, tables and bucket offsets."""
        return self.words.nbytes + self.order.nbytes + self.starts.nbytes + self.counts.nbytes

    @classmethod
    def build(cls, words: np.ndarray) -> HashIndex:
        """Index packed hashes (see app.search.hamming.pack_words)."""
        words = np.ascontiguousarray(words, dtype=np.uint64)
        if len(words) >= 2**32:
            raise ValueError("at most 2**32 - 1 hashes per index")
        bit_order = chunk_bit_order(words)
        values = (
            np.concatenate(
                [
                    chunk_values(words[s : s + _BUILD_BLOCK], bit_order)
                    for s in range(0, len(words), _BUILD_BLOCK)
                ]
            )
            if len(words)
            else np.empty((0, words.shape[1] * 4), np.uint16)
        )
        chunks = values.shape[1]
        order = np.empty((chunks, len(words)), np.uint32)
        starts = np.zeros((chunks, KEYS + 1), np.int64)
        for c in range(chunks):
            column = np.ascontiguousarray(values[:, c])
            order[c] = np.argsort(column, kind="stable")
            np.cumsum(np.bincount(column, minlength=KEYS), out=starts[c, 1:])
        return cls(words, bit_order, order, starts)

    # -- on disk -----------------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        """Write the index as a folder of .npy files, atomically (a reader sees all or none)."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            np.save(staging / "words.npy", self.words)
            np.save(staging / "bit_order.npy", self.bit_order)
            np.save(staging / "order.npy", self.order)
            np.save(staging / "starts.npy", self.starts)
            meta = {"format": FORMAT_VERSION, "kind": "hamming-mih", "size": self.size}
            (staging / "meta.json").write_text(json.dumps(meta))
            os.rename(staging, folder)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not (folder / "meta.json").exists():  # not another process's finished copy
                raise

    @classmethod
    def load(cls, folder: Path) -> HashIndex:
        """Map a saved index (pages are read when first touched, and shared by every process
        of the host that maps the same files)."""
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("format") != FORMAT_VERSION or meta.get("kind") != "hamming-mih":
            raise ValueError(f"{folder} is not a hash index of format {FORMAT_VERSION}")
        # Plain arrays over the maps: np.memmap's own indexing is slower per call.
        words = np.asarray(np.load(folder / "words.npy", mmap_mode="r"))
        order = np.asarray(np.load(folder / "order.npy", mmap_mode="r"))
        starts = np.load(folder / "starts.npy")
        return cls(words, np.load(folder / "bit_order.npy"), order, starts)

    # -- search ------------------------------------------------------------------------------

    def prunes(self, queries: np.ndarray, radius: int) -> bool:
        """Whether probing beats scanning every reference for these queries at ``radius``."""
        if radius < 0 or self.size == 0 or len(queries) == 0:
            return False
        base, extra = divmod(radius + 1, self.chunks)
        if (base if extra else base - 1) > MAX_CHUNK_RADIUS:
            return False
        reached = sum(
            self._plan(queries[s : s + _QUERY_BLOCK], radius)[2]
            for s in range(0, len(queries), _QUERY_BLOCK)
        )
        return reached * CANDIDATE_COST_IN_PAIRS < len(queries) * self.size

    def search(self, queries: np.ndarray, radius: int) -> Pairs:
        """Every (query, reference) pair within ``radius`` bits, plus the other pairs the
        probes reached, with true distances (see :class:`Pairs`)."""
        queries = np.ascontiguousarray(queries, dtype=np.uint64)
        if queries.ndim != 2 or queries.shape[1] != self.words.shape[1]:
            raise ValueError("queries must be (n, words) arrays as wide as the index's hashes")
        if radius < 0:
            raise ValueError("radius must be >= 0")
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        start = 0
        while start < len(queries):
            stop = min(len(queries), start + _QUERY_BLOCK)
            parts.append(self._search_block(queries, start, stop, radius))
            start = stop
        if not parts:
            empty = np.empty(0, np.int64)
            return Pairs(empty, empty, np.empty(0, np.int32))
        query = np.concatenate([p[0] for p in parts])
        reference = np.concatenate([p[1] for p in parts])
        distance = np.concatenate([p[2] for p in parts])
        return Pairs(query, reference, distance)

    def _plan(self, queries: np.ndarray, radius: int) -> tuple[np.ndarray, int, int]:
        """Per query and chunk, the radius to probe at (-1: not probed); the base radius; and
        how many references the plan reaches (duplicates counted).

        radius + 1 units are spent: every chunk gets ``base`` units (radius base - 1) and the
        ``extra`` chunks whose shell at distance ``base`` holds the fewest references get one
        more."""
        base, extra = divmod(radius + 1, self.chunks)
        values = chunk_values(queries, self.bit_order)
        chunk_ids = np.arange(self.chunks)
        if self._counts_hits(radius):  # every chunk's own bucket, candidates filtered by hits
            reached = self.counts[chunk_ids[None, :], values].sum()
            return np.zeros(values.shape, np.int64), 0, int(reached)
        reached = np.zeros(len(queries), np.int64)
        for t in range(base):  # every chunk's ball of radius base - 1
            keys = values[:, :, None] ^ _SHELLS[t]
            reached += self.counts[chunk_ids[None, :, None], keys].sum(axis=(1, 2))
        radii = np.full(values.shape, base - 1, np.int64)
        if extra:
            keys = values[:, :, None] ^ _SHELLS[base]
            shell = self.counts[chunk_ids[None, :, None], keys].sum(axis=2)
            cheapest = np.argpartition(shell, extra - 1, axis=1)[:, :extra]
            np.put_along_axis(radii, cheapest, base, axis=1)
            reached += np.take_along_axis(shell, cheapest, axis=1).sum(axis=1)
        return radii, base, int(reached.sum())

    def _counts_hits(self, radius: int) -> bool:
        """Whether to probe every chunk's own bucket and check only references found in at
        least chunks - radius of them: one within ``radius`` differs in at most ``radius``
        chunks, so it is found in all the others. Worth it from a quarter of the chunks on
        (fewer: the cheapest radius + 1 buckets hold fewer references than all do)."""
        return 4 * (radius + 1) > self.chunks and radius < self.chunks

    def _search_block(
        self, queries: np.ndarray, start: int, stop: int, radius: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        block = queries[start:stop]
        radii, _base, reached = self._plan(block, radius)
        if reached > MAX_CANDIDATES and stop - start > 1:
            middle = (start + stop) // 2
            left = self._search_block(queries, start, middle, radius)
            right = self._search_block(queries, middle, stop, radius)
            return tuple(np.concatenate([a, b]) for a, b in zip(left, right, strict=True))
        values = chunk_values(block, self.bit_order)
        q_list, c_list, key_list = [], [], []
        for t in range(int(radii.max()) + 1):
            q_idx, c_idx = np.nonzero(radii >= t)  # shell t of every chunk probed at >= t
            masks = _SHELLS[t]
            q_list.append(np.repeat(q_idx, len(masks)))
            c_list.append(np.repeat(c_idx, len(masks)))
            key_list.append((values[q_idx, c_idx][:, None] ^ masks).ravel())
        probe_q = np.concatenate(q_list)
        probe_c = np.concatenate(c_list)
        probe_key = np.concatenate(key_list).astype(np.int64)
        lo = self.starts[probe_c, probe_key]
        lengths = self.starts[probe_c, probe_key + 1] - lo
        hit = lengths > 0
        probe_q, probe_c, lo, lengths = probe_q[hit], probe_c[hit], lo[hit], lengths[hit]
        total = int(lengths.sum())
        first = np.cumsum(lengths) - lengths
        flat = np.repeat(probe_c * self.size + lo - first, lengths) + np.arange(total)
        reference = self.order.reshape(-1)[flat].astype(np.int64)
        query = np.repeat(probe_q, lengths)
        # One row per pair (a reference may share several chunks with a query), sorted by
        # (query, reference); sorting beats np.unique's hash table here by 50x.
        pair_key = np.sort(query * self.size + reference)
        if len(pair_key):
            first_of_pair = np.flatnonzero(np.concatenate(([True], pair_key[1:] != pair_key[:-1])))
            if self._counts_hits(radius):
                pair_key = _enough_hits(pair_key, first_of_pair, self.size, self.chunks - radius)
            else:
                pair_key = pair_key[first_of_pair]
        query, reference = np.divmod(pair_key, self.size)
        distance = np.bitwise_count(self.words[reference] ^ block[query]).sum(
            axis=1, dtype=np.int32
        )
        # Stable: references stay ascending within each (query, distance).
        order = np.argsort(query * (self.words.shape[1] * 64 + 1) + distance, kind="stable")
        return query[order] + start, reference[order], distance[order]


def _enough_hits(
    pair_key: np.ndarray, first_of_pair: np.ndarray, size: int, needed: int
) -> np.ndarray:
    """Distinct pairs found in at least ``needed`` chunks; a query whose best reference was
    found in fewer keeps up to _KEEP_UNMATCHED of its best-found ones (so each query still
    reaches some reference beyond the radius, as other plans do)."""
    hits = np.diff(np.append(first_of_pair, len(pair_key)))
    pairs = pair_key[first_of_pair]
    query = pairs // size
    query_start = np.flatnonzero(np.concatenate(([True], query[1:] != query[:-1])))
    group = np.diff(np.append(query_start, len(query)))
    most = np.repeat(np.maximum.reduceat(hits, query_start), group)
    keep = hits >= needed
    fallback = np.flatnonzero((most < needed) & (hits == most))
    if len(fallback):  # rank among the query's best-found pairs
        fq = query[fallback]
        fstart = np.flatnonzero(np.concatenate(([True], fq[1:] != fq[:-1])))
        rank = np.arange(len(fq)) - np.repeat(fstart, np.diff(np.append(fstart, len(fq))))
        keep[fallback[rank < _KEEP_UNMATCHED]] = True
    return pairs[keep]


def chunk_bit_order(words: np.ndarray) -> np.ndarray:
    """A bit permutation that spreads the most variable bits over all chunks: bits sorted by
    how evenly they split the hashes, dealt round-robin. pHash's low frequencies (the first
    chunks as stored) are skewed in CT (the DC bit is constant), which crowds buckets; dealt,
    every chunk splits the archive about as well (5x fewer references per probed bucket in
    the worst chunks on real CT slices)."""
    bits = words.shape[1] * 64
    sample = words[:: max(1, len(words) // 100_000)]
    balance = np.zeros(bits)
    if len(sample):
        ones = np.unpackbits(np.ascontiguousarray(sample).view(np.uint8), axis=1).mean(axis=0)
        balance = np.minimum(ones, 1 - ones)
    by_balance = np.argsort(-balance, kind="stable")
    chunks = bits // CHUNK_BITS
    return np.concatenate([by_balance[c::chunks] for c in range(chunks)]).astype(np.int64)


def chunk_values(words: np.ndarray, bit_order: np.ndarray) -> np.ndarray:
    """(n, chunks) uint16: each hash's bits in ``bit_order``, cut into 16-bit chunks."""
    bits = np.unpackbits(np.ascontiguousarray(words).view(np.uint8), axis=1)
    return np.ascontiguousarray(np.packbits(bits[:, bit_order], axis=1)).view(np.uint16)
