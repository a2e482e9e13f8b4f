"""Each real set's hashes packed for search, kept in memory between requests of one process.

Keyed by set id and checked against the set's revision, so an append (which bumps the
revision) is seen by every replica on its next request.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import RealImage, RealSet
from app.services.source_matching import words_from_hex


@dataclass(frozen=True)
class SetHashes:
    """A set's hashes packed for search, in registration order."""

    real_set_id: int
    revision: int
    hash_size: int
    filenames: list[str]
    words: np.ndarray


class SetHashCache:
    """Packed hashes per set, reused across requests until the set's revision changes.

    Bounded by the hashes held, not the sets: one set of a million hashes costs ~100 MB
    (names included), a set of 200 almost nothing. The newest set is always kept."""

    #: Rows read from the database at a time while loading a set.
    LOAD_CHUNK = 50_000

    def __init__(self, max_hashes: int = 4_000_000) -> None:
        self._items: OrderedDict[int, SetHashes] = OrderedDict()
        self._lock = threading.Lock()
        self._max_hashes = max_hashes

    def get(self, session: Session, real_set: RealSet) -> SetHashes:
        with self._lock:
            cached = self._items.get(real_set.id)
            if cached is not None and cached.revision == real_set.revision:
                self._items.move_to_end(real_set.id)
                return cached
        # Streamed in chunks: a million result rows and hex strings at once would double
        # the memory the packed hashes need.
        result = session.execute(
            select(RealImage.filename, RealImage.phash)
            .where(RealImage.real_set_id == real_set.id)
            .order_by(RealImage.position)
            .execution_options(yield_per=self.LOAD_CHUNK)
        )
        filenames: list[str] = []
        blocks: list[np.ndarray] = []
        for rows in result.partitions():
            filenames.extend(r.filename for r in rows)
            blocks.append(words_from_hex([r.phash for r in rows], real_set.hash_size))
        words = np.concatenate(blocks) if blocks else words_from_hex([], real_set.hash_size)
        hashes = SetHashes(
            real_set_id=real_set.id,
            revision=real_set.revision,
            hash_size=real_set.hash_size,
            filenames=filenames,
            words=words,
        )
        with self._lock:
            self._items[real_set.id] = hashes
            self._items.move_to_end(real_set.id)
            held = sum(len(h.filenames) for h in self._items.values())
            while len(self._items) > 1 and held > self._max_hashes:
                _, evicted = self._items.popitem(last=False)
                held -= len(evicted.filenames)
        return hashes

    def forget(self, real_set_id: int) -> None:
        with self._lock:
            self._items.pop(real_set_id, None)
