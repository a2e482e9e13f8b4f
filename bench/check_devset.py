"""Issue-2 acceptance check on a development set, through the real HTTP API (ASGI):

    .venv/bin/python bench/check_devset.py [../shared/data/devsets/lung-window]

Registers real/ (hash_size 16), matches generated/, and compares every phash with
str(imagehash.phash(..., 16)) and every nearest distance with a brute-force imagehash search.
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from pathlib import Path

import imagehash
from fastapi.testclient import TestClient
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.config import Settings  # noqa: E402
from app.main import create_app  # noqa: E402


def main() -> int:
    devset = Path(
        sys.argv[1] if len(sys.argv) > 1 else ROOT.parent / "shared/data/devsets/lung-window"
    )
    reals = {p.name: p.read_bytes() for p in sorted((devset / "real").glob("*.png"))}
    gens = {p.name: p.read_bytes() for p in sorted((devset / "generated").glob("*.png"))}
    tmp = Path(tempfile.mkdtemp())
    settings = Settings(data_dir=tmp, database_url=f"sqlite:///{tmp / 'check.db'}")
    with TestClient(create_app(settings)) as client:
        t0 = time.perf_counter()
        r = client.post(
            "/real-sets",
            data={"name": devset.name, "hash_size": "16"},
            files=[("files", (k, v, "image/png")) for k, v in reals.items()],
        )
        r.raise_for_status()
        real_set = r.json()
        t1 = time.perf_counter()
        m = client.post(
            "/match",
            data={"real_set_id": str(real_set["id"])},
            files=[("files", (k, v, "image/png")) for k, v in gens.items()],
        )
        m.raise_for_status()
        t2 = time.perf_counter()
    body = m.json()
    ref_real = {k: imagehash.phash(Image.open(io.BytesIO(v)), 16) for k, v in reals.items()}
    ref_gen = {k: imagehash.phash(Image.open(io.BytesIO(v)), 16) for k, v in gens.items()}
    phash_ok = sum(i["phash"] == str(ref_real[i["filename"]]) for i in real_set["images"])
    phash_ok_gen = sum(x["phash"] == str(ref_gen[x["generated"]]) for x in body["matches"])
    dist_ok = sum(
        x["distance"] == min(ref_gen[x["generated"]] - h for h in ref_real.values())
        for x in body["matches"]
    )
    print(f"devset {devset.name}: {len(reals)} real, {len(gens)} generated")
    print(f"POST /real-sets {t1 - t0:.2f} s, POST /match {t2 - t1:.2f} s")
    print(f"real phash == imagehash: {phash_ok}/{len(reals)}")
    print(f"generated phash == imagehash: {phash_ok_gen}/{len(gens)}")
    print(f"nearest distance == brute-force imagehash: {dist_ok}/{len(gens)}")
    print(
        f"threshold {body['threshold']} ({body['threshold_source']}); "
        f"{body['matched_count']} generated images matched, {body['used_count']} real 'used'"
    )
    ok = phash_ok == len(reals) and phash_ok_gen == len(gens) and dist_ok == len(gens)
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
