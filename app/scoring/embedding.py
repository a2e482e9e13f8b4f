"""The copy-detection embedding served through onnxruntime only (no PyTorch at serving time).

A small CNN trained self-supervised (app/training/embedding.py) maps a grayscale image to an
L2-normalised descriptor; an edited copy of an image (warped, re-synthesised, noised, re-lit,
blended) lands near it by cosine similarity, a different slice does not.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from app.scoring.base import ModelInfo

#: Side of the square grayscale input the embedding was trained on (training imports it).
EMBED_SIDE = 96
#: Side images are first area-resized to; training edits its slices at this side.
WORK_SIDE = 128
#: Images per onnxruntime call when embedding a long list.
EMBED_BATCH = 64
log = logging.getLogger("memaudit.models")


def embedding_input(images: Sequence[np.ndarray], side: int = EMBED_SIDE) -> np.ndarray:
    """(n, 1, side, side) float32 in [0, 1], as in training (the network standardises each
    image itself): area-resized to WORK_SIDE (exactly 2x for 256 px slices, cheap), then
    bilinear to ``side`` (a generic area resize to 96 costs 4x more than the two)."""
    out = np.empty((len(images), 1, side, side), np.float32)
    for i, gray in enumerate(images):
        if gray.shape != (WORK_SIDE, WORK_SIDE) and gray.shape != (side, side):
            gray = cv2.resize(gray, (WORK_SIDE, WORK_SIDE), interpolation=cv2.INTER_AREA)
        if gray.shape != (side, side):
            gray = cv2.resize(gray, (side, side), interpolation=cv2.INTER_LINEAR)
        np.multiply(gray, np.float32(1 / 255), out=out[i, 0], casting="unsafe")
    return out


class EmbeddingModel:
    """The verified copy-detection embedding (models/embedding.onnx): a batch of grayscale
    uint8 images -> float32 (n, dim) unit vectors; cosine similarity = dot product."""

    name = "embedding"
    #: Not a /classify method: it scores nothing by itself (see app/scoring/methods.py).
    needs_generated = False

    def __init__(
        self, artifact: Path, info: ModelInfo, *, want_cuda: bool = True, threads: int = 0
    ) -> None:
        from app.scoring.cnn import open_session

        self.session, provider, why = open_session(artifact, want_cuda, threads=threads)
        self.info = ModelInfo(info.name, info.version, info.sha256, provider)
        self.execution_provider = provider
        self.load_note = why
        shape = self.session.get_inputs()[0].shape
        self.side = int(shape[-1]) if isinstance(shape[-1], int) else EMBED_SIDE
        self.dim = int(self.session.get_outputs()[0].shape[-1])
        if why:
            log.info("model %s runs on %s: %s", info.name, provider, why)
        else:
            log.info("model %s runs on %s", info.name, provider)

    def embed(self, images: Sequence[np.ndarray], batch: int = EMBED_BATCH) -> np.ndarray:
        """(n, dim) float32 L2-normalised descriptors of grayscale uint8 images."""
        out = np.empty((len(images), self.dim), np.float32)
        for lo in range(0, len(images), batch):
            chunk = [images[i] for i in range(lo, min(lo + batch, len(images)))]
            x = embedding_input(chunk, self.side)
            out[lo : lo + len(chunk)] = self.session.run(None, {"image": x})[0]
        # The graph normalises already; renormalise so float rounding never leaves |v| != 1.
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)
