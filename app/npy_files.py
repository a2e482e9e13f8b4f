"""numpy file reads that are safe to run from several threads at once.

numpy parses every .npy header with ``ast.literal_eval``, and CPython 3.11's AST constructor
keeps its recursion depth per interpreter, not per thread: two threads parsing at once can
fail with "SystemError: AST constructor recursion depth mismatch" (python/cpython#106905).
That failed a /match job in the test suite, in the feature store's read of a real image's
SIFT keypoints from a verification thread. Every numpy file read of this package goes
through here (tests/test_npy_files.py checks it), holding one lock while headers are parsed.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import IO, Literal

import numpy as np

_HEADERS = threading.Lock()


def load_npy(file: Path | IO[bytes], mmap_mode: Literal["r"] | None = None) -> np.ndarray:
    """One .npy array (memory-mapped with ``mmap_mode="r"``: only the header is read here)."""
    with _HEADERS:
        return np.load(file, mmap_mode=mmap_mode, allow_pickle=False)


def load_npz(file: Path | IO[bytes]) -> dict[str, np.ndarray]:
    """Every array of an .npz archive, read whole (each member has its own header)."""
    with _HEADERS, np.load(file, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}
