"""The decode -> fingerprint -> thumbnail pipeline for uploaded images, and the worker
processes it runs in, so a batch uses every core (the SHA-256 of the bytes is taken by
app.services.ingest before a file is handed here).

Decoding PNGs is the floor of an audit and it is CPU-bound Python-level work (one call per
image), so threads would serialise on the GIL. Workers are started with `spawn` (forking a
process that runs uvicorn's threads is unsafe) the first time they are needed, and each
task carries a few dozen encoded images, not pixels.
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from app.imaging.decode import ImageDecodeError, decode_grayscale
from app.imaging.features import thumbnail_pixels
from app.imaging.hashers import DEFAULT_HASH_KIND, get_hasher

#: (hex hash, width, height, thumbnail bytes, None) for a good image,
#: (None, 0, 0, None, reason) for a bad one.
Hashed = tuple[str | None, int, int, bytes | None, str | None]


#: Decoded pixels held at once before they are hashed (huge images are hashed sooner).
DECODED_BYTES_PER_BATCH = 128 * 1024 * 1024


def hash_blobs(
    blobs: list[bytes], hash_size: int, max_pixels: int, hash_kind: str = DEFAULT_HASH_KIND
) -> list[Hashed]:
    """Decode and fingerprint encoded images with the ``hash_kind`` hasher, and take their
    thumbnails while the pixels are at hand; runs in a worker (or inline)."""
    hasher = get_hasher(hash_kind)
    hasher.check_size(hash_size)
    out: list[Hashed] = [(None, 0, 0, None, None)] * len(blobs)
    good: list[int] = []
    pixels: list = []
    held = 0

    def hash_held() -> None:
        if pixels:
            hexes = hasher.hash_hex(pixels, hash_size)
            for i, gray, hex_ in zip(good, pixels, hexes, strict=True):
                thumb = thumbnail_pixels(gray).tobytes()
                out[i] = (hex_, int(gray.shape[1]), int(gray.shape[0]), thumb, None)
        good.clear()
        pixels.clear()

    for i, data in enumerate(blobs):
        try:
            gray = decode_grayscale(data, max_pixels)
        except ImageDecodeError as exc:
            out[i] = (None, 0, 0, None, str(exc))
            continue
        good.append(i)
        pixels.append(gray)
        held += gray.nbytes
        if held >= DECODED_BYTES_PER_BATCH:
            hash_held()
            held = 0
    hash_held()
    return out


def _single_threaded_worker() -> None:
    """One worker per core: BLAS and OpenCV threads inside each would oversubscribe the
    cores (measured: 3x slower on 2 cores)."""
    import cv2
    from threadpoolctl import threadpool_limits

    cv2.setNumThreads(1)
    threadpool_limits(1)


class HashingFailed(RuntimeError):
    """A worker process died (killed, out of memory); the pool has been replaced."""


class HashPool:
    """A lazily started process pool for :func:`hash_blobs`; a broken pool (a worker was
    killed) is replaced on the next use instead of failing every later request."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(
        self,
        blobs: list[bytes],
        hash_size: int,
        max_pixels: int,
        hash_kind: str = DEFAULT_HASH_KIND,
    ) -> Future:
        with self._lock:
            for _attempt in range(2):
                if self._executor is None:
                    self._executor = ProcessPoolExecutor(
                        self.workers,
                        mp_context=multiprocessing.get_context("spawn"),
                        initializer=_single_threaded_worker,
                    )
                try:
                    return self._executor.submit(
                        hash_blobs, blobs, hash_size, max_pixels, hash_kind
                    )
                except BrokenProcessPool:
                    self._discard_locked()
            raise HashingFailed("the hashing worker processes cannot be started")

    def result(self, future: Future) -> list[Hashed]:
        try:
            return future.result()
        except BrokenProcessPool:
            with self._lock:
                self._discard_locked()
            raise HashingFailed(
                "a hashing worker process died (out of memory or killed); retry the request"
            ) from None

    def _discard_locked(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def shutdown(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True, cancel_futures=True)
                self._executor = None
