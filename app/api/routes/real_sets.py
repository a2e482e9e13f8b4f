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
from app.api.schemas import (
    ADD_IMAGES_FORM,
    REAL_SET_FORM,
    ErrorOut,
    ImageOut,
    RealSetCreated,
    RealSetDetail,
    RealSetSummary,
)
from app.api.uploads import ingest_limits, receive_upload
from app.db.session import transaction
from app.imaging.phash import SUPPORTED_HASH_SIZES
from app.services import real_sets as service
from app.services.ingest import ImageIngest, IngestResult

router = APIRouter(prefix="/real-sets", tags=["real sets"])
SetId = Path(ge=1, le=MAX_INT, description="Real set id from POST /real-sets.", examples=[1])

ERRORS = {
    404: {"model": ErrorOut, "description": "Unknown real set."},
    413: {"model": ErrorOut, "description": "A field or the request is over a limit."},
    415: {"model": ErrorOut, "description": "Not multipart/form-data."},
    422: {"model": ErrorOut, "description": "Invalid field, or no usable image."},
}


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
    response_model=RealSetCreated,
    summary="Register a set of real images",
    description="Upload the real training-candidate images (files and/or zips) with a name. "
    "Each image is pHashed; identical bytes are stored once and reported in `duplicates`; "
    "files that are not usable images are listed in `rejected` with the reason while the "
    "others are stored. Registration is atomic: on error nothing is stored.\n\n"
    "```\ncurl -F name=trial -F hash_size=16 -F files=@real.zip http://localhost:8000/real-sets\n```",
    openapi_extra=REAL_SET_FORM,
    responses=ERRORS,
)
async def create_real_set(request: Request):
    settings = settings_of(request)
    limits = ingest_limits(settings)

    def make_ingest(fields: dict[str, str], final: bool) -> ImageIngest | None:
        if not final and not {"name", "hash_size"} <= fields.keys():
            return None
        name_field(fields)
        hash_size = int_field(fields, "hash_size", default=16, choices=SUPPORTED_HASH_SIZES)
        return ImageIngest(
            hash_size, limits, keep=image_store_of(request).put, pool=hash_pool_of(request)
        )

    fields, result, _ = await receive_upload(request, settings, make_ingest)
    reject_unknown_fields(fields, {"name", "hash_size"})
    if not result.images:
        raise _no_images(result)
    name = name_field(fields)
    hash_size = int_field(fields, "hash_size", default=16, choices=SUPPORTED_HASH_SIZES)
    calibration = service.CalibrationConfig(
        settings.calibration_quantile, settings.min_calibration_images
    )

    def store() -> dict:
        with transaction(sessions_of(request)) as session:
            real_set = service.create_real_set(session, name, hash_size, result.images, calibration)
            images = service.list_images(session, real_set.id, 0, len(result.images))
            return _created_body(real_set, result, images)

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
    calibration = service.CalibrationConfig(
        settings.calibration_quantile, settings.min_calibration_images
    )

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
