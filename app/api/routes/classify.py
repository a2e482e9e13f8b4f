"""/classify: which real images were used to train the generator? (membership scores)"""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import (
    FeatureStoreDep,
    ImageStoreDep,
    IntakeDep,
    ModelsDep,
    SessionDep,
    SessionsDep,
    SettingsDep,
)
from app.api.forms import MAX_INT, ClassifyForm
from app.api.jobs import ACCEPTED_AS_JOB, runs_as_job
from app.api.responses import UPLOAD_ERRORS, csv_download, error_responses
from app.api.schemas import ClassificationOut, ClassificationPage
from app.api.security import ADMIN
from app.api.uploads import UploadReader, finish_ingest
from app.services import classification as service

router = APIRouter(prefix="/classify", tags=["membership inference"])
ClassificationId = Path(ge=1, le=MAX_INT, description="Id from POST /classify.", examples=[1])

NOT_FOUND = "Unknown real set, batch or classification."


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
    "http://localhost:8000/classify\n```\n\n"
    "Without files the fields may also be sent as application/x-www-form-urlencoded "
    "(`curl -d method=reference -d real_set_id=1 -d batch_id=1 ...`).",
    openapi_extra=ClassifyForm.openapi_extra(also_urlencoded=True),
    dependencies=[runs_as_job("classify")],
    responses={
        **error_responses(
            *UPLOAD_ERRORS,
            e409="Stored image bytes are missing, the set was registered by hash only, or "
            "the set or batch was deleted while scoring.",
            e404=NOT_FOUND,
            bodies={
                409: service.DELETED_WHILE_SCORING,
                422: ClassifyForm.rejection({"method": "nope"}),
            },
        ),
        **ACCEPTED_AS_JOB,
    },
)
async def create_classification(
    request: Request,
    settings: SettingsDep,
    sessions: SessionsDep,
    intake: IntakeDep,
    models: ModelsDep,
    images: ImageStoreDep,
    features: FeatureStoreDep,
):
    started = time.perf_counter()
    # Real and generated uploads are hashed at 16 (stored with their thumbnails); methods
    # read the pixels from the image store.
    ingests = {"files": intake.ingest(16), "generated_files": intake.ingest(16)}
    async with UploadReader(
        request, settings, file_fields=tuple(ingests), fields_only_allowed=True
    ) as upload:
        form = ClassifyForm.parse(await upload.read_files(ingests)).request()
        real = await finish_ingest(ingests["files"])
        generated = await finish_ingest(ingests["generated_files"])
    return await run_in_threadpool(
        service.classify,
        sessions,
        form,
        real,
        generated if upload.received["generated_files"] else None,
        models=models,
        images=images,
        features=features,
        settings=settings,
        started=started,
        held=intake.held,
    )


@router.get(
    "",
    response_model=ClassificationPage,
    summary="List stored classifications, newest first",
    description="One page of classification summaries (method, counts, threshold and why; no "
    "per-image scores: GET /classify/{classification_id} has those).\n\n"
    "```\ncurl 'http://localhost:8000/classify?batch_id=1'\n```",
    responses=error_responses(422),
)
def list_classifications(
    session: SessionDep,
    real_set_id: int | None = Query(
        None, ge=1, le=MAX_INT, description="Only classifications of this real set.", examples=[1]
    ),
    batch_id: int | None = Query(
        None,
        ge=1,
        le=MAX_INT,
        description="Only classifications against this match batch.",
        examples=[1],
    ),
    offset: int = Query(0, ge=0, le=MAX_INT, description="Classifications to skip.", examples=[0]),
    limit: int = Query(100, ge=1, le=1000, description="Classifications per page.", examples=[100]),
):
    return service.list_classifications(session, real_set_id, batch_id, offset, limit)


@router.get(
    "/{classification_id}",
    response_model=ClassificationOut,
    summary="A stored classification (JSON, CSV or ImageCLEF submission lines)",
    description="`format=imageclef` gives the task's submission lines `<image id>,<1|0>` "
    "(1 = used).",
    responses={
        **error_responses(404, 422, e404=NOT_FOUND),
        200: {
            "description": "The classification (JSON), or its CSV or ImageCLEF rendering.",
            "content": {
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": "filename,score,label\nreal_0001.png,3.2,used\n",
                },
                "text/plain": {
                    "schema": {"type": "string"},
                    "example": "real_0001,1\nreal_0002,0\n",
                },
            },
        },
    },
)
def get_classification(
    session: SessionDep,
    classification_id: int = ClassificationId,
    format: Literal["json", "csv", "imageclef"] = Query(
        "json", description="Answer format.", examples=["imageclef"]
    ),
):
    document = service.load_classification(session, classification_id)
    if format == "csv":
        return csv_download(
            service.classification_csv(document), f"classify-{classification_id}.csv"
        )
    if format == "imageclef":
        return PlainTextResponse(service.classification_imageclef(document))
    return document


@router.delete(
    "/{classification_id}",
    status_code=204,
    summary="Delete a stored classification",
    dependencies=ADMIN,
    description="Deletes the classification and its per-image scores. It holds no image "
    "bytes: files uploaded to POST /classify are only scored and are removed from the image "
    "store when that request ends (unless a real set or match batch holds the same bytes).",
    responses=error_responses(
        404,
        422,
        e404="Unknown classification.",
    ),
)
def delete_classification(sessions: SessionsDep, classification_id: int = ClassificationId):
    service.delete_classification(sessions, classification_id)
    return Response(status_code=204)
