"""Turning a stream of uploaded files into hashed images, duplicates and per-file rejections.

Used by the HTTP routes (fed part by part while the request streams in) and by the CLI (fed
from folders). Files wait in a small pending list and are decoded and hashed a batch at a
time, so memory is bounded by the batch size, never by the size of the upload.
"""

from __future__ import annotations

import hashlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import BinaryIO

from app import metrics
from app.imaging.archive import ArchiveError, Member, MemberComing, iter_zip
from app.imaging.hashers import DEFAULT_HASH_KIND, get_hasher
from app.imaging.windowing import AppliedWindow, Window
from app.services.byte_budget import ByteBudget
from app.services.decode_and_hash import EmbeddingSpec, HashedFrame, HashPool, hash_blobs
from app.services.filenames import name_problem

#: Images decoded and hashed together in-process (bounds the decoded pixels held at once).
INLINE_CHUNK = 32
#: Fewer candidates than this are hashed in-process (a worker round trip would cost more).
POOL_MIN_BATCH = 32
#: Longest name shown in a rejection (the whole name is in the request that sent it).
MAX_SHOWN_NAME = 200
#: Distinct reasons counted for rejections beyond the listed ones (the rest: "other reasons").
MAX_COUNTED_REASONS = 50


@dataclass(frozen=True, slots=True)
class HashedImage:
    filename: str
    sha256: str
    #: Hex fingerprint of the ingest's hash kind (named for pHash, the API's field name).
    phash: str
    width: int
    height: int
    #: 32x32 uint8 area-average (see app.imaging.features.thumbnail_pixels).
    thumbnail: bytes | None = None
    #: How a DICOM or 16-bit image was brought to 8 bits; None for an 8-bit image.
    window: AppliedWindow | None = None
    #: Copy-detection descriptor (float16 bytes); None when no embedding is loaded.
    embedding: bytes | None = None


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
    #: The first ``max_listed`` rejections, one by one.
    rejected: list[Rejected] = field(default_factory=list)
    #: Rejections beyond those, counted per reason: an answer (and the batch row that keeps
    #: it) stays small however many files are refused (100,000 bad zip members once made
    #: an 8 MB error body).
    unlisted_rejections: Counter[str] = field(default_factory=Counter)
    max_listed: int = 1000

    def add_rejection(self, rejection: Rejected) -> None:
        if len(self.rejected) < self.max_listed:
            self.rejected.append(rejection)
            return
        reason = rejection.reason
        if reason not in self.unlisted_rejections and (
            len(self.unlisted_rejections) >= MAX_COUNTED_REASONS
        ):
            reason = "other reasons"
        self.unlisted_rejections[reason] += 1

    def duplicates_json(self) -> list[dict]:
        return [asdict(d) for d in self.duplicates]

    def rejected_json(self) -> list[dict]:
        """The listed rejections, then one entry per reason for the files not listed:
        ``{"filename": "(and 98,000 more files)", "reason": ...}``."""
        listed = [asdict(r) for r in self.rejected]
        summary = [
            {"filename": f"(and {count:,} more files)", "reason": reason}
            for reason, count in self.unlisted_rejections.most_common()
        ]
        return listed + summary

    def windows_json(self) -> list[dict]:
        """The windows this upload's DICOM and 16-bit images were brought to 8 bits with,
        one entry per window and source (``min-max``: one entry, each image its own range)."""
        counts: dict[tuple[str, float | None, float | None], int] = {}
        for image in self.images:
            w = image.window
            if w is not None:
                key = (
                    (w.source, None, None)
                    if w.source == "min-max"
                    else (w.source, w.center, w.width)
                )
                counts[key] = counts.get(key, 0) + 1
        return [
            {"source": source, "center": center, "width": width, "images": n}
            for (source, center, width), n in counts.items()
        ]


