"""`memaudit train` and `memaudit rebuild-models`: write model artifacts and the manifest."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.cli.folders import read_folder


def cmd_train(args: argparse.Namespace) -> int:
    if args.model == "embedding":
        return _train_embedding(args)
    if not (args.used and args.unused):
        raise SystemExit(f"memaudit train {args.model}: --used and --unused are required")
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


def _train_embedding(args: argparse.Namespace) -> int:
    """Self-supervised copy-detection embedding on a folder of real slices (needs PyTorch)."""
    if not args.data:
        raise SystemExit("memaudit train embedding: --data is required")
    from app.training.artifacts import train_embedding_artifact

    out = Path(args.out)
    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    entry = train_embedding_artifact(
        Path(args.data),
        Path(args.exclude_devsets) if args.exclude_devsets else None,
        out,
        seed=args.seed,
        threads=args.threads,
        minutes=args.minutes,
        steps=args.steps,
        checkpoint=checkpoint,
    )
    print(f"wrote {out} (sha256 {entry['sha256']}) and updated {out.parent / 'manifest.json'}")
    return 0


#: Where the shipped artifacts live: a rebuild replaces them only when asked to.
SHIPPED_MODELS = Path(__file__).resolve().parents[2] / "models"


def cmd_rebuild_models(args: argparse.Namespace) -> int:
    """Rebuild the paper's two artifacts from synthetic phantoms into ``--out`` (build/models by
    default), then compare each with the shipped one: same sha256, or what differs and which
    package versions differ from the ones the shipped artifact was built with."""
    import json

    from app.training.artifacts import rebuild_default_artifacts

    out = Path(args.out)
    if out.resolve() == SHIPPED_MODELS and not args.replace:
        raise SystemExit(
            f"memaudit rebuild-models: {out} holds the shipped artifacts; pass --replace to "
            "overwrite them, or --out another folder (default build/models)"
        )
    entries = rebuild_default_artifacts(out, seed=args.seed, epochs=args.epochs)
    shipped_manifest = SHIPPED_MODELS / "manifest.json"
    shipped = {}
    if shipped_manifest.exists() and out.resolve() != SHIPPED_MODELS:
        shipped = {e["method"]: e for e in json.loads(shipped_manifest.read_text())["models"]}
    differs = 0
    for entry in entries:
        line = f"{out / entry['file']}: sha256 {entry['sha256'][:16]}…"
        reference = shipped.get(entry["method"])
        if reference is None:
            print(line)
            continue
        if reference["sha256"] == entry["sha256"]:
            print(f"{line} identical to the shipped {reference['file']}")
            continue
        differs += 1
        versions = {
            package: (was, entry.get("built_with", {}).get(package))
            for package, was in reference.get("built_with", {}).items()
            if was != entry.get("built_with", {}).get(package)
        }
        why = (
            ", ".join(f"{p} {a} -> {b}" for p, (a, b) in versions.items())
            if versions
            else "no recorded package version differs"
        )
        print(
            f"{line} DIFFERS from the shipped {reference['file']} "
            f"(metrics {reference.get('metrics')} -> {entry.get('metrics')}; {why})"
        )
    return 1 if differs and args.check else 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train",
        help="train a model artifact: cnn / sift-knn on a labelled set, or the "
        "copy-detection embedding on folders of real slices",
    )
    train.add_argument(
        "model",
        choices=["cnn", "sift-knn", "embedding"],
        help="the artifact of method cnn or sift_knn, or the copy-detection embedding",
    )
    train.add_argument("--used", help="cnn/sift-knn: folder of real images used in training")
    train.add_argument("--unused", help="cnn/sift-knn: folder of real images not used")
    train.add_argument("--generated", help="folder of generated images (sift-knn vocabulary)")
    train.add_argument(
        "--out",
        required=True,
        help="artifact path; its folder's manifest.json gets the entry (only --out "
        "models/... replaces a shipped model), e.g. build/embedding.onnx",
    )
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--data", help="embedding: folder of folders of real slices (data/ct)")
    train.add_argument(
        "--exclude-devsets",
        help="embedding: folder of dev sets; every image their labels.csv `original` names "
        "is left out of training",
    )
    train.add_argument("--minutes", type=float, help="embedding: stop after this long")
    train.add_argument("--steps", type=int, help="embedding: the schedule's length (default 2400)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=1, help="embedding: torch threads")
    train.add_argument(
        "--checkpoint", help="embedding: resume from / save to this file (every 5 minutes)"
    )
    train.set_defaults(func=cmd_train)

    rebuild = sub.add_parser(
        "rebuild-models",
        help="rebuild the paper's CNN and SIFT+KNN artifacts from synthetic phantoms and "
        "compare them with the shipped ones",
    )
    rebuild.add_argument(
        "--out", default="build/models", help="folder for the artifacts and their manifest"
    )
    rebuild.add_argument(
        "--replace", action="store_true", help="allow --out models (overwrite the shipped ones)"
    )
    rebuild.add_argument(
        "--check", action="store_true", help="exit 1 when a rebuilt artifact differs from models/"
    )
    rebuild.add_argument("--seed", type=int, default=0)
    rebuild.add_argument("--epochs", type=int, default=10)
    rebuild.set_defaults(func=cmd_rebuild_models)
