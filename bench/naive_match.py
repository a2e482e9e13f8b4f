"""What a user would otherwise write to match a folder against another: imagehash.phash on
every file, then every generated hash against every real hash with imagehash's `-`. Used by
bench_compare_match.py, in one process and split over a 2-process pool (the functions the
pool runs are module level, so spawned workers can import them)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import imagehash
from PIL import Image

from bench.common import chunks, timed

#: Files per task handed to a pool worker.
CHUNK = 100


def imagehash_files(paths: Sequence[str], hash_size: int) -> list[imagehash.ImageHash]:
    """What a hand-written script does: one imagehash.phash call per file."""
    return [imagehash.phash(Image.open(p), hash_size) for p in paths]


def _imagehash_chunk(job: tuple[Sequence[str], int]) -> list[imagehash.ImageHash]:
    return imagehash_files(*job)


def nearest_by_loop(
    gens: Sequence[imagehash.ImageHash], reals: Sequence[imagehash.ImageHash]
) -> list[tuple[int, int]]:
    """Every generated hash against every real hash with imagehash's `-`; the first of equally
    near reals wins, as in memaudit's search."""
    out = []
    for g in gens:
        best_i, best_d = -1, 1 << 30
        for i, r in enumerate(reals):
            d = g - r
            if d < best_d:
                best_i, best_d = i, d
        out.append((best_i, best_d))
    return out


def _nearest_chunk(
    job: tuple[Sequence[imagehash.ImageHash], Sequence[imagehash.ImageHash]],
) -> list[tuple[int, int]]:
    return nearest_by_loop(*job)


def pooled_hashes(
    pool: ProcessPoolExecutor, paths: Sequence[str], hash_size: int
) -> list[imagehash.ImageHash]:
    """imagehash_files over the pool, CHUNK files per task, in order."""
    jobs = [(c, hash_size) for c in chunks(paths, CHUNK)]
    return [h for part in pool.map(_imagehash_chunk, jobs) for h in part]


def pooled_nearest(
    pool: ProcessPoolExecutor,
    gens: Sequence[imagehash.ImageHash],
    reals: Sequence[imagehash.ImageHash],
) -> list[tuple[int, int]]:
    """nearest_by_loop with the generated hashes split in halves over the pool."""
    halves = list(chunks(gens, (len(gens) + 1) // 2))
    return [x for part in pool.map(_nearest_chunk, [(c, reals) for c in halves]) for x in part]


@dataclass
class NaiveRun:
    hash_size: int
    hash_s: float
    compare_s: float
    hash_s_2p: float
    compare_s_2p: float
    nearest: list[tuple[int, int]]

    @property
    def wall(self) -> float:
        return self.hash_s + self.compare_s

    @property
    def wall_2p(self) -> float:
        return self.hash_s_2p + self.compare_s_2p


def run_naive(
    pool: ProcessPoolExecutor,
    reals: Sequence[Path],
    gens: Sequence[Path],
    hash_size: int,
    repeats: int,
) -> NaiveRun:
    """The loop in this process (one core), then the same split over the 2-process pool;
    medians of ``repeats``, and both must find the same nearest real images."""
    real_paths, gen_paths = [str(p) for p in reals], [str(p) for p in gens]
    times: dict[str, list[float]] = {"hash": [], "compare": [], "hash 2p": [], "compare 2p": []}
    nearest: list[tuple[int, int]] = []
    for _ in range(repeats):
        t, (rh, gh) = timed(
            lambda: (imagehash_files(real_paths, hash_size), imagehash_files(gen_paths, hash_size))
        )
        times["hash"].append(t)
        t, nearest = timed(lambda rh=rh, gh=gh: nearest_by_loop(gh, rh))
        times["compare"].append(t)
        t, (rh2, gh2) = timed(
            lambda: (
                pooled_hashes(pool, real_paths, hash_size),
                pooled_hashes(pool, gen_paths, hash_size),
            )
        )
        times["hash 2p"].append(t)
        t, nearest_2p = timed(lambda rh2=rh2, gh2=gh2: pooled_nearest(pool, gh2, rh2))
        times["compare 2p"].append(t)
        assert nearest_2p == nearest
    med = {k: statistics.median(v) for k, v in times.items()}
    return NaiveRun(
        hash_size, med["hash"], med["compare"], med["hash 2p"], med["compare 2p"], nearest
    )
