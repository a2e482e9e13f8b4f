"""Hamming nearest-neighbour speed on one core: plain numpy vs memaudit's nearest(). By hand:

    flock /tmp/memaudit-bench.lock .venv/bin/python bench/bench_search.py \
        [--queries 1000000] [--refs 10000] [--small-queries 10000] [--small-refs 200] \
        [--repeats 3] [--big-repeats 2] [--skip-big]

(a) "numpy": XOR + np.bitwise_count (+ a uint16 sum over words) + argmin, in tiles of the same
size with out= buffers: what numpy itself reaches, the issue's ~1.4 G comparisons/s reference.
It returns only the top-1 indices (top-5: argpartition, ties unordered). (b) "memaudit":
nearest(), which also returns distances, exact (distance, index) top-k and every reference's
closest query. Prints medians, G comparisons/s, G words/s (x8 = GB/s of hash bits) and the
ratio to the target of 1.4 G words/s (1.4 G/s for 64-bit, 0.35 G/s for 256-bit hashes).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, set before numpy is imported

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.search import hamming  # noqa: E402
from app.search.hamming import nearest  # noqa: E402

TARGET_WORDS_PER_S = 1.4e9


def numpy_baseline(queries: np.ndarray, references: np.ndarray, top_k: int) -> np.ndarray:
    """The obvious numpy search, tiled like memaudit's (same pairs per tile)."""
    n_q, n_r = len(queries), len(references)
    words = queries.shape[1]
    rows = max(1, hamming._BLOCK_PAIRS // n_r)
    ref_planes = np.ascontiguousarray(references.T)
    xor = np.empty((rows, n_r), np.uint64)
    count = np.empty((rows, n_r), np.uint8)
    total = np.empty((rows, n_r), np.uint16)
    out = np.empty((n_q, top_k), np.int64)
    for s in range(0, n_q, rows):
        e = min(s + rows, n_q)
        x, c = xor[: e - s], count[: e - s]
        np.bitwise_xor(queries[s:e, 0, None], ref_planes[0], out=x)
        np.bitwise_count(x, out=c)
        dist = c
        if words > 1:
            dist = total[: e - s]
            dist[...] = c
            for w in range(1, words):
                np.bitwise_xor(queries[s:e, w, None], ref_planes[w], out=x)
                np.bitwise_count(x, out=c)
                np.add(dist, c, out=dist)
        if top_k == 1:
            dist.argmin(axis=1, out=out[s:e, 0])
        else:
            out[s:e] = np.argpartition(dist, top_k - 1, axis=1)[:, :top_k]
    return out


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def run_case(n_q: int, n_r: int, bits: int, top_k: int, repeats: int) -> None:
    rng = np.random.default_rng(bits)
    words = bits // 64
    top = np.iinfo(np.uint64).max
    q = rng.integers(0, top, (n_q, words), dtype=np.uint64, endpoint=True)
    r = rng.integers(0, top, (n_r, words), dtype=np.uint64, endpoint=True)
    comparisons = n_q * n_r
    rows = {}
    for name, fn in (
        ("numpy", lambda: numpy_baseline(q, r, top_k)),
        ("memaudit", lambda: nearest(q, r, top_k=top_k)),
    ):
        rows[name] = median_time(fn, repeats)
    same = ""
    if top_k == 1:
        agree = np.array_equal(rows["numpy"][1], rows["memaudit"][1].indices)
        same = f"  same top-1 as numpy: {agree}"
    label = f"{n_q:>9,} x {n_r:>6,} {bits:3d}-bit top-{top_k}"
    for name, (t, _) in rows.items():
        words_per_s = comparisons * words / t
        print(
            f"{label}  {name:8s} {t:8.3f} s  {comparisons / t / 1e9:6.3f} G cmp/s  "
            f"{words_per_s / 1e9:6.3f} G words/s ({words_per_s * 8 / 1e9:5.1f} GB/s)  "
            f"x{words_per_s / TARGET_WORDS_PER_S:.2f} of target"
        )
    ratio = rows["numpy"][0] / rows["memaudit"][0]
    print(f"{label}  memaudit / numpy speed: {ratio:.2f}x{same}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=1_000_000)
    parser.add_argument("--refs", type=int, default=10_000)
    parser.add_argument("--small-queries", type=int, default=10_000)
    parser.add_argument("--small-refs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--big-repeats", type=int, default=2)
    parser.add_argument("--skip-big", action="store_true")
    args = parser.parse_args()
    print(f"numpy {np.__version__}, one thread, medians of {args.repeats} ({args.big_repeats} big)")
    for bits in (64, 256):
        for top_k in (1, 5):
            run_case(args.small_queries, args.small_refs, bits, top_k, args.repeats)
    if not args.skip_big:
        for bits in (64, 256):
            run_case(args.queries, args.refs, bits, 1, args.big_repeats)


if __name__ == "__main__":
    main()
