"""Content-addressed store of uploaded image bytes (real and generated), on local disk.

Files are named by their SHA-256, so the same image uploaded twice is stored once, writes
are atomic (temp file + rename), and a failed database transaction leaves at worst an
unreferenced file, never a wrong one. Scoring methods that need pixels read images back
from here instead of asking the user to upload them again.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError("not a sha256 hex digest")
        return self.root / sha256[:2] / sha256[2:]

    def put(self, sha256: str, data: bytes) -> None:
        target = self.path(sha256)
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, sha256: str) -> bytes:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            raise KeyError(sha256) from None

    def has(self, sha256: str) -> bool:
        return self.path(sha256).exists()
