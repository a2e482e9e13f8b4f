"""The /match workflow: a generated batch against a registered real set, stored as a batch.

Takes validated input (a :class:`MatchRequest` and the hashed upload), resolves the
threshold, matches and saves in one transaction, and returns the batch document.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.orm import Session, sessionmaker

from app import metrics
from app.db.models import MatchBatch, RealSet
from app.db.session import transaction
from app.imaging.windowing import Window
from app.search.calibration import resolve_threshold
from app.search.copies import STALE_DESCRIPTORS, CopyRule, descriptors_model, unit_vectors
from app.services import batches, jobs, real_sets
from app.services.copy_verification import (
    CannotVerify,
    InlierBar,
    Verification,
    VerifyConfig,
    VerifyMode,
    inlier_bar,
    unverified_note,
    verified_reason,
    verify_batch,
)
from app.services.errors import Conflict, InvalidInput
from app.services.indexed_matching import match_sources_indexed
from app.services.ingest import ImageIngest, IngestResult
from app.services.intake import ImageIntake
from app.services.real_sets import CalibrationConfig
from app.services.retention import HeldImages, ImageRetention
from app.services.set_hash_cache import MIXED_MODELS, IndexedVectors, SetHashCache, SetHashes
from app.services.source_matching import (
    CopyDecision,
    MatchOutcome,
    attribute_copies,
    attribute_verified,
    match_sources,
)

NO_EMBEDDING = (
    "no copy-detection embedding is loaded (models/embedding.onnx; GET /models says why): "
    "copy_of is not decided, only the paper's pHash source"
)
SET_WITHOUT_EMBEDDINGS = (
    "the set's images have no copy-detection descriptors of the loaded embedding (registered "
    "by hash alone, before an embedding was loaded, by another embedding, or over 200,000 "
    "images where no search index is kept): copy_of is not decided; register the images "
    "again for it"
)


#: What to do about a set whose descriptors are not the loaded embedding's.
REEMBED = (
    "run `memaudit reembed` (it computes them from the stored images) or register the "
    "images again, then send the batch again"
)


def other_embedding(set_model: str, upload_model: str) -> str:
    """Why a set's descriptors cannot be compared with the batch's."""
    return (
        f"{STALE_DESCRIPTORS} another copy-detection embedding (sha256 "
        f"{set_model}...) than the loaded one ({upload_model}...), and descriptors of two "
        f"embeddings cannot be compared: copy_of is not decided; {REEMBED}"
    )


MIXED_EMBEDDINGS = (
    f"{STALE_DESCRIPTORS} more than one copy-detection embedding (images added "
    f"after the embedding was replaced): copy_of is not decided; {REEMBED}"
)


#: What GET /real-sets/{id} says of a set's descriptors (descriptor_state).
DescriptorStateName = Literal[
    "current", "stale", "mixed", "incomplete", "none", "too_few", "no_embedding"
]


def too_few_to_calibrate(min_images: int) -> str:
    """Why copy_of is not decided against a set below ``min_images``."""
    return (
        f"the set has fewer than {min_images} images, too few to calibrate the "
        "copy-detection threshold on: copy_of is not decided"
    )


@dataclass(frozen=True)
class DescriptorState:
    """Whether /match can decide copy_of with a set's stored descriptors, and if not, why
    and what to do (in the sentences /match answers with)."""

    state: DescriptorStateName
    note: str
    loaded_embedding: str | None
    embeddings: dict[str, int]
    without_descriptor: int


def descriptor_state(
    counts: dict[str | None, int], loaded: str | None, min_images: int
) -> DescriptorState:
    """``counts``: images per embedding tag, None for those without a descriptor
    (real_sets.descriptor_counts); ``loaded``: the loaded embedding's tag, or None. Checked
    in embedding_problem's order, so the note is the one /match would give."""
    without = counts.get(None, 0)
    models = {model: count for model, count in counts.items() if model is not None}

    def state(name: DescriptorStateName, note: str) -> DescriptorState:
        return DescriptorState(name, note, loaded, models, without)

    if loaded is None:
        return state("no_embedding", NO_EMBEDDING)
    if without or not models:
        return state("incomplete" if models else "none", SET_WITHOUT_EMBEDDINGS)
    if len(models) > 1:
        return state("mixed", MIXED_EMBEDDINGS)
    ((model, images),) = models.items()
    if model != loaded:
        return state("stale", other_embedding(model, loaded))
    if images < max(min_images, 2):
        return state("too_few", too_few_to_calibrate(min_images))
    return state(
        "current",
        "every image has a descriptor of the loaded embedding: /match decides copy_of with them",
    )


