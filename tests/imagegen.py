"""Small synthetic test images (no real data needed): the project's own phantoms."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from app.training.synthetic import perturbed_copy, phantom

__all__ = ["encode", "perturbed_copy", "phantom", "png"]


def encode(img: np.ndarray | Image.Image, fmt: str = "PNG", **params) -> bytes:
    pil = img if isinstance(img, Image.Image) else Image.fromarray(img)
    buf = io.BytesIO()
    pil.save(buf, fmt, **params)
    return buf.getvalue()


def png(img: np.ndarray) -> bytes:
    return encode(img, "PNG")
