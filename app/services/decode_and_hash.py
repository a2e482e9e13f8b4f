"""The decode -> fingerprint -> thumbnail pipeline for uploaded images, and the worker
processes it runs in, so a batch uses every core (the SHA-256 of the bytes is taken by
app.services.ingest before a file is handed here).

Decoding PNGs is the floor of an audit and it is CPU-bound Python-level work (one call per
image), so threads would serialise on the GIL. Workers are started with `spawn` (forking a
process that runs uvicorn's threads is unsafe) the first time they are needed, and each
task carries a few dozen encoded images, not pixels.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from app.imaging.decode import ImageDecodeError, WindowedImage, decode_image
from app.imaging.features import thumbnail_pixels
from app.imaging.hashers import DEFAULT_HASH_KIND, get_hasher
from app.imaging.windowing import AppliedWindow, Window
from app.search.copies import pack_descriptor

if TYPE_CHECKING:
    from app.scoring.embedding import EmbeddingModel


@dataclass(frozen=True, slots=True)
class HashedFrame:
    """One windowed image (a DICOM frame, or a 16-bit image): its fingerprint, the window
    that made its 8-bit pixels, and those pixels as PNG (kept instead of the upload)."""

    #: 1-based frame number in a multi-frame file; None for a single image.
    frame: int | None
    hex_hash: str
    width: int
    height: int
    thumbnail: bytes
    window: AppliedWindow
    png: bytes
    #: Copy-detection descriptor (float16), when an embedding was asked for.
    embedding: bytes | None = None


#: (hex hash, width, height, thumbnail bytes, None, None, embedding) for a good 8-bit image,
#: (None, 0, 0, None, None, frames, None) for a windowed one (DICOM, 16-bit),
#: (None, 0, 0, None, reason, None, None) for a bad one. ``embedding``: the copy-detection
#: descriptor as float16 bytes, or None when no embedding was asked for.
Hashed = tuple[
    str | None, int, int, bytes | None, str | None, tuple[HashedFrame, ...] | None, bytes | None
]


@dataclass(frozen=True)
class EmbeddingSpec:
    """Which verified embedding artifact the workers load (once per process) and run."""

    path: str
    want_cuda: bool
    #: The artifact's (verified) sha256: each stored descriptor is tagged with it.
    sha256: str


#: Loaded embeddings of this process, by artifact path (a worker keeps its session).
_EMBEDDERS: dict[str, EmbeddingModel] = {}


def _embedder(spec: EmbeddingSpec) -> EmbeddingModel:
    model = _EMBEDDERS.get(spec.path)
    if model is None:
        from app.scoring.base import ModelInfo
        from app.scoring.embedding import EmbeddingModel

        # One onnxruntime thread: one worker per core already (see _start_worker).
        info = ModelInfo("embedding", "worker", sha256="")
        model = EmbeddingModel(Path(spec.path), info, want_cuda=spec.want_cuda, threads=1)
        _EMBEDDERS[spec.path] = model
    return model


#: Decoded pixels held at once before they are hashed (huge images are hashed sooner).
DECODED_BYTES_PER_BATCH = 128 * 1024 * 1024


def hash_blobs(
    blobs: list[bytes],
    hash_size: int,
    max_pixels: int,
    hash_kind: str = DEFAULT_HASH_KIND,
    window: Window | None = None,
    embedding: EmbeddingSpec | None = None,
) -> list[Hashed]:
    """Decode and fingerprint encoded images with the ``hash_kind`` hasher, and take their
    thumbnails (and, with ``embedding``, their copy-detection descriptors) while the pixels
    are at hand; runs in a worker (or inline). DICOM and 16-bit images are windowed with
    ``window`` (None: automatic, see app.imaging.dicom)."""
    hasher = get_hasher(hash_kind)
    hasher.check_size(hash_size)
    try:
        embedder = _embedder(embedding) if embedding is not None else None
    except Exception as exc:
        raise HashingFailed(f"the copy-detection embedding cannot be loaded: {exc}") from None
    out: list[Hashed] = [(None, 0, 0, None, None, None, None)] * len(blobs)
    #: Index of the blob each held image comes from, and the windowed image it is a frame of.
    good: list[tuple[int, WindowedImage | None, int]] = []
    pixels: list = []
    frames_of: dict[int, list[HashedFrame]] = {}
    held = 0

    def hash_held() -> None:
        if pixels:
            hexes = hasher.hash_hex(pixels, hash_size)
            vectors: list[bytes | None] = [None] * len(pixels)
            if embedder is not None:
                try:
                    embedded = embedder.embed(pixels)
                except Exception as exc:  # onnxruntime: a replaced or broken artifact
                    raise HashingFailed(f"the copy-detection embedding failed: {exc}") from None
                vectors = [pack_descriptor(v, embedding.sha256) for v in embedded]
            for (i, windowed, k), gray, hex_, vector in zip(
                good, pixels, hexes, vectors, strict=True
            ):
                thumb = thumbnail_pixels(gray).tobytes()
                if windowed is None:
                    w, h = int(gray.shape[1]), int(gray.shape[0])
                    out[i] = (hex_, w, h, thumb, None, None, vector)
                else:
                    frame = _windowed_frame(windowed, k, gray, hex_, thumb)
                    frames_of[i].append(replace(frame, embedding=vector))
        good.clear()
        pixels.clear()

    for i, data in enumerate(blobs):
        try:
            decoded = decode_image(data, max_pixels, window)
        except ImageDecodeError as exc:
            out[i] = (None, 0, 0, None, str(exc), None, None)
            continue
        if isinstance(decoded, np.ndarray):
            good.append((i, None, 0))
            pixels.append(decoded)
            held += decoded.nbytes
        else:
            frames_of[i] = []
            for k, gray in enumerate(decoded.frames):
                good.append((i, decoded, k))
                pixels.append(gray)
                held += gray.nbytes
        if held >= DECODED_BYTES_PER_BATCH:
            hash_held()
            held = 0
    hash_held()
    for i, frames in frames_of.items():
        out[i] = (None, 0, 0, None, None, tuple(frames), None)
    return out


def _windowed_frame(
    windowed: WindowedImage, k: int, gray: np.ndarray, hex_: str, thumb: bytes
) -> HashedFrame:
    ok, encoded = cv2.imencode(".png", gray)
    if not ok:  # pragma: no cover - OpenCV encodes any 2-D uint8 array
        raise RuntimeError("PNG encoding of windowed pixels failed")
    return HashedFrame(
        frame=k + 1 if windowed.multi_frame else None,
        hex_hash=hex_,
        width=int(gray.shape[1]),
        height=int(gray.shape[0]),
        thumbnail=thumb,
        window=windowed.windows[k],
        png=encoded.tobytes(),
    )


#: prctl(2) option: the signal this process gets when the thread that created it dies.
PR_SET_PDEATHSIG = 1


def _exit_with_parent(parent_pid: int) -> None:
    """Make this worker die with the API process (kill -9, OOM kill) instead of living on
    under PID 1 with its memory. Linux: the kernel sends SIGTERM when the creating thread
    ends (see HashPool: workers are created by a thread that lives as long as the pool),
    and a parent already gone before the call is caught by comparing the parent pid.
    Elsewhere a thread waits on the parent's sentinel pipe, which closes when it dies."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0:
            if os.getppid() != parent_pid:  # died between the spawn and the prctl
                os._exit(1)
            return
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _start_worker(parent_pid: int) -> None:
    """Worker initializer: die with the parent, and one thread per worker, because BLAS and
    OpenCV threads inside each would oversubscribe the cores (measured: 3x slower on 2
    cores)."""
    _exit_with_parent(parent_pid)
    import cv2
    from threadpoolctl import threadpool_limits

    cv2.setNumThreads(1)
    threadpool_limits(1)


