"""Hashing and Hamming-search speed, side by side (issue 2 figures). Run by hand:

    .venv/bin/python bench/bench_hashing_search.py [--images N] [--repeats R] [--skip-big]

Uses the real CT slices in ../shared/data/ct when present, else synthetic 256x256 phantoms.
Prints medians of R repeats and the ratios between them.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.imaging.decode import decode_grayscale  # noqa: E402
from app.imaging.phash import bits_to_hex, phash_batch  # noqa: E402
from app.search.hamming import nearest  # noqa: E402
from app.services.decode_and_hash import HashPool  # noqa: E402
from app.services.ingest import ImageIngest, IngestLimits  # noqa: E402
from bench.common import MAX_PIXELS, median_time, sample_pngs  # noqa: E402


def bench_hashing(blobs: list[bytes], repeats: int) -> None:
    n = len(blobs)
    limits = IngestLimits(max_file_bytes=1 << 30, max_files=1 << 30, max_pixels=MAX_PIXELS)

    pool = HashPool(2)
    pool.submit([blobs[0]], 16, MAX_PIXELS).result()  # start the workers outside the timing

    def pooled(hash_size: int) -> None:
        ingest = ImageIngest(hash_size, limits, pool=pool)
        for i, b in enumerate(blobs):
            ingest.add(f"{i}.png", b)
            if ingest.needs_flush:
                ingest.flush()
        ingest.finish()

    def service(hash_size: int) -> None:
        ingest = ImageIngest(hash_size, limits)
        for i, b in enumerate(blobs):
            ingest.add(f"{i}.png", b)
            if ingest.needs_flush:
                ingest.flush()
        ingest.finish()

    rows = {
        "decode only (Pillow open+load)": lambda: [Image.open(io.BytesIO(b)).load() for b in blobs],
        "decode only (memaudit decoder)": lambda: [decode_grayscale(b, MAX_PIXELS) for b in blobs],
        "imagehash.phash one by one, hash_size=16": lambda: [
            imagehash.phash(Image.open(io.BytesIO(b)), 16) for b in blobs
        ],
        "imagehash.phash one by one, hash_size=8": lambda: [
            imagehash.phash(Image.open(io.BytesIO(b)), 8) for b in blobs
        ],
        "memaudit batch hashing (decode+sha256+pHash), 16": lambda: service(16),
        "memaudit batch hashing (decode+sha256+pHash), 8": lambda: service(8),
        "memaudit, 2 worker processes, hash_size=16": lambda: pooled(16),
    }
    print(f"\n== hashing, {n} images, one process, median of {repeats} ==")
    rates = {}
    for name, fn in rows.items():
        t = median_time(fn, repeats)
        rates[name] = n / t
        print(f"{name:52s} {n / t:9.0f} images/s  {t / n * 1e6:8.0f} us/image")
    pool.shutdown()
    decode = rates["decode only (memaudit decoder)"]
    for hs in (16, 8):
        ours = rates[f"memaudit batch hashing (decode+sha256+pHash), {hs}"]
        theirs = rates[f"imagehash.phash one by one, hash_size={hs}"]
        print(
            f"hash_size={hs}: memaudit / imagehash = {ours / theirs:.2f}x; "
            f"memaudit / decode-only = {ours / decode:.2f}x"
        )
    two = rates["memaudit, 2 worker processes, hash_size=16"]
    one = rates["memaudit batch hashing (decode+sha256+pHash), 16"]
    print(f"hash_size=16: 2 worker processes / 1 process = {two / one:.2f}x")
    # Correctness alongside the speed: same hashes as imagehash.
    pixels = [decode_grayscale(b, MAX_PIXELS) for b in blobs[:300]]
    same = bits_to_hex(phash_batch(pixels, 16)) == [
        str(imagehash.phash(Image.open(io.BytesIO(b)), 16)) for b in blobs[:300]
    ]
    print(f"bit-identical to imagehash on the first 300: {same}")


def bench_search(n_queries: int, n_refs: int, bits: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    words = bits // 64
    q = rng.integers(0, 2**63, (n_queries, words), dtype=np.uint64)
    r = rng.integers(0, 2**63, (n_refs, words), dtype=np.uint64)
    t = median_time(lambda: nearest(q, r, top_k=1), repeats)
    comps = n_queries * n_refs
    print(
        f"search {n_queries:>9,} x {n_refs:>6,} {bits:3d}-bit: {t:8.3f} s  "
        f"{comps / t / 1e9:6.2f} G comparisons/s  {comps * words / t / 1e9:6.2f} G words/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-big", action="store_true", help="skip 1,000,000 x 10,000")
    args = parser.parse_args()
    blobs, what = sample_pngs(args.images)
    print(f"images: {what}")
    bench_hashing(blobs, args.repeats)
    print("\n== Hamming search (XOR + popcount, top-1, one process) ==")
    for bits in (256, 64):
        bench_search(10_000, 200, bits, args.repeats)
    if not args.skip_big:
        for bits in (64, 256):
            bench_search(1_000_000, 10_000, bits, 1)


if __name__ == "__main__":
    main()
