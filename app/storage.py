"""Content-addressed store of uploaded image bytes (real and generated), on local disk.

Files are named by their SHA-256, so the same image uploaded twice is stored once, writes
are atomic (temp file + rename), and a failed database transaction leaves at worst an
unreferenced file, never a wrong one. Scoring methods that need pixels read images back
from here instead of asking the user to upload them again. Which files may go, and when,
is decided by app.services.retention (a file lives while a database row names it).
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.npy_files import load_npz


def _check_digest(sha256: str) -> None:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError("not a sha256 hex digest")


#: Prefix of a file being written (renamed into place when complete; a crash leaves it).
PARTIAL_PREFIX = ".tmp-"
HEX = frozenset("0123456789abcdef")


def digest_prefixes() -> Iterator[str]:
    """The 256 two-character folders both stores shard files into."""
    return (f"{i:02x}" for i in range(256))


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One file found in a store: its image's SHA-256 (None: a partial write), its age."""

    path: Path
    sha256: str | None
    mtime: float
    size: int


def _scan(folder: Path, prefix: str, suffix: str) -> list[StoredFile]:
    """The files of one shard folder: complete ones by digest, partial writes, nothing else."""
    found: list[StoredFile] = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return found
    for entry in entries:
        name = entry.name
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # removed meanwhile
            continue
        if name.startswith(PARTIAL_PREFIX):
            found.append(StoredFile(Path(entry.path), None, info.st_mtime, info.st_size))
            continue
        rest = name.removesuffix(suffix) if suffix else name
        if (not suffix or name.endswith(suffix)) and len(rest) == 62 and set(rest) <= HEX:
            found.append(StoredFile(Path(entry.path), prefix + rest, info.st_mtime, info.st_size))
    return found


def _remove(path: Path, sha256: str) -> StoredFile | None:
    try:
        info = path.stat()
        path.unlink()
    except FileNotFoundError:
        return None
    return StoredFile(path, sha256, info.st_mtime, info.st_size)


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=PARTIAL_PREFIX)
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
        try:  # stored already: mark it in use again (sweeps only remove files left alone)
            os.utime(target)
            return
        except FileNotFoundError:
            pass
        _write_atomically(target, data)

    def remove(self, sha256: str) -> StoredFile | None:
        """Delete the file of ``sha256``; what it was, or None when there was none."""
        return _remove(self.path(sha256), sha256)

    def files(self, prefix: str) -> list[StoredFile]:
        """The files (and partial writes) of digests starting with ``prefix`` (2 hex)."""
        return _scan(self.root / prefix, prefix, "")

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
            return load_npz(self._path(kind, sha256))
        except (FileNotFoundError, ValueError, OSError, EOFError):
            return None  # absent or truncated: recompute

    def save(self, kind: str, sha256: str, arrays: dict[str, np.ndarray]) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        _write_atomically(self._path(kind, sha256), buffer.getvalue())

    def kinds(self) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(self.root) if e.is_dir())
        except FileNotFoundError:
            return []

    def remove(self, sha256: str, kinds: list[str] | None = None) -> list[StoredFile]:
        """Delete the features of ``sha256`` of every kind (``kinds``: those listed once for
        many removals); what was deleted."""
        kinds = self.kinds() if kinds is None else kinds
        removed = (_remove(self._path(kind, sha256), sha256) for kind in kinds)
        return [found for found in removed if found is not None]

    def files(self, prefix: str) -> list[StoredFile]:
        """Feature files (and partial writes) of every kind for digests starting ``prefix``."""
        return [
            found
            for kind in self.kinds()
            for found in _scan(self.root / kind / prefix, prefix, ".npz")
        ]
