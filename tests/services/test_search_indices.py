"""The on-disk index folders: an unreadable or vanished index is rebuilt (another replica may
have removed it, or it is of an older format), never an error; only older revisions and
stale staging folders are removed."""

from __future__ import annotations

import json
import os
import time

import numpy as np

from app.search.hamming import pack_words
from app.services.search_indices import STALE_STAGING_SECONDS, SearchIndices


def words(n: int = 300) -> np.ndarray:
    return pack_words(np.random.default_rng(0).integers(0, 256, (n, 32), dtype=np.uint8))


def test_an_index_of_another_format_is_rebuilt_not_an_error(tmp_path):
    packed = words()
    first = SearchIndices(tmp_path, min_images=1).hash_index(7, 1, packed)
    meta = tmp_path / "set-7-r1-phash" / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "format": -1}))
    again = SearchIndices(tmp_path, min_images=1).hash_index(7, 1, packed)  # a fresh process
    assert again.size == first.size == len(packed)
    assert json.loads(meta.read_text())["format"] != -1


def test_only_older_revisions_and_stale_staging_folders_are_removed(tmp_path):
    newer = tmp_path / "set-7-r5-phash"
    older = tmp_path / "set-7-r1-phash"
    fresh_staging = tmp_path / ".set-7-r3-phash.abc"
    stale_staging = tmp_path / ".set-7-r2-phash.def"
    for folder in (newer, older, fresh_staging, stale_staging):
        folder.mkdir()
    old = time.time() - STALE_STAGING_SECONDS - 60
    os.utime(stale_staging, (old, old))
    SearchIndices(tmp_path, min_images=1).hash_index(7, 3, words())
    left = {p.name for p in tmp_path.iterdir()}
    assert "set-7-r3-phash" in left and newer.name in left and fresh_staging.name in left
    assert older.name not in left and stale_staging.name not in left


def test_an_embedding_index_drops_untagged_and_older_ones_of_any_model(tmp_path):
    """Indices name the embedding their descriptors came from; building one removes the
    set's untagged embedding indices (from before they were named) and older revisions of
    any model, and keeps another model's at this revision (another replica's, mid-upgrade)."""
    untagged = tmp_path / "set-7-r3-embedding"
    older_other = tmp_path / "set-7-r2-embedding-bbbbbbbbbbbbbbbb"
    same_other = tmp_path / "set-7-r3-embedding-cccccccccccccccc"
    other_set = tmp_path / "set-8-r1-embedding"
    for folder in (untagged, older_other, same_other, other_set):
        folder.mkdir()
    vectors = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    SearchIndices(tmp_path, min_images=1).vector_index(7, 3, "a" * 16, lambda: vectors)
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {"set-7-r3-embedding-" + "a" * 16, same_other.name, other_set.name}
