"""Synthetic CT-like data the project makes itself: phantoms and a simulated memorizing
generator. The shipped default artifacts are trained on this (no downloads, no patient data),
and the tests use it too."""

from __future__ import annotations

import cv2
import numpy as np


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
        angle = float(rng.uniform(-20, 20))
        cv2.ellipse(img, center, axes, angle, 0, 360, int(rng.integers(20, 60)), -1)
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


def simulated_generator(
    used: list[np.ndarray], n: int, seed: int = 0, copy_share: float = 0.7
) -> list[np.ndarray]:
    """A generator that memorized: warped, re-lit and blended copies of training images,
    plus novel images."""
    rng = np.random.default_rng(seed)
    out = []
    size = used[0].shape[0]
    for i in range(n):
        if rng.random() < copy_share:
            src = used[int(rng.integers(len(used)))]
            angle, scale = rng.uniform(-8, 8), rng.uniform(0.92, 1.08)
            m = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
            m[:, 2] += rng.uniform(-6, 6, 2)
            img = cv2.warpAffine(src, m, (size, size), borderMode=cv2.BORDER_REFLECT)
            img = img.astype(np.float64) * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20)
            if rng.random() < 0.3:
                other = used[int(rng.integers(len(used)))].astype(np.float64)
                img = 0.75 * img + 0.25 * other
            img = img + rng.normal(0, 4, img.shape)
            out.append(np.clip(img, 0, 255).astype(np.uint8))
        else:
            out.append(phantom(1_000_000 + seed * 10_000 + i, size))
    return out


def synthetic_devset(
    n_used: int = 80, n_unused: int = 80, n_generated: int = 300, size: int = 256, seed: int = 0
):
    """(used, unused, generated) grayscale images shaped like an ImageCLEF development set."""
    used = [phantom(seed * 100_000 + i, size) for i in range(n_used)]
    unused = [phantom(seed * 100_000 + 50_000 + i, size) for i in range(n_unused)]
    generated = simulated_generator(used, n_generated, seed=seed)
    return used, unused, generated
