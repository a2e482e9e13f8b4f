"""`memaudit train` and `memaudit rebuild-models`: write model artifacts and the manifest."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.cli.folders import read_folder


def cmd_train(args: argparse.Namespace) -> int:
    from app.training.artifacts import train_cnn_artifact, train_sift_knn_artifact

    _u_names, used = read_folder(Path(args.used))
    _n_names, unused = read_folder(Path(args.unused))
    generated = read_folder(Path(args.generated))[1] if args.generated else []
    out = Path(args.out)
    trained_on = f"used={args.used} ({len(used)}), unused={args.unused} ({len(unused)})"
    if args.model == "cnn":
        entry = train_cnn_artifact(used, unused, out.parent, out.name, trained_on, args.epochs)
    else:
        if generated:
            trained_on += f", generated={args.generated} ({len(generated)})"
        entry = train_sift_knn_artifact(used, unused, generated, out.parent, out.name, trained_on)
    print(f"wrote {out} (sha256 {entry['sha256']}) and updated {out.parent / 'manifest.json'}")
    return 0


def cmd_rebuild_models(args: argparse.Namespace) -> int:
    """Rebuild every default artifact from synthetic phantoms + a simulated generator."""
    from app.training.artifacts import rebuild_default_artifacts

    written = rebuild_default_artifacts(Path(args.out), seed=args.seed, epochs=args.epochs)
    print(f"rebuilt {' and '.join(str(p) for p in written)}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a model artifact on a labelled set")
    train.add_argument(
        "model", choices=["cnn", "sift-knn"], help="the artifact of method cnn or sift_knn"
    )
    train.add_argument("--used", required=True, help="folder of real images used in training")
    train.add_argument("--unused", required=True, help="folder of real images not used")
    train.add_argument("--generated", help="folder of generated images (sift-knn vocabulary)")
    train.add_argument("--out", required=True, help="artifact path, e.g. models/cnn.onnx")
    train.add_argument("--epochs", type=int, default=10)
    train.set_defaults(func=cmd_train)

    rebuild = sub.add_parser(
        "rebuild-models", help="rebuild the default artifacts from synthetic data"
    )
    rebuild.add_argument("--out", default="models")
    rebuild.add_argument("--seed", type=int, default=0)
    rebuild.add_argument("--epochs", type=int, default=10)
    rebuild.set_defaults(func=cmd_rebuild_models)