#: Why an upload failed when a hash worker process was lost under it.
WORKER_DIED = "a hashing worker process died (out of memory or killed); retry the request"


class HashingFailed(RuntimeError):
    """A worker process died (killed, out of memory); the pool has been replaced."""


class HashPool:
    """A lazily started process pool for :func:`hash_blobs`; a broken pool (a worker was
    killed) is replaced on the next use instead of failing every later request. Workers
    exit when the process that owns the pool dies (:func:`_exit_with_parent`).

    ProcessPoolExecutor starts workers in the thread that calls ``submit``; Linux's
    parent-death signal fires when *that thread* ends, and request threads come and go
    (anyio retires idle ones), so every submit runs on one thread owned by the pool.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        #: The thread that starts (and so parents) every worker; lives until shutdown.
        self._spawner: ThreadPoolExecutor | None = None

    def submit(
        self,
        blobs: list[bytes],
        hash_size: int,
        max_pixels: int,
        hash_kind: str = DEFAULT_HASH_KIND,
        window: Window | None = None,
        embedding: EmbeddingSpec | None = None,
    ) -> Future:
        with self._lock:
            if self._spawner is None:
                self._spawner = ThreadPoolExecutor(1, thread_name_prefix="hash-pool")
            for _attempt in range(2):
                if self._executor is None:
                    self._executor = ProcessPoolExecutor(
                        self.workers,
                        mp_context=multiprocessing.get_context("spawn"),
                        initializer=_start_worker,
                        initargs=(os.getpid(),),
                    )
                try:
                    return self._spawner.submit(
                        self._executor.submit,
                        hash_blobs,
                        blobs,
                        hash_size,
                        max_pixels,
                        hash_kind,
                        window,
                        embedding,
                    ).result()
                except BrokenProcessPool:
                    self._discard_locked()
            raise HashingFailed("the hashing worker processes cannot be started")

    def result(self, future: Future) -> list[Hashed]:
        try:
            return future.result()
        except BrokenProcessPool:
            with self._lock:
                self._discard_locked()
            raise HashingFailed(WORKER_DIED) from None

    def _discard_locked(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def shutdown(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True, cancel_futures=True)
                self._executor = None
            if self._spawner is not None:
                self._spawner.shutdown(wait=True)
                self._spawner = None
