"""`memaudit reembed`: give stored images descriptors of the loaded copy-detection embedding.

After models/embedding.onnx is replaced, sets registered before answer no `copy_of` (their
descriptors come from another embedding and are never compared with the new one's). This
computes them again from the image store, set by set, instead of registering them again.
Restart the servers on the new embedding first: a server still on the old one would give
what it appends the old descriptors again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from app.cli.database import add_database_arguments, database_at_head


def cmd_reembed(args: argparse.Namespace) -> int:
    from app.db.session import make_session_factory
    from app.scoring.artifacts import ModelArtifacts
    from app.services.reembed import reembed
    from app.storage import ImageStore

    with database_at_head(args, "; nothing changed") as (settings, engine):
        models_dir = Path(args.models_dir) if args.models_dir else settings.models_dir
        try:
            embedder = ModelArtifacts(models_dir, settings.use_cuda).load().embedding()
        except LookupError as exc:
            raise SystemExit(f"memaudit reembed: no embedding in {models_dir}: {exc}") from None
        store = ImageStore(settings.effective_image_store_dir)
        if not store.root.is_dir():
            raise SystemExit(
                f"memaudit reembed: no image store at {store.root}: check --data-dir "
                "(MEMAUDIT_DATA_DIR) or MEMAUDIT_IMAGE_STORE_DIR; nothing changed"
            )
        done = reembed(
            make_session_factory(engine),
            store,
            embedder,
            settings.max_image_pixels,
            dry_run=args.dry_run,
        )
    verb = "would give" if args.dry_run else "gave"
    if not done.images and not done.without_pixels and not done.left:
        print(
            f"memaudit reembed: every stored descriptor is already of the embedding in "
            f"{models_dir} (sha256 {embedder.info.sha256[:16]}...); nothing to do"
        )
        return 0
    print(
        f"memaudit reembed: {verb} {done.images} image(s) of {done.sets} set(s) and "
        f"{done.batches} batch(es) descriptors of the embedding in {models_dir} (sha256 "
        f"{embedder.info.sha256[:16]}...)"
        + (
            f"; {done.without_pixels} image(s) have no usable stored pixels (registered by "
            "hash alone, removed, or over MEMAUDIT_MAX_IMAGE_PIXELS) and keep what they have"
            if done.without_pixels
            else ""
        )
    )
    if done.left:
        print(f"memaudit reembed: {done.left} set(s) or batch(es) changed meanwhile: run again")
        return 1
    if done.without_pixels and not done.images:
        print(
            f"memaudit reembed: none of the images to do has stored pixels under {store.root}: "
            "check --data-dir (MEMAUDIT_DATA_DIR) or MEMAUDIT_IMAGE_STORE_DIR"
        )
        return 1
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    command = sub.add_parser(
        "reembed",
        help="compute stored images' copy-detection descriptors again with the loaded embedding "
        "(after replacing it; restart the servers on it first)",
    )
    command.add_argument("--dry-run", action="store_true", help="count, change nothing")
    add_database_arguments(command)
    command.add_argument(
        "--models-dir", default=None, help="models folder (default MEMAUDIT_MODELS_DIR, models/)"
    )
    command.set_defaults(func=cmd_reembed)