def upload_model(upload: IngestResult) -> str | None:
    """The embedding (app.search.copies.model_tag) the upload's descriptors came from."""
    return descriptors_model([g.embedding for g in upload.images])


class StaleSet(Conflict):
    """/filter against a set whose copy-detection descriptors cannot be compared with the
    batch's (``why``: other_embedding or MIXED_EMBEDDINGS)."""

    def __init__(self, name: str, real_set_id: int, why: str) -> None:
        super().__init__(f"real set {name!r} (id {real_set_id}): {why}")


@dataclass(frozen=True)
class MatchRequest:
    real_set_id: int
    threshold: int | None = None
    top_k: int = 1
    real_summary: batches.SummaryScope = "all"
    #: The request's window: refused unless it is the set's (which is always used).
    window: Window | None = None
    #: Verify copy_of candidates geometrically: ``auto`` when the batch is small enough.
    verify: VerifyMode = "auto"


@dataclass(frozen=True)
class VerifyPlan:
    """Copy verification done before the write transaction: its result, or why there is
    none (empty when the embedding cannot decide either), and a bar to store with the set."""

    verification: Verification | None = None
    note: str = ""
    new_bar: InlierBar | None = None
    #: The set revision it was computed on (its real image indices).
    revision: int | None = None


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
    held: HeldImages | None = None,
    verify: VerifyConfig | None = None,
) -> dict:
    """Match the uploaded images against the set (pHash, the paper's rule; and the
    copy-detection embedding, ``copy_of``, verified geometrically when ``verify`` allows),
    store the batch, return its document (``held``: the request's hold on the uploaded
    bytes)."""
    work = [(request, upload)]
    (document,) = create_batches(sessions, cache, work, calibration, started, held, verify)
    return document


def create_batches(
    sessions: sessionmaker[Session],
    cache: SetHashCache,
    work: Sequence[tuple[MatchRequest, IngestResult]],
    calibration: CalibrationConfig,
    started: float,
    held: HeldImages | None = None,
    verify: VerifyConfig | None = None,
    link: Callable[[list[MatchBatch]], None] | None = None,
    refuse_stale: bool = False,
) -> list[dict]:
    """:func:`create_batch` for each (request, upload) pair (/filter against several sets):
    all stored in one transaction, or none; their documents. ``link`` is given the saved
    batches before the commit (to group them). ``refuse_stale``: a set whose descriptors are
    another embedding's is a Conflict, nothing stored (a release gate must not release what
    it could not check)."""
    for request, upload in work:  # refusals before anything slow
        with sessions() as session:  # a window field that came after the files
            real_set = real_sets.get_real_set(session, request.real_set_id)
        real_sets.check_window(real_set, request.window)
        if not upload.images:
            raise InvalidInput(
                "none of the uploaded files is a usable generated image",
                {
                    "message": "none of the uploaded files is a usable generated image",
                    "rejected": upload.rejected_json(),
                    "duplicates": upload.duplicates_json(),
                },
            )
    plans = [
        warm_and_plan(sessions, cache, request, upload, calibration, verify, refuse_stale)
        for request, upload in work
    ]
    with transaction(sessions) as session:
        saved = [
            save_matched(session, cache, request, upload, calibration, plan, started)
            for (request, upload), plan in zip(work, plans, strict=True)
        ]
        if link is not None:
            link([batch for batch, _ in saved])
        session.flush()
        if held is not None:
            held.require_stored(session, (g.sha256 for _, u in work for g in u.images))
        # Last: the job's row is locked until the commit. A gate's first batch names it.
        jobs.record_result(session, saved[0][0].id)
        return [document for _, document in saved]


