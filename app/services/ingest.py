"""Turning a stream of uploaded files into hashed images, duplicates and per-file rejections.

Used by the HTTP routes (fed part by part while the request streams in) and by the CLI (fed
from folders). Files wait in a small pending list and are decoded and hashed a batch at a
time, so memory is bounded by the batch size, never by the size of the upload.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import BinaryIO

import numpy as np

from app.imaging.archive import ArchiveError, Member, iter_zip
from app.imaging.decode import ImageDecodeError, decode_grayscale
from app.imaging.phash import bits_to_hex, phash_batch

#: Decoded pixels held at once before they are hashed (large images are hashed sooner).
DECODED_BYTES_PER_BATCH = 128 * 1024 * 1024
#: Longest file name stored (the database columns hold 1024 characters).
MAX_FILENAME_CHARS = 1024


@dataclass(frozen=True, slots=True)
class HashedImage:
    filename: str
    sha256: str
    phash: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Duplicate:
    filename: str
    duplicate_of: str


@dataclass(frozen=True, slots=True)
class Rejected:
    filename: str
    reason: str


@dataclass
class IngestResult:
    images: list[HashedImage] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    def duplicates_json(self) -> list[dict]:
        return [asdict(d) for d in self.duplicates]

    def rejected_json(self) -> list[dict]:
        return [asdict(r) for r in self.rejected]


@dataclass(frozen=True)
class IngestLimits:
    max_file_bytes: int
    max_files: int
    max_pixels: int
    batch_size: int = 256


class ImageIngest:
    """De-duplicates by content (SHA-256), decodes and pHashes files in batches.

    ``known_sha256`` / ``known_names`` describe images already stored (adding to a set), so
    re-uploads are reported as duplicates and filename clashes are rejected. ``keep`` is
    called with (sha256, bytes) of every accepted image (to put it in the image store).
    """

    def __init__(
        self,
        hash_size: int,
        limits: IngestLimits,
        *,
        known_sha256: dict[str, str] | None = None,
        known_names: Iterable[str] = (),
        progress: Callable[[int], None] | None = None,
        keep: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.hash_size = hash_size
        self.limits = limits
        self.result = IngestResult()
        self._seen_sha: dict[str, str] = dict(known_sha256 or {})
        self._names: set[str] = set(known_names)
        self._pending: list[tuple[str, bytes]] = []
        self._received = 0
        self._progress = progress
        self._keep = keep

    @property
    def needs_flush(self) -> bool:
        return len(self._pending) >= self.limits.batch_size

    def reject(self, filename: str, reason: str) -> None:
        self.result.rejected.append(Rejected(filename, reason))

    def add(self, filename: str, data: bytes) -> None:
        """Queue one file; call :meth:`flush` when :attr:`needs_flush` says so."""
        self._received += 1
        if self._received > self.limits.max_files:
            self.reject(filename, f"over the limit of {self.limits.max_files} files per request")
            return
        if len(filename) > MAX_FILENAME_CHARS or "\x00" in filename:
            self.reject(
                filename[:200], f"file name over {MAX_FILENAME_CHARS} characters or with NUL"
            )
            return
        if len(data) > self.limits.max_file_bytes:
            self.reject(
                filename,
                f"file is {len(data)} bytes, over the limit of {self.limits.max_file_bytes}",
            )
            return
        self._pending.append((filename, data))

    def add_zip(self, stream: BinaryIO, archive_name: str) -> None:
        """Queue every member of a zip archive, flushing as batches fill."""
        try:
            for item in iter_zip(stream, self.limits.max_file_bytes):
                if isinstance(item, Member):
                    self.add(item.name, item.data)
                    if self.needs_flush:
                        self.flush()
                else:
                    self.reject(f"{archive_name}:{item.name}", item.reason)
        except ArchiveError as exc:
            self.reject(archive_name, str(exc))

    def flush(self) -> None:
        """Decode and hash everything pending (in sub-batches of bounded decoded size)."""
        pending, self._pending = self._pending, []
        names: list[str] = []
        digests: list[str] = []
        pixels: list[np.ndarray] = []
        decoded_bytes = 0
        for filename, data in pending:
            digest = hashlib.sha256(data).hexdigest()
            first = self._seen_sha.get(digest)
            if first is not None:
                self.result.duplicates.append(Duplicate(filename, first))
                continue
            if filename in self._names:
                self.reject(filename, "another image with this filename is already included")
                continue
            try:
                gray = decode_grayscale(data, self.limits.max_pixels)
            except ImageDecodeError as exc:
                self.reject(filename, str(exc))
                continue
            if self._keep is not None:
                self._keep(digest, data)
            self._seen_sha[digest] = filename
            self._names.add(filename)
            names.append(filename)
            digests.append(digest)
            pixels.append(gray)
            decoded_bytes += gray.nbytes
            if decoded_bytes >= DECODED_BYTES_PER_BATCH:
                self._hash(names, digests, pixels)
                names, digests, pixels, decoded_bytes = [], [], [], 0
        self._hash(names, digests, pixels)
        if self._progress is not None:
            self._progress(len(pending))

    def _hash(self, names: list[str], digests: list[str], pixels: list[np.ndarray]) -> None:
        if not pixels:
            return
        hexes = bits_to_hex(phash_batch(pixels, self.hash_size))
        for name, digest, gray, hex_ in zip(names, digests, pixels, hexes, strict=True):
            self.result.images.append(
                HashedImage(name, digest, hex_, int(gray.shape[1]), int(gray.shape[0]))
            )

    def finish(self) -> IngestResult:
        if self._pending:
            self.flush()
        return self.result
