"""Packed XOR+popcount search agrees with a brute-force comparison of unpacked bits."""

from __future__ import annotations

import numpy as np
import pytest

from app.search import hamming
from app.search.hamming import nearest, pack_words


def _random_hashes(rng, n, bits):
    return rng.random((n, bits)) > 0.5


def _brute(q_bits, r_bits):
    return (q_bits[:, None, :] != r_bits[None, :, :]).sum(axis=2)


@pytest.mark.parametrize("bits", [64, 256])
@pytest.mark.parametrize("top_k", [1, 3])
def test_nearest_matches_brute_force(bits, top_k, monkeypatch):
    monkeypatch.setattr(hamming, "_BLOCK_PAIRS", 7 * 70)  # force many query chunks
    monkeypatch.setattr(hamming, "_REF_BLOCK", 16)  # ... and reference blocks
    rng = np.random.default_rng(bits + top_k)
    q_bits, r_bits = _random_hashes(rng, 300, bits), _random_hashes(rng, 70, bits)
    r_bits[5] = r_bits[9] = r_bits[40]  # exact ties, within and across reference blocks
    q = pack_words(np.packbits(q_bits, axis=1))
    r = pack_words(np.packbits(r_bits, axis=1))
    result = nearest(q, r, top_k=top_k)
    dist = _brute(q_bits, r_bits)
    order = np.lexsort((np.broadcast_to(np.arange(70), dist.shape), dist), axis=1)[:, :top_k]
    assert np.array_equal(result.indices, order)
    assert np.array_equal(result.distances, np.take_along_axis(dist, order, axis=1))
    assert np.array_equal(result.reference_min, dist.min(axis=0))
    assert np.array_equal(result.reference_argmin, dist.argmin(axis=0))


def test_exclude_self_skips_diagonal():
    rng = np.random.default_rng(7)
    bits = _random_hashes(rng, 50, 64)
    words = pack_words(np.packbits(bits, axis=1))
    result = nearest(words, words, top_k=1, exclude_self=True)
    dist = _brute(bits, bits)
    np.fill_diagonal(dist, 10**6)
    assert np.array_equal(result.distances[:, 0], dist.min(axis=1))
    assert not np.any(result.indices[:, 0] == np.arange(50))


def test_empty_inputs():
    words = np.zeros((0, 1), np.uint64)
    result = nearest(words, np.zeros((3, 1), np.uint64))
    assert result.indices.shape == (0, 1)
    assert list(result.reference_min) == [-1, -1, -1]


def test_exclude_skips_one_named_reference_per_query(monkeypatch):
    monkeypatch.setattr(hamming, "_REF_BLOCK", 50)
    rng = np.random.default_rng(11)
    bits = _random_hashes(rng, 120, 256)
    words = pack_words(np.packbits(bits, axis=1))
    picked = np.array([0, 7, 63, 119])
    result = nearest(words[picked], words, top_k=1, exclude=picked)
    dist = _brute(bits[picked], bits)
    dist[np.arange(len(picked)), picked] = 10**6
    assert np.array_equal(result.distances[:, 0], dist.min(axis=1))
    assert not np.any(result.indices[:, 0] == picked)


def _expected(q_bits, r_bits, top_k, exclude):
    """Brute-force semantics: top-k by (distance, index); an excluded pair counts as the
    distance dtype's maximum (255 for one word, else 65535), as nearest() documents."""
    dist = _brute(q_bits, r_bits).astype(np.int64)
    if exclude is not None:
        dist[np.arange(len(q_bits)), exclude] = 255 if q_bits.shape[1] == 64 else 65535
    k = min(top_k, len(r_bits) - (exclude is not None))
    order = np.lexsort((np.broadcast_to(np.arange(len(r_bits)), dist.shape), dist), axis=1)
    order = order[:, :k]
    return order, np.take_along_axis(dist, order, axis=1), dist.min(axis=0), dist.argmin(axis=0)


def _check(q_bits, r_bits, top_k=1, exclude=None, exclude_self=False):
    q = pack_words(np.packbits(q_bits, axis=1))
    r = q if exclude_self else pack_words(np.packbits(r_bits, axis=1))
    result = nearest(q, r, top_k=top_k, exclude=exclude, exclude_self=exclude_self)
    if exclude_self:
        exclude = np.arange(len(q_bits))
    order, dist, ref_min, ref_arg = _expected(q_bits, r_bits, top_k, exclude)
    assert np.array_equal(result.indices, order)
    assert np.array_equal(result.distances, dist)
    assert np.array_equal(result.reference_min, ref_min)
    assert np.array_equal(result.reference_argmin, ref_arg)
    assert result.indices.dtype == np.int64 and result.distances.dtype == np.int32
    assert result.reference_min.dtype == np.int32 and result.reference_argmin.dtype == np.int64


