"""Rendering stored match batches as CSV and as the seed paper's text lines.

Names come from clients: CSV cells holding them go through ``spreadsheet_cell`` (formula
neutralisation) and text lines through ``one_line``, so no name can forge a row or a line.
"""

from __future__ import annotations

import csv
import io

from app.services.filenames import one_line, spreadsheet_cell
from app.services.source_matching import paper_lines, verified_words


def batch_csv(document: dict) -> str:
    """One row per generated image; candidates as `name:distance` joined by `;`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "generated",
            "source",
            "distance",
            "candidates",
            "copy_of",
            "copy_similarity",
            "copy_verified_inliers",
        ]
    )
    for m in document["matches"]:
        copy = m.get("copy_of") or {}
        writer.writerow(
            [
                spreadsheet_cell(m["generated"]),
                spreadsheet_cell(m["source"] or ""),
                m["distance"],
                spreadsheet_cell(
                    ";".join(f"{c['filename']}:{c['distance']}" for c in m["candidates"])
                ),
                spreadsheet_cell(copy.get("real", "")),
                copy.get("similarity", ""),
                "" if copy.get("verified_inliers") is None else copy["verified_inliers"],
            ]
        )
    return out.getvalue()


def batch_text(document: dict) -> str:
    """The paper's lines, one per generated image whatever its name holds, then one line per
    copy the embedding found."""
    lines = paper_lines(document["matches"]) + [
        f"The copy-detection embedding finds {m['generated']} a copy of "
        f"{m['copy_of']['real']} with similarity {m['copy_of']['similarity']:.3f}"
        + verified_words(m["copy_of"])
        for m in document["matches"]
        if m.get("copy_of")
    ]
    return "".join(one_line(line) + "\n" for line in lines)


def real_summary_csv(rows: list[dict]) -> str:
    """One row per real image of a batch: how many generated images it sourced, the
    closest one and its distance, and the verdict."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["real", "matched_count", "min_distance", "closest_generated", "verdict"])
    for r in rows:
        writer.writerow(
            [
                spreadsheet_cell(r["filename"]),
                r["matched_count"],
                "" if r["min_distance"] is None else r["min_distance"],
                spreadsheet_cell(r["closest_generated"] or ""),
                r["verdict"],
            ]
        )
    return out.getvalue()
