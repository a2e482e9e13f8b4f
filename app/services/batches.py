"""Persistence of /match batches: one transaction writes the batch, its images and summary."""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db.bulk import insert_rows
from app.db.models import GeneratedImage, MatchBatch, RealSet, RealSummary
from app.search.calibration import Threshold
from app.services.errors import NotFound
from app.services.ingest import HashedImage, IngestResult
from app.services.source_matching import MatchOutcome, match_row, summary_row, verdict

#: Which real images a batch document lists in ``real_summary``: every one, only those
#: with verdict ``used``, or none (a set of a million hashes makes a 130 MB answer).
SummaryScope = Literal["all", "used", "none"]
SUMMARY_SCOPES: tuple[str, ...] = ("all", "used", "none")
#: Sets with more images than this keep a batch's per-real-image results packed in one
#: compressed blob (MatchBatch.real_summary_packed) instead of one row each: a million rows
#: took ~10 s and ~80 MB per batch on PostgreSQL. Smaller sets keep rows (queryable in SQL).
PACK_SUMMARY_ABOVE = 100_000


class BatchNotFound(NotFound):
    def __init__(self, batch_id: int) -> None:
        super().__init__(f"match batch {batch_id} does not exist")
        self.batch_id = batch_id


def save_batch(
    session: Session,
    real_set: RealSet,
    threshold: Threshold,
    top_k: int,
    ingest: IngestResult,
    outcome: MatchOutcome,
    elapsed_seconds: float,
) -> MatchBatch:
    packed = pack_summary(outcome) if len(outcome.real_names) > PACK_SUMMARY_ABOVE else None
    batch = MatchBatch(
        real_set_id=real_set.id,
        real_set_name=real_set.name,
        real_set_revision=real_set.revision,
        hash_kind=real_set.hash_kind,
        hash_size=real_set.hash_size,
        window_center=real_set.window_center,
        window_width=real_set.window_width,
        windows_used=ingest.windows_json(),
        threshold=threshold.value,
        threshold_source=threshold.source,
        threshold_reason=threshold.reason,
        top_k=top_k,
        generated_count=len(outcome.matches),
        matched_count=outcome.matched_count,
        rejected=ingest.rejected_json(),
        duplicates=ingest.duplicates_json(),
        elapsed_seconds=elapsed_seconds,
        real_summary_packed=packed,
    )
    session.add(batch)
    session.flush()
    generated: list[HashedImage] = ingest.images
    insert_rows(
        session,
        GeneratedImage,
        (
            "batch_id",
            "position",
            "filename",
            "sha256",
            "phash",
            "thumbnail",
            "source",
            "distance",
            "candidates",
        ),
        (
            (
                batch.id,
                i,
                m["generated"],
                g.sha256,
                g.phash,
                g.thumbnail,
                m["source"],
                m["distance"],
                [[c["filename"], c["distance"]] for c in m["candidates"]],
            )
            for i, (m, g) in enumerate(zip(outcome.matches, generated, strict=True))
        ),
    )
    if packed is not None:
        return batch
    closest = outcome.closest_generated
    summary_rows = (
        (batch.id, j, name, int(count), int(distance), closest[j], verdict(count))
        for j, (name, count, distance) in enumerate(
            zip(
                outcome.real_names,
                outcome.matched_counts.tolist(),
                outcome.min_distances.tolist(),
                strict=True,
            )
        )
    )
    insert_rows(
        session,
        RealSummary,
        (
            "batch_id",
            "position",
            "filename",
            "matched_count",
            "min_distance",
            "closest_generated",
            "verdict",
        ),
        summary_rows,
    )
    return batch


