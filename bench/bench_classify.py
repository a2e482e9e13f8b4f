"""POST /classify (reference) on an ImageCLEF-2023-sized audit over real HTTP:

    .venv/bin/python bench/make_generated.py /tmp/memaudit-10k
    .venv/bin/python bench/bench_classify.py /tmp/memaudit-10k [--method reference]

Registers DIR/real, matches DIR/generated (stores the batch), then times /classify with the
set and the batch, and reports the cost per real and per generated image.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import file_parts, image_folders, memaudit_server, peak_rss_mb  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--method", default="reference")
    parser.add_argument("--generated", type=int, default=0, help="use only the first N")
    args = parser.parse_args()
    reals, gens = image_folders(args.folder)
    if args.generated:
        gens = gens[: args.generated]
    with memaudit_server() as (server, base), httpx.Client(timeout=3600) as client:
        files = file_parts(reals)
        set_id = client.post(f"{base}/real-sets", data={"name": "bench"}, files=files).json()["id"]
        files = file_parts(gens)
        start = time.perf_counter()
        batch = client.post(f"{base}/match", data={"real_set_id": str(set_id)}, files=files)
        match_s = time.perf_counter() - start
        batch_id = batch.json()["batch_id"]
        start = time.perf_counter()
        r = client.post(
            f"{base}/classify",
            data={"method": args.method, "real_set_id": str(set_id), "batch_id": str(batch_id)},
        )
        classify_s = time.perf_counter() - start
        r.raise_for_status()
        rss = peak_rss_mb(server.pid)
    body = r.json()
    print(f"{len(reals)} real x {len(gens)} generated, method {args.method}")
    print(f"  POST /match (upload + hash + search + store): {match_s:.1f} s")
    print(
        f"  POST /classify: {classify_s:.1f} s = {classify_s / len(reals) * 1e3:.0f} ms per "
        f"real image, {classify_s / len(gens) * 1e3:.1f} ms per generated image"
    )
    print(f"  used: {body['used_count']} of {body['real_count']}; server peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
