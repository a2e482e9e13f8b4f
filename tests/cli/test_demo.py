"""`memaudit demo`: the whole audit on synthetic data against a server it starts itself."""

from __future__ import annotations

import csv

from app.cli import main as cli_main


def test_demo_writes_both_reports_with_metrics(tmp_path, capsys):
    assert cli_main(["demo", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "registered real set 1: 48 images" in printed
    assert "match batch 1:" in printed and "classification 1 (reference):" in printed
    with (tmp_path / "labels.csv").open() as fh:
        labels = list(csv.DictReader(fh))
    assert len(labels) == 48 and sum(int(r["used"]) for r in labels) == 24
    assert len(list((tmp_path / "generated").glob("*.png"))) == 80
    for name in ("match-1-report.html", "classify-1-report.html"):
        page = (tmp_path / name).read_text(encoding="utf-8")
        assert str(tmp_path / name) in printed
        assert "ROC AUC" in page and "<img" in page and "<script" not in page
