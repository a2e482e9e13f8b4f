"""Offline commands (gc, report) work only on a database at this memaudit's schema head:
on another, gc would take every stored file for unreferenced."""

from __future__ import annotations

import pytest

from app.cli import main as cli_main


def test_gc_and_report_refuse_a_database_not_at_the_schema_head(tmp_path):
    db = f"sqlite:///{tmp_path / 'empty.db'}"
    data = tmp_path / "data"
    stored = data / "images" / "ab" / ("c" * 62)
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"image bytes")
    with pytest.raises(SystemExit, match=r"schema revision None.*nothing removed"):
        cli_main(["gc", "--db", db, "--data-dir", str(data), "--min-age", "0"])
    assert stored.exists()
    with pytest.raises(SystemExit, match="schema revision None"):
        cli_main(["report", "--match", "1", "--db", db, "--out", str(tmp_path / "r.html")])
