"""`memaudit match` on folders."""

from __future__ import annotations

import json

import pytest

from app.cli import main as cli_main
from tests.imagegen import perturbed_copy, phantom, png


def test_cli_match_prints_paper_lines_and_json(tmp_path, capsys):
    real_dir, gen_dir = tmp_path / "real", tmp_path / "generated"
    real_dir.mkdir()
    gen_dir.mkdir()
    for i in range(12):
        (real_dir / f"used_{i:04d}.png").write_bytes(png(phantom(i)))
    (gen_dir / "generated_0001.png").write_bytes(png(perturbed_copy(phantom(3), 5, 0.3)))
    (gen_dir / "generated_0002.png").write_bytes(png(phantom(999)))
    assert cli_main(["match", str(real_dir), str(gen_dir), "--quiet", "--threshold", "40"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("The source image for generated_0001.png is used_0003.png with ")
    assert lines[1].startswith("The source image for generated_0002.png is ")
    assert (
        cli_main(["match", str(real_dir), str(gen_dir), "--quiet", "--json", "--hash-size", "8"])
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["hash_size"] == 8 and doc["threshold_source"] == "calibrated"
    assert doc["matches"][0]["source"] == "used_0003.png"


def test_cli_rejects_missing_folder(tmp_path):
    with pytest.raises(SystemExit, match="not a directory"):
        cli_main(["match", str(tmp_path / "nope"), str(tmp_path), "--quiet"])
