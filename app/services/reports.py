"""Rendering stored match batches as CSV and as the seed paper's text lines."""

from __future__ import annotations

import csv
import io

from app.services.source_matching import paper_lines


def batch_csv(document: dict) -> str:
    """One row per generated image; candidates as `name:distance` joined by `;`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["generated", "source", "distance", "candidates"])
    for m in document["matches"]:
        writer.writerow(
            [
                m["generated"],
                m["source"] or "",
                m["distance"],
                ";".join(f"{c['filename']}:{c['distance']}" for c in m["candidates"]),
            ]
        )
    return out.getvalue()


def batch_text(document: dict) -> str:
    return "".join(line + "\n" for line in paper_lines(document["matches"]))