def load_batch(session: Session, batch_id: int, real_summary: SummaryScope = "all") -> dict:
    """The stored batch in the same shape /match answered with."""
    batch = session.get(MatchBatch, batch_id)
    if batch is None:
        raise BatchNotFound(batch_id)
    gen_rows = session.scalars(
        select(GeneratedImage)
        .where(GeneratedImage.batch_id == batch_id)
        .order_by(GeneratedImage.position)
    ).all()
    # Real images with a verdict of used are the distinct sources (names are unique in a
    # set): counted over the batch's generated images, not over one row per real image.
    used_count = session.scalar(
        select(func.count(GeneratedImage.source.distinct())).where(
            GeneratedImage.batch_id == batch_id, GeneratedImage.source.is_not(None)
        )
    )
    summary: list[dict] = []
    if real_summary != "none" and batch.real_summary_packed is not None:
        gen_names = [g.filename for g in gen_rows]
        summary = unpack_summary(batch.real_summary_packed, gen_names, real_summary == "used")
    elif real_summary != "none":
        in_scope = RealSummary.batch_id == batch_id
        if real_summary == "used":
            in_scope &= RealSummary.verdict == "used"
        summary = [
            summary_row(s.filename, s.matched_count, s.min_distance, s.closest_generated)
            for s in session.scalars(
                select(RealSummary).where(in_scope).order_by(RealSummary.position)
            )
        ]
    return batch_document(
        batch,
        matches=[
            match_row(g.filename, g.phash, g.source, g.distance, g.candidates) for g in gen_rows
        ],
        real_summary=summary,
        used_count=used_count,
        scope=real_summary,
    )


def pack_summary(outcome: MatchOutcome) -> bytes:
    """Per-real-image results as one compressed npz: names (NUL-separated UTF-8; NUL is
    refused in file names), matched counts, min distances, and the closest generated
    image's position in the batch (-1: none)."""
    position = {name: i for i, name in enumerate(g["generated"] for g in outcome.matches)}
    closest = np.array(
        [-1 if c is None else position[c] for c in outcome.closest_generated], np.int32
    )
    names = "\0".join(outcome.real_names).encode("utf-8")
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        names=np.frombuffer(names, np.uint8),
        matched_counts=outcome.matched_counts.astype(np.int32),
        min_distances=outcome.min_distances.astype(np.int32),
        closest=closest,
    )
    return buffer.getvalue()


def unpack_summary(packed: bytes, generated_names: list[str], only_used: bool) -> list[dict]:
    """The rows of :func:`pack_summary`, as the answer lists them."""
    with np.load(io.BytesIO(packed), allow_pickle=False) as data:
        names = data["names"].tobytes().decode("utf-8").split("\0")
        counts, distances, closest = (
            data["matched_counts"],
            data["min_distances"],
            data["closest"],
        )
    picked = np.flatnonzero(counts) if only_used else range(len(names))
    return [
        summary_row(
            names[j],
            counts[j],
            distances[j],
            generated_names[closest[j]] if closest[j] >= 0 else None,
        )
        for j in picked
    ]


def scoped_summary(outcome: MatchOutcome, scope: SummaryScope) -> list[dict]:
    """The real_summary rows an answer lists (see SummaryScope)."""
    return [] if scope == "none" else outcome.summary_rows(only_used=scope == "used")


def batch_document(
    batch: MatchBatch,
    matches: list[dict],
    real_summary: list[dict],
    *,
    used_count: int,
    scope: SummaryScope,
) -> dict:
    return {
        "batch_id": batch.id,
        "real_set_id": batch.real_set_id,
        "real_set_name": batch.real_set_name,
        "real_set_revision": batch.real_set_revision,
        "hash_kind": batch.hash_kind,
        "hash_size": batch.hash_size,
        "window_center": batch.window_center,
        "window_width": batch.window_width,
        "windows_used": batch.windows_used or [],
        "threshold": batch.threshold,
        "threshold_source": batch.threshold_source,
        "threshold_reason": batch.threshold_reason,
        "top_k": batch.top_k,
        "generated_count": batch.generated_count,
        "matched_count": batch.matched_count,
        "used_count": used_count,
        "created_at": batch.created_at,
        "elapsed_seconds": batch.elapsed_seconds,
        "matches": matches,
        "real_summary_scope": scope,
        "real_summary": real_summary,
        "duplicates": batch.duplicates,
        "rejected": batch.rejected,
    }
