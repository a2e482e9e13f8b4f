"""`memaudit evaluate` on a labelled set."""

from __future__ import annotations

from tests.imagegen import png


def test_evaluate_prints_table_and_roc(tmp_path, capsys, devset):
    from app.cli import main as cli_main

    used, unused, generated = devset
    (tmp_path / "real").mkdir()
    (tmp_path / "gen").mkdir()
    rows = ["real,used,memorized"]
    for i, img in enumerate(used + unused):
        (tmp_path / "real" / f"real_{i:03d}.png").write_bytes(png(img))
        rows.append(f"real_{i:03d}.png,{int(i < len(used))},{int(i < len(used))}")
    for i, img in enumerate(generated):
        (tmp_path / "gen" / f"g_{i:03d}.png").write_bytes(png(img))
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    assert (
        cli_main(
            [
                "evaluate",
                "--labels",
                str(tmp_path / "labels.csv"),
                "--real",
                str(tmp_path / "real"),
                "--generated",
                str(tmp_path / "gen"),
                "--method",
                "reference",
                "--against",
                "memorized",
                "--roc",
                str(tmp_path / "roc.png"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    header = out[1].split("\t")
    assert header[:5] == ["accuracy", "precision", "specificity", "recall", "f1"]
    values = dict(zip(header, out[2].split("\t"), strict=True))
    assert float(values["roc_auc"]) >= 0.9
    assert int(values["tp"]) + int(values["fn"]) == len(used)
    assert (tmp_path / "roc.png").stat().st_size > 1000
