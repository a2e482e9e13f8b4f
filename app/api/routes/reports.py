"""Audit reports: one self-contained HTML page per match batch or classification.

GET gives the page; POST with a ``labels`` CSV (``real,used``) gives the same page with the
Table-1 metrics and an ROC curve against those labels (nothing is stored). The pages carry
no script, and are served with a Content-Security-Policy that would block any.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from app.api.deps import HashCacheDep, ImageStoreDep, SessionsDep, SettingsDep
from app.api.forms import MAX_INT
from app.api.responses import json_error_responses
from app.api.uploads import UploadReader
from app.config import Settings
from app.services import audit_report

match_router = APIRouter(prefix="/match", tags=["source matching"])
classify_router = APIRouter(prefix="/classify", tags=["membership inference"])

LABELS_FIELD = "labels"
#: Images only as data URIs, styles only inline, forms post back here, nothing else.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
PAGE = {
    "description": "The report: one self-contained HTML page.",
    "content": {
        "text/html": {
            "schema": {"type": "string"},
            "example": "<!DOCTYPE html><html lang='en'>…</html>",
        }
    },
}
NOT_FOUND = "Unknown batch or classification."
GET_ERRORS = json_error_responses(404, 422, e404=NOT_FOUND)
POST_ERRORS = json_error_responses(
    400,
    404,
    413,
    415,
    422,
    e404=NOT_FOUND,
    e413="The labels file is over its limit.",
    e422="No labels file, one that cannot be read, or a bad path or query parameter.",
)
#: The POST form, for the OpenAPI document (one file part).
LABELS_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [LABELS_FIELD],
                    "properties": {
                        LABELS_FIELD: {
                            "type": "string",
                            "format": "binary",
                            "description": "CSV with a header and the columns `real` (a real "
                            "image's file name, or its name without extension) and `used` "
                            "(1 = used to train the generator, 0 = not), as the ImageCLEF "
                            "development sets' labels.csv; other columns are ignored.",
                        }
                    },
                }
            }
        },
    }
}
FORM_HELP = (
    "Include a form to upload labels (false for a page saved to disk, where it cannot post)."
)
REPORT_HELP = (
    "Summary (counts, the threshold and why), the distribution of distances or scores "
    "against the real-vs-real null with the threshold marked, a gallery of evidence pairs, "
    "and the per-real-image table, as one HTML page with no external resources."
)


def html_page(text: str) -> HTMLResponse:
    return HTMLResponse(text, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})


async def rendered(
    build: Callable[..., str],
    *args: Any,
    settings: Settings,
    form: bool,
    labels: bytes | None = None,
) -> HTMLResponse:
    """A report page built off the event loop by ``build`` (the GET and POST routes of both
    reports differ only in the builder and whether labels were uploaded)."""
    text = await run_in_threadpool(
        partial(build, *args, max_pixels=settings.max_image_pixels, labels=labels, labels_form=form)
    )
    return html_page(text)


async def read_labels(request: Request, settings: SettingsDep) -> bytes:
    """The ``labels`` file part of a multipart body, read whole (bounded)."""
    spooled = {LABELS_FIELD: audit_report.MAX_LABELS_BYTES}
    async with UploadReader(request, settings, file_fields=(), spooled=spooled) as upload:
        await upload.read_files({})
        part = upload.spooled_parts.get(LABELS_FIELD)
        if part is None or part.spool is None:
            raise HTTPException(
                422, detail="no labels: send a CSV with columns real,used as the 'labels' file"
            )
        return await run_in_threadpool(part.spool.read)


BATCH_ID = Path(ge=1, le=MAX_INT, description="Batch id from POST /match.", examples=[1])
CLASSIFICATION_ID = Path(ge=1, le=MAX_INT, description="Id from POST /classify.", examples=[1])


@match_router.get(
    "/{batch_id}/report",
    response_class=HTMLResponse,
    summary="Audit report of a match batch (HTML page)",
    description=REPORT_HELP,
    responses={200: PAGE, **GET_ERRORS},
)
async def get_match_report(
    sessions: SessionsDep,
    cache: HashCacheDep,
    store: ImageStoreDep,
    settings: SettingsDep,
    batch_id: int = BATCH_ID,
    form: bool = Query(True, description=FORM_HELP),
):
    return await rendered(
        audit_report.match_report, sessions, cache, store, batch_id, settings=settings, form=form
    )


@match_router.post(
    "/{batch_id}/report",
    response_class=HTMLResponse,
    summary="Audit report of a match batch, evaluated against uploaded labels",
    description=REPORT_HELP + " With Table-1 metrics of the per-real verdicts (F1 beside the "
    "all-used and chance baselines, ROC AUC, TPR at 1% and 0.1% FPR) and the ROC curve of "
    "the nearest-generated distance.\n\n```\ncurl -F labels=@labels.csv "
    "http://localhost:8000/match/1/report > report.html\n```",
    openapi_extra=LABELS_FORM,
    responses={200: PAGE, **POST_ERRORS},
)
async def post_match_report(
    request: Request,
    sessions: SessionsDep,
    cache: HashCacheDep,
    store: ImageStoreDep,
    settings: SettingsDep,
    batch_id: int = BATCH_ID,
    form: bool = Query(True, description=FORM_HELP),
):
    labels = await read_labels(request, settings)
    return await rendered(
        audit_report.match_report,
        sessions,
        cache,
        store,
        batch_id,
        settings=settings,
        form=form,
        labels=labels,
    )


@classify_router.get(
    "/{classification_id}/report",
    response_class=HTMLResponse,
    summary="Audit report of a classification (HTML page)",
    description=REPORT_HELP,
    responses={200: PAGE, **GET_ERRORS},
)
async def get_classification_report(
    sessions: SessionsDep,
    store: ImageStoreDep,
    settings: SettingsDep,
    classification_id: int = CLASSIFICATION_ID,
    form: bool = Query(True, description=FORM_HELP),
):
    return await rendered(
        audit_report.classification_report,
        sessions,
        store,
        classification_id,
        settings=settings,
        form=form,
    )


@classify_router.post(
    "/{classification_id}/report",
    response_class=HTMLResponse,
    summary="Audit report of a classification, evaluated against uploaded labels",
    description=REPORT_HELP + " With Table-1 metrics of the labels (F1 beside the all-used "
    "and chance baselines, ROC AUC, TPR at 1% and 0.1% FPR) and the ROC curve of the "
    "scores.\n\n```\ncurl -F labels=@labels.csv http://localhost:8000/classify/1/report "
    "> report.html\n```",
    openapi_extra=LABELS_FORM,
    responses={200: PAGE, **POST_ERRORS},
)
async def post_classification_report(
    request: Request,
    sessions: SessionsDep,
    store: ImageStoreDep,
    settings: SettingsDep,
    classification_id: int = CLASSIFICATION_ID,
    form: bool = Query(True, description=FORM_HELP),
):
    labels = await read_labels(request, settings)
    return await rendered(
        audit_report.classification_report,
        sessions,
        store,
        classification_id,
        settings=settings,
        form=form,
        labels=labels,
    )
