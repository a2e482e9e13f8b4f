"""/match: map each generated image of a batch to its most likely real source image."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import (
    CopyVerifyDep,
    HashCacheDep,
    IntakeDep,
    RetentionDep,
    SessionDep,
    SessionsDep,
    SettingsDep,
)
from app.api.forms import MAX_INT, REAL_SUMMARY_HELP, MatchForm
from app.api.jobs import ACCEPTED_AS_JOB, runs_as_job
from app.api.responses import REMOVED_MEANWHILE, UPLOAD_ERRORS, csv_download, error_responses
from app.api.schemas import MatchBatchOut, MatchBatchPage
from app.api.security import ADMIN
from app.api.uploads import UploadReader, finish_ingest
from app.services import matching
from app.services.registration import calibration_config
from app.services.reports import batch_csv, batch_text, real_summary_csv

router = APIRouter(prefix="/match", tags=["source matching"])
BatchId = Path(ge=1, le=MAX_INT, description="Batch id from POST /match.", examples=[1])

NOT_FOUND = "Unknown real set or batch."
#: What an upload of generated images may answer (POST /match and POST /filter).
UPLOAD_RESPONSES = {
    **error_responses(
        *UPLOAD_ERRORS,
        e404=NOT_FOUND,
        e409=REMOVED_MEANWHILE,
        bodies={409: REMOVED_MEANWHILE},
    ),
    **ACCEPTED_AS_JOB,
}


@router.post(
    "",
    response_model=MatchBatchOut,
    summary="Find the real source of each generated image",
    description="Upload a batch of generated images (files and/or zips) against a registered "
    "real set. Each is pHashed and mapped to its nearest real image by Hamming distance; "
    "`source` is null when the nearest is above the threshold. `real_summary` gives each real "
    "image's verdict (`used` if some generated image maps to it); against a large set pass "
    "`real_summary=used` (or `none`) to list only the used ones. `copy_of` names the real image "
    "a generated image copies by the copy-detection embedding, verified geometrically (SIFT + "
    "RANSAC) when `verify` allows; `copy_rule` says how it was decided. The batch is stored: "
    "GET /match/{batch_id} returns it again.\n\n"
    "```\ncurl -F real_set_id=1 -F files=@generated.zip http://localhost:8000/match\n```",
    openapi_extra=MatchForm.openapi_extra(),
    dependencies=[runs_as_job("match")],
    responses=UPLOAD_RESPONSES,
)
async def create_match(
    request: Request,
    settings: SettingsDep,
    sessions: SessionsDep,
    cache: HashCacheDep,
    intake: IntakeDep,
    verify: CopyVerifyDep,
):
    started = time.perf_counter()
    limits = {"max_top_k": settings.max_top_k}
    async with UploadReader(request, settings) as upload:
        early = MatchForm.parse(
            await upload.read_fields(
                MatchForm.needed_before_files, optional=MatchForm.optional_before_files
            ),
            **limits,
        )
        ingest = await run_in_threadpool(
            matching.ingest_for, sessions, early.real_set_id, intake, early.window
        )
        form = MatchForm.parse(await upload.read_files({"files": ingest}), **limits)
        upload.require_files()
        result = await finish_ingest(ingest)
    return await run_in_threadpool(
        matching.create_batch,
        sessions,
        cache,
        form.request(),
        result,
        calibration_config(settings),
        started,
        intake.held,
        verify,
    )


@router.get(
    "",
    response_model=MatchBatchPage,
    summary="List stored match batches, newest first",
    description="One page of batch summaries (counts, threshold and where it came from; no "
    "per-image rows: GET /match/{batch_id} has those).\n\n"
    "```\ncurl 'http://localhost:8000/match?real_set_id=1&limit=20'\n```",
    responses=error_responses(422),
)
def list_matches(
    session: SessionDep,
    real_set_id: int | None = Query(
        None, ge=1, le=MAX_INT, description="Only batches against this real set.", examples=[1]
    ),
    offset: int = Query(0, ge=0, le=MAX_INT, description="Batches to skip.", examples=[0]),
    limit: int = Query(100, ge=1, le=1000, description="Batches per page.", examples=[100]),
):
    return matching.list_batches(session, real_set_id, offset, limit)


@router.get(
    "/{batch_id}",
    response_model=MatchBatchOut,
    summary="A stored match batch (JSON, CSV or the paper's text lines)",
    description="`format=json` (default) as POST /match answered; `format=csv` one row per "
    "generated image, or with `part=real` one row per real image of the set (its verdict, "
    "how many generated images it sourced, the closest one; `real_summary=used` for the used "
    "ones only); `format=text` the seed paper's lines, e.g. `The source image for "
    "generated_0478.png is used_0029.png with 52`.\n\n"
    "```\ncurl -O -J 'http://localhost:8000/match/1?format=csv&part=real'\n```",
    responses={
        **error_responses(404, 422, e404=NOT_FOUND),
        200: {
            "description": "The batch (JSON), or its CSV or text rendering.",
            "content": {
                "text/csv": {
                    "schema": {"type": "string"},
                    "examples": {
                        "generated": {
                            "summary": "part=generated (default)",
                            "value": "generated,source,distance,candidates,copy_of,"
                            "copy_similarity,copy_verified_inliers\ngenerated_0478.png,"
                            "used_0029.png,52,used_0029.png:52,used_0029.png,0.9412,41\n",
                        },
                        "real": {
                            "summary": "part=real",
                            "value": "real,matched_count,min_distance,closest_generated,"
                            "verdict\nused_0029.png,3,34,generated_0480.png,used\n",
                        },
                    },
                },
                "text/plain": {
                    "schema": {"type": "string"},
                    "example": "The source image for generated_0478.png is used_0029.png with 52\n",
                },
            },
        },
    },
)
def get_match(
    session: SessionDep,
    batch_id: int = BatchId,
    format: Literal["json", "csv", "text"] = Query(
        "json", description="Answer format.", examples=["csv"]
    ),
    part: Literal["generated", "real"] = Query(
        "generated",
        description="With `format=csv`: one row per generated image (default) or per real "
        "image of the set.",
        examples=["real"],
    ),
    real_summary: Literal["all", "used", "none"] = Query(
        "all", description=REAL_SUMMARY_HELP, examples=["used"]
    ),
):
    if part == "real" and format != "csv":
        raise HTTPException(422, detail="part=real is a CSV export: add format=csv")
    if part == "real":
        rows = matching.get_real_summary(session, batch_id, real_summary)
        return csv_download(real_summary_csv(rows), f"match-{batch_id}-real.csv")
    # CSV and text list the generated images only.
    document = matching.get_batch(session, batch_id, real_summary if format == "json" else "none")
    if format == "csv":
        return csv_download(batch_csv(document), f"match-{batch_id}.csv")
    if format == "text":
        return PlainTextResponse(batch_text(document))
    return document


@router.delete(
    "/{batch_id}",
    status_code=204,
    summary="Delete a match batch and its stored generated images",
    dependencies=ADMIN,
    description="Deletes the batch's rows (generated images' hashes, thumbnails, embeddings, "
    "matches, per-real-image results) and then the stored bytes of its generated images, "
    "except bytes a real set or another batch also holds. Classifications made against it "
    "stay readable (their `batch_id` becomes null).",
    responses=error_responses(404, 422, e404="Unknown batch."),
)
def delete_match(sessions: SessionsDep, retention: RetentionDep, batch_id: int = BatchId):
    matching.delete_batch(sessions, retention, batch_id)
    return Response(status_code=204)
