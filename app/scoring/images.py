"""What scorers read: pixels on demand, plus the per-image features kept with the images.

A scorer that only needs a cheap global signal (thumbnails) for most images must not decode
them all; one that needs SIFT for a few should compute it once. Stored images override these
methods with features computed at upload and a feature cache; plain lists compute them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from app.imaging.features import Keypoints, sift_keypoints, thumbnails
from app.imaging.hashers import get_hasher
from app.scoring.base import ModelInfo


class Embedder(Protocol):
    """The copy-detection embedding as scorers use it (app.scoring.embedding.EmbeddingModel)."""

    info: ModelInfo

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray: ...


#: Images decoded at once when thumbnails have to be computed from pixels.
_THUMBNAIL_CHUNK = 256


class ImageSource(Sequence[np.ndarray]):
    """Grayscale uint8 images by index, with their thumbnails and SIFT keypoints."""

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index):  # type: ignore[override]
        raise NotImplementedError

    def thumbnails(self) -> np.ndarray:
        """(n, 1024) float32 normalised rows (see app.imaging.features.thumbnails)."""
        n = len(self)
        parts = [
            thumbnails([self[i] for i in range(lo, min(lo + _THUMBNAIL_CHUNK, n))])
            for lo in range(0, n, _THUMBNAIL_CHUNK)
        ]
        return np.concatenate(parts) if parts else thumbnails([])

    def keypoints(self, index: int) -> Keypoints:
        return sift_keypoints(self[index])

    def phash_bits(self, indices: Sequence[int], hash_size: int) -> np.ndarray:
        """pHash bits (n, hash_size**2) of the images at ``indices``, from their pixels."""
        return get_hasher("phash").hash_bits([self[i] for i in indices], hash_size)

    def embeddings(self, embedder: Embedder | None) -> np.ndarray | None:
        """(n, dim) unit copy-detection descriptors, or None without an embedder."""
        return None if embedder is None else embedder.embed(self)


class InMemoryImages(ImageSource):
    def __init__(self, images: Sequence[np.ndarray]) -> None:
        self._images = images

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index):  # type: ignore[override]
        return self._images[index]


def as_source(images: Sequence[np.ndarray]) -> ImageSource:
    return images if isinstance(images, ImageSource) else InMemoryImages(images)
