"""Per-image features for membership scoring: normalised thumbnails and SIFT keypoints.

Pure image code (no HTTP, no database). Thumbnails give a global similarity (normalised
cross-correlation = dot product); SIFT keypoints with RANSAC give a geometric one that
survives the warps, re-lighting and blending that memorizing generators apply.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

THUMBNAIL_SIDE = 32
#: SIFT keypoints kept per image for the reference auditor's copy verification (the shipped
#: SIFT-KNN model has its own count, app.scoring.sift_knn.BOVW_SIFT_FEATURES).
VERIFICATION_SIFT_FEATURES = 300
#: Gaussian pre-blur (pixels) before SIFT: keypoints on anatomy, not on CT noise grain.
SIFT_PRE_BLUR = 1.0
#: Lowe's ratio test and the RANSAC reprojection error (pixels at 256x256).
RATIO = 0.8
REPROJECTION_PX = 4.0


def thumbnail_pixels(gray: np.ndarray, side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """The (side, side) uint8 area-average of an image: 1 KB, computed once when the image
    is uploaded and stored, so scoring never has to decode a whole batch again."""
    return cv2.resize(gray, (side, side), interpolation=cv2.INTER_AREA)


def normalise_thumbnails(pixels: np.ndarray) -> np.ndarray:
    """(n, side*side) uint8 -> float32 rows with zero mean and unit norm: row . row = NCC."""
    rows = pixels.reshape(len(pixels), -1).astype(np.float32)
    rows -= rows.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    flat = norms[:, 0] <= 1e-6
    rows /= np.where(flat[:, None], 1.0, norms)
    rows[flat] = 0.0
    return rows


def thumbnails(images: list[np.ndarray], side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """(n, side*side) float32 rows, zero mean and unit norm: row dot row = NCC."""
    if not len(images):
        return np.empty((0, side * side), np.float32)
    return normalise_thumbnails(np.stack([thumbnail_pixels(g, side) for g in images]))


@dataclass
class Keypoints:
    points: np.ndarray  # (n, 2) float32 pixel coordinates
    descriptors: np.ndarray  # (n, 128) float32

    def __len__(self) -> int:
        return len(self.points)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Compact form for storage: SIFT descriptor values are integers 0..255."""
        return {"points": self.points, "descriptors": self.descriptors.astype(np.uint8)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Keypoints:
        return cls(arrays["points"].astype(np.float32), arrays["descriptors"].astype(np.float32))


def _as_256(gray: np.ndarray, side: int = 256) -> np.ndarray:
    """SIFT parameters (and the RANSAC pixel tolerance) are tuned at 256 px: every image is
    brought to a longest side of 256 (or ``side``), so keypoints of all images share a scale."""
    h, w = gray.shape
    scale = side / max(h, w)
    if abs(scale - 1.0) < 1e-6:
        return gray
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)


def sift_keypoints(gray: np.ndarray, n_features: int = VERIFICATION_SIFT_FEATURES) -> Keypoints:
    image = _as_256(gray)
    image = cv2.GaussianBlur(image, (0, 0), SIFT_PRE_BLUR)
    sift = cv2.SIFT_create(nfeatures=n_features)
    kps, desc = sift.detectAndCompute(image, None)
    if desc is None or not kps:
        return Keypoints(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32))
    return Keypoints(np.float32([k.pt for k in kps]), desc.astype(np.float32))


def verified_inliers(
    query: Keypoints,
    train: Keypoints,
    reprojection_px: float = REPROJECTION_PX,
    norm: int = cv2.NORM_L2,
) -> int:
    """Matches between two images that survive the ratio test and a RANSAC similarity fit
    (``norm``: cv2.NORM_HAMMING for binary descriptors, given as uint8)."""
    if len(query) < 3 or len(train) < 3:
        return 0
    matcher = cv2.BFMatcher(norm)
    pairs = matcher.knnMatch(query.descriptors, train.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance]
    if len(good) < 4:
        return 0
    src = query.points[[m.queryIdx for m in good]]
    dst = train.points[[m.trainIdx for m in good]]
    _model, mask = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=reprojection_px
    )
    return int(mask.sum()) if mask is not None else 0


@dataclass(frozen=True)
class CopyVerifier:
    """Keypoints and RANSAC-verified matches that check a ``copy_of`` candidate pair:
    ``detector`` (sift or orb) on the image brought to ``side`` px, ``n_features`` kept.
    The pre-blur and the RANSAC tolerance scale with ``side`` (both are tuned at 256 px)."""

    detector: str = "sift"
    side: int = 256
    n_features: int = VERIFICATION_SIFT_FEATURES

    @property
    def kind(self) -> str:
        """Feature-store kind: changed parameters never read another variant's files."""
        return f"copy-{self.detector}-{self.side}-{self.n_features}-v1"

    def keypoints(self, gray: np.ndarray) -> Keypoints:
        image = _as_256(gray, self.side)
        if self.detector == "orb":
            found = cv2.ORB_create(nfeatures=self.n_features, edgeThreshold=15, patchSize=15)
        else:
            image = cv2.GaussianBlur(image, (0, 0), SIFT_PRE_BLUR * self.side / 256)
            found = cv2.SIFT_create(nfeatures=self.n_features)
        kps, desc = found.detectAndCompute(image, None)
        width = 32 if self.detector == "orb" else 128
        if desc is None or not kps:
            return Keypoints(np.zeros((0, 2), np.float32), np.zeros((0, width), np.float32))
        return Keypoints(np.float32([k.pt for k in kps]), desc.astype(np.float32))

    def inliers(self, query: Keypoints, train: Keypoints) -> int:
        """RANSAC inliers between two images' keypoints (see verified_inliers)."""
        tolerance = REPROJECTION_PX * self.side / 256
        if self.detector == "orb":
            binary = [Keypoints(k.points, k.descriptors.astype(np.uint8)) for k in (query, train)]
            return verified_inliers(*binary, tolerance, cv2.NORM_HAMMING)
        return verified_inliers(query, train, tolerance)
