"""Search indices of large real sets: built once per set revision, kept on disk beside the
database (``<data dir>/indices``, MEMAUDIT_INDEX_DIR), mapped lazily by each process.

One folder per (set, revision, kind), written atomically, so replicas that share the data dir
share the files: whichever replica first needs an index builds it, the others map it (two
building at once both succeed; one rename wins). A revision's folders are removed when the
set changes (the next /match builds the new revision's) or is deleted; processes that still
map them keep reading them until they let go (POSIX unlink semantics).
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from app.search.copies import MAX_NULL_QUERIES, CopyRule, null_sample, rule_from_null
from app.search.hash_index import HashIndex
from app.search.vector_index import VectorIndex

log = logging.getLogger("memaudit.search")

#: Indices kept mapped per kind (an index of a 10,000,000-hash set maps ~1.4 GB of files).
KEEP_MAPPED = 2


#: A staging folder older than this was left by a crashed build (builds take about a minute).
STALE_STAGING_SECONDS = 3600


class SearchIndices:
    """The on-disk indices of sets with at least ``min_images`` images, and a few mapped."""

    def __init__(self, folder: Path, min_images: int) -> None:
        self.folder = Path(folder)
        self.min_images = min_images
        self._mapped: OrderedDict[tuple[int, int, str], object] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[tuple[int, int, str], threading.Lock] = {}
        self._rules: dict[tuple[int, int, float, int], CopyRule | None] = {}

    def applies(self, image_count: int) -> bool:
        """Whether a set this large is searched through an index."""
        return image_count >= self.min_images

    def hash_index(self, set_id: int, revision: int, words: np.ndarray) -> HashIndex:
        """The pHash index of the set's revision (``words``: its packed hashes in order)."""
        return self._get(set_id, revision, "phash", lambda: HashIndex.build(words), HashIndex.load)

    def vector_index(
        self, set_id: int, revision: int, model: str, vectors: Callable[[], np.ndarray]
    ) -> VectorIndex:
        """The embedding index of the set's revision, of the descriptors of embedding
        ``model`` (a tag, app.search.copies.model_tag); ``vectors()`` (the descriptors in set
        order) is called only when it must be built."""
        build = lambda: VectorIndex.build(vectors())  # noqa: E731
        return self._get(set_id, revision, f"embedding-{model}", build, VectorIndex.load)

    def copy_rule(
        self, set_id: int, revision: int, index: VectorIndex, quantile: float, min_images: int
    ) -> CopyRule | None:
        """The copy rule (app.search.copies) calibrated through the index: each of a
        fixed-seed sample of the set's descriptors against its most similar other one."""
        key = (set_id, revision, quantile, min_images)
        with self._lock:
            if key in self._rules:
                return self._rules[key]
        rule = None
        if index.size >= max(min_images, 2):
            n = index.size
            picked = null_sample(n, MAX_NULL_QUERIES)
            position = np.empty(n, np.int64)
            position[np.asarray(index.ids)] = np.arange(n)
            queries = np.asarray(index.vectors[position[picked]], dtype=np.float32)
            null = index.search(queries, exclude=picked).similarities
            rule = rule_from_null(null, quantile, n)
        with self._lock:
            self._rules[key] = rule
        return rule

    def forget(self, set_id: int) -> None:
        """Drop the set's indices from memory and disk (it changed or was deleted)."""
        with self._lock:
            for key in [k for k in self._mapped if k[0] == set_id]:
                del self._mapped[key]
            for key in [k for k in self._rules if k[0] == set_id]:
                del self._rules[key]
        for folder in self.folder.glob(f"set-{set_id}-r*"):
            shutil.rmtree(folder, ignore_errors=True)

    def _folder(self, set_id: int, revision: int, kind: str) -> Path:
        return self.folder / f"set-{set_id}-r{revision}-{kind}"

    def _get(self, set_id: int, revision: int, kind: str, build, load):
        key = (set_id, revision, kind)
        with self._lock:
            if key in self._mapped:
                self._mapped.move_to_end(key)
                return self._mapped[key]
            building = self._building.setdefault(key, threading.Lock())
        with building:  # one build per process; another process may race us (harmless)
            with self._lock:
                if key in self._mapped:
                    return self._mapped[key]
            try:
                index = self._load_or_build(set_id, revision, kind, build, load)
            except BaseException:  # a failed build (the set's descriptors are unusable, ...)
                with self._lock:
                    self._building.pop(key, None)
                raise
            with self._lock:
                self._mapped[key] = index
                self._building.pop(key, None)
                same_kind = [k for k in self._mapped if k[2] == kind]
                for old in same_kind[: max(0, len(same_kind) - KEEP_MAPPED)]:
                    del self._mapped[old]
        return index

    def _load_or_build(self, set_id: int, revision: int, kind: str, build, load):
        folder = self._folder(set_id, revision, kind)
        if not (folder / "meta.json").exists():
            self._build(folder, build, set_id, revision, kind)
        try:
            return load(folder)
        except (OSError, ValueError) as error:
            # Removed by another replica meanwhile, or of an older format: build anew.
            log.warning("rebuilding %s: %s", folder.name, error)
            shutil.rmtree(folder, ignore_errors=True)
            self._build(folder, build, set_id, revision, kind)
            return load(folder)

    def _build(self, folder: Path, build, set_id: int, revision: int, kind: str) -> None:
        started = time.perf_counter()
        build().save(folder)
        log.info("built %s (%.1f s)", folder.name, time.perf_counter() - started)
        self._drop_older_revisions(set_id, revision, kind)

    def _drop_older_revisions(self, set_id: int, revision: int, kind: str) -> None:
        """Remove the set's indices of older revisions (a newer one may be another replica's
        in use), and staging folders a crashed build left more than an hour ago. An
        embedding index (``embedding-<model tag>``) also drops the set's older embedding
        indices of other models and its untagged ones (built before indices named their
        model); one of another model at this revision may be another replica's in use."""
        family, _, tag = kind.partition("-")
        pattern = re.compile(rf"set-{set_id}-r(\d+)-{family}(?:-([0-9a-f]+))?$")
        for folder in self.folder.glob(f"set-{set_id}-r*-{family}*"):
            match = pattern.match(folder.name)
            if match is None:
                continue
            untagged = bool(tag) and match.group(2) is None
            if int(match.group(1)) < revision or untagged:
                shutil.rmtree(folder, ignore_errors=True)
        stale = time.time() - STALE_STAGING_SECONDS
        for staging in self.folder.glob(f".set-{set_id}-r*"):
            try:
                if staging.stat().st_mtime < stale:
                    shutil.rmtree(staging, ignore_errors=True)
            except OSError:
                pass
