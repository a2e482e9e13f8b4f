"""One API replica against two, sharing one PostgreSQL cluster and one data dir/image store:

    .venv/bin/python bench/make_generated.py /tmp/memaudit-10k
    .venv/bin/python bench/bench_replicas.py [/tmp/memaudit-10k] [--requests 8]
        [--per-request 1000] [--repeats 3] [--cores N]

Registers DIR/real (200 images) once, then for 1 and for 2 `memaudit serve` processes on
their own ports (the shape of `docker compose up --scale api=N`: stateless replicas, shared
database and image store; all three started up front, the 1- and 2-replica runs
alternating after one untimed warm-up run each) sends the same workload: `--requests`
concurrent POST /match of `--per-request` distinct generated PNGs each, round-robin over
the replicas. Bodies are built before the clock starts. Each replica gets
`cores / replicas` hash worker processes (at least 1), so both runs start as many
decoders as there are cores. Prints the median
wall time and images/s of `--repeats` runs each, and the ratio.

On one machine the replicas share its cores: this measures what a second process adds on
the same CPUs (the API process's own GIL-bound work: multipart parsing, SHA-256, search,
JSON), not what a second machine would.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import Body, bench_database, file_parts, memaudit_server, runs  # noqa: E402


def run_workload(bases: list[str], bodies: list[Body]) -> float:
    """All requests at once, request i to replica i % len(bases); wall seconds."""

    def post(i: int) -> int:
        with httpx.Client(timeout=3600) as client:
            return (
                bodies[i].post(client, f"{bases[i % len(bases)]}/match").json()["generated_count"]
            )

    start = time.perf_counter()
    with ThreadPoolExecutor(len(bodies)) as pool:
        counts = list(pool.map(post, range(len(bodies))))
    wall = time.perf_counter() - start
    assert all(c > 0 for c in counts), counts
    return wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path, nargs="?", default=Path("/tmp/memaudit-10k"))
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--per-request", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    reals = sorted((args.folder / "real").glob("*.png"))
    gens = sorted((args.folder / "generated").glob("*.png"))
    needed = args.requests * args.per_request
    if not reals or len(gens) < needed:
        raise SystemExit(f"need DIR/real and {needed} DIR/generated PNGs (make_generated.py)")
    shared_data = tempfile.mkdtemp(prefix="memaudit-replicas-")
    with bench_database() as database_url:
        common = {
            "DATABASE_URL": database_url,
            "MEMAUDIT_DATA_DIR": shared_data,  # one image store, one spool dir, for all
        }
        configs = {1: [args.cores], 2: [max(1, args.cores // 2)] * 2}  # workers per replica
        results: dict[int, list[float]] = {n: [] for n in configs}
        with contextlib.ExitStack() as stack:
            # All three servers up at once (idle ones cost memory, not CPU), so the 1- and
            # 2-replica runs alternate and drifts in the machine's load hit both alike.
            bases = {
                n: [
                    stack.enter_context(
                        memaudit_server({**common, "MEMAUDIT_HASH_WORKERS": str(workers)})
                    )[1]
                    for workers in per_replica
                ]
                for n, per_replica in configs.items()
            }
            r = httpx.post(
                f"{bases[1][0]}/real-sets",
                data={"name": "replicas"},
                files=file_parts(reals),
                timeout=600,
            )
            r.raise_for_status()
            set_id = r.json()["id"]
            bodies = [
                Body.multipart(
                    {"real_set_id": str(set_id)},
                    file_parts(gens[i * args.per_request : (i + 1) * args.per_request]),
                )
                for i in range(args.requests)
            ]
            for n in configs:  # warm-up, untimed: workers started, set hashes cached
                run_workload(bases[n], bodies)
            for _ in range(args.repeats):
                for n in configs:
                    results[n].append(run_workload(bases[n], bodies))
                    print(f"{n} replica(s): {results[n][-1]:.1f} s", flush=True)
    images = args.requests * args.per_request
    print(
        f"\n{args.requests} concurrent POST /match x {args.per_request} generated PNGs "
        f"({images} images) vs a {len(reals)}-image set, PostgreSQL (fsync on), "
        f"{args.cores} cores, round-robin over the replicas; median of {args.repeats}:"
    )
    walls = {n: statistics.median(ts) for n, ts in results.items()}
    for n, wall in walls.items():
        print(
            f"  {n} replica(s), {configs[n][0]} hash worker(s) each: {wall:6.1f} s  "
            f"{images / wall:6.0f} images/s  (runs: {runs(results[n], 1)})"
        )
    print(f"  2 replicas / 1 replica throughput: {walls[1] / walls[2]:.2f}x")


if __name__ == "__main__":
    main()
