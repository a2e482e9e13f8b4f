"""Registering 1,000,000 precomputed pHashes over real HTTP on PostgreSQL, then matching:

    .venv/bin/python bench/make_generated.py /tmp/memaudit-10k
    .venv/bin/python bench/bench_hash_import.py [/tmp/memaudit-10k] [--hashes 1000000]
        [--generated 1000] [--repeats 3]

Starts a throwaway PostgreSQL cluster (fsync on) and `memaudit serve` on it, writes a
`filename,phash` file of random 256-bit hashes, and times POST /real-sets with it as the
`hashes` part (upload, parse, COPY, calibration, in one request) against the issue's target
of 20,000 hashes/s. Then, once, against the last set, times the first POST /match of
DIR/generated images (the set's hashes loaded from the database into the packed matrix:
there are no image bytes for it) and a second one (hashes cached for the set's revision).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    bench_database,
    file_parts,
    memaudit_server,
    peak_rss_mb,
    runs,
)

TARGET = 20_000


def write_hashes(path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    with path.open("wb") as out:
        out.write(b"filename,phash\n")
        for lo in range(0, n, 100_000):
            block = rng.integers(0, 256, (min(100_000, n - lo), 32), np.uint8)
            out.write(
                b"".join(
                    b"real_%07d.png,%s\n" % (lo + i, row.tobytes().hex().encode())
                    for i, row in enumerate(block)
                )
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path, nargs="?", default=Path("/tmp/memaudit-10k"))
    parser.add_argument("--hashes", type=int, default=1_000_000)
    parser.add_argument("--generated", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    gens = sorted((args.folder / "generated").glob("*.png"))[: args.generated]
    if not gens:
        raise SystemExit(f"no {args.folder}/generated/*.png: run bench/make_generated.py")
    files = file_parts(gens)
    work = Path(tempfile.mkdtemp(prefix="memaudit-bench-"))
    hashes_csv = work / "hashes.csv"
    write_hashes(hashes_csv, args.hashes)
    size_mb = hashes_csv.stat().st_size / 1e6

    register_s: list[float] = []
    match_s: list[float] = []
    with bench_database() as database_url:
        env = {"DATABASE_URL": database_url}
        with memaudit_server(env) as (server, base), httpx.Client(timeout=3600) as client:
            for i in range(args.repeats):
                with hashes_csv.open("rb") as fh:  # streamed by httpx, not read into memory
                    start = time.perf_counter()
                    r = client.post(
                        f"{base}/real-sets",
                        data={"name": f"1M #{i}", "hash_size": "16"},
                        files=[("hashes", ("hashes.csv", fh, "text/csv"))],
                    )
                    register_s.append(time.perf_counter() - start)
                r.raise_for_status()
                real_set = r.json()
                assert real_set["imported"] == args.hashes, real_set
            # Matching against the last set: each match also stores every real image's
            # result (packed, for a set this large), whatever real_summary the answer lists.
            for scope in ("all", "all", "used"):
                start = time.perf_counter()
                m = client.post(
                    f"{base}/match",
                    data={"real_set_id": str(real_set["id"]), "real_summary": scope},
                    files=files,
                )
                match_s.append(time.perf_counter() - start)
                m.raise_for_status()
                if scope == "all":
                    body_mb = len(m.content) / 1e6
            used_kb = len(m.content) / 1e3
            rss = peak_rss_mb(server.pid)
            page = client.get(f"{base}/real-sets/{real_set['id']}", params={"limit": 1}).json()
    reg = statistics.median(register_s)
    rate = args.hashes / reg
    print(
        f"POST /real-sets with a 'hashes' file of {args.hashes:,} lines ({size_mb:.0f} MB), "
        "PostgreSQL fsync on, over HTTP"
    )
    print(f"  register, median of {args.repeats}: {reg:.1f} s  (runs: {runs(register_s, 1)})")
    verdict = "meets" if rate >= TARGET else "MISSES"
    print(f"  = {rate:,.0f} hashes/s; target {TARGET:,}/s: {verdict} it ({rate / TARGET:.2f}x)")
    print(
        f"  calibrated_threshold={real_set['calibrated_threshold']}  "
        f"first image: {page['images'][0]}"
    )
    print(f"POST /match of {len(gens)} generated PNGs against the {args.hashes:,}-hash set:")
    print(f"  first (the set's hashes loaded from the database): {match_s[0]:.2f} s")
    print(f"  second (hashes cached for the set's revision): {match_s[1]:.2f} s")
    print(f"  answer: {body_mb:.0f} MB (real_summary has one entry per real image)")
    print(
        f"  third, with real_summary=used (only used real images listed; every real image's "
        f"result still stored): {match_s[2]:.2f} s, answer {used_kb:.0f} kB"
    )
    print(f"  server peak RSS (API process, not its hash workers): {rss:.0f} MB")


if __name__ == "__main__":
    main()