def warm_and_plan(
    sessions: sessionmaker[Session],
    cache: SetHashCache,
    request: MatchRequest,
    upload: IngestResult,
    calibration: CalibrationConfig,
    verify: VerifyConfig | None,
    refuse_stale: bool = False,
) -> VerifyPlan:
    """Load the set's hashes and calibrate its copy bar (the slow part, once per revision)
    and verify copies before the write transaction, which on SQLite holds the write lock;
    ``refuse_stale``: Conflict when the set's descriptors are another embedding's."""
    with sessions() as session:
        warm_set = real_sets.get_real_set(session, request.real_set_id)
        warm = cache.get(session, warm_set)
        warm.copy_rule(calibration.quantile, calibration.min_images)
        # A large set's indices are built (once per revision) or mapped here too.
        cache.hash_index(warm)
        warm_index = cache.vector_index(
            session, warm_set, calibration.quantile, calibration.min_images, upload_model(upload)
        )
        stale = stale_embedding(upload, warm, warm_index) if refuse_stale else None
        if stale is not None:
            raise StaleSet(warm_set.name, warm_set.id, stale)
        verifying = time.perf_counter()
        plan = plan_verification(
            session, warm_set, warm, upload, request.verify, calibration, verify, warm_index
        )
        if plan.verification is not None:
            spent = time.perf_counter() - verifying
            metrics.SEARCH_SECONDS.labels("copy_verification").observe(spent)
        return plan


def save_matched(
    session: Session,
    cache: SetHashCache,
    request: MatchRequest,
    upload: IngestResult,
    calibration: CalibrationConfig,
    plan: VerifyPlan,
    started: float,
) -> tuple[MatchBatch, dict]:
    """In the write transaction: match the upload against the set and save the batch."""
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
    searched = time.perf_counter()
    index = cache.hash_index(hashes)
    match_args = (upload.images, real_set.hash_size, threshold.value, request.top_k)
    outcome = None
    if index is not None:  # None too where probing would cost more than a scan
        outcome = match_sources_indexed(hashes.filenames, index, *match_args)
    if outcome is None:
        outcome = match_sources(hashes.filenames, hashes.words, *match_args)
    attributed = time.perf_counter()
    metrics.SEARCH_SECONDS.labels("phash").observe(attributed - searched)
    indexed = cache.vector_index(
        session, real_set, calibration.quantile, calibration.min_images, upload_model(upload)
    )
    copy_rule = decide_copies(outcome, upload, hashes, calibration, plan, indexed)
    metrics.SEARCH_SECONDS.labels("copy_of").observe(time.perf_counter() - attributed)
    if plan.new_bar is not None and real_set.revision == plan.revision:
        real_sets.keep_copy_verification(real_set, plan.new_bar.as_json())
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
    return batch, batches.batch_document(
        batch,
        outcome.matches,
        batches.scoped_summary(outcome, request.real_summary),
        used_count=outcome.used_count,
        scope=request.real_summary,
    )


def get_batch(session: Session, batch_id: int, real_summary: batches.SummaryScope) -> dict:
    return batches.load_batch(session, batch_id, real_summary)


def delete_batch(sessions: sessionmaker[Session], retention: ImageRetention, batch_id: int) -> None:
    """Delete a stored batch, then (once committed) the stored bytes of its generated
    images that no set or other batch holds."""
    with transaction(sessions) as session:
        digests = batches.delete_batch(session, batch_id)
    retention.remove_unreferenced(digests)


def get_real_summary(
    session: Session, batch_id: int, real_summary: batches.SummaryScope
) -> list[dict]:
    """A stored batch's per-real-image verdicts alone (for the real-image CSV)."""
    return batches.load_real_summary(session, batch_id, real_summary)


def list_batches(session: Session, real_set_id: int | None, offset: int, limit: int) -> dict:
    """One page of stored batches, newest first, optionally of one real set."""
    total, items = batches.list_batches(session, real_set_id, offset, limit)
    return {"total": total, "offset": offset, "limit": limit, "items": items}


NOT_IN_MEMORY = (
    "not verified geometrically: the set is searched through its embedding index, which "
    "keeps no descriptors in memory to verify against"
)


def copy_rule_of(
    hashes: SetHashes, calibration: CalibrationConfig, indexed: IndexedVectors | None
) -> CopyRule | None:
    """The set's embedding copy bar: from its index for a large set, else from memory."""
    if indexed is not None:
        return indexed.rule
    return hashes.copy_rule(calibration.quantile, calibration.min_images)