def _tied_hashes(rng, n, bits, pool=6, flips=2):
    """Hashes drawn from a few base hashes with a couple of bits flipped: many exact ties,
    duplicates and, with their complements mixed in, distances of exactly 0 and `bits`."""
    base = _random_hashes(rng, pool, bits)
    out = base[rng.integers(0, pool, n)].copy()
    rows = np.repeat(np.arange(0, n, 2), flips)  # odd rows stay exact copies of a base hash
    out[rows, rng.integers(0, bits, len(rows))] ^= True
    complement = rng.random(n) < 0.3
    out[complement] = ~out[complement]
    return out


@pytest.fixture
def small_blocks(monkeypatch):
    """Tiles of a handful of pairs so every test crosses query-chunk and reference-block
    boundaries (including partial last tiles) and the verification's row blocks."""
    monkeypatch.setattr(hamming, "_BLOCK_PAIRS", 5 * 13)
    monkeypatch.setattr(hamming, "_REF_BLOCK", 13)
    monkeypatch.setattr(hamming, "_VERIFY_ROWS", 7)
    monkeypatch.setattr(hamming, "_GROUP_QUERIES", 17)  # per-reference checks in groups


@pytest.mark.parametrize("bits", [64, 128, 256, 576])
@pytest.mark.parametrize("top_k", [1, 2, 5, 80])
@pytest.mark.parametrize("mode", ["none", "self", "exclude"])
@pytest.mark.parametrize("seed", [0, 1])
def test_brute_force_agreement_with_ties_and_complements(bits, top_k, mode, seed, small_blocks):
    rng = np.random.default_rng([bits, top_k, seed])
    q_bits = _tied_hashes(rng, 61, bits)
    r_bits = q_bits if mode == "self" else _tied_hashes(rng, 47, bits)
    exclude = rng.integers(0, 47, 61) if mode == "exclude" else None
    _check(q_bits, r_bits, top_k, exclude=exclude, exclude_self=mode == "self")


@pytest.mark.parametrize("blocks", [(7 * 70, 16), (10**6, 10**6), (3, 1)])
@pytest.mark.parametrize("top_k", [1, 4])
def test_random_hashes_any_tiling(blocks, top_k, monkeypatch):
    monkeypatch.setattr(hamming, "_BLOCK_PAIRS", blocks[0])
    monkeypatch.setattr(hamming, "_REF_BLOCK", blocks[1])
    rng = np.random.default_rng(top_k)
    for bits in (64, 256):
        _check(_random_hashes(rng, 90, bits), _random_hashes(rng, 33, bits), top_k)


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_complement_hashes_256(top_k, small_blocks):
    """A complement is 256 bits away; summed in uint8 it would read 0 and win."""
    rng = np.random.default_rng(3)
    q_bits = _random_hashes(rng, 20, 256)
    # Each query's complement, then an exact copy of query 0 placed after its complement,
    # then unrelated hashes: the complement must rank last, never first.
    r_bits = np.concatenate([~q_bits, q_bits[:1], _random_hashes(rng, 3, 256)])
    _check(q_bits, r_bits, top_k)
    # Only complements as references: every distance is 256 and top-k is by index.
    _check(q_bits[:5], ~q_bits[:5], top_k)
    # A true 0 with a lower index than the complement: the answer 0 stands.
    _check(q_bits[:4], np.concatenate([q_bits[:4], ~q_bits[:4]]), top_k)
    # reference_min: a reference whose every query is its complement.
    _check(~np.repeat(q_bits[:1], 6, axis=0), q_bits[:2], top_k)


def test_exclusion_mark_never_beats_a_true_255(small_blocks):
    """For 256 bits an excluded pair is marked 255 in uint8, which ties with a true 255 at
    a higher index; the excluded reference must still never be chosen."""
    rng = np.random.default_rng(5)
    q_bits = _random_hashes(rng, 4, 256)
    far = ~q_bits.copy()
    far[:, 0] = q_bits[:, 0]  # distance 255 from its query
    r_bits = np.concatenate([q_bits, far, ~q_bits])
    _check(q_bits, r_bits, 1, exclude=np.arange(4))
    _check(q_bits, r_bits, 3, exclude=np.arange(4))
    # One query: each reference sees only it, the excluded one reports the mark 65535.
    _check(q_bits[:1], r_bits, 2, exclude=np.array([0]))
