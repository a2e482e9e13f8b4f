"""How long image bytes are kept: while a database row names them, and no longer.

The image store (and the feature cache beside it) is content-addressed: one file per SHA-256,
shared by every set and batch holding the same bytes. A file is *referenced* while a real
image row (RealImage.sha256) or a generated image row (GeneratedImage.sha256) names it. The
references are read from those rows (indexed, migration 0007), never kept in a counter of
their own, so no crash can leave a count that is wrong.

Three things remove the files nothing refers to:

- a DELETE (of a set or a batch), after its transaction commits: the digests its rows named;
- the end of every upload request, whatever its outcome (success, an error, a disconnect):
  the digests it stored that no row took (a failed request's; /classify's uploads, which
  are only scored);
- a sweep (at start, then every ``gc_interval_seconds``; ``memaudit gc``): every
  unreferenced file, and every partial write (``.tmp-*``) a crash left, older than
  ``gc_min_age_seconds`` (younger ones may belong to an upload of another process).

Races with an upload of the same bytes (which writes the file first and inserts its rows
when it commits): within one process each request holds the digests it stores or reads
(:class:`HeldImages`) until it ends, and no removal touches a held digest. Across processes
(API replicas, ``memaudit gc`` beside a server) each removal runs under an exclusive database
lock (a PostgreSQL advisory lock; SQLite's write lock), and an upload checks, under the shared
lock and in the transaction that inserts its rows, that every file it names is still there
(:func:`require_stored`): a row never names a missing file; that upload answers 409 instead.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import GeneratedImage, RealImage
from app.db.session import transaction
from app.services.errors import Conflict
from app.storage import FeatureStore, ImageStore, StoredFile, digest_prefixes

log = logging.getLogger("memaudit.retention")

#: Digests looked up per query and removed per transaction (bounds the lock's hold).
CHUNK = 500
#: PostgreSQL advisory lock of the image store: removals exclusive, committing uploads shared.
STORE_LOCK_KEY = 0x6D656D61
REMOVED_WHILE_UPLOADING = (
    "{count} image(s) were removed from the image store while this request uploaded them "
    "(memaudit gc, or a DELETE by another server); nothing was stored: send the request again"
)


class RequestEnded(RuntimeError):
    """A file arrived for a request that has already ended (a hashing thread still running
    after a disconnect): it is not written."""


def chunks(items: Sequence[str], size: int = CHUNK) -> Iterable[Sequence[str]]:
    return (items[lo : lo + size] for lo in range(0, len(items), size))


def referenced(session: Session, digests: Sequence[str]) -> set[str]:
    """Which of ``digests`` some real or generated image row names."""
    found: set[str] = set()
    for model in (RealImage, GeneratedImage):
        found.update(
            session.scalars(select(model.sha256).where(model.sha256.in_(digests)).distinct())
        )
    return found


def lock_store(session: Session, *, shared: bool) -> None:
    """Take the image store's lock for the rest of ``session``'s transaction. On SQLite the
    transaction already holds the database's one write lock (app.db.session.transaction)."""
    if session.get_bind().dialect.name == "postgresql":
        function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        session.execute(text(f"SELECT {function}(:key)"), {"key": STORE_LOCK_KEY})


def require_stored(session: Session, store: ImageStore, digests: Iterable[str]) -> None:
    """In the transaction that inserts rows naming ``digests``: every file is still there
    (else :class:`Conflict`, and the transaction rolls back); no removal runs until it ends."""
    lock_store(session, shared=True)
    missing = sum(1 for digest in set(digests) if not store.has(digest))
    if missing:
        raise Conflict(REMOVED_WHILE_UPLOADING.format(count=missing))


@dataclass
class Removed:
    """Files removed (or, in a dry run, that would be): paths and counts by kind."""

    paths: list[Path] = field(default_factory=list)
    images: int = 0
    features: int = 0
    partial: int = 0
    bytes: int = 0

    def add(self, other: Removed) -> None:
        self.paths += other.paths
        self.images += other.images
        self.features += other.features
        self.partial += other.partial
        self.bytes += other.bytes

    def summary(self) -> str:
        return (
            f"{self.images} image file(s), {self.features} feature file(s), "
            f"{self.partial} partial write(s), {self.bytes} bytes"
        )


