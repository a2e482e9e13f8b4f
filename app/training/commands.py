"""`memaudit train`, `memaudit rebuild-models` and `memaudit evaluate` (folder-based)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from app.imaging.decode import ImageDecodeError, decode_grayscale

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
MAX_PIXELS = 50_000_000


def read_folder(folder: Path) -> tuple[list[str], list[np.ndarray]]:
    if not folder.is_dir():
        raise SystemExit(f"memaudit: {folder} is not a directory")
    names, images = [], []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        try:
            images.append(decode_grayscale(path.read_bytes(), MAX_PIXELS))
            names.append(path.name)
        except ImageDecodeError as exc:
            print(f"memaudit: skipped {path}: {exc}", file=sys.stderr)
    return names, images


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train_cnn_artifact(
    used, unused, models_dir: Path, file: str, trained_on: str, epochs: int = 10
) -> dict:
    from app.scoring.artifacts import record_artifact
    from app.scoring.cnn import cnn_input
    from app.training.cnn import train_cnn

    metrics = train_cnn(
        cnn_input(used)[:, 0], cnn_input(unused)[:, 0], models_dir / file, epochs=epochs, log=_log
    )
    return record_artifact(
        models_dir,
        method="cnn",
        name="memaudit-cnn",
        version="1",
        file=file,
        trained_on=trained_on,
        metrics=metrics,
    )


def train_sift_knn_artifact(
    used, unused, generated, models_dir: Path, file: str, trained_on: str
) -> dict:
    from app.scoring.artifacts import record_artifact
    from app.scoring.sift_knn import train_sift_knn

    _log("sift-knn: extracting SIFT descriptors, fitting the vocabulary and the KNN")
    metrics = train_sift_knn(used, unused, generated, models_dir / file)
    return record_artifact(
        models_dir,
        method="sift_knn",
        name="memaudit-sift-knn",
        version="1",
        file=file,
        trained_on=trained_on,
        metrics=metrics,
    )


def cmd_train(args) -> int:
    _u_names, used = read_folder(Path(args.used))
    _n_names, unused = read_folder(Path(args.unused))
    generated = read_folder(Path(args.generated))[1] if args.generated else []
    out = Path(args.out)
    trained_on = f"used={args.used} ({len(used)}), unused={args.unused} ({len(unused)})"
    if args.model == "cnn":
        entry = train_cnn_artifact(used, unused, out.parent, out.name, trained_on, args.epochs)
    elif args.model == "sift-knn":
        if generated:
            trained_on += f", generated={args.generated} ({len(generated)})"
        entry = train_sift_knn_artifact(used, unused, generated, out.parent, out.name, trained_on)
    else:
        raise SystemExit(
            "memaudit: the reference auditor needs no training (its thresholds come from the "
            "real set itself); train cnn or sift-knn"
        )
    print(f"wrote {out} (sha256 {entry['sha256']}) and updated {out.parent / 'manifest.json'}")
    return 0


def cmd_rebuild_models(args) -> int:
    """Rebuild every default artifact from synthetic phantoms + a simulated generator."""
    from app.training.synthetic import synthetic_devset

    models_dir = Path(args.out)
    used, unused, generated = synthetic_devset(seed=args.seed)
    trained_on = (
        f"synthetic phantoms (app/training/synthetic.py, seed {args.seed}): "
        f"{len(used)} used, {len(unused)} unused, {len(generated)} simulated generated"
    )
    train_cnn_artifact(used, unused, models_dir, "cnn.onnx", trained_on, args.epochs)
    train_sift_knn_artifact(used, unused, generated, models_dir, "sift_knn.joblib", trained_on)
    print(f"rebuilt {models_dir / 'cnn.onnx'} and {models_dir / 'sift_knn.joblib'}")
    return 0


def cmd_evaluate(args) -> int:
    """Score a labelled development set and print the paper's Table 1 columns and more."""
    from app.evaluation import binary_metrics, roc_auc, tpr_at_fpr, write_roc_png
    from app.scoring.artifacts import ModelRegistry
    from app.scoring.registry import build_scorer

    with open(args.labels) as fh:
        rows = list(csv.DictReader(fh))
    real_dir = Path(args.real)
    names, real = read_folder(real_dir)
    column = args.against
    truth_by_name = {r["real"]: r.get(column, "") for r in rows}
    keep = [i for i, n in enumerate(names) if truth_by_name.get(n, "") != ""]
    models = ModelRegistry(Path(args.models), want_cuda=not args.cpu).load()
    scorer = build_scorer(args.method, models=models)
    generated = read_folder(Path(args.generated))[1] if args.generated else None
    if scorer.needs_generated and not generated:
        raise SystemExit(f"memaudit: method {args.method} needs --generated DIR")
    result = scorer.score(real, generated)
    used_col = {r["real"]: r.get("used", "") for r in rows}
    if column == "memorized":  # as the task reports it: memorized vs unused images
        keep = [i for i in keep if truth_by_name[names[i]] == "1" or used_col[names[i]] == "0"]
    y = np.array([truth_by_name[names[i]] == "1" for i in keep])
    s = result.scores[keep]
    m = binary_metrics(y, result.labels[keep])
    print(
        f"method {args.method} on {len(keep)} real images against `{column}` "
        f"({int(y.sum())} positive); threshold {result.threshold:g}"
    )
    header = ["accuracy", "precision", "specificity", "recall", "f1", "tp", "tn", "fp", "fn"]
    print("\t".join([*header, "roc_auc", "tpr@1%fpr", "kappa"]))
    values = [f"{m[k]:.4f}" if isinstance(m[k], float) else str(m[k]) for k in header]
    values += [f"{roc_auc(y, s):.4f}", f"{tpr_at_fpr(y, s, 0.01):.4f}", f"{m['kappa']:.4f}"]
    print("\t".join(values))
    print(f"baselines: all-used F1 {2 * y.mean() / (1 + y.mean()):.3f}; random F1 ~{y.mean():.3f}")
    if args.roc:
        write_roc_png(y, s, Path(args.roc), title=args.method)
        print(f"ROC curve written to {args.roc}")
    return 0
