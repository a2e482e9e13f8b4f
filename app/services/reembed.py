"""Copy-detection descriptors computed again with the loaded embedding (`memaudit reembed`).

Descriptors of two embeddings are never compared (app.search.copies), so after the
embedding is replaced a set registered before answers no `copy_of` until its descriptors
are those of the new one. The image store keeps every uploaded image (as the 8-bit pixels it
was fingerprinted from), so they are computed again from there: no upload needed.

Set by set (then batch by batch): its rows are read in a short read, their descriptors
computed with no transaction open (a long one would hold SQLite's write lock, or an old
snapshot, against a running server), then written in one short transaction that first locks
the set (as appends and deletions do, so neither is undone nor deadlocked), bumps its revision
(servers' caches and search indices expire) and drops its stored copy-verification bar
(measured on the old descriptors' neighbours). Images registered by hash alone, or whose bytes
are gone or no longer decode, keep what they have and are counted; a set or batch changed
under the run is left for a next one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from app.db.models import GeneratedImage, MatchBatch, RealImage, RealSet, utcnow
from app.db.session import transaction
from app.imaging.decode import ImageDecodeError, decode_grayscale
from app.scoring.images import Embedder
from app.search.copies import descriptor_model, model_tag, pack_descriptor
from app.services import real_sets
from app.services.errors import NotFound
from app.storage import ImageStore

#: Images decoded and embedded at once.
CHUNK = 256
#: Progress is logged every this many images of one set or batch.
PROGRESS_EVERY = 10_000


@dataclass
class Reembedded:
    """What `reembed` did (or, with dry_run, would do)."""

    sets: int = 0
    batches: int = 0
    images: int = 0
    #: Images left as they were: registered by hash alone, bytes gone, or no longer decoding.
    without_pixels: int = 0
    #: Sets and batches changed under the run (images deleted, a deadlock): run again.
    left: int = 0


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
    work = _Reembedding(store, embedder, max_pixels, dry_run, log)
    with sessions() as session:
        set_ids = list(session.scalars(select(RealSet.id).order_by(RealSet.id)))
        batch_ids = list(session.scalars(select(MatchBatch.id).order_by(MatchBatch.id)))
    for set_id in set_ids:
        rows = work.descriptors(sessions, RealImage, RealImage.real_set_id == set_id, "set", set_id)
        if not rows:
            continue
        written = True if dry_run else work.write(sessions, RealImage, rows, set_id)
        if written is None:
            continue  # the set was deleted meanwhile: nothing left to do
        if written:
            work.done.sets += 1
            log(f"set {set_id}: {len(rows)} image(s)")
        else:
            work.done.left += 1
            log(f"set {set_id}: changed while it was embedded; left for a next run")
    for batch_id in batch_ids:
        owned = GeneratedImage.batch_id == batch_id
        rows = work.descriptors(sessions, GeneratedImage, owned, "batch", batch_id)
        if rows and not dry_run and not work.write(sessions, GeneratedImage, rows):
            work.done.left += 1
            log(f"batch {batch_id}: changed while it was embedded; left for a next run")
        elif rows:
            work.done.batches += 1
            log(f"batch {batch_id}: {len(rows)} image(s)")
    return work.done


@dataclass
class _Reembedding:
    """One run: what it reads and embeds with, and the tally of what it did."""

    store: ImageStore
    embedder: Embedder
    max_pixels: int
    dry_run: bool
    log: Callable[[str], None]
    done: Reembedded = field(default_factory=Reembedded)

    def descriptors(
        self,
        sessions: sessionmaker[Session],
        table: type[RealImage | GeneratedImage],
        owned,
        kind: str,
        owner_id: int,
    ) -> list[dict]:
        """New descriptors for one set's or batch's images whose descriptor is missing or of
        another embedding, as update rows ({"id", "embedding"}; with dry_run, {"id"})."""
        model = model_tag(self.embedder.info.sha256)
        with sessions() as session:  # read, then closed: no snapshot held while computing
            rows = session.execute(
                select(table.id, table.sha256, table.embedding).where(owned).order_by(table.id)
            ).all()
        stale = [r for r in rows if r.embedding is None or descriptor_model(r.embedding) != model]
        usable = [r for r in stale if r.sha256 is not None and self.store.has(r.sha256)]
        self.done.without_pixels += len(stale) - len(usable)
        if self.dry_run:
            self.done.images += len(usable)
            return [{"id": r.id} for r in usable]
        out: list[dict] = []
        for lo in range(0, len(usable), CHUNK):
            pixels, ids = [], []
            for r in usable[lo : lo + CHUNK]:
                try:
                    pixels.append(decode_grayscale(self.store.get(r.sha256), self.max_pixels))
                except (KeyError, OSError, ImageDecodeError):  # removed meanwhile, or a
                    self.done.without_pixels += 1  # pixel limit lowered since its upload
                    continue
                ids.append(r.id)
            if pixels:
                vectors = self.embedder.embed(pixels)
                sha256 = self.embedder.info.sha256
                out += [
                    {"id": i, "embedding": pack_descriptor(v, sha256)}
                    for i, v in zip(ids, vectors, strict=True)
                ]
            if len(out) and len(out) % PROGRESS_EVERY < CHUNK and len(usable) > PROGRESS_EVERY:
                self.log(f"{kind} {owner_id}: {len(out)} / {len(usable)} image(s) embedded")
        return out

    def write(
        self,
        sessions: sessionmaker[Session],
        table: type[RealImage | GeneratedImage],
        rows: list[dict],
        set_id: int | None = None,
    ) -> bool | None:
        """Store the new descriptors in one transaction (a set locked first, its revision
        bumped and its verification bar dropped with them); False, storing nothing, when its
        rows changed meanwhile; None when the set was deleted meanwhile (nothing to do)."""
        try:
            with transaction(sessions) as session:
                if set_id is not None:
                    try:
                        real_set = real_sets.get_real_set(session, set_id, for_update=True)
                    except NotFound:
                        return None
                session.execute(update(table), rows)
                if set_id is not None:
                    real_set.revision += 1
                    real_set.updated_at = utcnow()
                    real_sets.drop_copy_verification(real_set)
        except (StaleDataError, OperationalError):  # rows deleted; a deadlock on PostgreSQL
            return False
        self.done.images += len(rows)
        return True
