"""How uploaded images enter memaudit: limits, the hashing workers, the image store."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from app.config import Settings
from app.imaging.hashers import DEFAULT_HASH_KIND
from app.imaging.windowing import Window
from app.services.byte_budget import ByteBudget
from app.services.decode_and_hash import EmbeddingSpec, HashPool
from app.services.ingest import ImageIngest, IngestLimits
from app.services.retention import HeldImages
from app.storage import ImageStore


def ingest_limits(settings: Settings) -> IngestLimits:
    return IngestLimits(
        max_file_bytes=settings.max_file_bytes,
        max_files=settings.max_files_per_request,
        max_pixels=settings.max_image_pixels,
        batch_size=settings.hash_batch_size,
        max_pending_bytes=settings.max_pending_bytes,
        max_listed_rejections=settings.max_listed_rejections,
    )


@dataclass(frozen=True)
class ImageIntake:
    """Makes the :class:`ImageIngest` of one upload: every accepted image is hashed (by the
    worker pool when there is one) and its bytes kept in the image store (through ``held``,
    the request's hold, when given: app.services.retention)."""

    limits: IngestLimits
    store: ImageStore
    pool: HashPool | None
    #: The verified copy-detection embedding, computed beside the hash (None: not loaded).
    embedding: EmbeddingSpec | None = None
    #: The request's hold on what it stores; released (and what no row took removed) when
    #: the request ends.
    held: HeldImages | None = None
    #: The process-wide budget of bytes waiting to be hashed (None: per-request bounds only).
    budget: ByteBudget | None = None
    #: Told of every ingest made (a job counts their files in its progress).
    on_ingest: Callable[[ImageIngest], None] | None = None

    def ingest(
        self,
        hash_size: int,
        known_sha256: dict[str, str] | None = None,
        known_names: Iterable[str] = (),
        hash_kind: str = DEFAULT_HASH_KIND,
        window: Window | None = None,
    ) -> ImageIngest:
        """``window``: how DICOM and 16-bit images are brought to 8 bits (None: automatic)."""
        ingest = ImageIngest(
            hash_size,
            self.limits,
            hash_kind=hash_kind,
            window=window,
            known_sha256=known_sha256,
            known_names=known_names,
            keep=self.held.put if self.held is not None else self.store.put,
            pool=self.pool,
            embedding=self.embedding,
            budget=self.budget,
        )
        if self.on_ingest is not None:
            self.on_ingest(ingest)
        return ingest
