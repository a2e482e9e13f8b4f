"""Small synthetic test images: CT-like phantoms and perturbed copies (no real data needed)."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image


def phantom(seed: int, size: int = 128) -> np.ndarray:
    """A chest-CT-like axial slice: bright body, two dark lungs, vessels, noise."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size), np.uint8)
    c = size // 2
    body = (int(c * rng.uniform(0.75, 0.95)), int(c * rng.uniform(0.55, 0.75)))
    cv2.ellipse(img, (c, c), body, 0, 0, 360, int(rng.integers(150, 200)), -1)
    for side in (-1, 1):
        center = (c + side * int(body[0] * rng.uniform(0.35, 0.5)), c + int(rng.integers(-6, 6)))
        axes = (int(body[0] * rng.uniform(0.25, 0.4)), int(body[1] * rng.uniform(0.5, 0.75)))
        cv2.ellipse(
            img, center, axes, float(rng.uniform(-20, 20)), 0, 360, int(rng.integers(20, 60)), -1
        )
    for _ in range(int(rng.integers(5, 20))):
        p = (int(rng.integers(0, size)), int(rng.integers(0, size)))
        cv2.circle(img, p, int(rng.integers(1, 6)), int(rng.integers(60, 255)), -1)
    noise = rng.normal(0, rng.uniform(2, 10), img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def perturbed_copy(img: np.ndarray, seed: int, strength: float = 1.0) -> np.ndarray:
    """What a memorizing generator emits: slightly shifted, re-lit, noisy copy."""
    rng = np.random.default_rng(seed)
    h, w = img.shape
    m = np.float32([[1, 0, rng.uniform(-1, 1) * strength], [0, 1, rng.uniform(-1, 1) * strength]])
    out = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    out = out.astype(np.float64) * rng.uniform(0.97, 1.03) + rng.normal(0, 2 * strength, img.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def encode(img: np.ndarray | Image.Image, fmt: str = "PNG", **params) -> bytes:
    pil = img if isinstance(img, Image.Image) else Image.fromarray(img)
    buf = io.BytesIO()
    pil.save(buf, fmt, **params)
    return buf.getvalue()


def png(img: np.ndarray) -> bytes:
    return encode(img, "PNG")
