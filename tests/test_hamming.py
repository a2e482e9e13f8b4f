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
