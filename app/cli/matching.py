"""`memaudit match`: map generated images to their real sources by pHash, without a server."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from app.cli.folders import MAX_PIXELS, image_and_archive_files
from app.config import Settings
from app.imaging.archive import looks_like_zip
from app.imaging.hashers import DEFAULT_HASH_KIND, get_hasher
from app.search.calibration import calibrate, resolve_threshold
from app.services.decode_and_hash import HashPool
from app.services.ingest import ImageIngest, IngestLimits, IngestResult
from app.services.source_matching import match_sources, paper_lines, words_from_hex


def hash_folder(
    folder: Path,
    hash_size: int,
    limits: IngestLimits,
    label: str,
    quiet: bool,
    pool: HashPool | None = None,
) -> IngestResult:
    files = image_and_archive_files(folder)
    bar = tqdm(
        total=len(files), desc=f"hashing {label}", unit="img", disable=quiet, file=sys.stderr
    )
    ingest = ImageIngest(hash_size, limits, progress=bar.update, pool=pool)
    for path in files:
        name = path.relative_to(folder).as_posix()
        data = path.read_bytes()
        if looks_like_zip(data[:4], name):
            with path.open("rb") as fh:
                ingest.add_zip(fh, name)
            bar.update(1)
        else:
            ingest.add(name, data)
        if ingest.needs_flush:
            ingest.flush()
    result = ingest.finish()
    bar.close()
    return result


def cmd_match(args: argparse.Namespace) -> int:
    limits = IngestLimits(
        max_file_bytes=50 * 1024 * 1024,
        max_files=10**9,
        max_pixels=MAX_PIXELS,
        batch_size=256,
        max_listed_rejections=10**9,  # a terminal run lists every refused file
    )
    workers = args.workers if args.workers is not None else Settings().effective_hash_workers
    pool = HashPool(workers) if workers > 0 else None
    try:
        real = hash_folder(Path(args.real_dir), args.hash_size, limits, "real", args.quiet, pool)
        generated = hash_folder(
            Path(args.generated_dir), args.hash_size, limits, "generated", args.quiet, pool
        )
    finally:
        if pool is not None:
            pool.shutdown()
    for r in real.rejected + generated.rejected:
        print(f"memaudit: skipped {r.filename}: {r.reason}", file=sys.stderr)
    if not real.images or not generated.images:
        print("memaudit: no usable images in one of the folders", file=sys.stderr)
        return 2
    names = [i.filename for i in real.images]
    words = words_from_hex([i.phash for i in real.images], args.hash_size)
    cal = calibrate(words, args.calibration_quantile, args.min_calibration_images, args.hash_size)
    threshold = resolve_threshold(
        args.hash_size,
        len(names),
        args.min_calibration_images,
        cal.as_json() if cal else None,
        requested=args.threshold,
        requested_reason="threshold given on the command line",
    )
    outcome = match_sources(
        names, words, generated.images, args.hash_size, threshold.value, args.top_k
    )
    if args.json:
        json.dump(
            {
                "hash_size": args.hash_size,
                "threshold": threshold.value,
                "threshold_source": threshold.source,
                "threshold_reason": threshold.reason,
                "matches": outcome.matches,
                "real_summary": outcome.summary_rows(),
                "duplicates": generated.duplicates_json(),
                "rejected": real.rejected_json() + generated.rejected_json(),
            },
            sys.stdout,
            indent=2,
        )
        print()
    else:
        print(
            f"# threshold {threshold.value} ({threshold.source}): {threshold.reason}",
            file=sys.stderr,
        )
        for line in paper_lines(outcome.matches):
            print(line)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    match = sub.add_parser(
        "match",
        help="map each generated image to its real source by pHash, without a server",
        description="Prints the paper's lines: 'The source image for G is R with D'.",
    )
    match.add_argument("real_dir", help="folder of real images (or zips)")
    match.add_argument("generated_dir", help="folder of generated images (or zips)")
    hasher = get_hasher(DEFAULT_HASH_KIND)
    match.add_argument("--hash-size", type=int, default=hasher.default_size, choices=hasher.sizes)
    match.add_argument("--threshold", type=int, default=None, help="default: calibrated")
    match.add_argument("--top-k", type=int, default=1)
    match.add_argument("--calibration-quantile", type=float, default=0.05)
    match.add_argument("--min-calibration-images", type=int, default=10)
    match.add_argument("--json", action="store_true", help="print JSON instead of lines")
    match.add_argument(
        "--workers", type=int, default=None, help="hashing processes (default: one per core)"
    )
    match.add_argument("--quiet", action="store_true", help="no progress bar")
    match.set_defaults(func=cmd_match)
