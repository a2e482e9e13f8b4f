"""numpy file reads go through app.npy_files, whose lock keeps CPython 3.11's AST
constructor from parsing .npy headers in two threads at once."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import numpy as np

from app.npy_files import load_npy, load_npz

APP = Path(__file__).resolve().parents[1] / "app"


def _numpy_loads(source: str) -> list[int]:
    """Lines calling np.load or numpy.load."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "load"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id in {"np", "numpy"}
    ]


def test_every_numpy_file_read_takes_the_header_lock():
    found = {
        str(path.relative_to(APP)): lines
        for path in APP.rglob("*.py")
        if path.name != "npy_files.py" and (lines := _numpy_loads(path.read_text()))
    }
    assert found == {}, f"read these through app.npy_files: {found}"


def test_loads_read_what_numpy_wrote(tmp_path):
    arrays = {"a": np.arange(6).reshape(2, 3), "b": np.array([0.5], np.float32)}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    loaded = load_npz(io.BytesIO(buffer.getvalue()))
    assert set(loaded) == {"a", "b"} and all(np.array_equal(loaded[k], arrays[k]) for k in arrays)
    np.save(tmp_path / "x.npy", arrays["a"])
    mapped = load_npy(tmp_path / "x.npy", mmap_mode="r")
    assert isinstance(mapped, np.memmap) and np.array_equal(mapped, arrays["a"])
    assert np.array_equal(load_npy(tmp_path / "x.npy"), arrays["a"])
