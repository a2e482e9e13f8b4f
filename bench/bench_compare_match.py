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

In a git worktree without its own .venv, symlink one: bench_match_upload.memaudit_server starts
ROOT/.venv/bin/memaudit, and PYTHONPATH is set to this checkout so the server runs its code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import imagehash
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.imaging.decode import decode_grayscale  # noqa: E402
from bench.bench_match_upload import memaudit_server, peak_rss_mb  # noqa: E402

MAX_PIXELS = 50_000_000
CORES = 2
CHUNK = 100
DECODE_FLOOR_MAX_RATIO = 1.3
NAIVE_MIN_SPEEDUP = 3.0
RSS_LIMIT_MB = 500.0


# -- worker-side helpers (module level so spawned processes can import them) -----------------


def _single_threaded() -> None:
    """One OpenCV/BLAS thread per process, as memaudit's hash workers run: with 2 processes on
    2 cores, more threads would only oversubscribe them."""
    import cv2
    from threadpoolctl import threadpool_limits

    cv2.setNumThreads(1)
    threadpool_limits(1)


def decode_files(paths: Sequence[str]) -> int:
    """Read and decode only: the work no pHash pipeline can skip."""
    for p in paths:
        decode_grayscale(Path(p).read_bytes(), MAX_PIXELS)
    return len(paths)


def imagehash_files(paths: Sequence[str], hash_size: int) -> list[imagehash.ImageHash]:
    """What a hand-written script does: one imagehash.phash call per file."""
    return [imagehash.phash(Image.open(p), hash_size) for p in paths]


def _imagehash_chunk(job: tuple[Sequence[str], int]) -> list[imagehash.ImageHash]:
    return imagehash_files(*job)


def nearest_by_loop(
    gens: Sequence[imagehash.ImageHash], reals: Sequence[imagehash.ImageHash]
) -> list[tuple[int, int]]:
    """Every generated hash against every real hash with imagehash's `-`; the first of equally
    near reals wins, as in memaudit's search."""
    out = []
    for g in gens:
        best_i, best_d = -1, 1 << 30
        for i, r in enumerate(reals):
            d = g - r
            if d < best_d:
                best_i, best_d = i, d
        out.append((best_i, best_d))
    return out


def _nearest_chunk(
    job: tuple[Sequence[imagehash.ImageHash], Sequence[imagehash.ImageHash]],
) -> list[tuple[int, int]]:
    return nearest_by_loop(*job)


# -- measuring --------------------------------------------------------------------------------


def chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def started_pool() -> ProcessPoolExecutor:
    """Two spawned, single-threaded workers, started before any timing: a script's pool
    start-up is left out of both the floor and the naive 2-process loop."""
    pool = ProcessPoolExecutor(
        CORES, mp_context=multiprocessing.get_context("spawn"), initializer=_single_threaded
    )
    list(pool.map(time.sleep, [0.01] * CORES))
    return pool


def process_tree(pid: int) -> list[int]:
    """The server and its descendants (hash workers, the resource tracker), from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(parents.get(p, []))
    return tree


def reset_peak_rss(pids: Sequence[int]) -> bool:
    """Reset VmHWM (`echo 5 > clear_refs`) so the peak covers one request, not the server's
    whole life; False where the kernel or permissions refuse it."""
    try:
        for pid in pids:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _proc_stat(pid: int | str) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _own_cpu_s() -> float:
    """CPU seconds of this process and every descendant, live or reaped, each counted once
    (a live process's own and reaped children's times; reaped ones are in os.times())."""
    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system
    tick = os.sysconf("SC_CLK_TCK")
    for pid in process_tree(os.getpid())[1:]:
        try:
            fields = _proc_stat(pid)
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15]) / tick  # utime stime cutime cstime
    return total


def _busy_cpu_s() -> float:
    """CPU seconds all processes on the machine have used (/proc/stat, less idle and iowait)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n")[0].split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """How much of the 2 cores processes outside this benchmark used during each phase: the
    machine is shared, and a busy neighbour hurts the 2-process rows more than the 1-process
    loop, so every ratio is printed beside it."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start, busy, own = time.perf_counter(), _busy_cpu_s(), _own_cpu_s()
        yield
        wall = time.perf_counter() - start
        other = (_busy_cpu_s() - busy) - (_own_cpu_s() - own)
        self.phases[name] = max(0.0, other) / (wall * CORES)

    def line(self) -> str:
        return ", ".join(f"{k} {100 * v:.0f}%" for k, v in self.phases.items())


