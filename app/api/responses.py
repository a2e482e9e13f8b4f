"""Small response helpers shared by the routers: CSV downloads and documented error answers."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response

from app.api import examples
from app.api.multipart import NO_BOUNDARY, not_multipart, too_many_form_fields
from app.api.schemas import JOB_ID_EXAMPLE, ErrorOut
from app.config import Settings
from app.services.batches import BatchNotFound
from app.services.classification import ClassificationNotFound
from app.services.decode_and_hash import WORKER_DIED
from app.services.jobs import JobNotFound
from app.services.real_sets import RealSetNotFound
from app.services.registration import CONCURRENT_ADD

#: What each error status means on this API (a route may say more for its own case).
ERROR_MEANINGS: dict[int, str] = {
    400: "Malformed multipart body (no boundary, truncated before the closing boundary, "
    "bad part headers).",
    404: "No such real set, batch or classification.",
    409: "The stored state does not allow it now (a concurrent change: retry; image bytes "
    "gone; a set registered by hash only has no pixels).",
    413: "A file, the number of fields, a hash list or the form body is over a limit.",
    415: "The body is not multipart/form-data.",
    422: "Invalid input. `detail` is a sentence naming the field and its rule; or an object "
    "with `message` and the `rejected`/`duplicates` files when no file was usable; or an "
    "object with `errors` (numbered `hashes` lines); or, for a bad path or query parameter, "
    "FastAPI's list of `{loc, msg, type}`.",
    503: "A resource the request needs is unavailable now (hash workers, or the scoring "
    "method's model artifact).",
}


#: What a request that uploads images may answer besides its own success.
UPLOAD_ERRORS = (400, 404, 409, 413, 415, 422, 503)

#: One real answer per status, so /docs shows for each code a body it can really get (one
#: example for all showed a 422's sentence under 404 and 409).
ERROR_EXAMPLES: dict[int, dict[str, Any]] = {
    400: {"detail": NO_BOUNDARY},
    404: {"detail": str(RealSetNotFound(42))},
    409: {"detail": CONCURRENT_ADD},
    413: {"detail": too_many_form_fields(Settings.model_fields["max_fields_per_request"].default)},
    415: {"detail": not_multipart("application/json")},
    422: examples.BAD_FIELD,
    503: {"detail": f"{WORKER_DIED}; nothing was stored"},
}

#: The 409 of an upload whose stored bytes another process removed before it committed.
REMOVED_MEANWHILE = (
    "Image bytes this upload stored were removed meanwhile by another process (memaudit gc, "
    "a DELETE on another replica); nothing was stored: send the request again."
)


def error_responses(
    *codes: int, bodies: dict[int, Any] | None = None, **specific: str
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route answering with these error codes; ``specific`` overrides a
    code's meaning (keys like ``e404``), ``bodies`` its example ``detail`` (what this route
    really answers; fit_error_examples fits 404 and 422 to the route's parameters)."""
    bodies = bodies or {}
    return {
        code: {
            "model": ErrorOut,
            "description": specific.get(f"e{code}", ERROR_MEANINGS[code]),
            "content": {
                "application/json": {
                    "example": {"detail": bodies[code]} if code in bodies else ERROR_EXAMPLES[code]
                }
            },
        }
        for code in codes
    }


def json_error_responses(
    *codes: int, bodies: dict[int, Any] | None = None, **specific: str
) -> dict[int | str, dict[str, Any]]:
    """:func:`error_responses` for a route whose own answer is not JSON (an HTML page):
    FastAPI would document a ``model`` under the route's media type, so the JSON error
    body is given as content of its own (ErrorOut, which the other routes register)."""
    return {
        code: {
            "description": response["description"],
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/ErrorOut"},
                    "example": response["content"]["application/json"]["example"],
                }
            },
        }
        for code, response in error_responses(*codes, bodies=bodies, **specific).items()
    }


#: The 404 of a route, by the identifier in its path.
NOT_FOUND_BY_PARAMETER: dict[str, str] = {
    "real_set_id": str(RealSetNotFound(42)),
    "batch_id": str(BatchNotFound(7)),
    "classification_id": str(ClassificationNotFound(7)),
    "job_id": str(JobNotFound(JOB_ID_EXAMPLE)),
}


def bad_parameter(parameter: dict[str, Any]) -> dict[str, Any] | None:
    """FastAPI's 422 for ``abc`` given as this OpenAPI parameter (an integer, or a string
    of a minimum length); None for other kinds."""
    where, name, schema = parameter["in"], parameter["name"], parameter.get("schema", {})
    if schema.get("type") == "integer":
        problem = {**examples.BAD_PARAMETER["detail"][0], "loc": [where, name]}
    elif schema.get("type") == "string" and schema.get("minLength", 0) > 3:
        least = schema["minLength"]
        problem = {
            "type": "string_too_short",
            "loc": [where, name],
            "msg": f"String should have at least {least} characters",
            "input": "abc",
            "ctx": {"min_length": least},
        }
    else:
        return None
    return {"detail": [problem]}


def fit_error_examples(schema: dict) -> None:
    """Give each operation's 404 and 422 the example its own parameters produce (the id in
    its path that was not found; a non-integer id, or limit), unless the route gave its own:
    error_responses cannot see the route it documents."""
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            params = operation.get("parameters", [])
            responses = operation.get("responses", {})
            in_path = [p["name"] for p in params if p.get("in") == "path"]
            found = [NOT_FOUND_BY_PARAMETER[n] for n in in_path if n in NOT_FOUND_BY_PARAMETER]
            if found:
                _fit(responses, "404", {"detail": found[-1]})
            # A path parameter first (it is read before any query parameter).
            ordered = sorted(params, key=lambda p: p.get("in") != "path")
            bad = [b for b in map(bad_parameter, ordered) if b is not None]
            if bad:
                _fit(responses, "422", bad[0])


def document_errors(app: FastAPI) -> None:
    """Fit the error examples of the OpenAPI description to each route, once, when it is
    first built (after document_access has added 401 and 403)."""
    build = app.openapi

    def openapi() -> dict:
        first = app.openapi_schema is None
        schema = build()
        if first:
            fit_error_examples(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _fit(responses: dict, code: str, example: dict[str, Any]) -> None:
    content = responses.get(code, {}).get("content", {}).get("application/json")
    if content is not None and content.get("example") == ERROR_EXAMPLES[int(code)]:
        content["example"] = example


def csv_download(text: str, filename: str) -> Response:
    """A CSV answer that browsers save as ``filename``."""
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
