"""Hashing in worker processes gives exactly what in-process hashing gives, in order."""

from __future__ import annotations

import numpy as np

from app.services.hash_pool import HashPool
from app.services.ingest import ImageIngest, IngestLimits
from tests.imagegen import phantom, png

LIMITS = IngestLimits(max_file_bytes=10**7, max_files=10**6, max_pixels=10**8, batch_size=50)


def _run(pool, files):
    ingest = ImageIngest(16, LIMITS, pool=pool)
    for name, data in files:
        ingest.add(name, data)
        if ingest.needs_flush:
            ingest.flush()
    return ingest.finish()


def test_worker_processes_match_inline_hashing():
    rng = np.random.default_rng(0)
    files = [(f"p{i:03d}.png", png(phantom(i, 64))) for i in range(150)]
    files.insert(40, ("bad.png", b"not a png"))
    files.insert(90, ("copy.png", files[3][1]))  # same bytes as p003
    files.insert(100, ("noise.png", png(rng.integers(0, 256, (70, 90), dtype=np.uint8))))
    inline = _run(None, files)
    pool = HashPool(2)
    try:
        parallel = _run(pool, files)
    finally:
        pool.shutdown()
    assert parallel.images == inline.images
    assert [i.filename for i in parallel.images][:3] == ["p000.png", "p001.png", "p002.png"]
    assert parallel.duplicates == inline.duplicates
    assert [r.filename for r in parallel.rejected] == ["bad.png"]
    assert parallel.rejected == inline.rejected
