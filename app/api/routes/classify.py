"""/classify: which real images were used to train the generator? (membership scores)"""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Path, Query, Request
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
from app.api.forms import MAX_INT, classify_form
from app.api.responses import csv_download
from app.api.schemas import CLASSIFY_FORM, ClassificationOut, ErrorOut
from app.api.uploads import UploadReader, finish_ingest
from app.services import classification as service

router = APIRouter(prefix="/classify", tags=["membership inference"])

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
        form = classify_form(await upload.read_files(ingests))
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
    )


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
    session: SessionDep,
    classification_id: int = Path(
        ge=1, le=MAX_INT, description="Id from POST /classify.", examples=[1]
    ),
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
