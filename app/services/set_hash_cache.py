"""Each real set's hashes packed for search, kept in memory between requests of one process.

Keyed by set id and checked against the set's revision, so an append (which bumps the
revision) is seen by every replica on its next request.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.models import RealImage, RealSet
from app.search.copies import CopyRule, calibrate_copies, descriptors_model, unit_vectors
from app.search.hash_index import HashIndex
from app.search.vector_index import Nearest, VectorIndex
from app.services import real_sets
from app.services.search_indices import SearchIndices
from app.services.source_matching import words_from_hex

#: Sets up to this size also keep their copy-detection descriptors in memory (float32,
#: 512 bytes an image); larger ones are searched through an embedding index
#: (app.services.search_indices), as are all sets at or above MEMAUDIT_INDEX_MIN_IMAGES.
MAX_EMBEDDED_SET = 200_000


@dataclass(frozen=True)
class SetHashes:
    """A set's hashes packed for search, in registration order, and its copy-detection
    descriptors when every image has one (else None)."""

    real_set_id: int
    revision: int
    hash_size: int
    filenames: list[str]
    words: np.ndarray
    embeddings: np.ndarray | None = None
    #: The embedding (app.search.copies.model_tag) every descriptor in ``embeddings`` came from.
    embedding_model: str | None = None
    #: Copy rules calibrated on the embeddings, by (quantile, min_images).
    _rules: dict = field(default_factory=dict, compare=False, repr=False)
    #: Other figures derived from the set (copy verification's bar), by key.
    _derived: dict = field(default_factory=dict, compare=False, repr=False)

    def copy_rule(self, quantile: float, min_images: int) -> CopyRule | None:
        """The set's copy rule (see app.search.copies), computed once per revision."""
        if self.embeddings is None:
            return None
        key = (quantile, min_images)
        if key not in self._rules:
            self._rules[key] = calibrate_copies(self.embeddings, quantile, min_images)
        return self._rules[key]

    def derived(self, key: str, make: Callable[[], object]) -> object:
        """A figure of the set computed by ``make`` once per revision (and kept with it)."""
        if key not in self._derived:
            self._derived[key] = make()
        return self._derived[key]


#: SetHashes.embedding_model of a set whose descriptors come from more than one embedding.
MIXED_MODELS = "mixed"


def _model_of(blobs: list[bytes | None]) -> str | None:
    """The embedding of a set's stored descriptors, MIXED_MODELS, or None when any is missing."""
    if not blobs or any(b is None for b in blobs):
        return None
    return descriptors_model(blobs) or MIXED_MODELS


class OtherEmbedding(Exception):
    """A set's stored descriptors come from another embedding than the one searched with:
    ``found`` is theirs (or MIXED_MODELS)."""

    def __init__(self, found: str) -> None:
        super().__init__(found)
        self.found = found


