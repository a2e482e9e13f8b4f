"""Source attribution through the API on the labelled development sets: `copy_of` (the
copy-detection embedding) beside the paper's pHash `source`, from the same /match.

    .venv/bin/python bench/attribution_devsets.py [DEVSETS_DIR] [--sets lung-window,iq-othnccd]
        [--verify auto,never]

For every generated image with a source in sources.csv: given the true source, a wrong one,
or none; for novel images (empty source): given a source at all. Registers real/ and matches
generated/ in-process against a fresh SQLite database (the shipped models/), once per
``--verify`` mode (verified geometrically or by the embedding bar alone).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import tempfile
import zipfile
from pathlib import Path

from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.config import Settings  # noqa: E402
from app.main import create_app  # noqa: E402


def zipped(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.glob("*.png")):
            zf.write(path, path.name)
    return buffer.getvalue()


def tally(matches: list[dict], truth: dict[str, str], pick) -> dict:
    copies = {g: s for g, s in truth.items() if s}
    novel = [g for g, s in truth.items() if not s]
    given = {m["generated"]: pick(m) for m in matches}
    right = sum(1 for g, s in copies.items() if given.get(g) == s)
    wrong = sum(1 for g, s in copies.items() if given.get(g) not in (None, s))
    novel_given = sum(1 for g in novel if given.get(g) is not None)
    return {
        "copies": len(copies),
        "right": right,
        "wrong": wrong,
        "novel": len(novel),
        "novel_given": novel_given,
    }


def line(name: str, t: dict) -> str:
    return (
        f"  {name:<22} right {t['right']:>4}/{t['copies']} ({t['right'] / t['copies']:.1%}), "
        f"wrong {t['wrong']} ({t['wrong'] / t['copies']:.1%}), novel given a source "
        f"{t['novel_given']}/{t['novel']} ({t['novel_given'] / max(t['novel'], 1):.1%})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("devsets", nargs="?", default=str(ROOT.parent / "shared/data/devsets"))
    parser.add_argument("--sets", default="lung-window,iq-othnccd")
    parser.add_argument("--verify", default="auto,never", help="/match verify modes, in turn")
    args = parser.parse_args()
    for name in args.sets.split(","):
        folder = Path(args.devsets) / name
        with (folder / "sources.csv").open() as fh:
            truth = {r["generated"]: r["source"] for r in csv.DictReader(fh)}
        tmp = Path(tempfile.mkdtemp())
        settings = Settings(data_dir=tmp, database_url=f"sqlite:///{tmp / 'db.sqlite'}")
        with TestClient(create_app(settings)) as client:
            real_set = client.post(
                "/real-sets",
                data={"name": name},
                files={"files": ("real.zip", zipped(folder / "real"), "application/zip")},
            ).json()
            batches = [
                (
                    mode,
                    client.post(
                        "/match",
                        data={"real_set_id": str(real_set["id"]), "verify": mode},
                        files={
                            "files": ("gen.zip", zipped(folder / "generated"), "application/zip")
                        },
                    ).json(),
                )
                for mode in args.verify.split(",")
            ]
        for mode, batch in batches:  # a mode given twice: the second reuses the set's bar
            print(
                f"{name} verify={mode}: copy bar {batch['copy_threshold']}, pHash threshold "
                f"{batch['threshold']}; {batch['elapsed_seconds']:.1f} s; {batch['copy_rule']}"
            )
            print(
                line(
                    f"copy_of ({mode})",
                    tally(batch["matches"], truth, lambda m: (m["copy_of"] or {}).get("real")),
                )
            )
        print(line("source (pHash)", tally(batch["matches"], truth, lambda m: m["source"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
