"""/match: map each generated image of a batch to its most likely real source image."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import HashCacheDep, IntakeDep, SessionDep, SessionsDep, SettingsDep
from app.api.forms import MATCH_NEEDS, MAX_INT, match_form
from app.api.responses import csv_download
from app.api.schemas import MATCH_FORM, REAL_SUMMARY_HELP, ErrorOut, MatchBatchOut
from app.api.uploads import UploadReader, finish_ingest
from app.services import matching
from app.services.reports import batch_csv, batch_text

router = APIRouter(prefix="/match", tags=["source matching"])

ERRORS = {
    404: {"model": ErrorOut, "description": "Unknown real set or batch."},
    413: {"model": ErrorOut, "description": "A field or the request is over a limit."},
    415: {"model": ErrorOut, "description": "Not multipart/form-data."},
    422: {"model": ErrorOut, "description": "Invalid field, or no usable generated image."},
}


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
async def create_match(
    request: Request,
    settings: SettingsDep,
    sessions: SessionsDep,
    cache: HashCacheDep,
    intake: IntakeDep,
):
    started = time.perf_counter()
    async with UploadReader(request, settings) as upload:
        early = match_form(await upload.read_fields(MATCH_NEEDS), settings)
        ingest = await run_in_threadpool(
            matching.ingest_for, sessions, early.real_set_id, intake, early.window
        )
        form = match_form(await upload.read_files({"files": ingest}), settings)
        upload.require_files()
        result = await finish_ingest(ingest)
    return await run_in_threadpool(
        matching.create_batch,
        sessions,
        cache,
        form,
        result,
        settings.min_calibration_images,
        started,
    )


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
    session: SessionDep,
    batch_id: int = Path(ge=1, le=MAX_INT, description="Batch id from POST /match.", examples=[1]),
    format: Literal["json", "csv", "text"] = Query(
        "json", description="Answer format.", examples=["text"]
    ),
    real_summary: Literal["all", "used", "none"] = Query(
        "all", description=REAL_SUMMARY_HELP, examples=["used"]
    ),
):
    # CSV and text list the generated images only.
    document = matching.get_batch(session, batch_id, real_summary if format == "json" else "none")
    if format == "csv":
        return csv_download(batch_csv(document), f"match-{batch_id}.csv")
    if format == "text":
        return PlainTextResponse(batch_text(document))
    return document
