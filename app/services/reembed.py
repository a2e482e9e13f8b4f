"""Copy-detection descriptors computed again with the loaded embedding (`memaudit reembed`).

Descriptors of two embeddings are never compared (app.search.copies), so after the
embedding is replaced a set registered before answers no `copy_of` until its descriptors
are those of the new one. The image store keeps every uploaded image (as the 8-bit pixels it
was fingerprinted from), so they are computed again from there: no upload needed.

Each set and each batch is updated in its own transaction; a set's revision is bumped with it
(servers' caches and search indices expire) and its stored copy-verification bar dropped (it
was measured on the old descriptors' neighbours). Images registered by hash alone, or whose
bytes are gone from the store, keep what they have and are counted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import GeneratedImage, MatchBatch, RealImage, RealSet
from app.imaging.decode import decode_grayscale
from app.scoring.images import Embedder
from app.search.copies import descriptor_model, model_tag, pack_descriptor
from app.storage import ImageStore

#: Images decoded and embedded at once.
CHUNK = 256


@dataclass
class Reembedded:
    """What `reembed` did (or, with dry_run, would do)."""

    sets: int = 0
    batches: int = 0
    images: int = 0
    #: Images whose descriptor could not be computed (registered by hash alone, or bytes gone).
    without_bytes: int = 0


def reembed(
    sessions: sessionmaker[Session],
    store: ImageStore,
    embedder: Embedder,
    max_pixels: int,
    *,
    dry_run: bool = False,
    log: Callable[[str], None] = print,
) -> Reembedded:
    """Give every stored image whose descriptor is missing or of another embedding one of
    ``embedder``'s, set by set and batch by batch."""
    work = _Reembedding(store, embedder, max_pixels, dry_run)
    with sessions() as session:
        set_ids = list(session.scalars(select(RealSet.id).order_by(RealSet.id)))
        batch_ids = list(session.scalars(select(MatchBatch.id).order_by(MatchBatch.id)))
    for set_id in set_ids:
        with sessions.begin() as session:
            count = work.images_of(session, RealImage, RealImage.real_set_id == set_id)
            if count and not dry_run:
                real_set = session.get(RealSet, set_id)
                assert real_set is not None
                real_set.revision += 1
                if real_set.calibration:
                    real_set.calibration = {
                        k: v for k, v in real_set.calibration.items() if k != "copy_verification"
                    }
        if count:
            work.done.sets += 1
            log(f"set {set_id}: {count} image(s)")
    for batch_id in batch_ids:
        with sessions.begin() as session:
            count = work.images_of(session, GeneratedImage, GeneratedImage.batch_id == batch_id)
        if count:
            work.done.batches += 1
            log(f"batch {batch_id}: {count} image(s)")
    return work.done


@dataclass
class _Reembedding:
    store: ImageStore
    embedder: Embedder
    max_pixels: int
    dry_run: bool
    done: Reembedded = field(default_factory=Reembedded)

    def images_of(self, session: Session, table: type[RealImage | GeneratedImage], owned) -> int:
        """Compute the stale descriptors of one set's or batch's images; how many."""
        model = model_tag(self.embedder.info.sha256)
        rows = session.execute(
            select(table.id, table.sha256, table.embedding).where(owned).order_by(table.id)
        ).all()
        stale = [r for r in rows if r.embedding is None or descriptor_model(r.embedding) != model]
        usable = [r for r in stale if r.sha256 is not None and self.store.has(r.sha256)]
        self.done.without_bytes += len(stale) - len(usable)
        self.done.images += len(usable)
        if self.dry_run:
            return len(usable)
        for lo in range(0, len(usable), CHUNK):
            chunk = usable[lo : lo + CHUNK]
            pixels = [decode_grayscale(self.store.get(r.sha256), self.max_pixels) for r in chunk]
            vectors = self.embedder.embed(pixels)
            session.execute(
                update(table),
                [
                    {"id": r.id, "embedding": pack_descriptor(v, self.embedder.info.sha256)}
                    for r, v in zip(chunk, vectors, strict=True)
                ],
            )
        return len(usable)
