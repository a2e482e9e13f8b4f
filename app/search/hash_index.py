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

Wide chunks: chunk 2p of each pair (2p, 2p + 1) is sorted by the 32-bit key (chunk 2p's value,
chunk 2p + 1's value), so its 16-bit buckets stay contiguous and the same reference list also
answers probes of the pair as one 32-bit chunk (same pigeonhole over 8 chunks for 256-bit
hashes, 2 for 64-bit, up to 3 bits each). With 32-bit keys a probe reaches ~0.001 of
10,000,000 references instead of ~150, so from ~8 bits on the candidates no longer dominate:
the probes do (C(32, <=3) = 5,489 keys at 3 bits). A 2**32-bucket table is impossible, so a
probe first tests a bitmap of the pair's hashed keys (2**27 bits: ~1 in 16 absent keys passes)
and only then np.searchsorted over the pair's sorted keys. The extra units go to the pairs
that reached the fewest references within base - 1 bits (probing every pair's extra shell to
count it would cost more than it saves). Per query block the search takes whichever plan
costs less (see _choose): 16-bit, by its exact candidate counts, or 32-bit, by its probe
count. At 10,000,000 CT-like hashes (bench/bench_archive_search.py) the 32-bit plan is taken
at every radius it covers: 10x (9 bits) to 20x (17 bits) faster, for 1.4 GB of index files
instead of 0.9 GB (the 32-bit keys 40 MB and bitmap 16 MB per pair).

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

from app.npy_files import load_npy

CHUNK_BITS = 16
KEYS = 1 << CHUNK_BITS
#: Probing a chunk at most this many bits from the query's value (2,517 buckets at 4).
MAX_CHUNK_RADIUS = 4
WIDE_BITS = 2 * CHUNK_BITS
#: Probing a 32-bit chunk at most this many bits from the query's (5,489 keys at 3).
MAX_WIDE_RADIUS = 3
#: A 32-bit probe (bitmap test, a binary search where the bit is set) costs about this many
#: checked candidates of a 16-bit plan.
WIDE_PROBE_COST = 0.5
#: Probes looked up at once (bounds the search's memory: ~60 bytes each).
MAX_PROBES = 2_000_000
#: The presence bitmap of a 32-bit chunk has about this many bits per reference (so ~1 of 16
#: probes of an absent key passes it), at most 2**27 bits (16 MiB) per chunk.
_PRESENCE_BITS_PER_REFERENCE = 16
_MAX_PRESENCE_BITS = 27
#: Keys are hashed (Fibonacci hashing) before the bitmap: probes are a query key's near
#: neighbours, which would otherwise share its bit (10x more false positives on CT hashes).
_PRESENCE_MULTIPLIER = np.uint32(0x9E3779B1)
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
FORMAT_VERSION = 2

_CHUNK_WEIGHT = np.bitwise_count(np.arange(KEYS, dtype=np.uint16))
#: XOR masks of each shell: values with exactly t bits set, t = 0..MAX_CHUNK_RADIUS.
_SHELLS = [
    np.flatnonzero(np.equal(_CHUNK_WEIGHT, t)).astype(np.uint16)
    for t in range(MAX_CHUNK_RADIUS + 1)
]


def _wide_shells() -> list[np.ndarray]:
    """XOR masks of each shell of a 32-bit key, t = 0..MAX_WIDE_RADIUS (built from 16-bit
    shells: t bits split between the high and the low half)."""
    shells = []
    for t in range(MAX_WIDE_RADIUS + 1):
        parts = [
            (_SHELLS[high].astype(np.uint32)[:, None] << 16 | _SHELLS[t - high][None, :]).ravel()
            for high in range(t + 1)
        ]
        shells.append(np.sort(np.concatenate(parts)))
    return shells


_WIDE_SHELLS = _wide_shells()


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
    """Packed hashes (n, words) uint64 and, per 16-bit chunk, the references sorted by it
    (chunk 2p's by the 32-bit key of the pair (2p, 2p + 1)), with the pairs' sorted keys."""

    def __init__(
        self,
        words: np.ndarray,
        bit_order: np.ndarray,
        order: np.ndarray,
        starts: np.ndarray,
        wide_keys: np.ndarray,
        presence: np.ndarray,
    ) -> None:
        self.words = words
        #: Bits, most variable first dealt round-robin to the chunks (see chunk_bit_order).
        self.bit_order = bit_order
        #: (chunks, n) uint32: reference ids sorted by the chunk's value (odd chunks stable:
        #: ascending ids; even chunk 2p by the pair's 32-bit key, see wide_keys).
        self.order = order
        #: (chunks, KEYS + 1) int64: bucket k of chunk c is order[c, starts[c,k]:starts[c,k+1]].
        self.starts = starts
        self.counts = np.diff(starts, axis=1).astype(np.int64)
        #: (chunks // 2, n) uint32: pair p's keys (chunk 2p << 16 | chunk 2p + 1) in the order
        #: of order[2p], i.e. sorted.
        self.wide_keys = wide_keys
        #: (chunks // 2, 2**b / 8) uint8: bit k of pair p is set when some key hashes to k.
        self.presence = presence
        self._presence_shift = WIDE_BITS - (presence.shape[1] * 8).bit_length() + 1

    @property
    def size(self) -> int:
        return len(self.words)

    @property
    def chunks(self) -> int:
        return self.order.shape[0]

    @property
    def pairs(self) -> int:
        return self.wide_keys.shape[0]

    @property
    def nbytes(self) -> int:
        """Memory the index holds: hashes, tables, bucket offsets, 32-bit keys and bitmaps."""
        return (
            self.words.nbytes
            + self.order.nbytes
            + self.starts.nbytes
            + self.counts.nbytes
            + self.wide_keys.nbytes
            + self.presence.nbytes
        )

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
        pairs = chunks // 2
        presence_bits = min(
            _MAX_PRESENCE_BITS, max(3, (len(words) * _PRESENCE_BITS_PER_REFERENCE).bit_length())
        )
        order = np.empty((chunks, len(words)), np.uint32)
        starts = np.zeros((chunks, KEYS + 1), np.int64)
        wide_keys = np.empty((pairs, len(words)), np.uint32)
        presence = np.empty((pairs, 1 << (presence_bits - 3)), np.uint8)
        for c in range(chunks):
            column = np.ascontiguousarray(values[:, c])
            if c % 2 == 0 and c + 1 < chunks:
                key = column.astype(np.uint32) << 16 | values[:, c + 1]
                order[c] = np.argsort(key, kind="stable")
                wide_keys[c // 2] = key[order[c]]
                present = np.zeros(1 << presence_bits, bool)
                present[_presence_slot(wide_keys[c // 2], WIDE_BITS - presence_bits)] = True
                presence[c // 2] = np.packbits(present, bitorder="little")
            else:
                order[c] = np.argsort(column, kind="stable")
            np.cumsum(np.bincount(column, minlength=KEYS), out=starts[c, 1:])
        return cls(words, bit_order, order, starts, wide_keys, presence)

    # -- on disk -----------------------------------------------------------------------------

    _ARRAYS = ("words", "bit_order", "order", "starts", "wide_keys", "presence")

    def save(self, folder: Path) -> None:
        """Write the index as a folder of .npy files, atomically (a reader sees all or none)."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            for name in self._ARRAYS:
                np.save(staging / f"{name}.npy", getattr(self, name))
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
        mapped = {
            name: np.asarray(load_npy(folder / f"{name}.npy", mmap_mode="r"))
            for name in ("words", "order", "wide_keys", "presence")
        }
        return cls(
            mapped["words"],
            load_npy(folder / "bit_order.npy"),
            mapped["order"],
            load_npy(folder / "starts.npy"),
            mapped["wide_keys"],
            mapped["presence"],
        )

    # -- search ------------------------------------------------------------------------------

    def prunes(self, queries: np.ndarray, radius: int) -> bool:
        """Whether probing beats scanning every reference for these queries at ``radius``."""
        if radius < 0 or self.size == 0 or len(queries) == 0:
            return False
        cost = sum(
            self._choose(queries[s : s + _QUERY_BLOCK], radius)[1]
            for s in range(0, len(queries), _QUERY_BLOCK)
        )
        return cost * CANDIDATE_COST_IN_PAIRS < len(queries) * self.size

    def search(self, queries: np.ndarray, radius: int) -> Pairs:
        """Every (query, reference) pair within ``radius``, plus the other pairs the
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

    def _choose(self, queries: np.ndarray, radius: int) -> tuple[bool, float]:
        """Whether the 32-bit plan is the cheaper one for these queries, and the cost of the
        cheaper one in checked candidates (inf: neither plan covers ``radius``)."""
        cost = np.inf
        base, extra = divmod(radius + 1, self.chunks)
        if (base if extra else base - 1) <= MAX_CHUNK_RADIUS:
            cost = float(self._plan(queries, radius)[2])
        probes = self._wide_probes(radius)
        if probes == np.inf or self.size == 0:
            return False, cost
        wide = probes * len(queries) * WIDE_PROBE_COST
        return wide < cost, min(cost, wide)

    def _wide_probes(self, radius: int) -> float:
        """32-bit probes per query at ``radius`` (inf where no plan of them covers it)."""
        if self.pairs == 0:
            return np.inf
        base, extra = divmod(radius + 1, self.pairs)
        if (base if extra else base - 1) > MAX_WIDE_RADIUS:
            return np.inf
        ball = sum(len(_WIDE_SHELLS[t]) for t in range(base))
        return float(self.pairs * max(ball, 1) + (extra * len(_WIDE_SHELLS[base]) if extra else 0))

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
        wide, cost = self._choose(block, radius)
        if cost == np.inf:
            raise ValueError(f"no probe plan covers radius {radius}: scan (see prunes)")
        if wide:
            per_query = int(self._wide_probes(radius))
            step = max(1, MAX_PROBES // per_query)
            if stop - start > step:
                parts = [
                    self._search_block(queries, s, min(stop, s + step), radius)
                    for s in range(start, stop, step)
                ]
                return tuple(np.concatenate(p) for p in zip(*parts, strict=True))
            probe_q, row, lo, lengths = self._with_some_reached(
                block, *self._wide_probes_of(block, radius)
            )
            needed = 0
        else:
            radii, _base, reached = self._plan(block, radius)
            lengths = None
            if reached <= MAX_CANDIDATES or stop - start == 1:
                probe_q, row, lo, lengths = self._narrow_probes_of(block, radii)
            needed = self.chunks - radius if self._counts_hits(radius) else 0
        if lengths is None or (int(lengths.sum()) > MAX_CANDIDATES and stop - start > 1):
            middle = (start + stop) // 2
            left = self._search_block(queries, start, middle, radius)
            right = self._search_block(queries, middle, stop, radius)
            return tuple(np.concatenate([a, b]) for a, b in zip(left, right, strict=True))
        return self._verify(block, start, probe_q, row, lo, lengths, needed)

    def _with_some_reached(
        self,
        block: np.ndarray,
        probe_q: np.ndarray,
        row: np.ndarray,
        lo: np.ndarray,
        lengths: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The probes, plus for each query they reach no reference for, its own bucket in the
        chunk where that is smallest but not empty. 32-bit probes reach nothing for most
        images without a source, and a caller scans a query that reached nothing (to report
        the nearest reference beyond the radius: app.services.indexed_matching); a few
        references that share a chunk with it are a near one, as the 16-bit plan reaches."""
        reached = np.zeros(len(block), bool)
        reached[probe_q] = True
        lonely = np.flatnonzero(~reached)
        if not len(lonely):
            return probe_q, row, lo, lengths
        values = chunk_values(block[lonely], self.bit_order).astype(np.int64)
        counts = self.counts[np.arange(self.chunks)[None, :], values]
        chunk = np.argmin(np.where(counts > 0, counts, np.iinfo(np.int64).max), axis=1)
        value = np.take_along_axis(values, chunk[:, None], axis=1)[:, 0]
        count = counts[np.arange(len(lonely)), chunk]
        some = count > 0
        lonely, chunk, value, count = lonely[some], chunk[some], value[some], count[some]
        return (
            np.concatenate([probe_q, lonely]),
            np.concatenate([row, chunk]),
            np.concatenate([lo, self.starts[chunk, value]]),
            np.concatenate([lengths, count]),
        )

    def _narrow_probes_of(
        self, block: np.ndarray, radii: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(query, chunk, first position in order[chunk], length) of every non-empty bucket
        the 16-bit plan ``radii`` probes."""
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
        return probe_q[hit], probe_c[hit], lo[hit], lengths[hit]

    def _wide_probes_of(
        self, block: np.ndarray, radius: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(query, chunk 2p, first position in order[2p], length) of every present 32-bit key
        the 32-bit plan probes: radius + 1 units, ``base`` for every pair and one more for
        the ``extra`` pairs that reached the fewest references within base - 1 bits."""
        values = chunk_values(block, self.bit_order)
        keys = values[:, 0::2].astype(np.uint32) << 16 | values[:, 1::2]
        base, extra = divmod(radius + 1, self.pairs)
        # Pair-major: one pair's bitmap and keys are probed at a time (they stay cached).
        p_all, q_all = np.nonzero(np.ones(keys.shape[::-1], bool))
        inner = np.concatenate(_WIDE_SHELLS[:base]) if base else _WIDE_SHELLS[0]
        probe_q, probe_p, lo, lengths = self._lookup(q_all, p_all, keys[q_all, p_all], inner)
        reached = np.zeros(keys.shape, np.int64)
        np.add.at(reached, (probe_q, probe_p), lengths)
        if not extra:
            return probe_q, 2 * probe_p, lo, lengths
        cheapest = np.argpartition(reached, extra - 1, axis=1)[:, :extra]
        chosen = np.zeros(keys.shape, bool)
        np.put_along_axis(chosen, cheapest, True, axis=1)
        if base == 0:  # the probes above were the chosen pairs' own keys and the proxy
            keep = chosen[probe_q, probe_p]
            return probe_q[keep], 2 * probe_p[keep], lo[keep], lengths[keep]
        p_ext, q_ext = np.nonzero(chosen.T)
        more = self._lookup(q_ext, p_ext, keys[q_ext, p_ext], _WIDE_SHELLS[base])
        probe_q, probe_p, lo, lengths = (
            np.concatenate([a, b])
            for a, b in zip((probe_q, probe_p, lo, lengths), more, strict=True)
        )
        return probe_q, 2 * probe_p, lo, lengths

    def _lookup(
        self, query: np.ndarray, pair: np.ndarray, key: np.ndarray, masks: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(query, pair, first position, length) of each key ``key ^ mask`` that is present
        in its pair's sorted keys."""
        probe_key = key[:, None] ^ masks  # (rows, masks)
        slot = _presence_slot(probe_key, self._presence_shift).astype(np.int64)
        slot += (pair.astype(np.int64) * (self.presence.shape[1] * 8))[:, None]
        flags = self.presence.reshape(-1)[slot >> 3] >> (slot & 7).astype(np.uint8)
        maybe = np.flatnonzero(flags & 1)
        row = maybe // len(masks)
        # Sorted per pair: consecutive binary searches then share their cached path.
        combined = pair[row].astype(np.int64) << 32 | probe_key.reshape(-1)[maybe]
        by_key = np.argsort(combined)
        row = row[by_key]
        combined = combined[by_key]
        lo_parts, length_parts, found_parts = [], [], []
        bounds = np.searchsorted(combined >> 32, np.arange(self.pairs + 1))
        for p in range(self.pairs):
            needles = (combined[bounds[p] : bounds[p + 1]] & 0xFFFFFFFF).astype(np.uint32)
            keys = self.wide_keys[p]
            lo = np.searchsorted(keys, needles, "left")
            # ~1 in 16 absent keys passes the bitmap: the key at lo tells.
            found = np.flatnonzero(keys[np.minimum(lo, len(keys) - 1)] == needles)
            lo = lo[found]
            length_parts.append(np.searchsorted(keys, needles[found], "right") - lo)
            lo_parts.append(lo)
            found_parts.append(found + bounds[p])
        row = row[np.concatenate(found_parts)]
        return (
            query[row],
            pair[row].astype(np.int64),
            np.concatenate(lo_parts).astype(np.int64),
            np.concatenate(length_parts).astype(np.int64),
        )

    def _verify(
        self,
        block: np.ndarray,
        start: int,
        probe_q: np.ndarray,
        row: np.ndarray,
        lo: np.ndarray,
        lengths: np.ndarray,
        needed: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The distinct (query, reference) pairs in order[row, lo:lo + length] (those found at
        least ``needed`` times, see _enough_hits), with true distances, sorted."""
        total = int(lengths.sum())
        first = np.cumsum(lengths) - lengths
        flat = np.repeat(row * self.size + lo - first, lengths) + np.arange(total)
        reference = self.order.reshape(-1)[flat].astype(np.int64)
        query = np.repeat(probe_q, lengths)
        # One row per pair (a reference may share several chunks with a query), sorted by
        # (query, reference); sorting beats np.unique's hash table here by 50x.
        pair_key = np.sort(query * self.size + reference)
        if len(pair_key):
            first_of_pair = np.flatnonzero(np.concatenate(([True], pair_key[1:] != pair_key[:-1])))
            if needed > 0:
                pair_key = _enough_hits(pair_key, first_of_pair, self.size, needed)
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


def _presence_slot(keys: np.ndarray, shift: int) -> np.ndarray:
    """The presence bitmap's bit of each 32-bit key (uint32 multiplication wraps)."""
    return (keys * _PRESENCE_MULTIPLIER) >> np.uint32(shift)


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
