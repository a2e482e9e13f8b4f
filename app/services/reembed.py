"""Copy-detection descriptors computed again with the loaded embedding (`memaudit reembed`).

Descriptors of two embeddings are never compared (app.search.copies), so after the
embedding is replaced a set registered before answers no `copy_of` until its descriptors
are those of the new one. The image store keeps every uploaded image (as the 8-bit pixels it
was fingerprinted from), so they are computed again from there: no upload needed.

Each set's (and batch's) descriptors are computed outside any write transaction (on SQLite a
long one would hold the database's write lock against a running server), then written in one
short transaction that bumps the set's revision (servers' caches and search indices expire)
and drops its stored copy-verification bar (measured on the old descriptors' neighbours).
Images registered by hash alone, or whose bytes are gone from the store, keep what they have
and are counted; a set whose images are deleted while it is embedded is left for a next run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

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
        with sessions() as session:  # computed outside the write transaction (SQLite's lock)
            rows = work.descriptors(session, RealImage, RealImage.real_set_id == set_id)
        if rows and not (dry_run or work.write(sessions, RealImage, rows, set_id)):
            log(f"set {set_id}: images were removed while it was embedded; run again")
        elif rows:
            work.done.sets += 1
            log(f"set {set_id}: {len(rows)} image(s)")
    for batch_id in batch_ids:
        with sessions() as session:
            rows = work.descriptors(session, GeneratedImage, GeneratedImage.batch_id == batch_id)
        if rows and not (dry_run or work.write(sessions, GeneratedImage, rows)):
            log(f"batch {batch_id}: images were removed while it was embedded; run again")
        elif rows:
            work.done.batches += 1
            log(f"batch {batch_id}: {len(rows)} image(s)")
    return work.done


@dataclass
class _Reembedding:
    store: ImageStore
    embedder: Embedder
    max_pixels: int
    dry_run: bool
    done: Reembedded = field(default_factory=Reembedded)

    def write(
        self,
        sessions: sessionmaker[Session],
        table: type[RealImage | GeneratedImage],
        rows: list[dict],
        set_id: int | None = None,
    ) -> bool:
        """Store the new descriptors in one transaction (a set's revision bumped and its
        verification bar dropped with them); False, storing nothing, when some of the rows
        were deleted meanwhile."""
        try:
            with sessions.begin() as session:
                session.execute(update(table), rows)
                real_set = session.get(RealSet, set_id) if set_id is not None else None
                if real_set is not None:
                    real_set.revision += 1
                    if real_set.calibration:
                        real_set.calibration = {
                            k: v
                            for k, v in real_set.calibration.items()
                            if k != "copy_verification"
                        }
        except StaleDataError:
            self.done.images -= len(rows)
            return False
        return True

    def descriptors(
        self, session: Session, table: type[RealImage | GeneratedImage], owned
    ) -> list[dict]:
        """New descriptors for one set's or batch's images whose descriptor is missing or of
        another embedding, as update rows ({"id", "embedding"}; with dry_run, no embedding)."""
        model = model_tag(self.embedder.info.sha256)
        rows = session.execute(
            select(table.id, table.sha256, table.embedding).where(owned).order_by(table.id)
        ).all()
        stale = [r for r in rows if r.embedding is None or descriptor_model(r.embedding) != model]
        usable = [r for r in stale if r.sha256 is not None and self.store.has(r.sha256)]
        self.done.without_bytes += len(stale) - len(usable)
        self.done.images += len(usable)
        if self.dry_run:
            return [{"id": r.id} for r in usable]
        out: list[dict] = []
        for lo in range(0, len(usable), CHUNK):
            chunk = usable[lo : lo + CHUNK]
            pixels = [decode_grayscale(self.store.get(r.sha256), self.max_pixels) for r in chunk]
            vectors = self.embedder.embed(pixels)
            out += [
                {"id": r.id, "embedding": pack_descriptor(v, self.embedder.info.sha256)}
                for r, v in zip(chunk, vectors, strict=True)
            ]
        return out
