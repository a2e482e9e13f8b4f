"""/match: map each generated image of a batch to its most likely real source image."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.api.deps import (
    db_session,
    hash_cache_of,
    hash_pool_of,
    image_store_of,
    sessions_of,
    settings_of,
)
from app.api.forms import MAX_INT, int_field, reject_unknown_fields, required_int
from app.api.responses import csv_download
from app.api.schemas import MATCH_FORM, REAL_SUMMARY_HELP, ErrorOut, MatchBatchOut
from app.api.uploads import ingest_limits, receive_upload
from app.db.session import transaction
from app.search.calibration import Threshold
from app.search.calibration import resolve_threshold as policy
from app.services import batches, real_sets
from app.services.ingest import ImageIngest
from app.services.reports import batch_csv, batch_text
from app.services.source_matching import match_sources

router = APIRouter(prefix="/match", tags=["source matching"])

ERRORS = {
    404: {"model": ErrorOut, "description": "Unknown real set or batch."},
    413: {"model": ErrorOut, "description": "A field or the request is over a limit."},
    415: {"model": ErrorOut, "description": "Not multipart/form-data."},
    422: {"model": ErrorOut, "description": "Invalid field, or no usable generated image."},
}


def resolve_threshold(requested: int | None, real_set, min_images: int) -> Threshold:
    return policy(
        real_set.hash_size,
        real_set.image_count,
        min_images,
        real_set.calibration if real_set.calibrated_threshold is not None else None,
        requested,
    )


@router.post(
    "",
    response_model=MatchBatchOut,
    summary="Find the real source of each generated image",
    description="Upload a batch of generated images (files and/or zips) against a registered "
    "real set. Each is pHashed and mapped to its nearest real image by Hamming distance; "
    "`source` is null when the nearest is above the threshold. `real_summary` gives each real "
    "image's verdict (`used` if some generated image maps to it); against a large set pass "
    "`real_summary=used` (or `none`) to list only the used ones. The batch is stored: "
    "GET /match/{batch_id} returns it again.\n\n"
    "```\ncurl -F real_set_id=1 -F files=@generated.zip http://localhost:8000/match\n```",
    openapi_extra=MATCH_FORM,
    responses=ERRORS,
)
async def create_match(request: Request):
    started = time.perf_counter()
    settings = settings_of(request)
    limits = ingest_limits(settings)
    sessions = sessions_of(request)
    max_bits = 32 * 32

    def make_ingest(fields: dict[str, str], final: bool) -> ImageIngest | None:
        if not final and "real_set_id" not in fields:
            return None
        summary_scope(fields.get("real_summary") or "all")  # refuse before hashing the files
        real_set_id = required_int(fields, "real_set_id")
        int_field(fields, "top_k", default=1, minimum=1, maximum=settings.max_top_k)
        with sessions() as session:
            real_set = _set_or_404(session, real_set_id)
        bits = real_set.hash_size * real_set.hash_size
        int_field(fields, "threshold", minimum=0, maximum=bits)  # a distance is at most bits
        return ImageIngest(
            real_set.hash_size, limits, keep=image_store_of(request).put, pool=hash_pool_of(request)
        )

    fields, result, _ = await receive_upload(request, settings, make_ingest)
    reject_unknown_fields(fields, {"real_set_id", "threshold", "top_k", "real_summary"})
    scope = summary_scope(fields.get("real_summary") or "all")
    real_set_id = required_int(fields, "real_set_id")
    requested = int_field(fields, "threshold", minimum=0, maximum=max_bits)
    top_k = int_field(fields, "top_k", default=1, minimum=1, maximum=settings.max_top_k)
    if not result.images:
        raise HTTPException(
            422,
            detail={
                "message": "none of the uploaded files is a usable generated image",
                "rejected": result.rejected_json(),
                "duplicates": result.duplicates_json(),
            },
        )
    cache = hash_cache_of(request)

    def run() -> dict:
        with transaction(sessions) as session:
            real_set = _set_or_404(session, real_set_id)
            threshold = resolve_threshold(requested, real_set, settings.min_calibration_images)
            hashes = cache.get(session, real_set)
            outcome = match_sources(
                hashes.filenames,
                hashes.words,
                result.images,
                real_set.hash_size,
                threshold.value,
                top_k,
            )
            batch = batches.save_batch(
                session,
                real_set,
                threshold,
                top_k,
                result,
                outcome,
                elapsed_seconds=time.perf_counter() - started,
            )
            session.flush()
            return batches.batch_document(
                batch,
                outcome.matches,
                batches.scoped_summary(outcome, scope),
                used_count=outcome.used_count,
                scope=scope,
            )

    return await run_in_threadpool(run)


@router.get(
    "/{batch_id}",
    response_model=MatchBatchOut,
    summary="A stored match batch (JSON, CSV or the paper's text lines)",
    description="`format=json` (default) as POST /match answered; `format=csv` one row per "
    "generated image; `format=text` the seed paper's lines, e.g. `The source image for "
    "generated_0478.png is used_0029.png with 52`.",
    responses={
        404: ERRORS[404],
        200: {
            "content": {
                "text/csv": {
                    "example": "generated,source,distance,candidates\n"
                    "generated_0478.png,used_0029.png,52,used_0029.png:52\n"
                },
                "text/plain": {
                    "example": "The source image for generated_0478.png is used_0029.png with 52\n"
                },
            }
        },
    },
)
def get_match(
    batch_id: int = Path(ge=1, le=MAX_INT, description="Batch id from POST /match.", examples=[1]),
    format: Literal["json", "csv", "text"] = Query(
        "json", description="Answer format.", examples=["text"]
    ),
    real_summary: Literal["all", "used", "none"] = Query(
        "all", description=REAL_SUMMARY_HELP, examples=["used"]
    ),
    session: Session = Depends(db_session),
):
    try:
        # CSV and text list the generated images only.
        scope = real_summary if format == "json" else "none"
        document = batches.load_batch(session, batch_id, scope)
    except batches.BatchNotFound as exc:
        raise HTTPException(404, detail=str(exc)) from None
    if format == "csv":
        return csv_download(batch_csv(document), f"match-{batch_id}.csv")
    if format == "text":
        return PlainTextResponse(batch_text(document))
    return document


def summary_scope(value: str) -> batches.SummaryScope:
    if value not in batches.SUMMARY_SCOPES:
        raise HTTPException(
            422, detail=f"real_summary must be all, used or none, got {value[:50]!r}"
        )
    return value  # type: ignore[return-value]


def _set_or_404(session: Session, real_set_id: int):
    try:
        return real_sets.get_real_set(session, real_set_id)
    except real_sets.RealSetNotFound as exc:
        raise HTTPException(404, detail=str(exc)) from None