@dataclass(frozen=True)
class IndexedVectors:
    """A large set's embedding index and the copy rule calibrated through it; or, with
    ``index`` None, that its descriptors come from another embedding (nothing to search)."""

    index: VectorIndex | None
    rule: CopyRule | None
    #: The embedding (app.search.copies.model_tag) its descriptors came from, or MIXED_MODELS.
    model: str

    def nearest(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert self.index is not None  # app.services.matching.embedding_problem said so
        found: Nearest = self.index.search(queries)
        return found.indices, found.similarities


class SetHashCache:
    """Packed hashes per set, reused across requests until the set's revision changes.

    Bounded by the hashes held, not the sets: one set of a million hashes costs ~100 MB
    (names included), a set of 200 almost nothing. The newest set is always kept."""

    #: Rows read from the database at a time while loading a set.
    LOAD_CHUNK = 50_000

    def __init__(self, max_hashes: int = 4_000_000, indices: SearchIndices | None = None) -> None:
        self._items: OrderedDict[int, SetHashes] = OrderedDict()
        self._lock = threading.Lock()
        self._max_hashes = max_hashes
        #: On-disk search indices of large sets (None: every set is searched by brute force).
        self.indices = indices
        #: Whether every image of a (set, revision) has a copy-detection descriptor.
        self._described: dict[tuple[int, int], bool] = {}
        #: (set, revision, embedding asked for) -> the other embedding its descriptors are of.
        self._other_model: dict[tuple[int, int, str], str] = {}
        #: (set, revision) -> images per descriptor embedding (real_sets.descriptor_counts).
        self._descriptor_counts: dict[tuple[int, int], dict[str | None, int]] = {}

    def descriptor_counts(self, session: Session, real_set: RealSet) -> dict[str | None, int]:
        """real_sets.descriptor_counts, counted once per revision (a scan of the set's rows:
        0.7 s for 300,000 images on SQLite); appends and reembed bump the revision."""
        key = (real_set.id, real_set.revision)
        with self._lock:
            counts = self._descriptor_counts.get(key)
        if counts is None:
            counts = real_sets.descriptor_counts(session, real_set.id)
            with self._lock:  # one revision per set kept
                for old in [k for k in self._descriptor_counts if k[0] == real_set.id]:
                    del self._descriptor_counts[old]
                self._descriptor_counts[key] = counts
        return counts

    def hash_index(self, hashes: SetHashes) -> HashIndex | None:
        """The set's pHash index when it is large enough to be searched through one."""
        if self.indices is None or not self.indices.applies(len(hashes.words)):
            return None
        return self.indices.hash_index(hashes.real_set_id, hashes.revision, hashes.words)

    def _indexed_vectors(self, image_count: int) -> bool:
        """Sets whose descriptors are searched through an embedding index, not held here."""
        return self.indices is not None and (
            image_count > MAX_EMBEDDED_SET or self.indices.applies(image_count)
        )

    def vector_index(
        self,
        session: Session,
        real_set: RealSet,
        quantile: float,
        min_images: int,
        model: str | None,
    ) -> IndexedVectors | None:
        """The embedding index and copy rule of a set too large to hold its descriptors,
        searched with descriptors of embedding ``model`` (a tag); None when it is held
        instead, some image has no descriptor, or they come from another embedding."""
        if model is None or not self._indexed_vectors(real_set.image_count):
            return None
        key = (real_set.id, real_set.revision)
        if key not in self._described:  # once per revision: a count over the set's rows
            missing = session.scalar(
                select(func.count())
                .select_from(RealImage)
                .where(RealImage.real_set_id == real_set.id, RealImage.embedding.is_(None))
            )
            self._described[key] = bool(real_set.image_count) and not missing
        if not self._described[key]:
            return None
        found = self._other_model.get((*key, model))
        if found is not None:
            return IndexedVectors(None, None, found)
        try:
            index = self.indices.vector_index(
                real_set.id,
                real_set.revision,
                model,
                lambda: self._load_vectors(session, real_set, model),
            )
        except OtherEmbedding as other:
            self._other_model[(*key, model)] = other.found  # read once per revision and model
            return IndexedVectors(None, None, other.found)
        rule = self.indices.copy_rule(real_set.id, real_set.revision, index, quantile, min_images)
        return IndexedVectors(index, rule, model)

    def _load_vectors(self, session: Session, real_set: RealSet, model: str) -> np.ndarray:
        """The set's descriptors in order; OtherEmbedding when any came from another model."""
        result = session.execute(
            select(RealImage.embedding)
            .where(RealImage.real_set_id == real_set.id)
            .order_by(RealImage.position)
            .execution_options(yield_per=self.LOAD_CHUNK)
        )
        blocks = []
        for rows in result.partitions():
            blobs = [r.embedding for r in rows]
            block = unit_vectors(blobs, model)
            if block is None:
                found = _model_of(blobs) if not blocks else None  # else: some were `model`
                raise OtherEmbedding(found or MIXED_MODELS)
            blocks.append(block)
        return np.concatenate(blocks)

    def get(self, session: Session, real_set: RealSet) -> SetHashes:
        with self._lock:
            cached = self._items.get(real_set.id)
            if cached is not None and cached.revision == real_set.revision:
                self._items.move_to_end(real_set.id)
                return cached
        # Streamed in chunks: a million result rows and hex strings at once would double
        # the memory the packed hashes need.
        with_vectors = real_set.image_count <= MAX_EMBEDDED_SET and not self._indexed_vectors(
            real_set.image_count
        )
        columns = [RealImage.filename, RealImage.phash]
        if with_vectors:
            columns.append(RealImage.embedding)
        result = session.execute(
            select(*columns)
            .where(RealImage.real_set_id == real_set.id)
            .order_by(RealImage.position)
            .execution_options(yield_per=self.LOAD_CHUNK)
        )
        filenames: list[str] = []
        blocks: list[np.ndarray] = []
        vectors: list[bytes | None] = []
        for rows in result.partitions():
            filenames.extend(r.filename for r in rows)
            blocks.append(words_from_hex([r.phash for r in rows], real_set.hash_size))
            if with_vectors:
                vectors.extend(r.embedding for r in rows)
        words = np.concatenate(blocks) if blocks else words_from_hex([], real_set.hash_size)
        hashes = SetHashes(
            real_set_id=real_set.id,
            revision=real_set.revision,
            hash_size=real_set.hash_size,
            filenames=filenames,
            words=words,
            embeddings=unit_vectors(vectors) if with_vectors else None,
            embedding_model=_model_of(vectors) if with_vectors else None,
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
            for key in [k for k in self._described if k[0] == real_set_id]:
                del self._described[key]  # one entry per revision otherwise, kept forever
            for key in [k for k in self._other_model if k[0] == real_set_id]:
                del self._other_model[key]
            for key in [k for k in self._descriptor_counts if k[0] == real_set_id]:
                del self._descriptor_counts[key]
        if self.indices is not None:
            self.indices.forget(real_set_id)