@dataclass(frozen=True)
class IngestLimits:
    max_file_bytes: int
    max_files: int
    max_pixels: int
    batch_size: int = 256
    #: Encoded bytes waiting to be hashed (and up to twice this in the workers): memory per
    #: request is bounded by bytes, not only by file count (256 zip members of 49 MB of
    #: zeros each once held 12 GB).
    max_pending_bytes: int = 64 * 1024 * 1024
    #: Rejected files listed one by one; the rest are counted per reason.
    max_listed_rejections: int = 1000


class ImageIngest:
    """De-duplicates by content (SHA-256), decodes and fingerprints files in batches with
    the ``hash_kind`` hasher (pHash unless told otherwise). DICOM and 16-bit images are
    windowed with ``window`` (None: automatic); each windowed image (each frame of a
    multi-frame DICOM, named ``file#0001`` ...) is identified and kept as the 8-bit PNG of
    its windowed pixels, so identical pixels are duplicates and no DICOM tag is kept.

    ``known_sha256`` / ``known_names`` describe images already stored (adding to a set), so
    re-uploads are reported as duplicates and filename clashes are rejected. ``keep`` is
    called with (sha256, bytes) of every accepted image (to put it in the image store).
    ``budget``: the process-wide byte budget the queued bytes count against (see
    app.services.byte_budget); the caller waits on it when :attr:`over_budget` says so, and
    calls :meth:`release` when the upload ends, however it ends.
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
        pool: HashPool | None = None,
        hash_kind: str = DEFAULT_HASH_KIND,
        window: Window | None = None,
        embedding: EmbeddingSpec | None = None,
        budget: ByteBudget | None = None,
    ) -> None:
        get_hasher(hash_kind).check_size(hash_size)
        self.hash_size = hash_size
        self.hash_kind = hash_kind
        self.window = window
        self.embedding = embedding
        self.limits = limits
        self.result = IngestResult(max_listed=limits.max_listed_rejections)
        self._seen_sha: dict[str, str] = dict(known_sha256 or {})
        self._names: set[str] = set(known_names)
        self._pending: list[tuple[str, bytes]] = []
        self._pending_bytes = 0
        #: Encoded bytes of the chunks in :attr:`_in_flight`.
        self._in_flight_bytes = 0
        self._received = 0
        #: Files handed to the decoders, and of those the ones decided (hashed, refused or
        #: found to be duplicates): a job's progress.
        self.files_queued = 0
        self.files_done = 0
        #: Members of the zip being read that have not been read yet.
        self.files_coming = 0
        self.finished = False
        #: Called between chunks of hashing results; raises to stop the upload (a job
        #: cancelled, or its process shutting down).
        self.interrupt: Callable[[], None] | None = None
        self._progress = progress
        self._keep = keep
        self._pool = pool
        self.budget = budget
        #: Bytes this ingest counts in ``budget`` (queued or being hashed, or a zip member
        #: being read: see :meth:`coming`).
        self._held = 0
        #: The declared size of the zip member about to be read, and how much of it is
        #: reserved in the budget while it is read.
        self._coming = 0
        self._reserved = 0
        self._let_through = False
        #: Chunks handed to worker processes, oldest first: (candidates, future).
        self._in_flight: deque[tuple[list[tuple[str, str, bytes]], Future]] = deque()
        #: Bytes and names of files handed to the decoders whose result is not in yet.
        self._tentative_sha: set[str] = set()
        self._tentative_names: set[str] = set()

    @property
    def needs_flush(self) -> bool:
        return (
            len(self._pending) >= self.limits.batch_size
            or self._pending_bytes >= self.limits.max_pending_bytes
            or self.over_budget
        )

    @property
    def over_budget(self) -> bool:
        """The process holds more than its budget, or (unless this upload was just let
        through) others wait for room: hash what this upload holds (:meth:`make_room`), then
        wait in line before taking more."""
        budget = self.budget
        return budget is not None and (
            not budget.fits(self._coming) or (not self._let_through and budget.has_line)
        )

    @property
    def room_needed(self) -> int:
        """Bytes the process must have room for before this upload reads on."""
        return self._coming

    def coming(self, size: int) -> None:
        """A zip member of at most ``size`` bytes is next: :attr:`over_budget` now asks for
        room for it too, because N uploads each inflating a large member would hold N of
        them (6 concurrent zips of 49 MB members: 934 MB peak before, 379 MB now)."""
        self._coming = size

    def try_reserve(self) -> bool:
        """Count the coming member in the budget while it is read, if the process has room
        for it now (else: :meth:`make_room`, wait, try again)."""
        budget = self.budget
        if budget is None or self._reserved:  # taken while it waited (let_through)
            return True
        if not self._let_through and budget.has_line:
            return False
        if not budget.take_if_fits(self._coming):
            return False
        self._held += self._coming
        self._reserved = self._coming
        return True

    def read_done(self) -> None:
        """The member is read (its bytes are held by :meth:`add`) or refused."""
        self._let_go(self._reserved)
        self._reserved = self._coming = 0

    def make_room(self) -> None:
        """Hash everything this upload holds and wait for the results, so it holds nothing."""
        self._let_through = False
        self.flush()
        self._drain()

    def let_through(self, reserved: int = 0) -> None:
        """Its turn came (after waiting): go on until the process is over its budget again.
        ``reserved``: the bytes the wait took for the coming member (ByteBudget.wait_for_room)."""
        self._let_through = True
        if reserved and self.budget is not None:
            self._held += reserved
            self._reserved += reserved

    def release(self) -> None:
        """Give back whatever this upload still counts in the budget (idempotent)."""
        self._let_go(self._held)

    def _hold(self, size: int) -> None:
        if self.budget is not None:
            self.budget.take(size)
            self._held += size

    def _let_go(self, size: int) -> None:
        if self.budget is not None and size > 0:
            size = min(size, self._held)
            self._held -= size
            self.budget.give(size)

    def reject(self, filename: str, reason: str) -> None:
        self.result.add_rejection(Rejected(filename, reason))

    def add(self, filename: str, data: bytes) -> None:
        """Queue one file; call :meth:`flush` when :attr:`needs_flush` says so."""
        self._received += 1
        if self._received > self.limits.max_files:
            self.reject(filename, f"over the limit of {self.limits.max_files} files per request")
            return
        problem = name_problem(filename)  # app.services.filenames: stored as is, or refused
        if problem is not None:
            self.reject(filename[:MAX_SHOWN_NAME], problem)
            return
        if len(data) > self.limits.max_file_bytes:
            self.reject(
                filename,
                f"file is {len(data)} bytes, over the limit of {self.limits.max_file_bytes}",
            )
            return
        self._pending.append((filename, data))
        self.files_queued += 1
        self._pending_bytes += len(data)
        self._hold(len(data))

    def add_zip(self, stream: BinaryIO, archive_name: str) -> None:
        """Queue every member of a zip archive, flushing as batches fill."""
        for _ in self.zip_steps(stream, archive_name):
            pass

    def zip_steps(self, stream: BinaryIO, archive_name: str) -> Iterator[bool]:
        """:meth:`add_zip` a step at a time: yields True whenever the process is over its
        byte budget (this upload then holds nothing), so the caller can wait for room
        before the next member is read."""
        return _zip_steps(self, stream, archive_name, self.limits.max_file_bytes)

    def flush(self) -> None:
        """Hand everything pending to the decoders; with a worker pool this returns at once
        (results are collected in order, at most two chunks per worker in flight).

        Files are claimed tentatively until decoded: a later file with the same bytes or
        name as a file still in flight waits for that result, so the outcome is the same as
        decoding one file after another.
        """
        pending, self._pending = self._pending, []
        self._pending_bytes = 0
        batch: list[tuple[str, str, bytes]] = []
        for filename, data in pending:
            digest = hashlib.sha256(data).hexdigest()
            if digest in self._tentative_sha or filename in self._tentative_names:
                self._dispatch(batch)
                batch = []
                self._drain()
            first = self._seen_sha.get(digest)
            if first is not None:
                self.result.duplicates.append(Duplicate(filename, first))
                self._let_go(len(data))
                self.files_done += 1
                continue
            if filename in self._names:
                self.reject(filename, "another image with this filename is already included")
                self._let_go(len(data))
                self.files_done += 1
                continue
            self._tentative_sha.add(digest)
            self._tentative_names.add(filename)
            batch.append((filename, digest, data))
        self._dispatch(batch)
        if self._progress is not None:
            self._progress(len(pending))

    def _dispatch(self, batch: list[tuple[str, str, bytes]]) -> None:
        if not batch:
            return
        pool = self._pool
        if pool is not None and len(batch) >= POOL_MIN_BATCH:
            step = max(POOL_MIN_BATCH, -(-len(batch) // pool.workers))
            for lo in range(0, len(batch), step):
                chunk = batch[lo : lo + step]
                size = sum(len(c[2]) for c in chunk)
                while self._in_flight and (
                    len(self._in_flight) >= 2 * pool.workers
                    or self._in_flight_bytes + size > 2 * self.limits.max_pending_bytes
                ):
                    self._collect(*self._in_flight.popleft())
                future = pool.submit(
                    [c[2] for c in chunk],
                    self.hash_size,
                    self.limits.max_pixels,
                    self.hash_kind,
                    self.window,
                    self.embedding,
                )
                self._in_flight.append((chunk, future))
                self._in_flight_bytes += size
            return
        self._drain()  # keep the order of results
        for lo in range(0, len(batch), INLINE_CHUNK):
            chunk = batch[lo : lo + INLINE_CHUNK]
            blobs = [c[2] for c in chunk]
            hashed = hash_blobs(
                blobs,
                self.hash_size,
                self.limits.max_pixels,
                self.hash_kind,
                self.window,
                self.embedding,
            )
            self._record(chunk, hashed)

    def _drain(self) -> None:
        while self._in_flight:
            self._collect(*self._in_flight.popleft())

    def _collect(self, chunk: list[tuple[str, str, bytes]], future: Future) -> None:
        assert self._pool is not None
        self._in_flight_bytes -= sum(len(c[2]) for c in chunk)
        try:
            hashed = self._pool.result(future)
        except Exception:
            for _chunk, other in self._in_flight:
                other.cancel()
            self._in_flight.clear()
            raise
        self._record(chunk, hashed)

    def _record(self, chunk: list[tuple[str, str, bytes]], hashed: list) -> None:
        if self.interrupt is not None:
            self.interrupt()
        self.files_done += len(chunk)
        for (filename, digest, data), (hex_, width, height, thumb, error, frames, vector) in zip(
            chunk, hashed, strict=True
        ):
            self._tentative_sha.discard(digest)
            self._tentative_names.discard(filename)
            self._let_go(len(data))  # hashed: kept in the store below, or refused
            if error is not None:
                self.reject(filename, error)
                continue
            if frames is not None:
                self._seen_sha[digest] = filename  # the same file again is a duplicate
                self._record_frames(filename, frames)
                continue
            self._seen_sha[digest] = filename
            self._names.add(filename)
            if self._keep is not None:
                self._keep(digest, data)
            self.result.images.append(
                HashedImage(filename, digest, hex_, width, height, thumb, embedding=vector)
            )

    def _record_frames(self, filename: str, frames: tuple[HashedFrame, ...]) -> None:
        """Each windowed image under the SHA-256 of its 8-bit PNG (what is kept)."""
        for frame in frames:
            name = filename if frame.frame is None else f"{filename}#{frame.frame:04d}"
            problem = name_problem(name)
            if problem is not None:
                self.reject(name[:200], problem)
                continue
            digest = hashlib.sha256(frame.png).hexdigest()
            first = self._seen_sha.get(digest)
            if first is not None:
                self.result.duplicates.append(Duplicate(name, first))
                continue
            if name in self._names:
                self.reject(name, "another image with this filename is already included")
                continue
            self._seen_sha[digest] = name
            self._names.add(name)
            if self._keep is not None:
                self._keep(digest, frame.png)
            self.result.images.append(
                HashedImage(
                    name,
                    digest,
                    frame.hex_hash,
                    frame.width,
                    frame.height,
                    frame.thumbnail,
                    frame.window,
                    frame.embedding,
                )
            )

    def finish(self) -> IngestResult:
        if self._pending:
            self.flush()
        self._drain()
        images = self.result.images
        metrics.IMAGES_HASHED.labels(self.hash_kind).inc(len(images))
        metrics.IMAGES_EMBEDDED.inc(sum(image.embedding is not None for image in images))
        rejected = self.result.rejected
        metrics.FILES_REJECTED.inc(len(rejected) + sum(self.result.unlisted_rejections.values()))
        self.release()
        self.finished = True
        return self.result

    def expect(self, count: int) -> None:
        """``count`` more files are coming (a zip's members; negative as they are read)."""
        self.files_coming = max(0, self.files_coming + count)


def _zip_steps(
    ingest: ImageIngest | FannedIngest, stream: BinaryIO, archive_name: str, max_file_bytes: int
) -> Iterator[bool]:
    """The members of a zip fed to ``ingest`` (see :meth:`ImageIngest.zip_steps`)."""
    try:
        for item in iter_zip(stream, max_file_bytes, ingest.expect, announce=True):
            if isinstance(item, MemberComing):
                ingest.coming(item.size)
                while not ingest.try_reserve():
                    ingest.make_room()
                    yield True
                continue
            ingest.expect(-1)
            if isinstance(item, Member):
                ingest.add(item.name, item.data)
                ingest.read_done()  # after add holds the bytes: no moment uncounted
                item = None  # held by the ingest now (or refused), not by this frame
                if ingest.needs_flush:
                    ingest.flush()
                # No wait here: iter_zip still refers to this member until it moves on, so
                # waiting (for room, or behind others) happens before the next member.
            else:
                ingest.read_done()
                ingest.reject(f"{archive_name}:{item.name}", item.reason)
    except ArchiveError as exc:
        ingest.reject(archive_name, str(exc))


class FannedIngest:
    """One upload fed to several ingests at once (the upload is read once): /filter against
    real sets hashed differently (hash kind, size or window) hashes each file once per kind
    of set. Offers what app.api.uploads.UploadReader uses of an :class:`ImageIngest`; each
    ingest is finished on its own."""

    def __init__(self, ingests: list[ImageIngest]) -> None:
        self.ingests = ingests
        #: They come from one intake: the same process budget.
        self.budget = ingests[0].budget
        self.limits = ingests[0].limits

    @property
    def needs_flush(self) -> bool:
        return any(i.needs_flush for i in self.ingests)

    @property
    def over_budget(self) -> bool:
        return any(i.over_budget for i in self.ingests)

    def add(self, filename: str, data: bytes) -> None:
        for ingest in self.ingests:
            ingest.add(filename, data)

    def expect(self, count: int) -> None:
        for ingest in self.ingests:
            ingest.expect(count)

    def reject(self, filename: str, reason: str) -> None:
        for ingest in self.ingests:
            ingest.reject(filename, reason)

    def flush(self) -> None:
        for ingest in self.ingests:
            ingest.flush()

    def make_room(self) -> None:
        for ingest in self.ingests:
            ingest.make_room()

    # A member is read once: the first ingest counts it in the (shared) budget.
    @property
    def room_needed(self) -> int:
        return self.ingests[0].room_needed

    def coming(self, size: int) -> None:
        self.ingests[0].coming(size)

    def try_reserve(self) -> bool:
        return self.ingests[0].try_reserve()

    def read_done(self) -> None:
        self.ingests[0].read_done()

    def let_through(self, reserved: int = 0) -> None:
        self.ingests[0].let_through(reserved)  # the one that reserves (try_reserve)
        for ingest in self.ingests[1:]:
            ingest.let_through()

    def release(self) -> None:
        for ingest in self.ingests:
            ingest.release()

    def zip_steps(self, stream: BinaryIO, archive_name: str) -> Iterator[bool]:
        """Each member read once and fed to every ingest."""
        return _zip_steps(self, stream, archive_name, self.limits.max_file_bytes)
