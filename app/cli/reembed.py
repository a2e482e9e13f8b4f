"""`memaudit reembed`: give stored images descriptors of the loaded copy-detection embedding.

After models/embedding.onnx is replaced, sets registered before answer no `copy_of` (their
descriptors come from another embedding and are never compared with the new one's). This
computes them again from the image store, set by set, instead of registering them again.
"""

from __future__ import annotations

import argparse

from app.cli.database import database_at_head


def cmd_reembed(args: argparse.Namespace) -> int:
    from app.db.session import make_session_factory
    from app.scoring.artifacts import ModelArtifacts
    from app.services.reembed import reembed
    from app.storage import ImageStore

    with database_at_head(args, "; nothing changed") as (settings, engine):
        try:
            embedder = ModelArtifacts(settings.models_dir, settings.use_cuda).load().embedding()
        except LookupError as exc:
            raise SystemExit(f"memaudit reembed: no copy-detection embedding: {exc}") from None
        done = reembed(
            make_session_factory(engine),
            ImageStore(settings.effective_image_store_dir),
            embedder,
            settings.max_image_pixels,
            dry_run=args.dry_run,
        )
    verb = "would give" if args.dry_run else "gave"
    print(
        f"memaudit reembed: {verb} {done.images} image(s) of {done.sets} set(s) and "
        f"{done.batches} batch(es) descriptors of embedding {embedder.info.sha256[:16]}"
        + (
            f"; {done.without_bytes} image(s) have no stored bytes (registered by hash alone, "
            "or removed) and keep what they have"
            if done.without_bytes
            else ""
        )
    )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    command = sub.add_parser(
        "reembed",
        help="compute stored images' copy-detection descriptors again with the loaded embedding",
    )
    command.add_argument("--dry-run", action="store_true", help="count, change nothing")
    command.add_argument("--db", default=None, help="database URL (default DATABASE_URL)")
    command.add_argument(
        "--data-dir", default=None, help="data directory (default MEMAUDIT_DATA_DIR)"
    )
    command.set_defaults(func=cmd_reembed)
