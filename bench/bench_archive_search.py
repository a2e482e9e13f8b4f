"""Search at archive scale: the pHash index (app/search/hash_index.py) against 10,000,000
hashes and the embedding index (app/search/vector_index.py) against 1,000,000 descriptors,
each beside brute force in the same run. By hand (2 cores, shared machine: run when quiet):

    flock /tmp/memaudit-bench.lock .venv/bin/python bench/bench_archive_search.py \
        [--hashes 10000000] [--hash-size 16] [--vectors 1000000] [--check-batches 3] \
        [--skip-hashes] [--skip-vectors] [--thresholds 0,9,17,29] [--baseline ../main]

--baseline DIR also builds and times DIR/app/search/hash_index.py (another checkout's index,
e.g. main's) on the same archive, in the same run, checked against the same brute force.

The archive (hashes). Hashing 10 million images would take hours, so most hashes are derived:
(1) pHashes of the 1,871 real CT slices under ../shared/data/ct, of 8 edited copies of each
(shifted up to 8 px, rotated up to 6 degrees, scaled 0.92-1.08, re-lit, noised: the seed
pool), and of the dev sets' real images; (2) "scans" of 300 slices, each between two seeds of
the pool: slice j takes seed B's bit where a per-scan random number per bit is below j/299,
else seed A's (neighbouring slices differ by a bit or two, the ends are real CT hashes), plus
on average 3 flipped bits per slice, each bit flipping in proportion to how often it varies
in the pool (the DC bit never does). The seeds and the dev sets' real images are placed at
random positions among them. Queries: the dev sets' generated images (1,400), in batches of
100, the /match unit. Thresholds: the set's own (calibrated as /match does, 5% quantile),
the three dev sets' calibrated thresholds, and the paper's 50.

Brute force is app.search.hamming.nearest (what /match runs below the index setting), timed
on --check-batches batches; those batches' pairs within each threshold are compared with
the index's (identical, or the script fails). Generated data is cached under
/tmp/memaudit-archive-bench (nothing from shared/ is committed).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse  # noqa: E402
import glob  # noqa: E402
import importlib.util  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.imaging.phash import bits_to_bytes, phash_batch  # noqa: E402
from app.search import hash_index  # noqa: E402
from app.search.calibration import calibrate  # noqa: E402
from app.search.copies import nearest_other_similarity, nearest_real  # noqa: E402
from app.search.hamming import distance_block, nearest, pack_words  # noqa: E402
from app.search.vector_index import VectorIndex  # noqa: E402

#: ../shared/data beside the checkout (or beside the folder of worktrees).
SHARED = next(
    (p / "shared/data" for p in (ROOT.parent, ROOT.parent.parent) if (p / "shared/data").exists()),
    ROOT.parent / "shared/data",
)
CACHE = Path(tempfile.gettempdir()) / "memaudit-archive-bench"
SCAN_SLICES = 300
#: Per-dimension noise added to a derived descriptor before it is normalised.
VECTOR_NOISE = 0.02
#: Bits flipped per derived slice on average (Poisson), beside the A-to-B drift.
FLIPS_PER_SLICE = 3
BATCH = 100


def say(*parts: object) -> None:
    print(*parts, flush=True)


def load_average() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def gray(path: str) -> np.ndarray:
    return cv2.imread(path, cv2.IMREAD_GRAYSCALE)


def edited(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A make_generated-like edit: shift, rotation, scale, re-lighting, noise."""
    h, w = img.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-6, 6), rng.uniform(0.92, 1.08))
    m[:, 2] += rng.uniform(-8, 8, 2)
    out = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT).astype(np.float32)
    out = out * rng.uniform(0.85, 1.15) + rng.uniform(-10, 10) + rng.normal(0, 3, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def seed_bits(hash_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pool bits, dev sets' real bits, dev sets' generated bits), cached."""
    path = CACHE / f"seeds_{hash_size}.npz"
    if path.exists():
        saved = np.load(path)
        return saved["pool"], saved["dev_real"], saved["dev_generated"]
    rng = np.random.default_rng(0)
    slices = [gray(f) for f in sorted(glob.glob(str(SHARED / "ct/*/*.png")))]
    if not slices:
        raise SystemExit(f"no CT slices under {SHARED / 'ct'}")
    images = slices + [edited(img, rng) for img in slices for _ in range(8)]
    pool = np.concatenate(
        [phash_batch(images[s : s + 2000], hash_size) for s in range(0, len(images), 2000)]
    )
    dev = sorted(glob.glob(str(SHARED / "devsets/*")))
    dev_real = phash_batch([gray(f) for d in dev for f in sorted(glob.glob(d + "/real/*"))], 16)
    dev_gen = [gray(f) for d in dev for f in sorted(glob.glob(d + "/generated/*"))]
    dev_generated = phash_batch(dev_gen, hash_size)
    if hash_size != 16:
        dev_real = phash_batch(
            [gray(f) for d in dev for f in sorted(glob.glob(d + "/real/*"))], hash_size
        )
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, pool=pool, dev_real=dev_real, dev_generated=dev_generated)
    return pool, dev_real, dev_generated


def archive_words(n: int, hash_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(the archive's packed hashes, the queries' packed hashes), cached."""
    path = CACHE / f"archive_{hash_size}_{n}.npy"
    pool, dev_real, dev_generated = seed_bits(hash_size)
    queries = pack_words(bits_to_bytes(dev_generated))
    if path.exists():
        return np.load(path), queries
    rng = np.random.default_rng(1)
    bits = pool.shape[1]
    variability = np.minimum(pool.mean(axis=0), 1 - pool.mean(axis=0))
    flip_p = variability / variability.sum()
    keep = np.concatenate([pool, dev_real])
    derived = n - len(keep)
    words = np.empty((n, bits // 64), np.uint64)
    frac = np.linspace(0, 1, SCAN_SLICES, dtype=np.float32)
    done = 0
    while done < derived:
        scans = min(500, -(-(derived - done) // SCAN_SLICES))
        a = pool[rng.integers(len(pool), size=scans)]
        b = pool[rng.integers(len(pool), size=scans)]
        u = rng.random((scans, 1, bits), dtype=np.float32)
        slice_bits = np.where(u < frac[None, :, None], b[:, None], a[:, None]).reshape(-1, bits)
        flips = rng.poisson(FLIPS_PER_SLICE, len(slice_bits))
        rows = np.repeat(np.arange(len(slice_bits)), flips)
        slice_bits[rows, rng.choice(bits, len(rows), p=flip_p)] ^= True
        packed = pack_words(bits_to_bytes(slice_bits))
        take = min(len(packed), derived - done)
        words[done : done + take] = packed[:take]
        done += take
    words[derived:] = pack_words(bits_to_bytes(keep))
    words[:] = words[rng.permutation(n)]
    np.save(path, words)
    return words, queries


def brute_pairs(queries: np.ndarray, words: np.ndarray, radius: int) -> set[tuple[int, int]]:
    """Every (query, reference) pair within ``radius``, by scanning."""
    found: set[tuple[int, int]] = set()
    for r0 in range(0, len(words), 65_536):
        dist = distance_block(queries, words[r0 : r0 + 65_536])
        q, r = np.nonzero(dist <= radius)
        found.update(zip(q.tolist(), (r + r0).tolist(), strict=True))
    return found


def edge_batch(words: np.ndarray, radius: int) -> np.ndarray:
    """Archive hashes with 0..radius bits flipped (many exactly ``radius``): the edge."""
    rng = np.random.default_rng(radius)
    picked = words[rng.choice(len(words), BATCH, replace=False)].copy()
    bits = np.unpackbits(picked.view(np.uint8), axis=1)
    for row, flips in enumerate(np.minimum(np.arange(BATCH) % (radius + 3), radius)):
        bits[row, rng.choice(bits.shape[1], flips, replace=False)] ^= 1
    return pack_words(np.packbits(bits, axis=1))


def index_modules(baseline: str | None) -> list[tuple[str, object]]:
    """(label, hash_index module): this checkout's, and --baseline's beside it."""
    modules: list[tuple[str, object]] = [("index", hash_index)]
    if baseline:
        path = Path(baseline) / "app/search/hash_index.py"
        spec = importlib.util.spec_from_file_location("baseline_hash_index", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules.insert(0, (f"baseline ({path})", module))
    return modules


def built_and_loaded(module, words: np.ndarray, folder: Path, probe: np.ndarray, radius: int):
    """Build, save and map ``module``'s index of ``words``, saying what each step took."""
    t0 = time.perf_counter()
    index = module.HashIndex.build(words)
    build_s = time.perf_counter() - t0
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    index.save(folder)
    save_s = time.perf_counter() - t0
    del index
    t0 = time.perf_counter()
    index = module.HashIndex.load(folder)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index.search(probe, radius)
    first_s = time.perf_counter() - t0
    disk = sum(f.stat().st_size for f in folder.iterdir())
    say(
        f"  built in {build_s:.1f} s, saved in {save_s:.1f} s, "
        f"{index.nbytes / 2**20:,.0f} MiB ({(index.nbytes - index.words.nbytes) / 2**20:,.0f} MiB"
        f" beyond the hashes; {disk / 2**20:,.0f} MiB of files); load {load_s * 1000:.0f} ms, "
        f"first batch after load {first_s * 1000:.0f} ms; {load_average()}"
    )
    return index


def bench_hashes(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    words, queries = archive_words(args.hashes, args.hash_size)
    say(
        f"archive: {len(words):,} {args.hash_size**2}-bit hashes ({time.perf_counter() - t0:.0f} s"
        f" to generate or load); {len(queries)} queries; {load_average()}"
    )
    calibration = calibrate(words, 0.05, 10, args.hash_size)
    own = calibration.threshold if calibration else 0
    say(
        f"the set's calibrated threshold: {own} (nearest-real percentiles "
        f"{calibration.nn_percentiles if calibration else {}})"
    )
    indices = []
    for label, module in index_modules(args.baseline):
        say(f"{label}:")
        folder = CACHE / f"index_{args.hash_size}_{args.hashes}_{len(indices)}"
        indices.append((label, built_and_loaded(module, words, folder, queries[:BATCH], own)))
    batches = [queries[s : s + BATCH] for s in range(0, len(queries) - BATCH + 1, BATCH)]
    # Checked batches spread over the three dev sets (their copies are what hits).
    checked = np.linspace(0, len(batches) - 1, args.check_batches).round().astype(int)
    brute_s = []
    for batch in [batches[i] for i in checked]:
        t0 = time.perf_counter()
        nearest(batch, words, top_k=1)
        brute_s.append(time.perf_counter() - t0)
    brute_rate = BATCH / statistics.median(brute_s)
    say(
        f"brute force (hamming.nearest, top-1): {statistics.median(brute_s):.2f} s a batch "
        f"of {BATCH} = {brute_rate:,.0f} images/s; {load_average()}"
    )
    thresholds = (
        sorted({int(t) for t in args.thresholds.split(",")})
        if args.thresholds
        else sorted({own, 9, 17, 29, 50})
    )
    for radius in thresholds:
        expected = {
            i: brute_pairs(batches[i] if i >= 0 else edge_batch(words, radius), words, radius)
            for i in [*checked, -1]
        }
        for label, index in indices:
            bench_threshold(label, index, words, batches, expected, radius, own, brute_rate)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    say(f"peak RSS of this process {rss:,.0f} MiB")


def bench_threshold(
    label: str,
    index,
    words: np.ndarray,
    batches: list[np.ndarray],
    expected: dict[int, set[tuple[int, int]]],
    radius: int,
    own: int,
    brute_rate: float,
) -> None:
    """Time ``index`` at ``radius`` on every batch (a scan where it does not prune), and
    check its pairs within ``radius`` against brute force's on the ``expected`` batches."""
    times, reached, with_source, unreached = [], 0, 0, 0
    pruned = sum(index.prunes(b, radius) for b in batches)
    if not pruned:  # the index scans, as brute force does: timed above
        say(
            f"threshold {radius:>2}, {label}: the index would reach more hashes than a scan "
            f"costs; it scans (brute force, {brute_rate:,.0f} images/s)"
        )
        return
    for batch in batches:
        t0 = time.perf_counter()
        if index.prunes(batch, radius):
            pairs = index.search(batch, radius)
            reached += len(pairs.query)
            unreached += len(batch) - len(np.unique(pairs.query))
            with_source += len(np.unique(pairs.query[pairs.distance <= radius]))
        else:
            with_source += int((nearest(batch, words, top_k=1).distances <= radius).sum())
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    within = 0
    for i, pairs_expected in expected.items():
        batch = batches[i] if i >= 0 else edge_batch(words, radius)
        pairs = index.search(batch, radius)
        sel = pairs.distance <= radius
        got = set(zip(pairs.query[sel].tolist(), pairs.reference[sel].tolist(), strict=True))
        if got != pairs_expected:
            raise SystemExit(
                f"{label}, radius {radius}, batch {i}: index {len(got)} pairs, "
                f"brute force {len(pairs_expected)}"
            )
        within += len(got)
    say(
        f"threshold {radius:>2}{' (the set s)' if radius == own else ''}, {label}: "
        f"{median * 1000:.1f} ms a batch = {BATCH / median:,.0f} images/s "
        f"({BATCH / median / brute_rate:,.0f}x brute force), {pruned}/{len(batches)} "
        f"batches pruned, {reached / len(batches) / BATCH:,.0f} pairs checked per "
        f"image, {with_source} of {len(batches) * BATCH} images have a source, {unreached} "
        f"reached no hash (/match scans those); identical "
        f"to brute force on {(len(expected) - 1) * BATCH} images and {BATCH} edited archive "
        f"hashes 0..{radius} bits away ({within} pairs within); {load_average()}"
    )


def seed_vectors() -> tuple[np.ndarray, np.ndarray]:
    """(pool descriptors: the seed pool's images, dev sets' real images; dev sets' generated
    images' descriptors) from models/embedding.onnx, cached."""
    path = CACHE / "seed_vectors.npz"
    if path.exists():
        saved = np.load(path)
        return saved["pool"], saved["dev_generated"]
    from app.scoring.artifacts import ModelArtifacts
    from app.scoring.embedding import EmbeddingModel

    info = ModelArtifacts(ROOT / "models", want_cuda=False).load().embedding().info
    model = EmbeddingModel(ROOT / "models/embedding.onnx", info, want_cuda=False, threads=2)
    rng = np.random.default_rng(0)  # the same edits as seed_bits
    slices = [gray(f) for f in sorted(glob.glob(str(SHARED / "ct/*/*.png")))]
    images = slices + [edited(img, rng) for img in slices for _ in range(8)]
    dev = sorted(glob.glob(str(SHARED / "devsets/*")))
    images += [gray(f) for d in dev for f in sorted(glob.glob(d + "/real/*"))]
    pool = model.embed(images)
    generated = model.embed([gray(f) for d in dev for f in sorted(glob.glob(d + "/generated/*"))])
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, pool=pool, dev_generated=generated)
    return pool, generated


def archive_vectors(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n stored descriptors as float16 -> float32, the queries), derived like the hashes:
    scans of 300 slices between two pool descriptors, normalised, plus per-slice noise; the
    pool itself (real slices, edits, dev sets' real images) at random positions."""
    pool, queries = seed_vectors()
    path = CACHE / f"vectors_{n}.npy"
    if path.exists():
        return np.load(path).astype(np.float32), queries
    rng = np.random.default_rng(2)
    dim = pool.shape[1]
    derived = n - len(pool)
    out = np.empty((n, dim), np.float16)
    frac = np.linspace(0, 1, SCAN_SLICES, dtype=np.float32)[None, :, None]
    done = 0
    while done < derived:
        scans = min(200, -(-(derived - done) // SCAN_SLICES))
        a = pool[rng.integers(len(pool), size=scans)][:, None]
        b = pool[rng.integers(len(pool), size=scans)][:, None]
        mixed = (1 - frac) * a + frac * b
        mixed += rng.normal(0, VECTOR_NOISE, mixed.shape).astype(np.float32)
        mixed = mixed.reshape(-1, dim)
        mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
        take = min(len(mixed), derived - done)
        out[done : done + take] = mixed[:take]
        done += take
    out[derived:] = pool
    out[:] = out[rng.permutation(n)]
    np.save(path, out)
    return out.astype(np.float32), queries


def exact_nearest(
    queries: np.ndarray, vectors: np.ndarray, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact most similar vector per query, blocked over the references (every query at
    once against 65,536 references: BLAS-sized products), first index on ties."""
    best = np.full(len(queries), -1, np.int64)
    best_sim = np.full(len(queries), -np.inf, np.float32)
    for lo in range(0, len(vectors), 65_536):
        sims = queries @ vectors[lo : lo + 65_536].T
        if exclude is not None:
            rows = np.flatnonzero((exclude >= lo) & (exclude < lo + 65_536))
            sims[rows, exclude[rows] - lo] = -np.inf
        local = sims.argmax(axis=1)
        value = sims[np.arange(len(queries)), local]
        better = value > best_sim
        best[better], best_sim[better] = local[better] + lo, value[better]
    return best, best_sim


def bench_vectors(args: argparse.Namespace) -> None:
    vectors, queries = archive_vectors(args.vectors)
    pool, _ = seed_vectors()
    real_null = nearest_other_similarity(pool[:1871])
    sample = np.random.default_rng(3).choice(len(vectors), 500, replace=False)
    set_null = exact_nearest(vectors[sample], vectors, exclude=sample)[1]
    say(
        f"descriptors: {len(vectors):,} x {vectors.shape[1]} (float16 as stored); "
        f"{len(queries)} queries; nearest-other similarity p5/p50/p95: real slices "
        f"{np.percentile(real_null, [5, 50, 95]).round(3)}, this set "
        f"{np.percentile(set_null, [5, 50, 95]).round(3)}; {load_average()}"
    )
    t0 = time.perf_counter()
    nearest_real(queries[:200], vectors)
    today_rate = 200 / (time.perf_counter() - t0)
    exact_s = []
    for _ in range(2):
        t0 = time.perf_counter()
        exact, exact_sim = exact_nearest(queries, vectors)
        exact_s.append(time.perf_counter() - t0)
    exact_rate = len(queries) / min(exact_s)
    say(
        f"exact: copies.nearest_real (what copy_of runs today, 8-row blocks at 1M) "
        f"{today_rate:,.0f} queries/s; blocked over references {exact_rate:,.0f} queries/s "
        f"(2 BLAS threads); {load_average()}"
    )
    t0 = time.perf_counter()
    index = VectorIndex.build(vectors)
    build_s = time.perf_counter() - t0
    folder = CACHE / f"vector_index_{args.vectors}"
    if folder.exists():
        shutil.rmtree(folder)
    index.save(folder)
    t0 = time.perf_counter()
    index = VectorIndex.load(folder)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index.search(queries[:BATCH])
    first_s = time.perf_counter() - t0
    say(
        f"index: {len(index.centroids)} lists, built in {build_s:.1f} s, "
        f"{index.nbytes / 2**20:,.0f} MiB; load {load_s * 1000:.0f} ms, first batch of {BATCH} "
        f"after load {first_s * 1000:.0f} ms"
    )
    for probe in (8, 16, 24, 32, 64):
        for batch in (BATCH, 1000):
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                found = [
                    index.search(queries[s : s + batch], probe)
                    for s in range(0, len(queries), batch)
                ]
                times.append(time.perf_counter() - t0)
            ids = np.concatenate([f.indices for f in found])
            sims = np.concatenate([f.similarities for f in found])
            recall = np.mean(ids == exact)
            as_good = np.mean(sims >= exact_sim - 1e-6)
            rate = len(queries) / statistics.median(times)
            say(
                f"probe {probe:>2}, batches of {batch:>4}: {rate:,.0f} queries/s "
                f"({rate / exact_rate:.1f}x exact), recall@1 {recall:.4f} (same vector as exact; "
                f"{as_good:.4f} as similar); {load_average()}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hashes", type=int, default=10_000_000)
    parser.add_argument("--hash-size", type=int, default=16, choices=(8, 16))
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--check-batches", type=int, default=3)
    parser.add_argument("--skip-hashes", action="store_true")
    parser.add_argument("--skip-vectors", action="store_true")
    parser.add_argument(
        "--thresholds", help="comma-separated pHash radii (default: the set's own, 9, 17, 29, 50)"
    )
    parser.add_argument("--baseline", help="another checkout whose hash index is timed beside")
    args = parser.parse_args()
    if not args.skip_vectors:
        bench_vectors(args)
    if not args.skip_hashes:
        bench_hashes(args)


if __name__ == "__main__":
    main()
