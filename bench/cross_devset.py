"""The paper's models trained on one development set, evaluated on another (issue 3):

    .venv/bin/python bench/cross_devset.py [--train lung-window --test iq-othnccd]

Splits the train devset's real/ into used/unused folders by labels.csv, runs
`memaudit train cnn` and `memaudit train sift-knn` into a temporary models folder, then
`memaudit evaluate` on the test devset (Table 1 columns, ROC AUC, TPR@1%FPR, kappa).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.cli import main as cli  # noqa: E402

DEVSETS = ROOT.parent / "shared/data/devsets"


def split(devset: Path, into: Path) -> None:
    for name in ("used", "unused"):
        (into / name).mkdir(parents=True, exist_ok=True)
    with open(devset / "labels.csv") as fh:
        for row in csv.DictReader(fh):
            target = into / ("used" if row["used"] == "1" else "unused") / row["real"]
            shutil.copy(devset / "real" / row["real"], target)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", default="lung-window")
    parser.add_argument("--test", default="iq-othnccd")
    parser.add_argument("--against", default="used", choices=["used", "memorized"])
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    train_set, test_set = DEVSETS / args.train, DEVSETS / args.test
    split(train_set, tmp)
    models = tmp / "models"
    common = ["--used", str(tmp / "used"), "--unused", str(tmp / "unused")]
    cli(["train", "cnn", *common, "--out", str(models / "cnn.onnx")])
    cli(
        [
            "train",
            "sift-knn",
            *common,
            "--generated",
            str(train_set / "generated"),
            "--out",
            str(models / "sift_knn.joblib"),
        ]
    )
    for method in ("cnn", "sift_knn"):
        print(f"\n# {method}: trained on {args.train}, evaluated on {args.test}")
        cli(
            [
                "evaluate",
                "--labels",
                str(test_set / "labels.csv"),
                "--real",
                str(test_set / "real"),
                "--method",
                method,
                "--models",
                str(models),
                "--against",
                args.against,
                "--roc",
                str(tmp / f"roc-{method}.png"),
            ]
        )


if __name__ == "__main__":
    main()
