"""Negative-control batches: what a generator that copied nothing would give a user.

    from bench.control_batches import outside_slices, resynthesised_batch, reverse_split

* ``resynthesised_batch``: generated images made only from CT slices of patients outside
  a dev set's real set (``../shared/data/ct`` minus every slice in its ``real/`` folder),
  warped and re-synthesised (down 2-4x and back up, blur, noise) like the dev sets' novel
  images.
* ``reverse_split``: a dev set's unused real images alone, audited against its generated
  batch: none of them was trained on, so every `used` verdict is a false alarm.

Needs ../shared/data (not shipped); nothing here is used by tests.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from app.imaging.decode import decode_grayscale

DATA = Path(__file__).resolve().parents[2] / "shared/data"
if not DATA.exists():
    DATA = Path("/work/shared/data")
MAX_PIXELS = 10**8


def devset_rows(devset: Path) -> list[dict]:
    with open(devset / "labels.csv") as fh:
        return list(csv.DictReader(fh))


def outside_slices(devset: Path, count: int, seed: int = 0) -> list[Path]:
    """CT slices from the folders the dev set's reals come from, minus those reals and
    every other slice of their scans (file names sharing the scan prefix before the first
    ``_``; IQ-OTH/NCCD names carry no scan id, so there only the slices themselves)."""
    rows = devset_rows(devset)
    folders = sorted({r["original"].split("/")[0] for r in rows})
    taken = {r["original"] for r in rows}
    scans = {scan_prefix(r["original"]) for r in rows} - {None}
    candidates = [
        p
        for folder in folders
        for p in sorted((DATA / "ct" / folder).glob("*.png"))
        if f"{folder}/{p.name}" not in taken and scan_prefix(f"{folder}/{p.name}") not in scans
    ]
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(candidates), min(count, len(candidates)), replace=False)
    return [candidates[i] for i in sorted(picked)]


def scan_prefix(original: str) -> str | None:
    """``folder/scan`` for a slice named ``scan_...`` (None when the prefix is only a class
    word such as ``malignant``)."""
    folder, name = original.split("/", 1)
    prefix = name.split("_")[0].split("-")[0]
    return None if prefix.isalpha() else f"{folder}/{prefix}"


def resynthesise(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A warped, re-lit, re-synthesised version of a slice (what a generator emits)."""
    side = gray.shape[0]
    m = cv2.getRotationMatrix2D((side / 2, side / 2), rng.uniform(-8, 8), rng.uniform(0.92, 1.08))
    m[:, 2] += rng.uniform(-8, 8, 2)
    out = cv2.warpAffine(gray, m, (side, side), borderMode=cv2.BORDER_REFLECT)
    factor = int(rng.integers(2, 5))
    small = cv2.resize(out, (side // factor, side // factor), interpolation=cv2.INTER_AREA)
    out = cv2.resize(small, (side, side), interpolation=cv2.INTER_CUBIC).astype(np.float64)
    out = out * rng.uniform(0.85, 1.15) + rng.uniform(-15, 15) + rng.normal(0, 4, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def resynthesised_batch(devset: Path, count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` generated images from slices outside the dev set's real set."""
    rng = np.random.default_rng(seed)
    out = []
    for path in outside_slices(devset, count, seed):
        gray = decode_grayscale(path.read_bytes(), MAX_PIXELS)
        out.append(resynthesise(cv2.resize(gray, (256, 256), interpolation=cv2.INTER_AREA), rng))
    return out


def reverse_split(devset: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(the dev set's unused real images, its generated batch)."""
    unused = [
        decode_grayscale((devset / "real" / r["real"]).read_bytes(), MAX_PIXELS)
        for r in devset_rows(devset)
        if r["used"] == "0"
    ]
    generated = [
        decode_grayscale(p.read_bytes(), MAX_PIXELS)
        for p in sorted((devset / "generated").glob("*.png"))
    ]
    return unused, generated
