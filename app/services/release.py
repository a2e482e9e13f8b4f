"""The release gate (/filter): which generated images of a match batch may leave the hospital,
decided by the evidence /match gives, and a zip of only those with a manifest of the rest.

An image is withheld when either evidence calls it a copy: `copy_of` (the copy-detection
embedding, calibrated on the set) or the paper's pHash `source` (nearest real image within
the threshold). Everything else is released: no evidence of copying, which is not proof of
privacy (membership inference, /classify, answers the other question).

Against several real sets the upload is read once and stored as one match batch per set (in
one transaction); the batches carry the first one's id (``gate_batch_id``, the gate's id) and
their number, so the gate is always read whole. An image is withheld when any set's evidence
calls it a copy, or when it was not checked against some set (hashed differently there, it was
rejected or a duplicate).
"""

from __future__ import annotations

import csv
import io
import zipfile
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import GeneratedImage, MatchBatch
from app.imaging.decode import PNG_SIGNATURE
from app.imaging.windowing import Window
from app.services import batches, real_sets
from app.services.errors import Conflict
from app.services.filenames import spreadsheet_cell
from app.services.ingest import ImageIngest
from app.services.intake import ImageIntake
from app.services.source_matching import verified_words
from app.storage import ImageStore

RULE = (
    "withheld when the copy-detection embedding names the real image it copies (copy_of) or "
    "its pHash is within the threshold of a real image (source); released otherwise"
)
#: The rule against several sets (one set: RULE).
RULE_SEVERAL = (
    f"against each real set: {RULE}; withheld when any set's evidence calls it a copy, or when "
    "it was not checked against a set (rejected or a duplicate there)"
)
#: The manifest written into the released zip beside the images.
MANIFEST_NAME = "memaudit-withheld.csv"


class GateIncomplete(Conflict):
    """A gate whose batches were partly deleted: its decisions would miss their evidence."""

    def __init__(self, gate_id: int, expected: int, missing: int) -> None:
        super().__init__(
            f"release gate {gate_id} was checked against {expected} real sets and "
            f"{missing} of its batches were deleted since (DELETE /match): "
            "its decisions would miss their evidence; run POST /filter again"
        )


class ReleasedBytesGone(Conflict):
    """A released image whose stored bytes were deleted since the decision."""

    def __init__(self, filename: str) -> None:
        super().__init__(
            f"the bytes of {filename} are no longer stored (deleted): "
            "the released images cannot be given"
        )


def gate_ingests(
    sessions: sessionmaker[Session],
    real_set_ids: list[int],
    intake: ImageIntake,
    window: Window | None = None,
) -> list[ImageIngest]:
    """The ingest of each set (as matching.ingest_for makes it), one shared by the sets
    hashed alike (kind, size, window): each image is hashed once per kind of set. Every set
    must exist (404) and take ``window`` (422) before anything is read."""
    with sessions() as session:
        gate_sets = [real_sets.get_real_set(session, i) for i in real_set_ids]
    shared: dict[tuple[str, int, Window | None], ImageIngest] = {}
    ingests = []
    for real_set in gate_sets:
        real_sets.check_window(real_set, window)
        set_window = real_sets.window_of(real_set)
        key = (real_set.hash_kind, real_set.hash_size, set_window)
        if key not in shared:
            shared[key] = intake.ingest(
                real_set.hash_size, hash_kind=real_set.hash_kind, window=set_window
            )
        ingests.append(shared[key])
    return ingests


def link_gate(gate_batches: list[MatchBatch]) -> None:
    """Group the batches of one gate (before they are committed); one batch needs none."""
    if len(gate_batches) < 2:
        return
    for batch in gate_batches:
        batch.gate_batch_id = gate_batches[0].id
        batch.gate_size = len(gate_batches)


def load_gate(session: Session, batch_id: int) -> list[dict]:
    """The batch documents of the gate ``batch_id`` is part of (any of its batches' ids),
    in the order of its sets; 409 once one of them was deleted (DELETE /match): the
    decisions would lack that set's evidence."""
    batch = session.get(MatchBatch, batch_id)
    if batch is not None and batch.gate_batch_id is None:
        return [batches.load_batch(session, batch_id, "none")]
    gate_id = batch_id if batch is None else batch.gate_batch_id
    members = session.execute(
        select(MatchBatch.id, MatchBatch.gate_size)
        .where(MatchBatch.gate_batch_id == gate_id)
        .order_by(MatchBatch.id)
    ).all()
    if not members:
        raise batches.BatchNotFound(batch_id)
    expected = members[0].gate_size
    if len(members) < expected:
        raise GateIncomplete(gate_id, expected, expected - len(members))
    return [batches.load_batch(session, member.id, "none") for member in members]


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


def set_label(batch: dict) -> str:
    """How reasons name a set: `real set 'lung CT' (id 3)`."""
    if batch["real_set_id"] is None:  # deleted since
        return f"real set {batch['real_set_name']!r} (deleted since)"
    return f"real set {batch['real_set_name']!r} (id {batch['real_set_id']})"


