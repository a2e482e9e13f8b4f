"""The IVF embedding index finds the exact most similar descriptor for nearly every query
on clustered synthetic descriptors, and answers exactly when every list is probed."""

from __future__ import annotations

import numpy as np

from app.search.copies import nearest_real
from app.search.vector_index import VectorIndex, default_lists


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _descriptors(rng: np.random.Generator, n: int, dim: int = 128) -> np.ndarray:
    """Families of similar descriptors (slices of one scan), as float16 like the database."""
    centres = _unit(rng.normal(size=(n // 50, dim)))
    family = centres[rng.integers(len(centres), size=n)]
    stored = _unit(family + rng.normal(scale=0.35 / np.sqrt(dim) * 4, size=(n, dim)))
    return stored.astype(np.float16).astype(np.float32)


def _copies(rng: np.random.Generator, vectors: np.ndarray, n: int) -> np.ndarray:
    """Queries near stored vectors (edited copies), plus some far from all (novel)."""
    near = vectors[rng.integers(len(vectors), size=n)]
    queries = _unit(near + rng.normal(scale=0.02, size=near.shape))
    queries[: n // 5] = _unit(rng.normal(size=(n // 5, vectors.shape[1])))
    return queries


def test_recall_at_one_against_exact_search():
    rng = np.random.default_rng(0)
    vectors = _descriptors(rng, 20_000)
    queries = _copies(rng, vectors, 500)
    exact_index, exact_sim = nearest_real(queries, vectors)
    found = VectorIndex.build(vectors, lists=64).search(queries, probe=8)
    copies = slice(len(queries) // 5, None)  # the first fifth are novel (far from all)
    recall = np.mean(found.indices[copies] == exact_index[copies])
    assert recall >= 0.99, recall
    # Where the same vector is found, its similarity is the exact search's.
    same = found.indices == exact_index
    assert np.allclose(found.similarities[same], exact_sim[same], atol=1e-5)
    # A wrong answer is never better than the true best.
    assert np.all(found.similarities <= exact_sim + 1e-5)


def test_probing_every_list_is_exact_with_exclusion():
    rng = np.random.default_rng(1)
    vectors = _descriptors(rng, 3000)
    index = VectorIndex.build(vectors, lists=16)
    picked = rng.choice(len(vectors), 200, replace=False)
    found = index.search(vectors[picked], probe=16, exclude=picked)
    sims = vectors[picked] @ vectors.T
    sims[np.arange(len(picked)), picked] = -np.inf
    assert np.array_equal(found.indices, sims.argmax(axis=1))
    assert not np.any(found.indices == picked)


def test_saved_index_loads_and_answers_the_same(tmp_path):
    rng = np.random.default_rng(2)
    vectors = _descriptors(rng, 4000)
    index = VectorIndex.build(vectors)
    index.save(tmp_path / "vectors")
    loaded = VectorIndex.load(tmp_path / "vectors")
    queries = _copies(rng, vectors, 100)
    assert np.array_equal(index.search(queries).indices, loaded.search(queries).indices)


def test_default_lists_grow_with_the_set():
    assert default_lists(0) == 1
    assert default_lists(1_000_000) == 1024
    assert default_lists(50_000) in (32, 64)
