"""Persistence of /match batches: one transaction writes the batch, its images and summary."""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, load_only

from app.db.bulk import insert_rows
from app.db.models import GeneratedImage, MatchBatch, RealSet, RealSummary
from app.npy_files import load_npz
from app.search.calibration import Threshold
from app.services.errors import NotFound
from app.services.ingest import HashedImage, IngestResult
from app.services.source_matching import (
    CopyDecision,
    MatchOutcome,
    match_row,
    summary_row,
    verdict,
)

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
    copy_rule: CopyDecision | None = None,
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
        copy_threshold=copy_rule.threshold if copy_rule else None,
        copy_rule=copy_rule.rule if copy_rule else None,
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
            "embedding",
            "source",
            "distance",
            "candidates",
            "copy_of",
        ),
        (
            (
                batch.id,
                i,
                m["generated"],
                g.sha256,
                g.phash,
                g.thumbnail,
                g.embedding,
                m["source"],
                m["distance"],
                [[c["filename"], c["distance"]] for c in m["candidates"]],
                m["copy_of"],
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
    batch = _get_batch(session, batch_id)
    gen_rows = session.scalars(
        select(GeneratedImage)
        .where(GeneratedImage.batch_id == batch_id)
        .order_by(GeneratedImage.position)
    ).all()
    summary = _real_summary_rows(session, batch, real_summary, [g.filename for g in gen_rows])
    return batch_document(
        batch,
        matches=[
            match_row(g.filename, g.phash, g.source, g.distance, g.candidates, g.copy_of)
            for g in gen_rows
        ],
        real_summary=summary,
        used_count=used_counts(session, [batch_id]).get(batch_id, 0),
        scope=real_summary,
    )


def load_real_summary(session: Session, batch_id: int, scope: SummaryScope = "all") -> list[dict]:
    """A stored batch's per-real-image rows (``real_summary`` of its document) alone."""
    batch = _get_batch(session, batch_id)
    names = None
    if batch.real_summary_packed is not None:  # closest generated images by position
        names = list(
            session.scalars(
                select(GeneratedImage.filename)
                .where(GeneratedImage.batch_id == batch_id)
                .order_by(GeneratedImage.position)
            )
        )
    return _real_summary_rows(session, batch, scope, names)


def _get_batch(session: Session, batch_id: int) -> MatchBatch:
    batch = session.get(MatchBatch, batch_id)
    if batch is None:
        raise BatchNotFound(batch_id)
    return batch


def delete_batch(session: Session, batch_id: int) -> list[str]:
    """Delete the batch, its generated images and per-real-image results; the SHA-256 of
    its images' stored bytes. Classifications made against it stay (``batch_id`` null)."""
    _get_batch(session, batch_id)
    digests = list(
        session.scalars(
            select(GeneratedImage.sha256).where(GeneratedImage.batch_id == batch_id).distinct()
        )
    )
    session.execute(delete(GeneratedImage).where(GeneratedImage.batch_id == batch_id))
    session.execute(delete(RealSummary).where(RealSummary.batch_id == batch_id))
    session.execute(delete(MatchBatch).where(MatchBatch.id == batch_id))
    return digests


def _real_summary_rows(
    session: Session, batch: MatchBatch, scope: SummaryScope, generated_names: list[str] | None
) -> list[dict]:
    """Rows in set order, from the packed blob or the summary table."""
    if scope == "none":
        return []
    if batch.real_summary_packed is not None:
        assert generated_names is not None
        return unpack_summary(batch.real_summary_packed, generated_names, scope == "used")
    in_scope = RealSummary.batch_id == batch.id
    if scope == "used":
        in_scope &= RealSummary.verdict == "used"
    return [
        summary_row(s.filename, s.matched_count, s.min_distance, s.closest_generated)
        for s in session.scalars(select(RealSummary).where(in_scope).order_by(RealSummary.position))
    ]


def used_counts(session: Session, batch_ids: list[int]) -> dict[int, int]:
    """Real images with verdict ``used`` per batch: the distinct sources (names are unique
    in a set), counted over the batches' generated images, not over one row per real image."""
    if not batch_ids:
        return {}
    rows = session.execute(
        select(GeneratedImage.batch_id, func.count(GeneratedImage.source.distinct()))
        .where(GeneratedImage.batch_id.in_(batch_ids), GeneratedImage.source.is_not(None))
        .group_by(GeneratedImage.batch_id)
    ).all()
    return {batch_id: count for batch_id, count in rows}


def list_batches(
    session: Session, real_set_id: int | None, offset: int, limit: int
) -> tuple[int, list[dict]]:
    """(how many batches match the filter, one page of their summaries, newest first)."""
    where = [] if real_set_id is None else [MatchBatch.real_set_id == real_set_id]
    total = session.scalar(select(func.count()).select_from(MatchBatch).where(*where))
    page = session.scalars(
        select(MatchBatch)
        .options(load_only(*SUMMARY_COLUMNS))
        .where(*where)
        .order_by(MatchBatch.id.desc())  # ids only grow (never reused): newest first
        .offset(offset)
        .limit(limit)
    ).all()
    used = used_counts(session, [b.id for b in page])
    return total or 0, [batch_summary(b, used.get(b.id, 0)) for b in page]


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
    data = load_npz(io.BytesIO(packed))
    names = data["names"].tobytes().decode("utf-8").split("\0")
    counts, distances, closest = data["matched_counts"], data["min_distances"], data["closest"]
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


#: Columns a batch summary reads (not the rejected/duplicates lists or the packed summary).
SUMMARY_COLUMNS = (
    MatchBatch.id,
    MatchBatch.real_set_id,
    MatchBatch.real_set_name,
    MatchBatch.real_set_revision,
    MatchBatch.hash_kind,
    MatchBatch.hash_size,
    MatchBatch.threshold,
    MatchBatch.threshold_source,
    MatchBatch.threshold_reason,
    MatchBatch.top_k,
    MatchBatch.generated_count,
    MatchBatch.matched_count,
    MatchBatch.created_at,
    MatchBatch.elapsed_seconds,
)


def batch_summary(batch: MatchBatch, used_count: int) -> dict:
    """What GET /match lists per batch: everything but the per-image rows and file lists."""
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
        "copy_threshold": batch.copy_threshold,
        "copy_rule": batch.copy_rule,
        "created_at": batch.created_at,
        "elapsed_seconds": batch.elapsed_seconds,
    }


def batch_document(
    batch: MatchBatch,
    matches: list[dict],
    real_summary: list[dict],
    *,
    used_count: int,
    scope: SummaryScope,
) -> dict:
    return {
        **batch_summary(batch, used_count),
        "copied_count": sum(1 for m in matches if m.get("copy_of") is not None),
        "matches": matches,
        "real_summary_scope": scope,
        "real_summary": real_summary,
        "duplicates": batch.duplicates,
        "rejected": batch.rejected,
    }
