"""`memaudit evaluate`: score a labelled development set and print the paper's metrics."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from app.cli.folders import read_folder
from app.config import REPO_ROOT
from app.scoring.methods import (
    DEFAULT_METHOD,
    ScoringContext,
    all_methods,
    build_scorer,
    get_method,
)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score a labelled development set and print the paper's Table 1 columns and more."""
    from app.evaluation import (
        baseline_f1,
        binary_metrics,
        roc_auc,
        tpr_at_fpr,
        write_roc_png,
    )
    from app.scoring.artifacts import ModelArtifacts

    with open(args.labels) as fh:
        rows = list(csv.DictReader(fh))
    real_dir = Path(args.real)
    names, real = read_folder(real_dir)
    column = args.against
    truth_by_name = {r["real"]: r.get(column, "") for r in rows}
    keep = [i for i, n in enumerate(names) if truth_by_name.get(n, "") != ""]
    method = get_method(args.method)
    artifacts = None
    if method.uses_artifact or method.uses_embedding:
        artifacts = ModelArtifacts(Path(args.models), want_cuda=not args.cpu).load()
    generated = read_folder(Path(args.generated))[1] if args.generated else None
    if method.needs_generated and not generated:
        raise SystemExit(f"memaudit: method {args.method} needs --generated DIR")
    try:
        scorer = build_scorer(method.name, ScoringContext(artifacts=artifacts))
    except LookupError as exc:
        raise SystemExit(f"memaudit: {exc}") from None
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
    baselines = baseline_f1(y)
    print(
        f"baselines: all-used F1 {baselines['all_used']:.3f}; random F1 ~{baselines['chance']:.3f}"
    )
    if args.roc:
        write_roc_png(y, s, Path(args.roc), title=args.method)
        print(f"ROC curve written to {args.roc}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    evaluate = sub.add_parser(
        "evaluate",
        help="score a labelled development set",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="methods:\n" + "\n".join(f"  {m.name:10s} {m.description}" for m in all_methods()),
    )
    evaluate.add_argument("--labels", required=True, help="labels.csv (real, used, ...)")
    evaluate.add_argument("--real", required=True, help="folder of the real images")
    evaluate.add_argument("--generated", help="folder of generated images")
    evaluate.add_argument(
        "--method",
        default=DEFAULT_METHOD,
        choices=[m.name for m in all_methods()],
        help="the scoring method (listed below)",
    )
    evaluate.add_argument("--against", default="used", choices=["used", "memorized"])
    evaluate.add_argument("--models", default=str(REPO_ROOT / "models"))
    evaluate.add_argument("--roc", help="write the ROC curve to this PNG")
    evaluate.add_argument("--cpu", action="store_true", help="never try CUDA")
    evaluate.set_defaults(func=cmd_evaluate)