def stale_embedding(
    upload: IngestResult, hashes: SetHashes, indexed: IndexedVectors | None = None
) -> str | None:
    """Why the set's descriptors, which it has, cannot be compared with the batch's: they
    come from another embedding than the loaded one, or from several; None otherwise."""
    batch_model = upload_model(upload)
    if batch_model is None:
        return None
    set_model = hashes.embedding_model if indexed is None else indexed.model
    if set_model == MIXED_MODELS:
        return MIXED_EMBEDDINGS
    if indexed is None:
        if hashes.embeddings is None or set_model == batch_model:
            return None
    elif indexed.index is not None and set_model == batch_model:
        return None
    return other_embedding(set_model or "?", batch_model)


def embedding_problem(
    upload: IngestResult,
    hashes: SetHashes,
    calibration: CalibrationConfig,
    indexed: IndexedVectors | None = None,
) -> str | None:
    """Why the embedding cannot decide ``copy_of`` for this batch and set, or None
    (``indexed``: a large set's embedding index, app.search.vector_index)."""
    if upload_model(upload) is None:
        return NO_EMBEDDING
    stale = stale_embedding(upload, hashes, indexed)
    if stale is not None:
        return stale
    if indexed is None and hashes.embeddings is None:
        return SET_WITHOUT_EMBEDDINGS
    if copy_rule_of(hashes, calibration, indexed) is None:
        return too_few_to_calibrate(calibration.min_images)
    return None


def plan_verification(
    session: Session,
    real_set: RealSet,
    hashes: SetHashes,
    upload: IngestResult,
    mode: VerifyMode,
    calibration: CalibrationConfig,
    config: VerifyConfig | None,
    indexed: IndexedVectors | None = None,
) -> VerifyPlan:
    """Verify the batch's copy candidates when asked and affordable (the slow part, done
    before the write transaction); the set's inlier bar is measured once per revision."""
    if config is None or embedding_problem(upload, hashes, calibration, indexed) is not None:
        return VerifyPlan()
    if not config.wants(mode, len(upload.images)):
        return VerifyPlan(note=unverified_note(len(upload.images), mode, config.max_images))
    if hashes.embeddings is None:
        return VerifyPlan(note=NOT_IN_MEMORY)  # searched through its index only
    kind = config.verifier.kind
    stored = InlierBar.from_json(real_sets.copy_verification_bar(real_set), kind)
    try:
        sha256s = hashes.derived("sha256", lambda: real_sets.image_sha256s(session, real_set.id))
        bar = hashes.derived(
            f"inlier-bar:{kind}",
            lambda: stored or inlier_bar(hashes.embeddings, sha256s, config),
        )
        verification = verify_batch(
            unit_vectors([g.embedding for g in upload.images]),
            [g.sha256 for g in upload.images],
            hashes.embeddings,
            sha256s,
            bar,
            config,
        )
    except CannotVerify as error:
        return VerifyPlan(note=f"not verified geometrically: {error}")
    return VerifyPlan(verification, "", None if stored == bar else bar, hashes.revision)


def decide_copies(
    outcome: MatchOutcome,
    upload: IngestResult,
    hashes: SetHashes,
    calibration: CalibrationConfig,
    plan: VerifyPlan | None = None,
    indexed: IndexedVectors | None = None,
) -> CopyDecision:
    """Fill ``copy_of`` where the embedding can decide it (verified when ``plan`` holds a
    verification; through ``indexed``, a large set's approximate embedding index, when
    given); the rule applied, or why none."""
    problem = embedding_problem(upload, hashes, calibration, indexed)
    if problem is not None:
        return CopyDecision(None, problem)
    plan = plan or VerifyPlan()
    rule = copy_rule_of(hashes, calibration, indexed)
    assert rule is not None  # embedding_problem above says why when there is none
    verification = plan.verification
    if verification is not None and plan.revision != hashes.revision:
        plan = VerifyPlan(note="not verified geometrically: images were added to the set meanwhile")
    elif verification is not None:
        attribute_verified(outcome, upload.images, hashes.words, verification, hashes.hash_size)
        return CopyDecision(rule.threshold, verified_reason(verification.bar, rule.reason()))
    attribute_copies(
        outcome,
        upload.images,
        hashes.words,
        hashes.embeddings,
        rule,
        hashes.hash_size,
        find_nearest=indexed.nearest if indexed is not None else None,
    )
    reason = rule.reason()
    return CopyDecision(rule.threshold, f"{reason}; {plan.note}" if plan.note else reason)
