"""Scorers read stored copy-detection descriptors only when they came from the embedding
scoring them (app.services.classification.StoredImages): others are computed again."""

from __future__ import annotations

import hashlib

import numpy as np

from app.scoring.artifacts import ModelArtifacts
from app.search.copies import pack_descriptor
from app.services.classification import ImageRef, StoredImages
from app.storage import ImageStore
from tests.helpers import REPO_MODELS
from tests.imagegen import phantom, png


def test_descriptors_of_another_embedding_are_computed_again(tmp_path):
    embedder = ModelArtifacts(REPO_MODELS, want_cuda=False).load().embedding()
    store = ImageStore(tmp_path / "images")
    images = [png(phantom(i, 128)) for i in range(4)]
    digests = [hashlib.sha256(b).hexdigest() for b in images]
    for digest, data in zip(digests, images, strict=True):
        store.put(digest, data)
    fresh = StoredImages(store, [ImageRef(f"{i}.png", d) for i, d in enumerate(digests)], 10**8)
    truth = fresh.embeddings(embedder)
    assert truth is not None

    # Distinguishable stand-ins: the reversed order of the true descriptors.
    def refs(model_sha256: str) -> list[ImageRef]:
        return [
            ImageRef(f"{i}.png", d, embedding=pack_descriptor(truth[3 - i], model_sha256))
            for i, d in enumerate(digests)
        ]

    own = StoredImages(store, refs(embedder.info.sha256), 10**8).embeddings(embedder)
    np.testing.assert_allclose(own, truth[::-1], atol=2e-3)  # stored ones, as float16
    other = StoredImages(store, refs("ab" * 32), 10**8).embeddings(embedder)
    np.testing.assert_allclose(other, truth, atol=1e-6)  # computed again from the pixels
    assert StoredImages(store, refs(embedder.info.sha256), 10**8).embeddings(None) is None
