"""POST /match against the alternatives a user would otherwise run, on the same folders and cores.

    .venv/bin/python bench/make_generated.py /tmp/memaudit-10k
    flock /tmp/memaudit-bench.lock .venv/bin/python bench/bench_compare_match.py /tmp/memaudit-10k \
        [--imagededup-python /tmp/idd-venv/bin/python] [--repeats 3] [--naive-repeats 1]

One run measures, on DIR/real (200) and DIR/generated (10,000):
  - the floor: only decoding the 10,200 images, in 2 processes, as memaudit decodes them;
  - memaudit: POST /match over real HTTP with 10,000 file parts against a registered set,
    hash_size 16 and 8, and the server's peak RSS (its process, and with its hash workers);
  - the naive script: imagehash.phash on every image, then every generated hash against
    every real hash with imagehash's `-`, keeping the nearest (one process, and two);
  - imagededup's PHash (encode_images + find_duplicates), run in its own venv by
    bench/imagededup_runner.py because it needs torch, which memaudit never depends on;
and prints a table with the ratios the speed issue asks about, then how often imagededup's
64-bit PHash agrees with memaudit's hash_size=8 (imagehash-identical) on the nearest real image.

The server runs this checkout's code (bench.common.memaudit_server sets PYTHONPATH to it).
The naive loop lives in naive_match.py, imagededup and the agreement in imagededup_compare.py.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import imagehash

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    OtherLoad,
    TreeMemorySampler,
    decode_floor_s,
    file_parts,
    image_folders,
    memaudit_server,
    peak_rss_mb,
    process_tree,
    reset_peak_rss,
    started_pool,
    timed,
)
from bench.imagededup_compare import agreement, run_imagededup  # noqa: E402
from bench.naive_match import NaiveRun, run_naive  # noqa: E402

DECODE_FLOOR_MAX_RATIO = 1.3
NAIVE_MIN_SPEEDUP = 3.0
RSS_LIMIT_MB = 500.0
HASH_SIZES = (16, 8)


@dataclass
class MemauditRun:
    hash_size: int
    register_s: float
    walls: list[float] = field(default_factory=list)
    rss_server_mb: float = 0.0
    rss_tree_mb: float = 0.0
    rss_tree_sampled_mb: float = 0.0
    pss_tree_sampled_mb: float = 0.0
    tree_size: int = 0
    rss_reset: bool = True
    body: dict = field(default_factory=dict)
    real_images: list[dict] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)


def timed_match(
    client: httpx.Client,
    base: str,
    server_pid: int,
    set_id: int,
    gens: Sequence[Path],
    run: MemauditRun,
) -> None:
    """One POST /match, its wall time and the memory of the server's process tree, into
    ``run``. The timing starts before the client reads the files, as the scripts it is
    compared with read theirs, and ends when the JSON answer is parsed."""
    tree = process_tree(server_pid)
    run.rss_reset &= reset_peak_rss(tree)
    sampler = TreeMemorySampler(tree)
    sampler.start()

    def post() -> dict:
        resp = client.post(
            f"{base}/match", data={"real_set_id": str(set_id)}, files=file_parts(gens)
        )
        resp.raise_for_status()
        return resp.json()

    wall, run.body = timed(post)  # type: ignore[assignment]
    run.walls.append(wall)
    sampler.stop()
    run.rss_tree_sampled_mb = max(run.rss_tree_sampled_mb, sampler.rss_mb)
    run.pss_tree_sampled_mb = max(run.pss_tree_sampled_mb, sampler.pss_mb)
    tree = process_tree(server_pid)
    run.rss_server_mb = max(run.rss_server_mb, peak_rss_mb(server_pid))
    run.rss_tree_mb = max(run.rss_tree_mb, sum(peak_rss_mb(p) for p in tree))
    run.tree_size = len(tree)


def run_memaudit(
    client: httpx.Client,
    base: str,
    server_pid: int,
    reals: Sequence[Path],
    gens: Sequence[Path],
    hash_size: int,
    repeats: int,
) -> MemauditRun:
    """Register the real set, then POST /match the generated folder `repeats` times."""
    register_s, r = timed(
        lambda: client.post(
            f"{base}/real-sets",
            data={"name": f"bench-{hash_size}", "hash_size": str(hash_size)},
            files=file_parts(reals),
        )
    )
    r.raise_for_status()  # type: ignore[attr-defined]
    registered = r.json()  # type: ignore[attr-defined]
    run = MemauditRun(hash_size, register_s, real_images=registered["images"])
    for _ in range(repeats):
        timed_match(client, base, server_pid, registered["id"], gens, run)
    return run


# -- phases -----------------------------------------------------------------------------------


def measure_floor(pool: ProcessPoolExecutor, paths: Sequence[Path], repeats: int) -> float:
    floor_times = [decode_floor_s(pool, paths) for _ in range(repeats)]
    print(f"decode floor runs: {', '.join(f'{t:.2f}' for t in floor_times)} s")
    return statistics.median(floor_times)


def measure_memaudit(
    reals: Sequence[Path], gens: Sequence[Path], repeats: int, load: OtherLoad
) -> dict[int, MemauditRun]:
    ma: dict[int, MemauditRun] = {}
    with memaudit_server() as (server, base), httpx.Client(timeout=900) as client:
        for hs in HASH_SIZES:  # start the hash workers and their per-size tables outside timing
            warm = client.post(
                f"{base}/real-sets",
                data={"name": f"warm-up-{hs}", "hash_size": str(hs)},
                files=file_parts(reals[:2]),
            )
            warm.raise_for_status()
        for hs in HASH_SIZES:
            with load.phase(f"memaudit {hs}"):
                ma[hs] = run_memaudit(client, base, server.pid, reals, gens, hs, repeats)
            print(
                f"memaudit hash_size={hs} runs: {', '.join(f'{t:.2f}' for t in ma[hs].walls)} s"
                f"; register {len(reals)} real: {ma[hs].register_s:.2f} s"
            )
    return ma


def measure_naive(
    pool: ProcessPoolExecutor,
    reals: Sequence[Path],
    gens: Sequence[Path],
    repeats: int,
    load: OtherLoad,
) -> dict[int, NaiveRun]:
    naive: dict[int, NaiveRun] = {}
    for hs in HASH_SIZES:
        with load.phase(f"naive {hs}"):
            naive[hs] = run_naive(pool, reals, gens, hs, repeats)
        print(
            f"naive hash_size={hs}: 1 process hash {naive[hs].hash_s:.2f} s + compare "
            f"{naive[hs].compare_s:.2f} s; 2 processes hash {naive[hs].hash_s_2p:.2f} s + "
            f"compare {naive[hs].compare_s_2p:.2f} s"
        )
    return naive


def measure_imagededup(
    args: argparse.Namespace, threshold: int, load: OtherLoad
) -> tuple[dict | None, str]:
    with load.phase("imagededup"):
        idd, why_not = run_imagededup(
            args.imagededup_python,
            args.folder / "real",
            args.folder / "generated",
            threshold,
            args.repeats,
        )
    if idd is None:
        return None, why_not
    for r in idd["runs"]:
        print(
            f"imagededup run: encode real {r['encode_real_s']:.2f} s, generated "
            f"{r['encode_generated_s']:.2f} s, find_duplicates {r['search_s']:.2f} s "
            f"({r['pairs_all']} pairs within {threshold}, {r['pairs_generated_real']} "
            f"generated->real)"
        )
    extra = idd["extra_search"]
    if extra:
        print(
            f"imagededup find_duplicates once more at its default max_distance_threshold="
            f"{extra['threshold']}: {extra['search_s']:.2f} s ({extra['pairs_all']} pairs, "
            f"{extra['pairs_generated_real']} generated->real)"
        )
    return idd, ""


# -- report -----------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_same_distances(
    gens: Sequence[Path], ma: dict[int, MemauditRun], naive: dict[int, NaiveRun]
) -> None:
    """Same nearest distances as a hand-written imagehash script: memaudit claims bit-identity."""
    for hs in HASH_SIZES:
        by_gen = {m["generated"]: m["distance"] for m in ma[hs].body["matches"]}
        same = sum(
            by_gen.get(g.name) == d for g, (_, d) in zip(gens, naive[hs].nearest, strict=True)
        )
        print(
            f"hash_size={hs}: memaudit and the imagehash loop give the same nearest distance "
            f"for {same}/{len(gens)} generated images"
        )


def print_table(
    floor: float,
    n_gens: int,
    n_all: int,
    ma: dict[int, MemauditRun],
    naive: dict[int, NaiveRun],
    idd: dict | None,
) -> None:
    rows: list[tuple[str, int | str, float, int, float | None]] = [
        ("decode only (floor), 2 processes", "-", floor, n_all, None),
    ]
    for hs in HASH_SIZES:
        m = ma[hs]
        rows.append((f"memaudit POST /match, {n_gens} parts", hs, m.wall, n_gens, m.wall))
        rows.append(
            ("memaudit register real + POST /match", hs, m.wall + m.register_s, n_all, m.wall)
        )
    for hs in HASH_SIZES:
        n = naive[hs]
        rows.append(("imagehash loop + all pairs, 1 process", hs, n.wall, n_all, ma[hs].wall))
        rows.append(("imagehash loop + all pairs, 2 processes", hs, n.wall_2p, n_all, ma[hs].wall))
    if idd is not None:
        name = "imagededup PHash encode + find_duplicates, 2 workers"
        rows.append((name, 8, idd["median_total_s"], n_all, ma[8].wall))
    print()
    head = ("method", "bits", "wall s", "images/s", "x floor", "x memaudit")
    print("{:54s} {:>4s} {:>8s} {:>9s} {:>8s} {:>10s}".format(*head))
    for name, hs, wall, n, ref in rows:
        bits = hs if hs == "-" else hs * hs
        rel = "" if ref is None else f"{wall / ref:.2f}"
        print(f"{name:54s} {bits:>4} {wall:8.2f} {n / wall:9.0f} {wall / floor:8.2f} {rel:>10s}")
    print(
        "(images/s counts the images each row handles: 10,000 for POST /match alone, 10,200 "
        "otherwise; 'x memaudit' is against POST /match at the same hash size; imagededup's "
        "PHash is 64-bit, so it is against hash_size=8; pool start-up is outside the floor and "
        "the 2-process loop; imagededup's import of torch is outside its wall)"
    )


def print_imagededup(
    idd: dict | None, why_not: str, ma: dict[int, MemauditRun], n_all: int
) -> None:
    if idd is None:
        print(f"imagededup was not measured: {why_not}")
        return
    runs = idd["runs"]
    med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
    print(
        f"imagededup medians: encode real {med('encode_real_s'):.2f} s + generated "
        f"{med('encode_generated_s'):.2f} s + find_duplicates {med('search_s'):.2f} s; "
        f"import {idd['import_s']:.1f} s; vs memaudit hash_size=16: "
        f"{idd['median_total_s'] / ma[16].wall:.2f}x; {idd['versions']}"
    )
    print(
        "  imagededup has no search of one set against another: find_duplicates ran over "
        f"all {n_all} hashes, so generated images were compared with each other too "
        f"({runs[-1]['pairs_all'] - 2 * runs[-1]['pairs_generated_real']} of its "
        f"{runs[-1]['pairs_all']} result pairs are not generated->real), then generated->real "
        "pairs were kept"
    )


def print_targets(floor: float, ma: dict[int, MemauditRun], naive: dict[int, NaiveRun]) -> None:
    print("\ntargets")
    for hs in HASH_SIZES:
        ratio = ma[hs].wall / floor
        ok = verdict(ratio <= DECODE_FLOOR_MAX_RATIO)
        print(
            f"  hash_size={hs}: POST /match {ma[hs].wall:.2f} s = {ratio:.2f}x decode floor "
            f"{floor:.2f} s (target <= {DECODE_FLOOR_MAX_RATIO}x): {ok}"
        )
        speedup, speedup_2p = naive[hs].wall / ma[hs].wall, naive[hs].wall_2p / ma[hs].wall
        print(
            f"  hash_size={hs}: {speedup:.2f}x faster than the 1-process imagehash loop "
            f"(target >= {NAIVE_MIN_SPEEDUP}x): {verdict(speedup >= NAIVE_MIN_SPEEDUP)}; against "
            f"the loop split over 2 processes {speedup_2p:.2f}x "
            f"({verdict(speedup_2p >= NAIVE_MIN_SPEEDUP)} if that were the bar)"
        )
    for hs in HASH_SIZES:
        m = ma[hs]
        scope = "per request" if m.rss_reset else "since the server started (VmHWM reset refused)"
        print(
            f"  hash_size={hs}: server peak RSS {scope}: process {m.rss_server_mb:.0f} MB "
            f"(target <= {RSS_LIMIT_MB:.0f}): {verdict(m.rss_server_mb <= RSS_LIMIT_MB)}; "
            f"with its {m.tree_size - 1} child processes, sampled every 50 ms: RSS "
            f"{m.rss_tree_sampled_mb:.0f} MB: {verdict(m.rss_tree_sampled_mb <= RSS_LIMIT_MB)}, "
            f"PSS {m.pss_tree_sampled_mb:.0f} MB: {verdict(m.pss_tree_sampled_mb <= RSS_LIMIT_MB)}"
            f" (sum of per-process peaks, an upper bound: {m.rss_tree_mb:.0f} MB)"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, nargs="?", default=Path("/tmp/memaudit-10k"))
    parser.add_argument("--imagededup-python", default="/tmp/idd-venv/bin/python")
    parser.add_argument(
        "--imagededup-threshold",
        type=int,
        default=None,
        help=(
            "find_duplicates' max_distance_threshold (default: memaudit's hash_size=8 threshold)"
        ),
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-repeats", type=int, default=1)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    reals, gens = image_folders(args.folder)
    n_all = len(reals) + len(gens)
    print(f"images: {len(reals)} real, {len(gens)} generated under {args.folder}")
    print(
        f"cores available: {sorted(os.sched_getaffinity(0))} ({platform.processor() or '?'}; "
        f"{os.cpu_count()} online); Python {platform.python_version()}; "
        f"imagehash {imagehash.__version__}; medians of {args.repeats} "
        f"(naive loop: {args.naive_repeats}); load average {os.getloadavg()[0]:.2f}"
    )
    load = OtherLoad()
    pool = started_pool()
    with load.phase("floor"):
        floor = measure_floor(pool, [*reals, *gens], args.repeats)
    ma = measure_memaudit(reals, gens, args.repeats, load)
    naive = measure_naive(pool, reals, gens, args.naive_repeats, load)
    pool.shutdown()
    threshold = args.imagededup_threshold
    if threshold is None:
        threshold = int(ma[8].body["threshold"])
    idd, why_not = measure_imagededup(args, threshold, load)
    print_same_distances(gens, ma, naive)
    print_table(floor, len(gens), n_all, ma, naive, idd)
    print_imagededup(idd, why_not, ma, n_all)
    print(
        f"CPU used by processes outside this benchmark, share of the 2 cores: {load.line()}; "
        f"load average now {os.getloadavg()[0]:.2f}"
    )
    print_targets(floor, ma, naive)
    if idd is not None:
        print("\nagreement, memaudit hash_size=8 vs imagededup PHash (informational)")
        for line in agreement(ma[8].real_images, ma[8].body, idd):
            print(f"  {line}")


if __name__ == "__main__":
    main()
