"""`memaudit gc`: remove image bytes no database row refers to, and partial writes.

The server sweeps at start and every MEMAUDIT_GC_INTERVAL_SECONDS; this runs the same sweep
by hand (after restoring a database backup, before a disk audit), or lists what it would
remove. It may run beside a running server: removals take the image store's lock, and files
younger than --min-age (an upload of a running server may be writing them) are left.
"""

from __future__ import annotations

import argparse

from app.cli.database import add_database_arguments, database_at_head


def cmd_gc(args: argparse.Namespace) -> int:
    from app.db.session import make_session_factory
    from app.services.retention import ImageRetention
    from app.storage import FeatureStore, ImageStore

    # Without the schema every stored file would look unreferenced.
    with database_at_head(args, "; nothing removed") as (settings, engine):
        min_age = settings.gc_min_age_seconds if args.min_age is None else args.min_age
        retention = ImageRetention(
            ImageStore(settings.effective_image_store_dir),
            FeatureStore(settings.effective_feature_store_dir),
            make_session_factory(engine),
        )
        removed = retention.sweep(min_age, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for path in removed.paths:
        print(f"{verb} {path}")
    print(f"memaudit gc: {verb} {removed.summary()} (files older than {min_age:g} s)")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    gc = sub.add_parser(
        "gc",
        help="remove stored image bytes no set or batch refers to, and partial writes",
    )
    gc.add_argument(
        "--dry-run", action="store_true", help="list what would be removed, remove nothing"
    )
    gc.add_argument(
        "--min-age",
        type=float,
        default=None,
        metavar="SECONDS",
        help="only files left alone this long (default MEMAUDIT_GC_MIN_AGE_SECONDS, 7200)",
    )
    add_database_arguments(gc)
    gc.set_defaults(func=cmd_gc)
