"""imagededup's PHash on a real/generated folder pair, timed; run by bench_compare_match.py.

    /tmp/idd-venv/bin/python bench/imagededup_runner.py REAL_DIR GENERATED_DIR OUT.json \
        [--threshold 12] [--workers 2] [--repeats 3]

Runs in its own virtual environment (imagededup needs torch and torchvision, which memaudit
never depends on), so it imports only imagededup and the standard library. imagededup has no
search of one set against another: find_duplicates runs over the combined encoding map, so
every generated image is also compared with every other generated image, and the
generated -> real pairs are kept afterwards. Writes timings, hashes and those pairs as JSON.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import statistics
import time
import warnings
from pathlib import Path

REAL = "real/"
GENERATED = "generated/"


def run_once(phasher, real: Path, generated: Path, threshold: int, workers: int) -> dict:
    """One encode + search, timed in parts, so the caller sees where imagededup spends time."""
    start = time.perf_counter()
    real_map = phasher.encode_images(image_dir=str(real), num_enc_workers=workers)
    encode_real = time.perf_counter() - start
    start = time.perf_counter()
    gen_map = phasher.encode_images(image_dir=str(generated), num_enc_workers=workers)
    encode_generated = time.perf_counter() - start
    found = search_only(phasher, real_map, gen_map, threshold, workers)
    return {
        "encode_real_s": encode_real,
        "encode_generated_s": encode_generated,
        "search_s": found.pop("search_s"),
        "n_real": len(real_map),
        "n_generated": len(gen_map),
        "real_hashes": real_map,
        "generated_hashes": gen_map,
        **found,
    }


def search_only(phasher, real_map: dict, gen_map: dict, threshold: int, workers: int) -> dict:
    """find_duplicates over both sets' hashes (imagededup's only search), then the
    generated -> real pairs; timed together, as a user of imagededup would pay for both."""
    # File names may repeat across the two folders, so the keys say which side they are from.
    combined = {REAL + k: v for k, v in real_map.items()}
    combined.update({GENERATED + k: v for k, v in gen_map.items()})
    start = time.perf_counter()
    with warnings.catch_warnings():
        # "num_enc_workers has no effect since encodings are already provided".
        warnings.simplefilter("ignore", RuntimeWarning)
        found = phasher.find_duplicates(
            encoding_map=combined,
            max_distance_threshold=threshold,
            scores=True,
            num_dist_workers=workers,
        )
    nearest_real = {
        key.removeprefix(GENERATED): [
            (other.removeprefix(REAL), int(dist)) for other, dist in hits if other.startswith(REAL)
        ]
        for key, hits in found.items()
        if key.startswith(GENERATED)
    }
    search = time.perf_counter() - start
    pairs_all = sum(len(hits) for hits in found.values())
    pairs_gen_real = sum(len(hits) for hits in nearest_real.values())
    return {
        "threshold": threshold,
        "search_s": search,
        "pairs_all": pairs_all,
        "pairs_generated_real": pairs_gen_real,
        "nearest_real": nearest_real,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("real", type=Path)
    parser.add_argument("generated", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--threshold", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--also-threshold",
        type=int,
        default=10,
        help="search the last encodings once more at this threshold (imagededup's default)",
    )
    args = parser.parse_args()
    start = time.perf_counter()
    from imagededup.methods import PHash  # pulls in torch via imagededup.methods.cnn

    import_s = time.perf_counter() - start
    runs: list[dict] = []
    phasher = PHash(verbose=False)
    for _ in range(args.repeats):
        runs.append(run_once(phasher, args.real, args.generated, args.threshold, args.workers))
    for r in runs:
        r["total_s"] = r["encode_real_s"] + r["encode_generated_s"] + r["search_s"]
    last = runs[-1]
    extra = None
    if args.also_threshold != args.threshold:
        # How find_duplicates' time grows with the threshold, on the encodings just made.
        extra = search_only(
            phasher,
            last["real_hashes"],
            last["generated_hashes"],
            args.also_threshold,
            args.workers,
        )
    timings = [
        {k: v for k, v in r.items() if k.endswith("_s") or k.startswith(("n_", "pairs_"))}
        for r in runs
    ]
    report = {
        "versions": {
            name: importlib.metadata.version(name)
            for name in ("imagededup", "torch", "torchvision", "numpy", "scipy", "pillow")
        },
        "import_s": import_s,
        "threshold": args.threshold,
        "workers": args.workers,
        "runs": timings,
        "extra_search": extra and {k: v for k, v in extra.items() if k != "nearest_real"},
        "median_total_s": statistics.median(r["total_s"] for r in runs),
        "real_hashes": last["real_hashes"],
        "generated_hashes": last["generated_hashes"],
        "nearest_real": last["nearest_real"],
    }
    args.out.write_text(json.dumps(report))


if __name__ == "__main__":
    main()
