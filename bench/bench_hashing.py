"""Hashing throughput against the issue's targets, side by side in one run. By hand:

    .venv/bin/python bench/bench_hashing.py [--images N] [--repeats R]

Per core: this process and every worker are pinned to one BLAS / OpenCV thread, so the
one-process rows measure one core. Rows are interleaved (each repeat runs every row once)
so a noisy neighbour slows all rows alike; medians of R repeats. Targets: memaudit batch
hashing (decode + sha256 + pHash) >= 0.8x the decode-only rate, and 2 worker processes
>= 1.7x one worker process (both pools started and warmed outside the timing).
Uses the real CT slices in ../shared/data/ct when present, else synthetic 256x256 phantoms.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import imagehash
from PIL import Image
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.imaging.decode import decode_grayscale  # noqa: E402
from app.imaging.phash import bits_to_hex, phash_batch  # noqa: E402
from app.services.decode_and_hash import HashPool  # noqa: E402
from app.services.ingest import ImageIngest, IngestLimits  # noqa: E402
from bench.common import CT_DIR, MAX_PIXELS, sample_pngs  # noqa: E402

LIMITS = IngestLimits(max_file_bytes=1 << 30, max_files=1 << 30, max_pixels=MAX_PIXELS)


def ingest(blobs: list[bytes], hash_size: int, pool: HashPool | None) -> None:
    """The service's path: ImageIngest (sha256, de-duplication, batches) as the API uses it."""
    job = ImageIngest(hash_size, LIMITS, pool=pool)
    for i, b in enumerate(blobs):
        job.add(f"{i}.png", b)  # unique names; cycled bytes are reported as duplicates
        if job.needs_flush:
            job.flush()
    job.finish()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=1800)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=CT_DIR)
    args = parser.parse_args()
    threadpool_limits(1)
    cv2.setNumThreads(1)
    blobs, what = sample_pngs(args.images, args.data, cycle=True)
    n = len(blobs)
    print(f"images: {what}; cpus available: {len(os.sched_getaffinity(0))}")

    pools = {k: HashPool(k) for k in (1, 2)}
    for pool in pools.values():  # start and warm the workers (imports, pass-order probes)
        for hs in (8, 16):
            ingest(blobs[:256], hs, pool)

    rows: dict[str, Callable[[], object]] = {
        "decode only (memaudit decoder)": lambda: [decode_grayscale(b, MAX_PIXELS) for b in blobs],
        "imagehash.phash one by one, 16": lambda: [
            imagehash.phash(Image.open(io.BytesIO(b)), 16) for b in blobs
        ],
        "imagehash.phash one by one, 8": lambda: [
            imagehash.phash(Image.open(io.BytesIO(b)), 8) for b in blobs
        ],
        "memaudit batch (decode+sha256+pHash), 16": lambda: ingest(blobs, 16, None),
        "memaudit batch (decode+sha256+pHash), 8": lambda: ingest(blobs, 8, None),
        "memaudit, 1 worker process, 16": lambda: ingest(blobs, 16, pools[1]),
        "memaudit, 2 worker processes, 16": lambda: ingest(blobs, 16, pools[2]),
        "memaudit, 1 worker process, 8": lambda: ingest(blobs, 8, pools[1]),
        "memaudit, 2 worker processes, 8": lambda: ingest(blobs, 8, pools[2]),
    }
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.repeats):
        for name, fn in rows.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    for pool in pools.values():
        pool.shutdown()

    print(f"\n== hashing, {n} images, median of {args.repeats} (interleaved) ==")
    rate = {}
    for name, ts in times.items():
        t = statistics.median(ts)
        rate[name] = n / t
        spread = f"{n / max(ts):6.0f}-{n / min(ts):6.0f}"
        print(f"{name:44s} {n / t:7.0f} images/s  {t / n * 1e6:6.0f} us/image  (runs {spread})")
    decode = rate["decode only (memaudit decoder)"]
    print()
    for hs in (16, 8):
        ours = rate[f"memaudit batch (decode+sha256+pHash), {hs}"]
        theirs = rate[f"imagehash.phash one by one, {hs}"]
        two = rate[f"memaudit, 2 worker processes, {hs}"]
        one = rate[f"memaudit, 1 worker process, {hs}"]
        print(
            f"hash_size={hs:2d}: batch / decode-only = {ours / decode:.2f}x (target 0.8x); "
            f"batch / imagehash = {ours / theirs:.2f}x; "
            f"2 workers / 1 worker = {two / one:.2f}x (target 1.7x); "
            f"2 workers / in-process = {two / ours:.2f}x"
        )
    sample = blobs[:300]
    pixels = [decode_grayscale(b, MAX_PIXELS) for b in sample]
    same = all(
        bits_to_hex(phash_batch(pixels, hs))
        == [str(imagehash.phash(Image.open(io.BytesIO(b)), hs)) for b in sample]
        for hs in (8, 16)
    )
    print(f"bit-identical to imagehash.phash (8 and 16) on the first {len(sample)}: {same}")


if __name__ == "__main__":
    main()
