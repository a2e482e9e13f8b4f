"""/filter: the release gate — which generated images may be shared, and a zip of only those."""

from __future__ import annotations

import tempfile
from typing import Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse

from app.api.deps import (
    CopyVerifyDep,
    HashCacheDep,
    ImageStoreDep,
    IntakeDep,
    SessionDep,
    SessionsDep,
    SettingsDep,
)
from app.api.forms import MAX_INT, MatchForm
from app.api.jobs import ACCEPTED_AS_JOB, runs_as_job
from app.api.responses import REMOVED_MEANWHILE, csv_download, error_responses
from app.api.routes.match import run_match
from app.api.schemas import ReleaseOut
from app.services import matching, release

router = APIRouter(prefix="/filter", tags=["release gate"])

NOT_FOUND = "Unknown real set or batch."
BATCH_ID = Path(ge=1, le=MAX_INT, description="Batch id from POST /filter or /match.", examples=[1])
#: Bytes of a released zip held in memory before it spills to a temporary file.
ZIP_IN_MEMORY = 16 * 1024 * 1024


@router.post(
    "",
    response_model=ReleaseOut,
    summary="Decide which generated images may be released",
    description="The same upload as POST /match (and stored as a match batch, so "
    "GET /match/{batch_id} and its report show the evidence); the answer gives each generated "
    f"image `release` or `withhold` with its reasons: {release.RULE}. "
    "GET /filter/{batch_id}/released then gives a zip of only the released images with a "
    f"manifest (`{release.MANIFEST_NAME}`) of the withheld ones and why.\n\n"
    "```\ncurl -F real_set_id=1 -F files=@generated.zip http://localhost:8000/filter\n"
    "curl -o released.zip http://localhost:8000/filter/1/released\n```",
    openapi_extra=MatchForm.openapi_extra(),
    dependencies=[runs_as_job("filter")],
    responses={
        **error_responses(
            400, 404, 409, 413, 415, 422, 503, e404=NOT_FOUND, e409=REMOVED_MEANWHILE
        ),
        **ACCEPTED_AS_JOB,
    },
)
async def create_filter(
    request: Request,
    settings: SettingsDep,
    sessions: SessionsDep,
    cache: HashCacheDep,
    intake: IntakeDep,
    verify: CopyVerifyDep,
):
    batch = await run_match(request, settings, sessions, cache, intake, verify)
    return release.release_document(batch)


@router.get(
    "/{batch_id}",
    response_model=ReleaseOut,
    summary="The release decisions of a stored batch (JSON or the CSV manifest)",
    responses={
        **error_responses(404, 422, e404=NOT_FOUND),
        200: {
            "description": "The decisions (JSON), or one CSV row per generated image.",
            "content": {
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": "generated,decision,copy_of,copy_similarity,source,reasons\n"
                    "generated_0478.png,withhold,used_0029.png,0.9412,,copy of used_0029.png "
                    "by the embedding (similarity 0.941)\n",
                }
            },
        },
    },
)
def get_filter(
    session: SessionDep,
    batch_id: int = BATCH_ID,
    format: Literal["json", "csv"] = Query("json", description="Answer format."),
):
    document = release.release_document(matching.get_batch(session, batch_id, "none"))
    if format == "csv":
        return csv_download(release.manifest_csv(document), f"filter-{batch_id}.csv")
    return document


@router.get(
    "/{batch_id}/released",
    summary="A zip of the released images and the manifest of the withheld ones",
    response_class=StreamingResponse,
    responses={
        **error_responses(404, 409, 422, e404=NOT_FOUND),
        200: {
            "description": "The released images under `released/` (PNG, JPEG, ... as uploaded; "
            "a DICOM or 16-bit image as the 8-bit PNG memaudit kept of it, `.png` added to "
            "its name) and "
            f"`{release.MANIFEST_NAME}` (the withheld images and why).",
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
        },
    },
)
def get_released(session: SessionDep, store: ImageStoreDep, batch_id: int = BATCH_ID):
    decisions = release.release_document(matching.get_batch(session, batch_id, "none"))
    # Closed by the generator below once sent (or here on failure), not by a with-block.
    spool = tempfile.SpooledTemporaryFile(max_size=ZIP_IN_MEMORY)  # noqa: SIM115
    try:
        release.write_released_zip(session, store, decisions, spool)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)

    def chunks():
        with spool:
            while chunk := spool.read(1024 * 1024):
                yield chunk

    return StreamingResponse(
        chunks(),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="released-{batch_id}.zip"'},
    )
