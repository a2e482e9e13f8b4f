"""The /match workflow: a generated batch against a registered real set, stored as a batch.

Takes validated input (a :class:`MatchRequest` and the hashed upload), resolves the
threshold, matches and saves in one transaction, and returns the batch document.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from app.db.session import transaction
from app.imaging.windowing import Window
from app.search.calibration import resolve_threshold
from app.services import batches, real_sets
from app.services.errors import InvalidInput
from app.services.indexed_matching import match_sources_indexed
from app.services.ingest import ImageIngest, IngestResult
from app.services.intake import ImageIntake
from app.services.real_sets import CalibrationConfig
from app.services.set_hash_cache import IndexedVectors, SetHashCache, SetHashes
from app.services.source_matching import (
    CopyDecision,
    MatchOutcome,
    attribute_copies,
    match_sources,
)

NO_EMBEDDING = (
    "no copy-detection embedding is loaded (models/embedding.onnx; GET /models says why): "
    "copy_of is not decided, only the paper's pHash source"
)
SET_WITHOUT_EMBEDDINGS = (
    "the set's images have no copy-detection descriptors (registered by hash alone, before "
    "an embedding was loaded, or over 200,000 images where no search index is kept): copy_of "
    "is not decided; register the images again for it"
)


OTHER_EMBEDDING = (
    "the set's descriptors come from another copy-detection embedding than the loaded one "
    "(a different size): copy_of is not decided; register the images again for it"
)


@dataclass(frozen=True)
class MatchRequest:
    real_set_id: int
    threshold: int | None = None
    top_k: int = 1
    real_summary: batches.SummaryScope = "all"
    #: The request's window: refused unless it is the set's (which is always used).
    window: Window | None = None


def ingest_for(
    sessions: sessionmaker[Session],
    real_set_id: int,
    intake: ImageIntake,
    window: Window | None = None,
) -> ImageIngest:
    """The ingest for a batch against ``real_set_id``: hashed (and windowed) as the set's
    images were; a request ``window`` other than the set's is refused before hashing."""
    with sessions() as session:
        real_set = real_sets.get_real_set(session, real_set_id)
    real_sets.check_window(real_set, window)
    return intake.ingest(
        real_set.hash_size, hash_kind=real_set.hash_kind, window=real_sets.window_of(real_set)
    )


def create_batch(
    sessions: sessionmaker[Session],
    cache: SetHashCache,
    request: MatchRequest,
    upload: IngestResult,
    calibration: CalibrationConfig,
    started: float,
) -> dict:
    """Match the uploaded images against the set (pHash, the paper's rule; and the
    copy-detection embedding, ``copy_of``), store the batch, return its document."""
    with sessions() as session:  # a window field that came after the files
        real_sets.check_window(real_sets.get_real_set(session, request.real_set_id), request.window)
    if not upload.images:
        raise InvalidInput(
            "none of the uploaded files is a usable generated image",
            {
                "message": "none of the uploaded files is a usable generated image",
                "rejected": upload.rejected_json(),
                "duplicates": upload.duplicates_json(),
            },
        )
    with sessions() as session:
        # Load the set's hashes and calibrate its copy bar (the slow part, once per
        # revision) before the write transaction, which on SQLite holds the write lock.
        warm_set = real_sets.get_real_set(session, request.real_set_id)
        warm = cache.get(session, warm_set)
        warm.copy_rule(calibration.quantile, calibration.min_images)
        # A large set's indices are built (once per revision) or mapped here too.
        cache.hash_index(warm)
        cache.vector_index(session, warm_set, calibration.quantile, calibration.min_images)
    with transaction(sessions) as session:
        real_set = real_sets.get_real_set(session, request.real_set_id)
        bits = real_set.hash_size * real_set.hash_size
        if request.threshold is not None and request.threshold > bits:
            raise InvalidInput(f"threshold must be at most {bits}, got {request.threshold}")
        threshold = resolve_threshold(
            real_set.hash_size,
            real_set.image_count,
            calibration.min_images,
            real_set.calibration if real_set.calibrated_threshold is not None else None,
            request.threshold,
        )
        hashes = cache.get(session, real_set)
        index = cache.hash_index(hashes)
        match_args = (upload.images, real_set.hash_size, threshold.value, request.top_k)
        outcome = None
        if index is not None:  # None too where probing would cost more than a scan
            outcome = match_sources_indexed(hashes.filenames, index, *match_args)
        if outcome is None:
            outcome = match_sources(hashes.filenames, hashes.words, *match_args)
        indexed = cache.vector_index(
            session, real_set, calibration.quantile, calibration.min_images
        )
        copy_rule = decide_copies(outcome, upload, hashes, calibration, indexed)
        batch = batches.save_batch(
            session,
            real_set,
            threshold,
            request.top_k,
            upload,
            outcome,
            elapsed_seconds=time.perf_counter() - started,
            copy_rule=copy_rule,
        )
        session.flush()
        return batches.batch_document(
            batch,
            outcome.matches,
            batches.scoped_summary(outcome, request.real_summary),
            used_count=outcome.used_count,
            scope=request.real_summary,
        )


def get_batch(session: Session, batch_id: int, real_summary: batches.SummaryScope) -> dict:
    return batches.load_batch(session, batch_id, real_summary)


def get_real_summary(
    session: Session, batch_id: int, real_summary: batches.SummaryScope
) -> list[dict]:
    """A stored batch's per-real-image verdicts alone (for the real-image CSV)."""
    return batches.load_real_summary(session, batch_id, real_summary)


def list_batches(session: Session, real_set_id: int | None, offset: int, limit: int) -> dict:
    """One page of stored batches, newest first, optionally of one real set."""
    total, items = batches.list_batches(session, real_set_id, offset, limit)
    return {"total": total, "offset": offset, "limit": limit, "items": items}


def decide_copies(
    outcome: MatchOutcome,
    upload: IngestResult,
    hashes: SetHashes,
    calibration: CalibrationConfig,
    indexed: IndexedVectors | None = None,
) -> CopyDecision:
    """Fill ``copy_of`` where the embedding can decide it; the rule applied, or why none.
    ``indexed``: a large set's embedding index (approximate: app.search.vector_index)."""
    if any(g.embedding is None for g in upload.images):
        return CopyDecision(None, NO_EMBEDDING)
    if hashes.embeddings is None and indexed is None:
        return CopyDecision(None, SET_WITHOUT_EMBEDDINGS)
    stored = hashes.embeddings if indexed is None else indexed.index.vectors
    if len(upload.images[0].embedding or b"") != 2 * stored.shape[1]:
        return CopyDecision(None, OTHER_EMBEDDING)
    if indexed is None:
        rule = hashes.copy_rule(calibration.quantile, calibration.min_images)
    else:
        rule = indexed.rule
    if rule is None:
        return CopyDecision(
            None,
            f"the set has fewer than {calibration.min_images} images, too few to calibrate "
            "the copy-detection threshold on: copy_of is not decided",
        )
    attribute_copies(
        outcome,
        upload.images,
        hashes.words,
        hashes.embeddings,
        rule,
        hashes.hash_size,
        find_nearest=indexed.nearest if indexed is not None else None,
    )
    return CopyDecision(rule.threshold, rule.reason())
