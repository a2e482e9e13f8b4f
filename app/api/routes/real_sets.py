"""/real-sets: register real (training-candidate) images and their pHashes."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from sqlalchemy.exc import IntegrityError
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
from app.api.forms import MAX_INT, int_field, name_field, reject_unknown_fields
from app.api.multipart import FormFile
from app.api.schemas import (
    ADD_HASHES_FORM,
    ADD_IMAGES_FORM,
    REAL_SET_FORM,
    ErrorOut,
    HashesImported,
    ImageOut,
    RealSetCreated,
    RealSetDetail,
    RealSetSummary,
)
from app.api.uploads import SpooledParts, ingest_limits, receive_upload
from app.config import Settings
from app.db.session import transaction
from app.imaging.phash import SUPPORTED_HASH_SIZES
from app.services import hash_import
from app.services import real_sets as service
from app.services.ingest import ImageIngest, IngestResult

router = APIRouter(prefix="/real-sets", tags=["real sets"])
SetId = Path(ge=1, le=MAX_INT, description="Real set id from POST /real-sets.", examples=[1])

ERRORS = {
    404: {"model": ErrorOut, "description": "Unknown real set."},
    413: {"model": ErrorOut, "description": "A field or the request is over a limit."},
    415: {"model": ErrorOut, "description": "Not multipart/form-data."},
    422: {
        "model": ErrorOut,
        "description": "Invalid field, no usable image, or bad `hashes` lines (numbered).",
    },
}
HASHES_FIELD = "hashes"
BOTH = "send either image 'files' or a 'hashes' file, not both"


def _calibration(settings: Settings) -> service.CalibrationConfig:
    return service.CalibrationConfig(settings.calibration_quantile, settings.min_calibration_images)


def _hash_parts(settings: Settings) -> SpooledParts:
    return SpooledParts({HASHES_FIELD: settings.max_hash_file_bytes})


async def _parse_hashes(
    part: FormFile, hash_size: int, settings: Settings
) -> hash_import.ParsedHashes:
    """Parse the spooled 'hashes' part off the event loop; 413/422 for what is wrong."""
    assert part.spool is not None
    try:
        parsed = await run_in_threadpool(
            hash_import.parse_hash_file, part.spool, hash_size, settings.max_hashes_per_request
        )
    except hash_import.HashListTooLarge as exc:
        raise HTTPException(413, detail=f"{exc}; nothing was stored") from None
    except hash_import.HashListInvalid as exc:
        raise HTTPException(422, detail=exc.detail()) from None
    if not len(parsed):
        raise HTTPException(422, detail="the 'hashes' file has no `filename,phash_hex` line")
    return parsed


def _imported_body(real_set, parsed: hash_import.ParsedHashes) -> dict:
    body = RealSetSummary.model_validate(real_set).model_dump()
    body["imported"] = len(parsed)
    body["header"] = parsed.header
    return body


def _no_images(result: IngestResult) -> HTTPException:
    return HTTPException(
        422,
        detail={
            "message": "none of the uploaded files is a usable new image",
            "rejected": result.rejected_json(),
            "duplicates": result.duplicates_json(),
        },
    )


def _created_body(real_set, result: IngestResult, images) -> dict:
    body = RealSetSummary.model_validate(real_set).model_dump()
    body["images"] = [ImageOut.model_validate(i).model_dump() for i in images]
    body["duplicates"] = result.duplicates_json()
    body["rejected"] = result.rejected_json()
    return body


@router.post(
    "",
    status_code=201,
    response_model=RealSetCreated | HashesImported,
    summary="Register a set of real images (or of their precomputed pHashes)",
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
    openapi_extra=REAL_SET_FORM,
    responses=ERRORS,
)
async def create_real_set(request: Request):
    settings = settings_of(request)
    limits = ingest_limits(settings)
    spooled = _hash_parts(settings)

    def make_ingest(fields: dict[str, str], final: bool) -> ImageIngest | None:
        if spooled.parts:
            raise HTTPException(422, detail=BOTH)
        if not final and not {"name", "hash_size"} <= fields.keys():
            return None
        name_field(fields)
        hash_size = int_field(fields, "hash_size", default=16, choices=SUPPORTED_HASH_SIZES)
        return ImageIngest(
            hash_size, limits, keep=image_store_of(request).put, pool=hash_pool_of(request)
        )

    try:
        fields, result, _ = await receive_upload(request, settings, make_ingest, spooled=spooled)
        reject_unknown_fields(fields, {"name", "hash_size"}, ("files", HASHES_FIELD))
        hashes = spooled.parts.get(HASHES_FIELD)
        if hashes is not None:
            if result.images or result.rejected or result.duplicates:
                raise HTTPException(422, detail=BOTH)
            return await _create_from_hashes(request, fields, hashes)
    finally:
        spooled.close()
    if not result.images:
        raise _no_images(result)
    name = name_field(fields)
    hash_size = int_field(fields, "hash_size", default=16, choices=SUPPORTED_HASH_SIZES)
    calibration = _calibration(settings)

    def store() -> dict:
        with transaction(sessions_of(request)) as session:
            real_set = service.create_real_set(session, name, hash_size, result.images, calibration)
            images = service.list_images(session, real_set.id, 0, len(result.images))
            return _created_body(real_set, result, images)

    return await run_in_threadpool(store)


async def _create_from_hashes(request: Request, fields: dict[str, str], part: FormFile) -> dict:
    settings = settings_of(request)
    name = name_field(fields)
    hash_size = int_field(fields, "hash_size", default=16, choices=SUPPORTED_HASH_SIZES)
    parsed = await _parse_hashes(part, hash_size, settings)

    def store() -> dict:
        with transaction(sessions_of(request)) as session:
            real_set = hash_import.create_hash_set(session, name, parsed, _calibration(settings))
            return _imported_body(real_set, parsed)

    return await run_in_threadpool(store)


@router.get("", response_model=list[RealSetSummary], summary="List registered real sets")
def list_real_sets(session: Session = Depends(db_session)):
    return service.list_real_sets(session)


@router.get(
    "/{real_set_id}",
    response_model=RealSetDetail,
    summary="A real set with one page of its images",
    responses={404: ERRORS[404]},
)
def get_real_set(
    real_set_id: int = SetId,
    offset: int = Query(0, ge=0, le=MAX_INT, description="Images to skip.", examples=[0]),
    limit: int = Query(100, ge=1, le=1000, description="Images per page.", examples=[100]),
    session: Session = Depends(db_session),
):
    real_set = _get_or_404(session, real_set_id)
    body = RealSetSummary.model_validate(real_set).model_dump()
    images = service.list_images(session, real_set_id, offset, limit)
    body["images"] = [ImageOut.model_validate(i).model_dump() for i in images]
    body["offset"] = offset
    body["limit"] = limit
    return body


@router.post(
    "/{real_set_id}/images",
    status_code=201,
    response_model=RealSetCreated,
    summary="Add images to a real set",
    description="Same upload rules as registration. The set's revision increases and its "
    "calibrated threshold is recomputed. Answers with the set and the images added.",
    openapi_extra=ADD_IMAGES_FORM,
    responses=ERRORS,
)
async def add_images(request: Request, real_set_id: int = SetId):
    settings = settings_of(request)
    limits = ingest_limits(settings)
    sessions = sessions_of(request)

    def make_ingest(_fields: dict[str, str], _final: bool) -> ImageIngest:
        with sessions() as session:
            real_set = _get_or_404(session, real_set_id)
            known_sha, known_names = service.known_images(session, real_set_id)
        return ImageIngest(
            real_set.hash_size,
            limits,
            known_sha256=known_sha,
            known_names=known_names,
            keep=image_store_of(request).put,
            pool=hash_pool_of(request),
        )

    fields, result, _ = await receive_upload(request, settings, make_ingest)
    reject_unknown_fields(fields, set())
    if not result.images:
        raise _no_images(result)
    calibration = _calibration(settings)

    def store() -> dict:
        try:
            with transaction(sessions) as session:
                real_set = _get_or_404(session, real_set_id, for_update=True)
                start = real_set.image_count
                real_set = service.add_images(session, real_set, result.images, calibration)
                images = service.list_images(session, real_set_id, start, len(result.images))
                return _created_body(real_set, result, images)
        except IntegrityError:
            raise HTTPException(
                409, detail="the set changed while uploading (concurrent add); retry"
            ) from None

    body = await run_in_threadpool(store)
    hash_cache_of(request).forget(real_set_id)
    return body


@router.post(
    "/{real_set_id}/hashes",
    status_code=201,
    response_model=HashesImported,
    summary="Add precomputed pHashes to a real set",
    description="A `hashes` file of `filename,phash_hex` lines (the set's hash_size) is "
    "appended as images without pixels, in one transaction: any bad line, or a name the set "
    "already has, gives a 422 naming the first bad lines and nothing is stored. The set's "
    "revision increases and its calibrated threshold is recomputed.\n\n"
    "```\ncurl -F hashes=@more.csv http://localhost:8000/real-sets/1/hashes\n```",
    openapi_extra=ADD_HASHES_FORM,
    responses={**ERRORS, 409: {"model": ErrorOut, "description": "Concurrent change; retry."}},
)
async def add_hashes(request: Request, real_set_id: int = SetId):
    settings = settings_of(request)
    sessions = sessions_of(request)

    def hash_size_of_set() -> int:
        with sessions() as session:
            return _get_or_404(session, real_set_id).hash_size

    hash_size = await run_in_threadpool(hash_size_of_set)

    def no_images(_fields: dict[str, str], _final: bool) -> ImageIngest:
        raise HTTPException(
            422,
            detail=f"this endpoint takes a 'hashes' file; add images with "
            f"POST /real-sets/{real_set_id}/images",
        )

    spooled = _hash_parts(settings)
    try:
        fields, _result, _ = await receive_upload(
            request, settings, no_images, require_files=False, spooled=spooled
        )
        reject_unknown_fields(fields, set(), (HASHES_FIELD,))
        part = spooled.parts.get(HASHES_FIELD)
        if part is None:
            raise HTTPException(422, detail="no 'hashes' file part")
        parsed = await _parse_hashes(part, hash_size, settings)
    finally:
        spooled.close()

    def store() -> dict:
        try:
            with transaction(sessions) as session:
                real_set = _get_or_404(session, real_set_id, for_update=True)
                real_set = hash_import.append_hashes(
                    session, real_set, parsed, _calibration(settings)
                )
                return _imported_body(real_set, parsed)
        except hash_import.HashListInvalid as exc:
            raise HTTPException(422, detail=exc.detail()) from None
        except IntegrityError:
            raise HTTPException(
                409, detail="the set changed while uploading (concurrent add); retry"
            ) from None

    body = await run_in_threadpool(store)
    hash_cache_of(request).forget(real_set_id)
    return body


@router.delete(
    "/{real_set_id}",
    status_code=204,
    summary="Delete a real set and its hashes",
    description="Match batches made against it stay readable (their `real_set_id` becomes null).",
    responses={404: ERRORS[404]},
)
def delete_real_set(request: Request, real_set_id: int = SetId):
    with transaction(sessions_of(request)) as session:
        try:
            service.delete_real_set(session, real_set_id)
        except service.RealSetNotFound as exc:
            raise HTTPException(404, detail=str(exc)) from None
    hash_cache_of(request).forget(real_set_id)
    return Response(status_code=204)


def _get_or_404(session: Session, real_set_id: int, *, for_update: bool = False):
    try:
        return service.get_real_set(session, real_set_id, for_update=for_update)
    except service.RealSetNotFound as exc:
        raise HTTPException(404, detail=str(exc)) from None
