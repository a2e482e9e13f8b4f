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
import re
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


#: IQ-OTH/NCCD files numbered this close to a registered one may be the same case: left out
#: (its names and manifest carry no patient id).
IQ_NEIGHBOURS = 5
#: Fewer slices of other patients than this in the set's own folders: every folder is used.
MIN_POOL = 100


def same_patient(patient: str, patients: set[str]) -> bool:
    """The manifest's id and labels.csv's may each be the longer form of the other (LUNA16
    labels 'subset2 seriesuid=...', Lung-PET-CT-Dx manifests 'Lung_Dx-A0001|series=...')."""
    return any(patient in p or p in patient for p in patients)


def outside_pool(labels: list[dict], ct_root: Path, min_pool: int = MIN_POOL) -> list[Path]:
    """Slices of patients outside the set's real images: from the folders its originals come
    from, or, where those hold fewer than ``min_pool`` such slices (lung-window: its reals
    cover nearly every patient of its folders), from every folder of ``ct_root``."""
    originals = {row["original"] for row in labels}
    patients = {row["patient"] for row in labels if row["patient"]}
    near: set[str] = set()
    for original in originals:
        found = re.match(r"(iq_othnccd_lung_cancer/[a-z]+)_(\d+)\.png$", original)
        if found:
            for step in range(-IQ_NEIGHBOURS, IQ_NEIGHBOURS + 1):
                near.add(f"{found.group(1)}_{int(found.group(2)) + step:04d}.png")

    def pool_of(folders: list[str]) -> list[Path]:
        pool = []
        for folder in folders:
            with (ct_root / folder / "manifest.csv").open(newline="") as fh:
                for row in csv.DictReader(fh):
                    name = f"{folder}/{row['filename']}"
                    patient = row["patient_or_scan_id"]
                    if name in originals or name in near:
                        continue
                    if patient and same_patient(patient, patients):
                        continue
                    pool.append(ct_root / name)
        return pool

    pool = pool_of(sorted({o.split("/")[0] for o in originals}))
    if len(pool) < min_pool:
        pool = pool_of(sorted(p.name for p in ct_root.iterdir() if (p / "manifest.csv").exists()))
    return pool


def outside_slices(devset: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` slices of :func:`outside_pool` (all of them when it has fewer)."""
    candidates = outside_pool(devset_rows(devset), DATA / "ct")
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(candidates), min(count, len(candidates)), replace=False)
    return [candidates[i] for i in sorted(picked)]


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
