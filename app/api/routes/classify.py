"""/classify: which real images were used to train the generator? (membership scores)"""

from __future__ import annotations

import logging
import time
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.api.deps import (
    db_session,
    feature_store_of,
    hash_pool_of,
    image_store_of,
    sessions_of,
    settings_of,
)
from app.api.forms import MAX_INT, float_field, int_field, reject_unknown_fields
from app.api.responses import csv_download
from app.api.schemas import CLASSIFY_FORM, ClassificationOut, ErrorOut
from app.api.uploads import ingest_limits, receive_upload
from app.db.models import MatchBatch
from app.db.session import transaction
from app.scoring.base import Scorer
from app.scoring.methods import DEFAULT_METHOD, ScoringContext, build_scorer, method_names
from app.search.calibration import Threshold, resolve_threshold
from app.services import classification as service
from app.services import hash_import, real_sets
from app.services.ingest import ImageIngest

router = APIRouter(prefix="/classify", tags=["membership inference"])
log = logging.getLogger("memaudit.classify")

ERRORS = {
    404: {"model": ErrorOut, "description": "Unknown real set, batch or classification."},
    409: {
        "model": ErrorOut,
        "description": "Stored image bytes are missing, or the set was registered by hash only.",
    },
    415: {"model": ErrorOut, "description": "Not multipart/form-data."},
    422: {"model": ErrorOut, "description": "Invalid field or missing images."},
    503: {"model": ErrorOut, "description": "The method's model artifact is unavailable."},
}


@router.post(
    "",
    response_model=ClassificationOut,
    summary="Score which real images were used to train the generator",
    description="Real images come from `real_set_id` or uploaded `files`; methods that "
    "compare with the generator's output (`reference`, `phash`) take a `batch_id` from "
    "/match or uploaded `generated_files`. Every real image gets a `score` (higher = more "
    "likely used) and a `label` at the method's default threshold. Stored: "
    "GET /classify/{id} returns it again (`format=csv`, `format=imageclef`).\n\n"
    "```\ncurl -F method=reference -F real_set_id=1 -F batch_id=1 "
    "http://localhost:8000/classify\n```",
    openapi_extra=CLASSIFY_FORM,
    responses=ERRORS,
)
async def create_classification(request: Request):
    started = time.perf_counter()
    settings = settings_of(request)
    limits = ingest_limits(settings)
    store = image_store_of(request)

    def uploads(_fields: dict[str, str], _final: bool) -> ImageIngest:
        return ImageIngest(16, limits, keep=store.put, pool=hash_pool_of(request))

    fields, real_upload, others = await receive_upload(
        request,
        settings,
        uploads,
        other_file_fields={"generated_files": uploads},
        require_files=False,
    )
    method = fields.get("method") or DEFAULT_METHOD
    if method not in method_names():
        raise HTTPException(422, detail=f"method must be one of {', '.join(method_names())}")
    reject_unknown_fields(fields, {"method", "real_set_id", "batch_id", "threshold"})
    real_set_id = int_field(fields, "real_set_id", minimum=1)
    batch_id = int_field(fields, "batch_id", minimum=1)
    threshold_override = float_field(fields, "threshold")
    gen_upload = others.get("generated_files")
    if real_set_id is not None and real_upload.images:
        raise HTTPException(422, detail="send either real_set_id or real 'files', not both")
    if batch_id is not None and gen_upload is not None:
        raise HTTPException(422, detail="send either batch_id or 'generated_files', not both")
    scorer: Scorer | None = None
    if method != "phash":
        context = ScoringContext(
            artifacts=request.app.state.models, requested_threshold=threshold_override
        )
        try:
            scorer = build_scorer(method, context)
        except LookupError as exc:
            raise HTTPException(503, detail=str(exc)) from None

    def run() -> dict:
        nonlocal scorer
        with sessions_of(request)() as session:
            if method == "phash":
                # The paper's rule as /match applied it: the set's hash size, the batch's
                # threshold (else the set's calibrated value).
                scorer = _phash_scorer(session, real_set_id, batch_id, settings)
            if real_set_id is not None:
                try:
                    real_sets.get_real_set(session, real_set_id)
                except real_sets.RealSetNotFound as exc:
                    raise HTTPException(404, detail=str(exc)) from None
                if without_pixels := hash_import.hash_only_count(session, real_set_id):
                    raise HTTPException(
                        409, hash_import.no_pixels_message(real_set_id, without_pixels, method)
                    )
                real = service.real_set_images(session, real_set_id)
            else:
                real = [service.ImageRef.of(i) for i in real_upload.images]
            generated: list[service.ImageRef] = []
            if batch_id is not None:
                found = service.batch_images(session, batch_id)
                if found is None:
                    raise HTTPException(404, detail=f"match batch {batch_id} does not exist")
                generated = found
            elif gen_upload is not None:
                generated = [service.ImageRef.of(i) for i in gen_upload.images]
        if not real:
            raise HTTPException(
                422,
                detail={
                    "message": "no real images: give real_set_id or upload real 'files'",
                    "rejected": real_upload.rejected_json(),
                },
            )
        if scorer.needs_generated and not generated:
            raise HTTPException(
                422,
                detail={
                    "message": f"method {method!r} compares with the generator's output: give "
                    "a batch_id from /match or upload usable 'generated_files'",
                    "rejected": gen_upload.rejected_json() if gen_upload else [],
                },
            )
        try:
            features = feature_store_of(request)
            real_px = service.StoredImages(store, real, settings.max_image_pixels, features)
            gen_px = service.StoredImages(store, generated, settings.max_image_pixels, features)
        except service.MissingImages as exc:
            raise HTTPException(409, detail=str(exc)) from None
        log.info("classify %s: %d real, %d generated", method, len(real), len(generated))
        result = scorer.score(
            real_px, gen_px if scorer.needs_generated else None, progress=_progress_logger(method)
        )
        if threshold_override is not None:
            result = result.with_threshold(threshold_override)
        rejected = real_upload.rejected_json() + (gen_upload.rejected_json() if gen_upload else [])
        try:
            with transaction(sessions_of(request)) as session:
                return service.save_classification(
                    session,
                    method,
                    [ref.filename for ref in real],
                    result,
                    real_set_id=real_set_id,
                    batch_id=batch_id,
                    generated_count=len(generated),
                    rejected=rejected,
                    elapsed_seconds=time.perf_counter() - started,
                )
        except IntegrityError:
            raise HTTPException(
                409, detail="the real set or batch was deleted while scoring; nothing was stored"
            ) from None

    return await run_in_threadpool(run)