class ImageRetention:
    """The process's one keeper of the image and feature stores: removes what no row names
    and no request of this process holds."""

    def __init__(
        self, store: ImageStore, features: FeatureStore, sessions: sessionmaker[Session]
    ) -> None:
        self.store = store
        self.features = features
        self._sessions = sessions
        self._lock = threading.Lock()
        #: Digests held by requests in flight, and by how many.
        self._held: Counter[str] = Counter()

    def hold(self) -> HeldImages:
        """A request's holder: what it stores through it is kept until it is released."""
        return HeldImages(self)

    def _take(self, digests: Iterable[str]) -> None:
        with self._lock:
            self._held.update(digests)

    def _give_back(self, digests: Iterable[str]) -> None:
        with self._lock:
            self._held.subtract(digests)
            for digest in [d for d, n in self._held.items() if n <= 0]:
                del self._held[digest]

    def remove_unreferenced(self, digests: Iterable[str]) -> Removed:
        """Remove the files of those ``digests`` that no row names and no request holds."""
        removed = Removed()
        for chunk in chunks(sorted(set(digests))):
            with self._sessions() as session:  # most uploads: all referenced, no write lock
                if not set(chunk) - referenced(session, chunk):
                    continue
            kinds = self.features.kinds()
            with transaction(self._sessions) as session:
                lock_store(session, shared=False)
                with self._lock:
                    unheld = [d for d in chunk if d not in self._held]
                    for digest in set(unheld) - referenced(session, unheld):
                        removed.add(self._remove(digest, kinds))
        return removed

    def _remove(self, digest: str, feature_kinds: list[str]) -> Removed:
        removed = Removed()
        image = self.store.remove(digest)
        if image is not None:
            removed.paths.append(image.path)
            removed.images += 1
            removed.bytes += image.size
        for feature in self.features.remove(digest, feature_kinds):
            removed.paths.append(feature.path)
            removed.features += 1
            removed.bytes += feature.size
        return removed

    def sweep(
        self, min_age_s: float, *, dry_run: bool = False, stop: threading.Event | None = None
    ) -> Removed:
        """Remove (``dry_run``: list) every unreferenced file and partial write whose files
        were all left alone for ``min_age_s``; one shard folder at a time (bounded memory)."""
        total = Removed()
        for prefix in digest_prefixes():
            if stop is not None and stop.is_set():
                break
            now = time.time()
            found = self.store.files(prefix) + self.features.files(prefix)
            total.add(self._sweep_partial(found, now - min_age_s, dry_run))
            young = {f.sha256 for f in found if f.sha256 and f.mtime > now - min_age_s}
            candidates = sorted({f.sha256 for f in found if f.sha256} - young)
            if dry_run:
                total.add(self._listed_unreferenced(candidates, found))
            else:
                total.add(self.remove_unreferenced(candidates))
        return total

    def _sweep_partial(self, found: list[StoredFile], before: float, dry_run: bool) -> Removed:
        removed = Removed()
        for partial in (f for f in found if f.sha256 is None and f.mtime <= before):
            if not dry_run:
                try:
                    partial.path.unlink()
                except FileNotFoundError:
                    continue
            removed.paths.append(partial.path)
            removed.partial += 1
            removed.bytes += partial.size
        return removed

    def _listed_unreferenced(self, candidates: Sequence[str], found: list[StoredFile]) -> Removed:
        listed = Removed()
        with self._sessions() as session, self._lock:
            unreferenced = set()
            for chunk in chunks(candidates):
                unreferenced |= set(chunk) - referenced(session, chunk) - self._held.keys()
        for stored in found:
            if stored.sha256 in unreferenced:
                listed.paths.append(stored.path)
                listed.bytes += stored.size
                if stored.path.is_relative_to(self.features.root):
                    listed.features += 1
                else:
                    listed.images += 1
        return listed


class HeldImages:
    """The digests one request stores or reads: no removal touches them until
    :meth:`release`, which then removes those no row took (the request failed, or its
    uploads were only scored)."""

    def __init__(self, retention: ImageRetention) -> None:
        self._retention = retention
        self._mine: set[str] = set()
        self._released = False
        #: Orders this request's writes before its release (a write never follows it).
        self._lock = threading.Lock()

    def put(self, sha256: str, data: bytes) -> None:
        """Store ``data`` (the ingest's ``keep``), held from now on."""
        with self._lock:
            if self._released:
                raise RequestEnded("the request has ended; the image is not stored")
            self._hold_new([sha256])
            self._retention.store.put(sha256, data)

    def hold(self, digests: Iterable[str]) -> None:
        """Keep stored files this request reads (a set's, a batch's) until it ends."""
        with self._lock:
            if self._released:
                raise RequestEnded("the request has ended")
            self._hold_new(digests)

    def _hold_new(self, digests: Iterable[str]) -> None:
        new = {d for d in digests if d is not None} - self._mine
        self._retention._take(new)
        self._mine |= new

    def require_stored(self, session: Session, digests: Iterable[str]) -> None:
        """See :func:`require_stored` (in the transaction that inserts the rows)."""
        require_stored(session, self._retention.store, digests)

    def release(self) -> Removed:
        """End the hold and remove what no row names (errors are logged: the sweep retries)."""
        with self._lock:
            if self._released:
                return Removed()
            self._released = True
        mine = sorted(self._mine)
        self._retention._give_back(mine)
        try:
            removed = self._retention.remove_unreferenced(mine)
        except Exception as exc:  # a database outage: the files wait for the next sweep
            log.warning("could not remove a request's unused images now: %s", exc)
            return Removed()
        if removed.paths:
            log.info("removed the request's unused images: %s", removed.summary())
        return removed


async def sweep_periodically(
    retention: ImageRetention, min_age_s: float, interval_s: float, stop: threading.Event
) -> None:
    """The sweep at start and then every ``interval_s`` (0: at start only), in a thread."""
    while not stop.is_set():
        started = time.perf_counter()
        work = asyncio.ensure_future(asyncio.to_thread(retention.sweep, min_age_s, stop=stop))
        try:
            removed = await asyncio.shield(work)
        except asyncio.CancelledError:
            await asyncio.gather(work, return_exceptions=True)  # never outlive the engine
            raise
        except Exception as exc:  # the next sweep retries; serving goes on
            log.warning("image store sweep failed: %s: %s", exc.__class__.__name__, exc)
        else:
            log.info(
                "image store sweep: removed %s unreferenced or partial, in %.1f s",
                removed.summary(),
                time.perf_counter() - started,
            )
        if interval_s <= 0:
            return
        await asyncio.sleep(interval_s)
