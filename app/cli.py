"""`memaudit` command line: serve the API, migrate the database, match folders offline."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from app.config import Settings
from app.imaging.archive import looks_like_zip
from app.imaging.phash import SUPPORTED_HASH_SIZES
from app.search.calibration import calibrate, resolve_threshold
from app.services.decode_and_hash import HashPool
from app.services.ingest import ImageIngest, IngestLimits, IngestResult
from app.services.source_matching import match_sources, paper_lines, words_from_hex

REPO_MODELS = Path(__file__).resolve().parents[1] / "models"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".zip"}


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise SystemExit(f"memaudit: {folder} is not a directory")
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def hash_folder(
    folder: Path,
    hash_size: int,
    limits: IngestLimits,
    label: str,
    quiet: bool,
    pool: HashPool | None = None,
) -> IngestResult:
    files = _files(folder)
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
        max_file_bytes=50 * 1024 * 1024, max_files=10**9, max_pixels=50_000_000, batch_size=256
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


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    if args.workers > 1:
        # Migrate once here: N workers each migrating a fresh database at once would race.
        cmd_migrate(args)

    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="info",
    )
    return 0


def cmd_migrate(_args: argparse.Namespace) -> int:
    from app.config import get_settings
    from app.db.migrate import schema_status, upgrade_to_head
    from app.db.session import make_engine

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    upgrade_to_head(engine, settings.migrations_dir)
    current, _head = schema_status(engine, settings.migrations_dir)
    print(f"database at revision {current}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memaudit", description="Audit synthetic medical images for leaked training data."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the REST API (Swagger UI at /docs)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="apply database migrations (DATABASE_URL)")
    migrate.set_defaults(func=cmd_migrate)

    match = sub.add_parser(
        "match",
        help="map each generated image to its real source by pHash, without a server",
        description="Prints the paper's lines: 'The source image for G is R with D'.",
    )
    match.add_argument("real_dir", help="folder of real images (or zips)")
    match.add_argument("generated_dir", help="folder of generated images (or zips)")
    match.add_argument("--hash-size", type=int, default=16, choices=SUPPORTED_HASH_SIZES)
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
    train = sub.add_parser("train", help="train a model artifact on a labelled set")
    train.add_argument("model", choices=["cnn", "sift-knn", "reference"])
    train.add_argument("--used", required=True, help="folder of real images used in training")
    train.add_argument("--unused", required=True, help="folder of real images not used")
    train.add_argument("--generated", help="folder of generated images (sift-knn vocabulary)")
    train.add_argument("--out", required=True, help="artifact path, e.g. models/cnn.onnx")
    train.add_argument("--epochs", type=int, default=10)
    train.set_defaults(func=_lazy("cmd_train"))

    rebuild = sub.add_parser(
        "rebuild-models", help="rebuild the default artifacts from synthetic data"
    )
    rebuild.add_argument("--out", default="models")
    rebuild.add_argument("--seed", type=int, default=0)
    rebuild.add_argument("--epochs", type=int, default=10)
    rebuild.set_defaults(func=_lazy("cmd_rebuild_models"))

    evaluate = sub.add_parser("evaluate", help="score a labelled development set")
    evaluate.add_argument("--labels", required=True, help="labels.csv (real, used, ...)")
    evaluate.add_argument("--real", required=True, help="folder of the real images")
    evaluate.add_argument("--generated", help="folder of generated images")
    evaluate.add_argument(
        "--method", default="reference", choices=["reference", "phash", "cnn", "sift_knn"]
    )
    evaluate.add_argument("--against", default="used", choices=["used", "memorized"])
    evaluate.add_argument("--models", default=str(REPO_MODELS))
    evaluate.add_argument("--roc", help="write the ROC curve to this PNG")
    evaluate.add_argument("--cpu", action="store_true", help="never try CUDA")
    evaluate.set_defaults(func=_lazy("cmd_evaluate"))
    return parser


def _lazy(name: str):
    """Import training/evaluation code (and its optional extras) only when used."""

    def run(args: argparse.Namespace) -> int:
        from app.training import commands

        return getattr(commands, name)(args)

    return run


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