def _phash_scorer(session: Session, real_set_id, batch_id, settings) -> Scorer:
    hash_size, threshold = 16, None
    if batch_id is not None:
        batch = session.get(MatchBatch, batch_id)
        if batch is not None:
            hash_size = batch.hash_size
            threshold = Threshold(
                batch.threshold,
                batch.threshold_source,
                f"the threshold match batch {batch_id} used ({batch.threshold_source})",
            )
    elif real_set_id is not None:
        try:
            real_set = real_sets.get_real_set(session, real_set_id)
        except real_sets.RealSetNotFound as exc:
            raise HTTPException(404, detail=str(exc)) from None
        hash_size = real_set.hash_size
        if real_set.calibration:
            threshold = resolve_threshold(
                hash_size,
                real_set.image_count,
                settings.min_calibration_images,
                real_set.calibration,
            )
    return build_scorer(
        "phash",
        ScoringContext(
            match_threshold=threshold,
            hash_size=hash_size,
            calibration_quantile=settings.calibration_quantile,
            min_calibration_images=settings.min_calibration_images,
        ),
    )


def _progress_logger(method: str):
    """Log long scoring runs every 10% so an operator can follow them."""
    last: dict[str, int] = {}

    def report(stage: str, done: int, total: int) -> None:
        step = max(total // 10, 1)
        if done == total or done // step != last.get(stage, -1):
            last[stage] = done // step
            log.info("classify %s: %s %d/%d", method, stage, done, total)

    return report


@router.get(
    "/{classification_id}",
    response_model=ClassificationOut,
    summary="A stored classification (JSON, CSV or ImageCLEF submission lines)",
    description="`format=imageclef` gives the task's submission lines `<image id>,<1|0>` "
    "(1 = used).",
    responses={
        404: ERRORS[404],
        200: {
            "content": {
                "text/csv": {"example": "filename,score,label\nreal_0001.png,3.2,used\n"},
                "text/plain": {"example": "real_0001,1\nreal_0002,0\n"},
            }
        },
    },
)
def get_classification(
    classification_id: int = Path(
        ge=1, le=MAX_INT, description="Id from POST /classify.", examples=[1]
    ),
    format: Literal["json", "csv", "imageclef"] = Query(
        "json", description="Answer format.", examples=["imageclef"]
    ),
    session: Session = Depends(db_session),
):
    try:
        document = service.load_classification(session, classification_id)
    except service.ClassificationNotFound as exc:
        raise HTTPException(404, detail=str(exc)) from None
    if format == "csv":
        return csv_download(
            service.classification_csv(document), f"classify-{classification_id}.csv"
        )
    if format == "imageclef":
        return PlainTextResponse(service.classification_imageclef(document))
    return document
