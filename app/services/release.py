"""The release gate (/filter): which generated images of a match batch may leave the hospital,
decided by the evidence /match gives, and a zip of only those with a manifest of the rest.

An image is withheld when either evidence calls it a copy: `copy_of` (the copy-detection
embedding, calibrated on the set) or the paper's pHash `source` (nearest real image within
the threshold). Everything else is released: no evidence of copying, which is not proof of
privacy (membership inference, /classify, answers the other question).
"""

from __future__ import annotations

import csv
import io
import zipfile
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import GeneratedImage
from app.services.errors import Conflict
from app.services.filenames import spreadsheet_cell
from app.services.source_matching import verified_words
from app.storage import ImageStore

RULE = (
    "withheld when the copy-detection embedding names the real image it copies (copy_of) or "
    "its pHash is within the threshold of a real image (source); released otherwise"
)
#: The manifest written into the released zip beside the images.
MANIFEST_NAME = "memaudit-withheld.csv"


def decide(match: dict, threshold: int) -> dict:
    """One generated image's decision with the evidence behind it."""
    reasons = []
    copy = match.get("copy_of")
    if copy:
        reasons.append(
            f"copy of {copy['real']} by the embedding (similarity {copy['similarity']:.3f}"
            f"{verified_words(copy)})"
        )
    if match.get("source"):
        reasons.append(
            f"pHash within {match['distance']} of {match['source']} (threshold {threshold})"
        )
    return {
        "generated": match["generated"],
        "decision": "withhold" if reasons else "release",
        "reasons": reasons,
        "copy_of": copy,
        "source": match.get("source"),
        "distance": match["distance"],
    }


def release_document(batch: dict) -> dict:
    """The gate's answer for a stored batch (as matching.get_batch returns it)."""
    images = [decide(m, batch["threshold"]) for m in batch["matches"]]
    withheld = sum(1 for image in images if image["decision"] == "withhold")
    return {
        "batch_id": batch["batch_id"],
        "real_set_id": batch["real_set_id"],
        "real_set_name": batch["real_set_name"],
        "rule": RULE,
        "threshold": batch["threshold"],
        "copy_threshold": batch["copy_threshold"],
        "copy_rule": batch["copy_rule"],
        "generated_count": len(images),
        "released_count": len(images) - withheld,
        "withheld_count": withheld,
        "images": images,
        "rejected": batch["rejected"],
    }


def manifest_csv(document: dict) -> str:
    """One row per generated image: its decision and why (names neutralised for spreadsheets)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["generated", "decision", "copy_of", "copy_similarity", "source", "reasons"])
    for image in document["images"]:
        copy = image["copy_of"] or {}
        writer.writerow(
            [
                spreadsheet_cell(image["generated"]),
                image["decision"],
                spreadsheet_cell(copy.get("real", "")),
                copy.get("similarity", ""),
                spreadsheet_cell(image["source"] or ""),
                spreadsheet_cell("; ".join(image["reasons"])),
            ]
        )
    return out.getvalue()


#: Folder of the released images inside the zip (the manifest sits beside it, so no image
#: name can collide with it).
RELEASED_FOLDER = "released/"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def zip_member_name(filename: str, data: bytes) -> str:
    """Where a released image goes in the zip: its stored name, with `.png` added where the
    stored bytes are the 8-bit PNG memaudit kept of a DICOM or 16-bit upload (`scan.dcm`,
    `scan.dcm#0001`)."""
    if data.startswith(PNG_SIGNATURE) and not filename.lower().endswith(".png"):
        return f"{RELEASED_FOLDER}{filename}.png"
    return f"{RELEASED_FOLDER}{filename}"


def write_released_zip(session: Session, store: ImageStore, document: dict, out: BinaryIO) -> int:
    """Write the released images (the bytes kept of each, under its name) and the manifest
    of what was withheld and why into ``out`` as a zip; returns the images written."""
    released = {i["generated"] for i in document["images"] if i["decision"] == "release"}
    rows = session.execute(
        select(GeneratedImage.filename, GeneratedImage.sha256)
        .where(GeneratedImage.batch_id == document["batch_id"])
        .order_by(GeneratedImage.position)
    ).all()
    written = 0
    # Images are stored compressed already (PNG, JPEG): storing them again saves CPU.
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for filename, sha256 in rows:
            if filename not in released:
                continue
            try:
                data = store.get(sha256)
            except KeyError:  # deleted meanwhile (DELETE /match, gc)
                raise Conflict(
                    f"the bytes of {filename} are no longer stored (deleted): "
                    "the released images cannot be given"
                ) from None
            archive.writestr(zip_member_name(filename, data), data)
            written += 1
        kept = [i for i in document["images"] if i["decision"] != "release"]
        manifest = manifest_csv({**document, "images": kept})
        archive.writestr(MANIFEST_NAME, manifest, compress_type=zipfile.ZIP_DEFLATED)
    return written
