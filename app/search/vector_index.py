"""Approximate most-similar search over a million copy-detection descriptors (IVF, numpy).

The unit vectors are grouped into ``lists`` by spherical k-means; a query is compared with
every list's centroid and then with every vector of its ``probe`` most similar lists. The
most similar vector of a list that is not probed is missed, so the answer is approximate:
recall@1 against the exact search (app.search.copies.nearest_real) is measured on the
archive benchmark (bench/bench_archive_search.py), not assumed. Vectors are kept as the
database's float16 values in float32, list by list, so one probed list is one contiguous
block.

Nothing here knows about sets, HTTP or the database.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from app.npy_files import load_npy

#: Lists probed per query by default: recall@1 0.994 on the archive benchmark (README).
DEFAULT_PROBE = 32
#: k-means iterations and the sample (points per list) the centroids are trained on.
KMEANS_ITERATIONS = 12
TRAIN_PER_LIST = 64
#: Similarities computed at once while assigning vectors to lists.
_BLOCK = 8_000_000
#: Threads the probed lists are split over (the products release the GIL).
_THREADS = 2
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Nearest:
    """Per query: the most similar stored vector found (its position in the build order) and
    the cosine similarity, computed in float32 from the stored (float16-rounded) values."""

    indices: np.ndarray  # int64
    similarities: np.ndarray  # float32


def default_lists(n: int) -> int:
    """About 1,000 vectors a list (1,024 lists for a million), at least 1."""
    return int(max(1, min(4096, 2 ** round(np.log2(max(n, 1) / 1000)))))


class VectorIndex:
    """IVF over unit vectors: centroids, and the vectors ordered list by list."""

    def __init__(
        self, centroids: np.ndarray, starts: np.ndarray, vectors: np.ndarray, ids: np.ndarray
    ) -> None:
        self.centroids = centroids  # (lists, dim) float32, unit
        self.starts = starts  # (lists + 1,) int64: list l is rows starts[l]:starts[l+1]
        self.vectors = vectors  # (n, dim) float32, grouped by list
        self.ids = ids  # (n,) int64: build position of each row

    @property
    def size(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        parts = (self.centroids, self.starts, self.vectors, self.ids)
        return sum(p.nbytes for p in parts)

    @classmethod
    def build(cls, vectors: np.ndarray, lists: int | None = None, seed: int = 0) -> VectorIndex:
        """Index unit vectors (n, dim); ``lists`` defaults to :func:`default_lists`."""
        # Rounded through float16 as the database stores them, kept as float32: numpy
        # converts float16 at ~10 ns a value, which cost more than the products themselves.
        stored = np.ascontiguousarray(vectors, dtype=np.float16).astype(np.float32)
        n = len(stored)
        lists = min(max(1, lists or default_lists(n)), max(n, 1))
        rng = np.random.default_rng(seed)
        if n == 0:
            dim = stored.shape[1]
            return cls(
                np.zeros((1, dim), np.float32),
                np.zeros(2, np.int64),
                stored,
                np.empty(0, np.int64),
            )
        sample = rng.choice(n, min(n, lists * TRAIN_PER_LIST), replace=False)
        train = stored[np.sort(sample)]
        centroids = train[rng.choice(len(train), lists, replace=False)]
        for _ in range(KMEANS_ITERATIONS):
            assign = _best_list(train, centroids)
            sums = np.zeros_like(centroids)
            np.add.at(sums, assign, train)
            empty = np.bincount(assign, minlength=lists) == 0
            sums[empty] = train[rng.choice(len(train), int(empty.sum()))]  # reseed empty lists
            centroids = _unit(sums)
        assign = np.empty(n, np.int64)
        rows = max(1, _BLOCK // lists)
        for lo in range(0, n, rows):
            assign[lo : lo + rows] = _best_list(stored[lo : lo + rows], centroids)
        ids = np.argsort(assign, kind="stable")
        starts = np.zeros(lists + 1, np.int64)
        np.cumsum(np.bincount(assign, minlength=lists), out=starts[1:])
        return cls(centroids.astype(np.float32), starts, stored[ids], ids.astype(np.int64))

    def search(
        self, queries: np.ndarray, probe: int = DEFAULT_PROBE, exclude: np.ndarray | None = None
    ) -> Nearest:
        """The most similar stored vector per query among its ``probe`` nearest lists;
        ``exclude[i]`` is a build position query i must skip (-1: none). -1 / -inf where a
        query's probed lists hold nothing."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        n_q = len(queries)
        best = np.full(n_q, -1, np.int64)
        best_sim = np.full(n_q, -np.inf, np.float32)
        if n_q == 0 or self.size == 0:
            return Nearest(best, best_sim)
        lists = len(self.centroids)
        probe = min(probe, lists)
        near = queries @ self.centroids.T
        probed = (
            np.argpartition(-near, probe - 1, axis=1)[:, :probe]
            if probe < lists
            else (np.broadcast_to(np.arange(lists), (n_q, lists)))
        )
        # Group (query, list) pairs by list: one matrix product per probed list.
        flat_list = probed.ravel()
        flat_query = np.repeat(np.arange(n_q), probe)
        order = np.argsort(flat_list, kind="stable")
        flat_list, flat_query = flat_list[order], flat_query[order]
        bounds = np.searchsorted(flat_list, np.arange(lists + 1))
        used = np.flatnonzero(np.diff(bounds))
        shares = [used[i::_THREADS] for i in range(_THREADS)]
        # Small products: one BLAS thread each, the lists split over the cores instead (two
        # BLAS threads per small product were 10x slower on the busy 2-core machine).
        with threadpool_limits(limits=1, user_api="blas"):
            if len(used) < 2 * _THREADS:
                parts = [self._scan_lists(queries, used, bounds, flat_query, exclude)]
            else:
                with ThreadPoolExecutor(_THREADS) as pool:
                    parts = list(
                        pool.map(
                            lambda share: self._scan_lists(
                                queries, share, bounds, flat_query, exclude
                            ),
                            shares,
                        )
                    )
        for part_best, part_sim in parts:
            better = (part_sim > best_sim) | ((part_sim == best_sim) & (part_best < best))
            better &= part_best >= 0
            best[better] = part_best[better]
            best_sim[better] = part_sim[better]
        return Nearest(best, best_sim)

    def _scan_lists(
        self,
        queries: np.ndarray,
        lists: np.ndarray,
        bounds: np.ndarray,
        flat_query: np.ndarray,
        exclude: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Best vector per query among ``lists`` (each with the queries that probe it)."""
        best = np.full(len(queries), -1, np.int64)
        best_sim = np.full(len(queries), -np.inf, np.float32)
        for lst in lists:
            lo, hi = self.starts[lst], self.starts[lst + 1]
            if lo == hi:
                continue
            who = flat_query[bounds[lst] : bounds[lst + 1]]
            sims = queries[who] @ self.vectors[lo:hi].T
            if exclude is not None:
                skip = np.nonzero(self.ids[lo:hi][None, :] == exclude[who][:, None])
                sims[skip] = -np.inf
            local = sims.argmax(axis=1)
            value = sims[np.arange(len(who)), local]
            found = self.ids[lo + local]
            # Ties go to the lower build position, as the exact search's argmax does.
            better = (value > best_sim[who]) | ((value == best_sim[who]) & (found < best[who]))
            best[who[better]] = found[better]
            best_sim[who[better]] = value[better]
        return best, best_sim

    # -- on disk -----------------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        """Write the index as a folder of .npy files, atomically."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            for name in ("centroids", "starts", "vectors", "ids"):
                np.save(staging / f"{name}.npy", getattr(self, name))
            meta = {"format": FORMAT_VERSION, "kind": "ivf-flat", "size": self.size}
            (staging / "meta.json").write_text(json.dumps(meta))
            os.rename(staging, folder)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not (folder / "meta.json").exists():
                raise

    @classmethod
    def load(cls, folder: Path) -> VectorIndex:
        """Map a saved index (vectors are read when a probed list first touches them)."""
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("format") != FORMAT_VERSION or meta.get("kind") != "ivf-flat":
            raise ValueError(f"{folder} is not a vector index of format {FORMAT_VERSION}")
        return cls(
            load_npy(folder / "centroids.npy"),
            load_npy(folder / "starts.npy"),
            # Plain arrays over the maps: np.memmap's own indexing is slower per call.
            np.asarray(load_npy(folder / "vectors.npy", mmap_mode="r")),
            np.asarray(load_npy(folder / "ids.npy", mmap_mode="r")),
        )


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _best_list(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return (vectors @ centroids.T).argmax(axis=1)
