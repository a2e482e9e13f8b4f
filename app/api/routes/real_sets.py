"""/real-sets: register real (training-candidate) images and their pHashes."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from app.api import examples
from app.api.deps import (
    HashCacheDep,
    IntakeDep,
    ModelsDep,
    RetentionDep,
    SessionDep,
    SessionsDep,
    SettingsDep,
)
from app.api.forms import MAX_INT, AddHashesForm, AddImagesForm, NewSetForm
from app.api.jobs import ACCEPTED_AS_JOB, runs_as_job
from app.api.responses import REMOVED_MEANWHILE, UPLOAD_ERRORS, error_responses
from app.api.schemas import (
    HashesImported,
    ImageOut,
    RealSetCreated,
    RealSetDetail,
    RealSetSummary,
)
from app.api.security import ADMIN
from app.api.uploads import UploadReader, finish_ingest
from app.services import real_sets as service
from app.services import registration
from app.services.ingest import IngestResult
from app.services.matching import descriptor_state

router = APIRouter(prefix="/real-sets", tags=["real sets"])
SetId = Path(ge=1, le=MAX_INT, description="Real set id from POST /real-sets.", examples=[1])

NOT_FOUND = "Unknown real set."
HASHES_FIELD = "hashes"
NO_USABLE_REAL_IMAGE = {
    **examples.NO_USABLE_FILE["detail"],
    "message": registration.NO_USABLE_NEW_IMAGE,
}
BOTH = "send either image 'files' or a 'hashes' file, not both"
LATE_WINDOW = (
    "send window_center and window_width before the image files (images are windowed as "
    "they arrive)"
)


def _set_body(real_set, **extra) -> dict:
    return {**RealSetSummary.model_validate(real_set).model_dump(), **extra}


def _created_body(real_set, upload: IngestResult, images) -> dict:
    return _set_body(
        real_set,
        images=[ImageOut.model_validate(i).model_dump() for i in images],
        duplicates=upload.duplicates_json(),
        rejected=upload.rejected_json(),
        windows_used=upload.windows_json(),
    )


def _imported_body(real_set, parsed) -> dict:
    return _set_body(real_set, imported=len(parsed), header=parsed.header)


@router.post(
    "",
    status_code=201,
    response_model=RealSetCreated | HashesImported,
    summary="Register a set of real images (or of their precomputed pHashes)",
    dependencies=[*ADMIN, runs_as_job("real_set", needs_admin=True)],
    description="Upload the real training-candidate images (files and/or zips) with a name. "
    "Each image is pHashed; identical bytes are stored once and reported in `duplicates`; "
    "files that are not usable images are listed in `rejected` with the reason while the "
    "others are stored. Registration is atomic: on error nothing is stored.\n\n"
    "```\ncurl -F name=trial -F hash_size=16 -F files=@real.zip http://localhost:8000/real-sets\n```"
    "\n\nOr, instead of `files`, a `hashes` file of `filename,phash_hex` lines computed "
    "elsewhere (no pixels leave the pipeline; a million lines register in under a minute). "
    "Such a set works with /match, which only needs hashes, but has no pixels for /classify. "
    "The answer then carries `imported` (a count) instead of the image list:\n\n"
    "```\ncurl -F name=trial -F hash_size=16 -F hashes=@hashes.csv "
    "http://localhost:8000/real-sets\n```\n\n"
    "```\nfilename,phash\n"
    "real_0000.png,c6b1390e8d6a9c1de4a9b3c2d13a66a5e05e5b31a71e1a6d8c6e2b9931d4b2f1\n```",
    openapi_extra=NewSetForm.openapi_extra(),
    responses={
        **error_responses(
            400,
            409,
            413,
            415,
            422,
            503,
            e409=REMOVED_MEANWHILE,
            bodies={409: REMOVED_MEANWHILE, 422: NO_USABLE_REAL_IMAGE},
        ),
        **ACCEPTED_AS_JOB,
    },
)
async def create_real_set(
    request: Request, settings: SettingsDep, sessions: SessionsDep, intake: IntakeDep
):
    spooled = {HASHES_FIELD: settings.max_hash_file_bytes}
    async with UploadReader(request, settings, spooled=spooled) as upload:
        early = NewSetForm.parse(
            await upload.read_fields(
                NewSetForm.needed_before_files, optional=NewSetForm.optional_before_files
            )
        )
        ingest = intake.ingest(early.hash_size, window=early.window)
        form = NewSetForm.parse(await upload.read_files({"files": ingest}))
        if form.window != early.window:
            raise HTTPException(422, detail=LATE_WINDOW)
        upload.require_files()
        hashes = upload.spooled_parts.get(HASHES_FIELD)
        if hashes is not None:
            if upload.received["files"]:
                raise HTTPException(422, detail=BOTH)
            real_set, parsed = await run_in_threadpool(
                registration.register_hashes,
                sessions,
                form.name,
                early.hash_size,
                hashes.spool,
                settings,
                early.window,
            )
            return _imported_body(real_set, parsed)
        result = await finish_ingest(ingest)
    real_set, images = await run_in_threadpool(
        registration.register_images,
        sessions,
        form.name,
        early.hash_size,
        result,
        settings,
        early.window,
        intake.held,
    )
    return _created_body(real_set, result, images)


@router.get("", response_model=list[RealSetSummary], summary="List registered real sets")
def list_real_sets(session: SessionDep):
    return service.list_real_sets(session)


@router.get(
    "/{real_set_id}",
    response_model=RealSetDetail,
    summary="A real set with one page of its images",
    responses=error_responses(404, 422, e404=NOT_FOUND),
)
def get_real_set(
    session: SessionDep,
    settings: SettingsDep,
    cache: HashCacheDep,
    models: ModelsDep,
    real_set_id: int = SetId,
    offset: int = Query(0, ge=0, le=MAX_INT, description="Images to skip.", examples=[0]),
    limit: int = Query(100, ge=1, le=1000, description="Images per page.", examples=[100]),
):
    real_set = service.get_real_set(session, real_set_id)
    images = service.list_images(session, real_set_id, offset, limit)
    counts = cache.descriptor_counts(session, real_set)
    min_images = registration.calibration_config(settings).min_images
    return _set_body(
        real_set,
        images=[ImageOut.model_validate(i).model_dump() for i in images],
        offset=offset,
        limit=limit,
        descriptors=asdict(descriptor_state(counts, models.embedding_tag(), min_images)),
    )


@router.post(
    "/{real_set_id}/images",
    status_code=201,
    response_model=RealSetCreated,
    summary="Add images to a real set",
    dependencies=[*ADMIN, runs_as_job("real_set_images", needs_admin=True)],
    description="Same upload rules as registration. The set's revision increases and its "
    "calibrated threshold is recomputed. Answers with the set and the images added.",
    openapi_extra=AddImagesForm.openapi_extra(),
    responses={
        **error_responses(*UPLOAD_ERRORS, e404=NOT_FOUND),
        **ACCEPTED_AS_JOB,
    },
)
async def add_images(
    request: Request,
    settings: SettingsDep,
    sessions: SessionsDep,
    cache: HashCacheDep,
    intake: IntakeDep,
    real_set_id: int = SetId,
):
    async with UploadReader(request, settings) as upload:
        early = AddImagesForm.parse(
            await upload.read_fields(frozenset(), optional=AddImagesForm.optional_before_files)
        )
        ingest = await run_in_threadpool(
            registration.ingest_for_set, sessions, real_set_id, intake, early.window
        )
        form = AddImagesForm.parse(await upload.read_files({"files": ingest}))
        upload.require_files()
        result = await finish_ingest(ingest)
    real_set, added = await run_in_threadpool(
        registration.add_images,
        sessions,
        cache,
        real_set_id,
        result,
        settings,
        form.window,
        intake.held,
    )
    return _created_body(real_set, result, added)


@router.post(
    "/{real_set_id}/hashes",
    status_code=201,
    response_model=HashesImported,
    summary="Add precomputed pHashes to a real set",
    dependencies=[*ADMIN, runs_as_job("real_set_hashes", needs_admin=True)],
    description="A `hashes` file of `filename,phash_hex` lines (the set's hash_size) is "
    "appended as images without pixels, in one transaction: any bad line, or a name the set "
    "already has, gives a 422 naming the first bad lines and nothing is stored. The set's "
    "revision increases and its calibrated threshold is recomputed.\n\n"
    "```\ncurl -F hashes=@more.csv http://localhost:8000/real-sets/1/hashes\n```",
    openapi_extra=AddHashesForm.openapi_extra(),
    responses={
        **error_responses(400, 404, 409, 413, 415, 422, e404=NOT_FOUND),
        **ACCEPTED_AS_JOB,
    },
)
async def add_hashes(
    request: Request,
    settings: SettingsDep,
    sessions: SessionsDep,
    cache: HashCacheDep,
    real_set_id: int = SetId,
):
    spooled = {HASHES_FIELD: settings.max_hash_file_bytes}
    hint = f"; add images with POST /real-sets/{real_set_id}/images"
    async with UploadReader(
        request, settings, file_fields=(), spooled=spooled, hint=hint, fields_only_allowed=True
    ) as upload:
        AddHashesForm.parse(await upload.read_files({}))
        hashes = upload.spooled_parts.get(HASHES_FIELD)
        if hashes is None:
            raise HTTPException(422, detail="no 'hashes' file part")
        real_set, parsed = await run_in_threadpool(
            registration.add_hashes, sessions, cache, real_set_id, hashes.spool, settings
        )
    return _imported_body(real_set, parsed)


@router.delete(
    "/{real_set_id}",
    status_code=204,
    summary="Delete a real set, its hashes and its stored images",
    dependencies=ADMIN,
    description="Deletes the set's rows (hashes, thumbnails, embeddings) and then the stored "
    "bytes of its images, except bytes another set or a match batch also holds. Match "
    "batches and classifications made against it stay readable (their `real_set_id` "
    "becomes null; they keep image names and scores, no pixels of the set).",
    responses=error_responses(404, 422, e404=NOT_FOUND),
)
def delete_real_set(
    sessions: SessionsDep, cache: HashCacheDep, retention: RetentionDep, real_set_id: int = SetId
):
    registration.delete_set(sessions, cache, retention, real_set_id)
    return Response(status_code=204)
