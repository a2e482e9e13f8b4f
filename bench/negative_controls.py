"""Negative controls for `copy_of` (issue 14): batches from a generator that copied nothing
of the registered set, through /match, `copy_of` beside the pHash `source` of the same answer.

    .venv/bin/python bench/negative_controls.py [DEVSETS_DIR] [--sets lung-window,iq-othnccd]
        [--count 400] [--seed 7] [--verify auto,never]

Per dev set, two controls (every generated image should get copy_of null and source null):
- outside: ``--count`` images made only from ../shared/data/ct slices of patients outside the
  set's real/ (same folders as its originals; a slice of a patient in labels.csv is left out,
  and for IQ-OTH/NCCD, which has no patient ids, every file numbered within 5 of a real one),
  half of them a blend of two such slices (a latent mixture), each then edited by the training
  edits (app.training.embedding.generator_edit: warp, re-synthesis, blur, noise, gamma, JPEG)
  at 128 px and brought back to 256 px;
- reverse: the set's unused real images (labels.csv used=0) are registered instead of all of
  them, and its generated/ batch is matched: the copies' sources are then not registered.
Images are written to a temporary folder only; nothing from shared/ is kept.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from attribution_devsets import zipped  # noqa: E402

from app.config import Settings  # noqa: E402
from app.main import create_app  # noqa: E402
from app.training.embedding import generator_edit  # noqa: E402

#: IQ-OTH/NCCD files numbered this close to a registered one may be the same case: left out.
IQ_NEIGHBOURS = 5


def outside_pool(labels: list[dict], ct_root: Path) -> list[Path]:
    """Slices of the set's source folders whose patient is not among the registered reals."""
    originals = {row["original"] for row in labels}
    patients = {row["patient"] for row in labels if row["patient"]}
    near: set[str] = set()
    for original in originals:
        found = re.match(r"(iq_othnccd_lung_cancer/[a-z]+)_(\d+)\.png$", original)
        if found:
            for step in range(-IQ_NEIGHBOURS, IQ_NEIGHBOURS + 1):
                near.add(f"{found.group(1)}_{int(found.group(2)) + step:04d}.png")
    pool: list[Path] = []
    for folder in sorted({o.split("/")[0] for o in originals}):
        with (ct_root / folder / "manifest.csv").open(newline="") as fh:
            for row in csv.DictReader(fh):
                name = f"{folder}/{row['filename']}"
                patient = row["patient_or_scan_id"]
                if name in originals or name in near:
                    continue
                # labels.csv may carry a longer form of the id (LUNA16 'subset2 seriesuid=...').
                if patient and any(patient in p for p in patients):
                    continue
                pool.append(ct_root / name)
    return pool


def outside_batch(pool: list[Path], count: int, seed: int, out: Path) -> None:
    """``count`` edited images of pool slices (half of them blends of two) written to ``out``."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True)
    picks = rng.choice(len(pool), size=count, replace=len(pool) < count)
    for i, pick in enumerate(picks):
        image = cv2.imread(str(pool[pick]), cv2.IMREAD_GRAYSCALE)
        partner = cv2.imread(str(pool[rng.integers(len(pool))]), cv2.IMREAD_GRAYSCALE)
        if i % 2:
            alpha = rng.uniform(0.3, 0.7)
            image = np.clip((1 - alpha) * image + alpha * partner.astype(np.float32), 0, 255)
            image = image.astype(np.uint8)
        small, small_partner = (
            cv2.resize(g, (128, 128), interpolation=cv2.INTER_AREA) for g in (image, partner)
        )
        edited = generator_edit(small, small_partner, rng, 1.0)
        edited = cv2.resize(edited, (256, 256), interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(str(out / f"control_{i:05d}.png"), edited)


def match_rates(real: Path, generated: Path, work: Path, modes: list[str]) -> dict:
    """Register ``real``, match ``generated`` once per verify mode; the share given copy_of
    (per mode) and given a pHash source."""
    settings = Settings(data_dir=work, database_url=f"sqlite:///{work / 'db.sqlite'}")
    with TestClient(create_app(settings)) as client:
        real_set = client.post(
            "/real-sets",
            data={"name": "control"},
            files={"files": ("real.zip", zipped(real), "application/zip")},
        ).json()
        batches = {
            mode: client.post(
                "/match",
                data={"real_set_id": str(real_set["id"]), "verify": mode},
                files={"files": ("gen.zip", zipped(generated), "application/zip")},
            ).json()
            for mode in modes
        }
    matches = next(iter(batches.values()))["matches"]
    return {
        "images": len(matches),
        "copy_of": {
            mode: sum(1 for m in b["matches"] if m["copy_of"] is not None)
            for mode, b in batches.items()
        },
        "source": sum(1 for m in matches if m["source"] is not None),
        "copy_threshold": next(iter(batches.values()))["copy_threshold"],
    }


def line(label: str, rates: dict) -> str:
    n = rates["images"]
    given = ", ".join(
        f"verify={mode} {count} ({count / n:.1%})" for mode, count in rates["copy_of"].items()
    )
    return (
        f"  {label:<9} {n} images: copy_of given {given}, pHash source given {rates['source']} "
        f"({rates['source'] / n:.1%}); copy bar {rates['copy_threshold']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("devsets", nargs="?", default=str(ROOT.parent / "shared/data/devsets"))
    parser.add_argument("--sets", default="lung-window,iq-othnccd")
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--verify", default="auto,never", help="/match verify modes, in turn")
    args = parser.parse_args()
    modes = args.verify.split(",")
    ct_root = Path(args.devsets).parent / "ct"
    for name in args.sets.split(","):
        folder = Path(args.devsets) / name
        with (folder / "labels.csv").open(newline="") as fh:
            labels = list(csv.DictReader(fh))
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            pool = outside_pool(labels, ct_root)
            outside_batch(pool, args.count, args.seed, work / "outside")
            unused = work / "unused"
            unused.mkdir()
            for row in labels:
                if row["used"] == "0":
                    (unused / row["real"]).write_bytes((folder / "real" / row["real"]).read_bytes())
            print(f"{name}: outside pool {len(pool)} slices")
            print(
                line("outside", match_rates(folder / "real", work / "outside", work / "a", modes))
            )
            print(line("reverse", match_rates(unused, folder / "generated", work / "b", modes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