def gate_decision(name: str, checks: list[tuple[dict, dict | None]], several: bool) -> dict:
    """One generated image's decision over every set of the gate: ``checks`` pairs each
    set's batch with the image's decision against it (None: not checked there)."""
    withheld_by = []
    reasons: list[str] = []
    for batch, decided in checks:
        if decided is None:
            why = ["not checked against this set: rejected or a duplicate in its batch"]
        elif decided["decision"] == "withhold":
            why = decided["reasons"]
        else:
            continue
        withheld_by.append(
            {
                "batch_id": batch["batch_id"],
                "real_set_id": batch["real_set_id"],
                "real_set_name": batch["real_set_name"],
                "copy_of": decided and decided["copy_of"],
                "source": decided and decided["source"],
                "distance": decided and decided["distance"],
                "reasons": why,
            }
        )
        reasons += [f"{set_label(batch)}: {r}" for r in why] if several else why
    checked = [(batch, decided) for batch, decided in checks if decided is not None]
    # The evidence shown: the first set that withholds it, else its nearest by pHash
    # (relative to each set's hash bits: sets may hash at different sizes).
    shown_batch, shown = next(
        ((b, d) for b, d in checked if d["decision"] == "withhold"),
        min(checked, key=lambda pair: pair[1]["distance"] / pair[0]["hash_size"] ** 2),
    )
    return {
        "generated": name,
        "decision": "withhold" if withheld_by else "release",
        "reasons": reasons,
        "copy_of": shown["copy_of"],
        "source": shown["source"],
        "distance": shown["distance"],
        "real_set_id": shown_batch["real_set_id"],
        "withheld_by": withheld_by,
    }


def release_document(gate: list[dict]) -> dict:
    """The gate's answer from its batches' documents (as matching.get_batch returns them,
    in the order of the sets; one batch for a one-set gate)."""
    several = len(gate) > 1
    by_name = [{m["generated"]: m for m in batch["matches"]} for batch in gate]
    names = list(dict.fromkeys(name for matches in by_name for name in matches))
    images = [
        gate_decision(
            name,
            [
                (batch, decide(matches[name], batch["threshold"]) if name in matches else None)
                for batch, matches in zip(gate, by_name, strict=True)
            ],
            several,
        )
        for name in names
    ]
    withheld = sum(1 for image in images if image["decision"] == "withhold")
    rejected: list[dict] = []
    for batch in gate:  # the same file is rejected once per set hashed alike: listed once
        rejected += [r for r in batch["rejected"] if r not in rejected]
    first = gate[0]
    return {
        "batch_id": first["batch_id"],
        "real_set_id": first["real_set_id"],
        "real_set_name": first["real_set_name"],
        "rule": RULE_SEVERAL if several else RULE,
        "threshold": first["threshold"],
        "copy_threshold": first["copy_threshold"],
        "copy_rule": first["copy_rule"],
        "sets": [
            {
                "batch_id": batch["batch_id"],
                "real_set_id": batch["real_set_id"],
                "real_set_name": batch["real_set_name"],
                "threshold": batch["threshold"],
                "copy_threshold": batch["copy_threshold"],
                "copy_rule": batch["copy_rule"],
                "withheld_count": sum(
                    1
                    for image in images
                    if any(w["batch_id"] == batch["batch_id"] for w in image["withheld_by"])
                ),
            }
            for batch in gate
        ],
        "generated_count": len(images),
        "released_count": len(images) - withheld,
        "withheld_count": withheld,
        "images": images,
        "rejected": rejected,
    }


def manifest_csv(document: dict) -> str:
    """One row per generated image: its decision and why (names neutralised for spreadsheets)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["generated", "decision", "copy_of", "copy_similarity", "source", "reasons", "withheld_by"]
    )
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
                spreadsheet_cell("; ".join(set_label(w) for w in image["withheld_by"])),
            ]
        )
    return out.getvalue()


#: Folder of the released images inside the zip (the manifest sits beside it, so no image
#: name can collide with it).
RELEASED_FOLDER = "released/"


def zip_member_name(filename: str, data: bytes) -> str:
    """Where a released image goes in the zip: its stored name, with `.png` added where the
    stored bytes are the 8-bit PNG memaudit kept of a DICOM or 16-bit upload (`scan.dcm`,
    `scan.dcm#0001`)."""
    if data.startswith(PNG_SIGNATURE) and not filename.lower().endswith(".png"):
        return f"{RELEASED_FOLDER}{filename}.png"
    return f"{RELEASED_FOLDER}{filename}"


def write_released_zip(session: Session, store: ImageStore, document: dict, out: BinaryIO) -> int:
    """Write the released images (the bytes kept of each, under its name) and the manifest
    of what was withheld and why into ``out`` as a zip; returns the images written. The
    bytes are the gate's first batch's (a released image was checked against every set, so
    it is in each batch)."""
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
                raise ReleasedBytesGone(filename) from None
            archive.writestr(zip_member_name(filename, data), data)
            written += 1
        kept = [i for i in document["images"] if i["decision"] != "release"]
        manifest = manifest_csv({**document, "images": kept})
        archive.writestr(MANIFEST_NAME, manifest, compress_type=zipfile.ZIP_DEFLATED)
    return written
