"""The multi-index hash index finds exactly the pairs a scan finds within a radius (it may
prune, never miss), on uniform and on clustered hashes, at and around the radius."""

from __future__ import annotations

import numpy as np
import pytest

from app.search import hash_index
from app.search.hamming import pack_words
from app.search.hash_index import HashIndex


def _flip(rng: np.random.Generator, bits: np.ndarray, count: int) -> np.ndarray:
    """A copy of ``bits`` with exactly ``count`` bits flipped."""
    out = bits.copy()
    out[rng.choice(len(bits), count, replace=False)] ^= True
    return out


def _clustered(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    """Hashes like a CT archive's: a few constant bits, families of near copies."""
    centres = rng.random((max(1, n // 40), bits)) < 0.5
    centres[:, : bits // 8] = True  # skewed chunks: crowded buckets
    family = centres[rng.integers(len(centres), size=n)]
    noise = rng.random((n, bits)) < rng.uniform(0, 0.15, size=(n, 1))
    return family ^ noise


def _pack(bits: np.ndarray) -> np.ndarray:
    return pack_words(np.packbits(bits, axis=1))


def _scan(q_bits: np.ndarray, r_bits: np.ndarray) -> np.ndarray:
    return (q_bits[:, None, :] != r_bits[None, :, :]).sum(axis=2)


def _within(pairs: hash_index.Pairs, radius: int) -> set[tuple[int, int, int]]:
    keep = pairs.distance <= radius
    return set(
        zip(
            pairs.query[keep].tolist(),
            pairs.reference[keep].tolist(),
            pairs.distance[keep].tolist(),
            strict=True,
        )
    )


def _expected(dist: np.ndarray, radius: int) -> set[tuple[int, int, int]]:
    q, r = np.nonzero(dist <= radius)
    return set(zip(q.tolist(), r.tolist(), dist[q, r].tolist(), strict=True))


@pytest.mark.parametrize("bits", [64, 256])
@pytest.mark.parametrize("kind", ["uniform", "clustered"])
def test_search_finds_exactly_the_pairs_a_scan_finds(bits, kind):
    rng = np.random.default_rng(bits + len(kind))
    r_bits = rng.random((3000, bits)) < 0.5 if kind == "uniform" else _clustered(rng, 3000, bits)
    radii = [0, 1, 3, 4, 5, 12] if bits == 64 else [0, 3, 15, 16, 17, 29, 50]
    # Queries at exactly each radius from some reference (the edge), and further ones.
    sources = rng.integers(len(r_bits), size=len(radii) * 8)
    offsets = [r + extra for r in radii for extra in (0, 0, 0, 1, 1, 2, bits // 8, bits // 3)]
    q_bits = np.array([_flip(rng, r_bits[s], d) for s, d in zip(sources, offsets, strict=True)])
    index = HashIndex.build(_pack(r_bits))
    dist = _scan(q_bits, r_bits)
    for radius in radii:
        assert_exact_at_the_edge(index, q_bits, dist, radius)


def assert_exact_at_the_edge(index, q_bits, dist, radius: int) -> None:
    """The pairs within ``radius`` are brute force's (some exactly at it), each with its
    true distance, sorted by (query, distance, reference)."""
    pairs = index.search(_pack(q_bits), radius)
    assert _within(pairs, radius) == _expected(dist, radius), radius
    assert any(d == radius for _, _, d in _within(pairs, radius))  # the edge was tested
    assert np.array_equal(pairs.distance, dist[pairs.query, pairs.reference])
    order = np.lexsort((pairs.reference, pairs.distance, pairs.query))
    assert np.array_equal(order, np.arange(len(order)))


def test_search_splits_large_candidate_sets_without_losing_pairs(monkeypatch):
    monkeypatch.setattr(hash_index, "MAX_CANDIDATES", 50)
    rng = np.random.default_rng(3)
    r_bits = _clustered(rng, 2000, 256)
    q_bits = np.array([_flip(rng, r_bits[i], 10) for i in range(0, 2000, 100)])
    pairs = HashIndex.build(_pack(r_bits)).search(_pack(q_bits), 20)
    assert _within(pairs, 20) == _expected(_scan(q_bits, r_bits), 20)


def test_saved_index_loads_and_answers_the_same(tmp_path):
    rng = np.random.default_rng(5)
    words = _pack(_clustered(rng, 1000, 256))
    index = HashIndex.build(words)
    index.save(tmp_path / "index")
    loaded = HashIndex.load(tmp_path / "index")
    assert np.array_equal(np.asarray(loaded.words), words)
    queries = words[::50]
    a, b = index.search(queries, 12), loaded.search(queries, 12)
    assert np.array_equal(a.reference, b.reference) and np.array_equal(a.query, b.query)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_prunes_only_where_probing_beats_a_scan():
    rng = np.random.default_rng(9)
    words = _pack(rng.random((20_000, 256)) < 0.5)
    index = HashIndex.build(words)
    assert index.prunes(words[:10], 8)  # 9 single-bucket probes of ~1 reference each
    assert not index.prunes(words[:10], 120)  # a radius no chunk plan covers
    assert not index.prunes(words[:0], 8)
    with pytest.raises(ValueError):
        index.search(words[:10], 120)


def test_empty_index_and_bad_queries():
    index = HashIndex.build(np.empty((0, 4), np.uint64))
    assert len(index.search(np.zeros((3, 4), np.uint64), 5).query) == 0
    with pytest.raises(ValueError):
        index.search(np.zeros((3, 1), np.uint64), 5)


@pytest.mark.parametrize("bits", [64, 256])
@pytest.mark.parametrize("plan", ["16-bit", "32-bit"])
def test_each_plan_alone_finds_exactly_the_pairs_a_scan_finds(bits, plan, monkeypatch):
    # The cheaper plan is chosen per block; here one is forced wherever it covers the radius.
    monkeypatch.setattr(hash_index, "WIDE_PROBE_COST", 0.0 if plan == "32-bit" else np.inf)
    rng = np.random.default_rng(bits + len(plan))
    r_bits = _clustered(rng, 4000, bits)
    # 32-bit chunks cover up to (MAX_WIDE_RADIUS + 1) * pairs - 1 bits: 7 of 64, 31 of 256.
    radii = [0, 1, 2, 5, 7] if bits == 64 else [0, 3, 7, 8, 9, 12, 17, 29, 31]
    sources = rng.integers(len(r_bits), size=len(radii) * 6)
    offsets = [r + extra for r in radii for extra in (0, 0, 0, 1, 2, bits // 8)]
    q_bits = np.array([_flip(rng, r_bits[s], d) for s, d in zip(sources, offsets, strict=True)])
    index = HashIndex.build(_pack(r_bits))
    dist = _scan(q_bits, r_bits)
    for radius in radii:
        wide, _cost = index._choose(_pack(q_bits), radius)
        assert wide == (plan == "32-bit"), radius
        assert_exact_at_the_edge(index, q_bits, dist, radius)


def test_32_bit_plan_splits_large_probe_and_candidate_sets_without_losing_pairs(monkeypatch):
    monkeypatch.setattr(hash_index, "WIDE_PROBE_COST", 0.0)
    monkeypatch.setattr(hash_index, "MAX_CANDIDATES", 50)
    monkeypatch.setattr(hash_index, "MAX_PROBES", 20_000)
    rng = np.random.default_rng(4)
    r_bits = _clustered(rng, 2000, 256)
    q_bits = np.array([_flip(rng, r_bits[i], 12) for i in range(0, 2000, 100)])
    pairs = HashIndex.build(_pack(r_bits)).search(_pack(q_bits), 25)
    assert _within(pairs, 25) == _expected(_scan(q_bits, r_bits), 25)


def test_32_bit_plan_reaches_a_reference_for_images_without_a_source(monkeypatch):
    # /match scans a query that reached nothing; 32-bit probes reach nothing for most novel
    # images, so each gets its smallest non-empty own 16-bit bucket (none: none anywhere).
    monkeypatch.setattr(hash_index, "WIDE_PROBE_COST", 0.0)
    rng = np.random.default_rng(6)
    r_words = _pack(rng.random((2000, 256)) < 0.5)
    q_words = _pack(rng.random((300, 256)) < 0.5)
    index = HashIndex.build(r_words)
    pairs = index.search(q_words, 9)
    assert not len(_within(pairs, 9))
    q_values = hash_index.chunk_values(q_words, index.bit_order)
    r_values = hash_index.chunk_values(r_words, index.bit_order)
    shares_a_chunk = np.array(
        [np.isin(q_values[:, c], r_values[:, c]) for c in range(index.chunks)]
    ).any(axis=0)
    assert 0 < shares_a_chunk.sum() < len(q_words)
    assert set(pairs.query.tolist()) == set(np.flatnonzero(shares_a_chunk).tolist())
    assert np.array_equal(
        pairs.distance,
        np.bitwise_count(r_words[pairs.reference] ^ q_words[pairs.query]).sum(axis=1),
    )
