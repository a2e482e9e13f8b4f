"""Content-addressed store of uploaded image bytes (real and generated), on local disk.

Files are named by their SHA-256, so the same image uploaded twice is stored once, writes
are atomic (temp file + rename), and a failed database transaction leaves at worst an
unreferenced file, never a wrong one. Scoring methods that need pixels read images back
from here instead of asking the user to upload them again.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np


def _check_digest(sha256: str) -> None:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError("not a sha256 hex digest")


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        _check_digest(sha256)
        return self.root / sha256[:2] / sha256[2:]

    def put(self, sha256: str, data: bytes) -> None:
        target = self.path(sha256)
        if target.exists():
            return
        _write_atomically(target, data)

    def get(self, sha256: str) -> bytes:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            raise KeyError(sha256) from None

    def has(self, sha256: str) -> bool:
        return self.path(sha256).exists()


class FeatureStore:
    """Features derived from stored images (SIFT keypoints), by kind and image SHA-256.

    A cache: each image's features are computed the first time a scorer needs them and
    reused by every later audit of that image; losing the folder costs only recomputation.
    ``kind`` names the feature and its version, so changed parameters never read old files.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, kind: str, sha256: str) -> Path:
        _check_digest(sha256)
        if not kind.replace("-", "").isalnum():
            raise ValueError("feature kind must be alphanumeric with dashes")
        return self.root / kind / sha256[:2] / f"{sha256[2:]}.npz"

    def load(self, kind: str, sha256: str) -> dict[str, np.ndarray] | None:
        try:
            with np.load(self._path(kind, sha256), allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except (FileNotFoundError, ValueError, OSError, EOFError):
            return None  # absent or truncated: recompute

    def save(self, kind: str, sha256: str, arrays: dict[str, np.ndarray]) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        _write_atomically(self._path(kind, sha256), buffer.getvalue())
