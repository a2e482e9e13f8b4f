"""Reading images from folders for the offline commands (match, train, evaluate)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from app.imaging.decode import ImageDecodeError, decode_image

#: Image files the commands read from a folder (by suffix, any case).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
#: Archives `memaudit match` also reads, member by member.
ARCHIVE_SUFFIXES = frozenset({".zip"})
#: Pixels one image may have when the offline commands decode it.
MAX_PIXELS = 50_000_000


def existing_folder(folder: Path) -> Path:
    if not folder.is_dir():
        raise SystemExit(f"memaudit: {folder} is not a directory")
    return folder


def image_and_archive_files(
    folder: Path, suffixes: frozenset[str] = IMAGE_SUFFIXES | ARCHIVE_SUFFIXES
) -> list[Path]:
    """Every image or zip (files with ``suffixes``) under ``folder`` (recursively), sorted:
    what `match` hashes."""
    return sorted(
        p
        for p in existing_folder(folder).rglob("*")
        if p.is_file() and p.suffix.lower() in suffixes
    )


def read_folder(folder: Path) -> tuple[list[str], list[np.ndarray]]:
    """The names and grayscale pixels of the images directly in ``folder``, sorted by name;
    undecodable files, and 16-bit ones (which need a window, never a silent clip), are
    reported on stderr and skipped."""
    names, images = [], []
    for path in sorted(
        p for p in existing_folder(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
    ):
        try:
            pixels = decode_image(path.read_bytes(), MAX_PIXELS, None)
            if not isinstance(pixels, np.ndarray):  # not read by suffix; kept out all the same
                raise ImageDecodeError("a DICOM file: upload it to the API to window it")
            images.append(pixels)
            names.append(path.name)
        except ImageDecodeError as exc:
            print(f"memaudit: skipped {path}: {exc}", file=sys.stderr)
    return names, images