class TreeMemorySampler(threading.Thread):
    """Samples the summed VmRSS and Pss of the server and its workers every `period` s: the
    sum of per-process peaks (VmHWM) overstates the simultaneous peak, and RSS counts shared
    library pages once per process where PSS splits them."""

    def __init__(self, pids: Sequence[int], period: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pids, self.period = list(pids), period
        self.rss_mb = self.pss_mb = 0.0
        self._stop_event = threading.Event()

    @staticmethod
    def _kb(path: str, key: str) -> int:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
        return 0

    def run(self) -> None:
        while not self._stop_event.wait(self.period):
            rss = pss = 0
            for pid in self.pids:
                try:
                    rss += self._kb(f"/proc/{pid}/status", "VmRSS:")
                    pss += self._kb(f"/proc/{pid}/smaps_rollup", "Pss:")
                except OSError:
                    continue
            self.rss_mb, self.pss_mb = max(self.rss_mb, rss / 1024), max(self.pss_mb, pss / 1024)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


@dataclass
class MemauditRun:
    hash_size: int
    register_s: float
    walls: list[float]
    rss_server_mb: float
    rss_tree_mb: float
    rss_tree_sampled_mb: float
    pss_tree_sampled_mb: float
    tree_size: int
    rss_reset: bool
    body: dict
    real_images: list[dict] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)


def run_memaudit(
    client: httpx.Client,
    base: str,
    server_pid: int,
    reals: Sequence[Path],
    gens: Sequence[Path],
    hash_size: int,
    repeats: int,
) -> MemauditRun:
    """Register the real set, then POST /match the generated folder `repeats` times. The
    timing starts before the client reads the files, as the scripts it is compared with read
    theirs, and ends when the JSON answer is parsed."""
    register_s, r = timed(
        lambda: client.post(
            f"{base}/real-sets",
            data={"name": f"bench-{hash_size}", "hash_size": str(hash_size)},
            files=[("files", (p.name, p.read_bytes(), "image/png")) for p in reals],
        )
    )
    r.raise_for_status()
    registered = r.json()
    walls, rss_server, rss_tree, tree_size, reset_ok = [], 0.0, 0.0, 0, True
    rss_sampled = pss_sampled = 0.0
    body: dict = {}
    for _ in range(repeats):
        tree = process_tree(server_pid)
        reset_ok &= reset_peak_rss(tree)
        sampler = TreeMemorySampler(tree)
        sampler.start()

        def post() -> dict:
            files = [("files", (p.name, p.read_bytes(), "image/png")) for p in gens]
            resp = client.post(
                f"{base}/match", data={"real_set_id": str(registered["id"])}, files=files
            )
            resp.raise_for_status()
            return resp.json()

        wall, body = timed(post)
        walls.append(wall)
        sampler.stop()
        rss_sampled = max(rss_sampled, sampler.rss_mb)
        pss_sampled = max(pss_sampled, sampler.pss_mb)
        tree = process_tree(server_pid)
        rss_server = max(rss_server, peak_rss_mb(server_pid))
        rss_tree = max(rss_tree, sum(peak_rss_mb(p) for p in tree))
        tree_size = len(tree)
    return MemauditRun(
        hash_size,
        register_s,
        walls,
        rss_server,
        rss_tree,
        rss_sampled,
        pss_sampled,
        tree_size,
        reset_ok,
        body,
        registered["images"],
    )


@dataclass
class NaiveRun:
    hash_size: int
    hash_s: float
    compare_s: float
    hash_s_2p: float
    compare_s_2p: float
    nearest: list[tuple[int, int]]

    @property
    def wall(self) -> float:
        return self.hash_s + self.compare_s

    @property
    def wall_2p(self) -> float:
        return self.hash_s_2p + self.compare_s_2p


