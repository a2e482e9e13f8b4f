"""Negative controls for `copy_of` (issue 14): batches from a generator that copied nothing
of the registered set, through /match, `copy_of` beside the pHash `source` of the same answer.

    .venv/bin/python bench/negative_controls.py [DEVSETS_DIR] [--sets lung-window,iq-othnccd]
        [--count 400] [--seed 7] [--verify auto,never]

Per dev set, two controls (every generated image should get copy_of null and source null):
- outside: ``--count`` images made only from ../shared/data/ct slices of patients outside the
  set's real/ (control_batches.outside_pool: the same folders as its originals where enough
  slices of other patients are left, else every folder), half of them a blend of two such
  slices (a latent mixture), each then edited by the training
  edits (app.training.embedding.generator_edit: warp, re-synthesis, blur, noise, gamma, JPEG)
  at 128 px and brought back to 256 px;
- reverse: the set's unused real images (labels.csv used=0) are registered instead of all of
  them, and its generated/ batch is matched: the copies' sources are then not registered.
Images are written to a temporary folder only; nothing from shared/ is kept.
"""

from __future__ import annotations

import argparse
import csv
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
from control_batches import outside_pool  # noqa: E402

from app.config import Settings  # noqa: E402
from app.main import create_app  # noqa: E402
from app.training.embedding import generator_edit  # noqa: E402


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
