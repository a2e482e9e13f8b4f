"""/filter: the release gate — which generated images may be shared, and a zip of only those."""

from __future__ import annotations

import tempfile
import time
from typing import Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import (
    CopyVerifyDep,
    HashCacheDep,
    ImageStoreDep,
    IntakeDep,
    SessionDep,
    SessionsDep,
    SettingsDep,
)
from app.api.forms import MAX_INT, FilterForm
from app.api.jobs import runs_as_job
from app.api.responses import REMOVED_MEANWHILE, csv_download, error_responses
from app.api.routes.match import NOT_FOUND, UPLOAD_RESPONSES
from app.api.schemas import ReleaseOut
from app.api.uploads import UploadReader, finish_ingest
from app.services import matching, release
from app.services.ingest import FannedIngest, IngestResult
from app.services.registration import calibration_config

router = APIRouter(prefix="/filter", tags=["release gate"])

BATCH_ID = Path(
    ge=1,
    le=MAX_INT,
    description="Batch id from POST /filter (any of a several-set gate's batches) or /match.",
    examples=[1],
)
GATE_GONE = str(release.GateIncomplete(7, 2, 1))
RELEASED_GONE = str(release.ReleasedBytesGone("generated_0007.png"))
STALE_GATE = str(
    matching.StaleSet(
        "ct-2024", 1, matching.other_embedding("46af2d5a410c6299", "9b1c0e7d2a4f8e13")
    )
)
GATE_INCOMPLETE = "One of the gate's batches was deleted (DELETE /match): run /filter again."
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
    "Repeat `real_set_id` (before the files) to check against several real sets: the upload "
    "is read once and stored as one match batch per set, all or none; an image is withheld "
    "when any set's evidence calls it a copy, and `withheld_by` names the set(s) and the real "
    "image(s). `batch_id` (the first set's batch) names the whole gate.\n\n"
    "```\ncurl -F real_set_id=1 -F files=@generated.zip http://localhost:8000/filter\n"
    "curl -F real_set_id=1 -F real_set_id=2 -F files=@generated.zip "
    "http://localhost:8000/filter\n"
    "curl -o released.zip http://localhost:8000/filter/1/released\n```",
    openapi_extra=FilterForm.openapi_extra(),
    dependencies=[runs_as_job("filter")],
    responses={
        **UPLOAD_RESPONSES,
        **error_responses(
            409,
            e409=f"{REMOVED_MEANWHILE} Or a set's copy-detection descriptors come from another "
            "embedding than the loaded one (it was replaced): the gate does not release what "
            "it cannot check; run `memaudit reembed`, then send the request again.",
            bodies={409: STALE_GATE},
        ),
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
    started = time.perf_counter()
    limits = {"max_top_k": settings.max_top_k}
    async with UploadReader(request, settings, repeatable=FilterForm.repeatable) as upload:
        early = FilterForm.parse(
            await upload.read_fields(
                FilterForm.needed_before_files, optional=FilterForm.optional_before_files
            ),
            **limits,
        )
        ingests = await run_in_threadpool(
            release.gate_ingests, sessions, early.real_set_id, intake, early.window
        )
        distinct = list({id(i): i for i in ingests}.values())
        fed = distinct[0] if len(distinct) == 1 else FannedIngest(distinct)
        form = FilterForm.parse(await upload.read_files({"files": fed}), **limits)
        if form.real_set_id != early.real_set_id:
            raise HTTPException(
                422, detail="send every real_set_id before the files (some came after them)"
            )
        upload.require_files()
        results: dict[int, IngestResult] = {}
        for ingest in distinct:
            results[id(ingest)] = await finish_ingest(ingest)
    work = [
        (one, results[id(ingest)]) for one, ingest in zip(form.requests(), ingests, strict=True)
    ]
    gate = await run_in_threadpool(
        matching.create_batches,
        sessions,
        cache,
        work,
        calibration_config(settings),
        started,
        intake.held,
        verify,
        release.link_gate,
        refuse_stale=True,
    )
    return release.release_document(gate)


@router.get(
    "/{batch_id}",
    response_model=ReleaseOut,
    summary="The release decisions of a stored batch (JSON or the CSV manifest)",
    responses={
        **error_responses(
            404, 409, 422, e404=NOT_FOUND, e409=GATE_INCOMPLETE, bodies={409: GATE_GONE}
        ),
        200: {
            "description": "The decisions (JSON), or one CSV row per generated image.",
            "content": {
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": "generated,decision,copy_of,copy_similarity,source,reasons,"
                    "withheld_by\ngenerated_0478.png,withhold,used_0029.png,0.9412,,copy of "
                    "used_0029.png by the embedding (similarity 0.941),real set 'lung CT' "
                    "(id 1)\n",
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
    document = release.release_document(release.load_gate(session, batch_id))
    if format == "csv":
        return csv_download(release.manifest_csv(document), f"filter-{batch_id}.csv")
    return document


@router.get(
    "/{batch_id}/released",
    summary="A zip of the released images and the manifest of the withheld ones",
    response_class=StreamingResponse,
    responses={
        **error_responses(404, 409, 422, e404=NOT_FOUND, bodies={409: RELEASED_GONE}),
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
    decisions = release.release_document(release.load_gate(session, batch_id))
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