def run_naive(
    pool: ProcessPoolExecutor,
    reals: Sequence[Path],
    gens: Sequence[Path],
    hash_size: int,
    repeats: int,
) -> NaiveRun:
    """The loop in this process (one core), then the same split over the 2-process pool."""
    real_paths, gen_paths = [str(p) for p in reals], [str(p) for p in gens]
    hash_times, compare_times, hash_times_2p, compare_times_2p = [], [], [], []
    nearest: list[tuple[int, int]] = []
    for _ in range(repeats):
        t, (rh, gh) = timed(
            lambda: (imagehash_files(real_paths, hash_size), imagehash_files(gen_paths, hash_size))
        )
        hash_times.append(t)
        t, nearest = timed(lambda rh=rh, gh=gh: nearest_by_loop(gh, rh))
        compare_times.append(t)
        t, (rh2, gh2) = timed(
            lambda: (
                [
                    h
                    for part in pool.map(
                        _imagehash_chunk, [(c, hash_size) for c in chunks(real_paths, CHUNK)]
                    )
                    for h in part
                ],
                [
                    h
                    for part in pool.map(
                        _imagehash_chunk, [(c, hash_size) for c in chunks(gen_paths, CHUNK)]
                    )
                    for h in part
                ],
            )
        )
        hash_times_2p.append(t)
        halves = list(chunks(gh2, (len(gh2) + 1) // 2))
        t, nearest_2p = timed(
            lambda rh2=rh2, halves=halves: [
                x for part in pool.map(_nearest_chunk, [(c, rh2) for c in halves]) for x in part
            ]
        )
        compare_times_2p.append(t)
        assert nearest_2p == nearest
    return NaiveRun(
        hash_size,
        statistics.median(hash_times),
        statistics.median(compare_times),
        statistics.median(hash_times_2p),
        statistics.median(compare_times_2p),
        nearest,
    )


def run_imagededup(
    python: str, real_dir: Path, gen_dir: Path, threshold: int, repeats: int
) -> tuple[dict | None, str]:
    """bench/imagededup_runner.py under imagededup's own interpreter; (report, "") or
    (None, why it could not be measured)."""
    if not Path(python).exists():
        return None, f"interpreter {python} does not exist"
    check = subprocess.run(
        [python, "-c", "import imagededup.methods"], capture_output=True, text=True
    )
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["no error output"])[-1]
        return None, f"`import imagededup.methods` fails under {python}: {last}"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "imagededup.json"
        run = subprocess.run(
            [
                python,
                str(ROOT / "bench/imagededup_runner.py"),
                str(real_dir),
                str(gen_dir),
                str(out),
                f"--threshold={threshold}",
                f"--workers={CORES}",
                f"--repeats={repeats}",
            ],
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            last = (run.stderr.strip().splitlines() or ["no error output"])[-1]
            return None, f"imagededup_runner.py exited {run.returncode}: {last}"
        return json.loads(out.read_text()), ""


# -- agreement --------------------------------------------------------------------------------


def hex_bits(hexes: Sequence[str]) -> np.ndarray:
    """Hex hashes (imagehash's and imagededup's share the row-major bit order) to 0/1 rows."""
    raw = np.frombuffer(b"".join(bytes.fromhex(h) for h in hexes), np.uint8)
    return np.unpackbits(raw).reshape(len(hexes), -1)


def nearest_sets(gen_bits: np.ndarray, real_bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance matrix minimum per generated image, and a mask of every real at that minimum
    (ties are common at 64 bits, so agreement must not hinge on which tie is listed)."""
    dist = (gen_bits[:, None, :] != real_bits[None, :, :]).sum(axis=2)
    best = dist.min(axis=1)
    return best, dist == best[:, None]


def agreement(ma: MemauditRun, idd: dict) -> list[str]:
    """memaudit (hash_size=8) vs imagededup's PHash, per generated image."""
    real_names = [i["filename"] for i in ma.real_images]
    ma_real = hex_bits([i["phash"] for i in ma.real_images])
    by_gen = {m["generated"]: m for m in ma.body["matches"]}
    gen_names = [g for g in sorted(by_gen) if g in idd["generated_hashes"]]
    ma_gen = hex_bits([by_gen[g]["phash"] for g in gen_names])
    idd_real = hex_bits([idd["real_hashes"][n] for n in real_names])
    idd_gen = hex_bits([idd["generated_hashes"][g] for g in gen_names])
    ma_best, ma_ties = nearest_sets(ma_gen, ma_real)
    idd_best, idd_ties = nearest_sets(idd_gen, idd_real)
    n = len(gen_names)
    assert all(by_gen[g]["distance"] == int(d) for g, d in zip(gen_names, ma_best, strict=True))
    same_real = (ma_ties & idd_ties).any(axis=1)
    same_dist = ma_best == idd_best
    same_hash = (ma_gen == idd_gen).all(axis=1)
    hash_gap = (ma_gen != idd_gen).sum(axis=1)
    both_real = np.vstack([ma_real, idd_real])
    real_same_hash = (both_real[: len(real_names)] == both_real[len(real_names) :]).all(axis=1)
    t = idd["threshold"]
    ma_copy = np.array([by_gen[g]["source"] is not None for g in gen_names])
    idd_hits = idd["nearest_real"]
    idd_copy = np.array([bool(idd_hits.get(g)) for g in gen_names])
    # imagededup's own search result must equal its hashes' brute-force neighbours within t.
    api_consistent = all(
        bool(idd_hits.get(g)) == (d <= t) for g, d in zip(gen_names, idd_best, strict=True)
    )
    both_copy = ma_copy & idd_copy
    ma_source = [by_gen[g]["source"] for g in gen_names]
    idd_source_ok = np.array(
        [
            both_copy[i]
            and ma_source[i] in {name for name, d in idd_hits[g] if d == idd_hits[g][0][1]}
            for i, g in enumerate(gen_names)
        ]
    )
    pct = lambda k: f"{int(k)}/{n} ({100 * k / n:.1f}%)"  # noqa: E731
    lines = [
        f"generated images compared: {n}; memaudit threshold at hash_size=8: "
        f"{ma.body['threshold']} ({ma.body['threshold_source']}), imagededup "
        f"max_distance_threshold={t}",
        f"identical 64-bit hash: {pct(same_hash.sum())} generated, "
        f"{int(real_same_hash.sum())}/{len(real_names)} real; bits differing per image: "
        f"median {np.median(hash_gap):.0f}, mean {hash_gap.mean():.2f}, max {hash_gap.max()}",
        "(imagededup thresholds at the median of the 63 AC coefficients with >=, imagehash at "
        "the median of all 64 with >, so the median coefficient's bit usually differs; it also "
        "resizes before converting to grayscale)",
        f"same nearest real image (ties count as agreement): {pct(same_real.sum())}",
        f"same nearest distance: {pct(same_dist.sum())}; "
        f"|difference| mean {np.abs(ma_best - idd_best).mean():.2f}, "
        f"max {np.abs(ma_best - idd_best).max()}",
        f"same copy decision at distance <= {t}: {pct((ma_copy == idd_copy).sum())} "
        f"(memaudit copies {int(ma_copy.sum())}, imagededup {int(idd_copy.sum())}, "
        f"both {int(both_copy.sum())}; same source among both: {int(idd_source_ok.sum())})",
        f"imagededup's find_duplicates agrees with brute force on its own hashes: {api_consistent}",
    ]
    return lines


# -- report -----------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
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
    args = parser.parse_args()
    real_dir, gen_dir = args.folder / "real", args.folder / "generated"
    reals, gens = sorted(real_dir.glob("*.png")), sorted(gen_dir.glob("*.png"))
    n_all = len(reals) + len(gens)
    # The server must run this checkout's app, not whatever the venv's editable install
    # points at (another worktree).
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    print(f"images: {len(reals)} real, {len(gens)} generated under {args.folder}")
    print(
        f"cores available: {sorted(os.sched_getaffinity(0))} ({platform.processor() or '?'}; "
        f"{os.cpu_count()} online); Python {platform.python_version()}; "
        f"imagehash {imagehash.__version__}; medians of {args.repeats} "
        f"(naive loop: {args.naive_repeats}); load average {os.getloadavg()[0]:.2f}"
    )
    load = OtherLoad()

    pool = started_pool()
    paths = [str(p) for p in [*reals, *gens]]
    with load.phase("floor"):
        floor_times = [
            timed(lambda: sum(pool.map(decode_files, chunks(paths, CHUNK))))[0]
            for _ in range(args.repeats)
        ]
    floor = statistics.median(floor_times)
    print(f"decode floor runs: {', '.join(f'{t:.2f}' for t in floor_times)} s")

    ma: dict[int, MemauditRun] = {}
    with memaudit_server() as (server, base), httpx.Client(timeout=900) as client:
        for hs in (16, 8):  # start the hash workers and their per-size tables outside timing
            warm = client.post(
                f"{base}/real-sets",
                data={"name": f"warm-up-{hs}", "hash_size": str(hs)},
                files=[("files", (p.name, p.read_bytes(), "image/png")) for p in reals[:2]],
            )
            warm.raise_for_status()
        for hs in (16, 8):
            with load.phase(f"memaudit {hs}"):
                ma[hs] = run_memaudit(client, base, server.pid, reals, gens, hs, args.repeats)
            print(
                f"memaudit hash_size={hs} runs: {', '.join(f'{t:.2f}' for t in ma[hs].walls)} s"
                f"; register {len(reals)} real: {ma[hs].register_s:.2f} s"
            )

    naive: dict[int, NaiveRun] = {}
    for hs in (16, 8):
        with load.phase(f"naive {hs}"):
            naive[hs] = run_naive(pool, reals, gens, hs, args.naive_repeats)
        print(
            f"naive hash_size={hs}: 1 process hash {naive[hs].hash_s:.2f} s + compare "
            f"{naive[hs].compare_s:.2f} s; 2 processes hash {naive[hs].hash_s_2p:.2f} s + "
            f"compare {naive[hs].compare_s_2p:.2f} s"
        )
    pool.shutdown()

    threshold = args.imagededup_threshold
    if threshold is None:
        threshold = int(ma[8].body["threshold"])
    with load.phase("imagededup"):
        idd, why_not = run_imagededup(
            args.imagededup_python, real_dir, gen_dir, threshold, args.repeats
        )
    if idd is not None:
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

    # Same nearest distances as a hand-written imagehash script: memaudit claims bit-identity.
    for hs in (16, 8):
        by_gen = {m["generated"]: m["distance"] for m in ma[hs].body["matches"]}
        same = sum(
            by_gen.get(g.name) == d for g, (_, d) in zip(gens, naive[hs].nearest, strict=True)
        )
        print(
            f"hash_size={hs}: memaudit and the imagehash loop give the same nearest distance "
            f"for {same}/{len(gens)} generated images"
        )

    rows: list[tuple[str, int | str, float, int, float | None]] = [
        ("decode only (floor), 2 processes", "-", floor, n_all, None),
    ]
    for hs in (16, 8):
        rows.append(
            (f"memaudit POST /match, {len(gens)} parts", hs, ma[hs].wall, len(gens), ma[hs].wall)
        )
        rows.append(
            (
                "memaudit register real + POST /match",
                hs,
                ma[hs].wall + ma[hs].register_s,
                n_all,
                ma[hs].wall,
            )
        )
    for hs in (16, 8):
        rows.append(
            ("imagehash loop + all pairs, 1 process", hs, naive[hs].wall, n_all, ma[hs].wall)
        )
        rows.append(
            ("imagehash loop + all pairs, 2 processes", hs, naive[hs].wall_2p, n_all, ma[hs].wall)
        )
    if idd is not None:
        rows.append(
            (
                "imagededup PHash encode + find_duplicates, 2 workers",
                8,
                idd["median_total_s"],
                n_all,
                ma[8].wall,
            )
        )
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
    if idd is not None:
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
    else:
        print(f"imagededup was not measured: {why_not}")
    print(
        f"CPU used by processes outside this benchmark, share of the 2 cores: {load.line()}; "
        f"load average now {os.getloadavg()[0]:.2f}"
    )

    print("\ntargets")
    for hs in (16, 8):
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
    for hs in (16, 8):
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

    if idd is not None:
        print("\nagreement, memaudit hash_size=8 vs imagededup PHash (informational)")
        for line in agreement(ma[8], idd):
            print(f"  {line}")


if __name__ == "__main__":
    main()
