"""Stored copy-detection descriptors name their embedding (app.search.copies): two
embeddings' descriptors are never decoded together, and untagged ones read as the v1 model."""

from __future__ import annotations

import numpy as np

from app.search.copies import (
    UNTAGGED_MODEL,
    descriptor_model,
    descriptors_model,
    model_tag,
    pack_descriptor,
    unit_vectors,
)

V1 = UNTAGGED_MODEL + "0" * 48  # a sha256 beginning with the v1 model's tag
OTHER = "ab" * 32


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_a_packed_descriptor_names_its_model_and_round_trips_through_float16():
    vectors = _vectors(3)
    blobs = [pack_descriptor(v, OTHER) for v in vectors]
    assert all(len(b) % 2 == 1 for b in blobs)  # odd: never mistaken for an untagged one
    assert {descriptor_model(b) for b in blobs} == {model_tag(OTHER)} == {"ab" * 8}
    decoded = unit_vectors(blobs, OTHER)
    assert decoded is not None
    np.testing.assert_allclose(decoded, vectors.astype(np.float16).astype(np.float32))


def test_untagged_descriptors_are_the_v1_models_and_decode_beside_tagged_v1_ones():
    vectors = _vectors(4)
    untagged = [v.astype(np.float16).tobytes() for v in vectors[:2]]
    tagged = [pack_descriptor(v, V1) for v in vectors[2:]]
    assert descriptors_model(untagged + tagged) == UNTAGGED_MODEL
    decoded = unit_vectors(untagged + tagged, V1)
    np.testing.assert_allclose(decoded, vectors.astype(np.float16).astype(np.float32))


def test_descriptors_of_another_or_of_several_models_are_not_decoded():
    vectors = _vectors(4)
    other = [pack_descriptor(v, OTHER) for v in vectors]
    v1 = [pack_descriptor(v, V1) for v in vectors]
    assert unit_vectors(other, V1) is None  # another embedding than asked for
    assert unit_vectors(other[:2] + v1[2:]) is None  # two embeddings in one list
    assert descriptors_model(other[:2] + v1[2:]) is None
    assert unit_vectors([*other[:3], None]) is None  # one missing
    assert unit_vectors(other) is not None  # no model asked: any one embedding
