"""Small response helpers shared by the routers: CSV downloads and documented error answers."""

from __future__ import annotations

from typing import Any

from fastapi.responses import Response

from app.api.schemas import ErrorOut

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


#: The 409 of an upload whose stored bytes another process removed before it committed.
REMOVED_MEANWHILE = (
    "Image bytes this upload stored were removed meanwhile by another process (memaudit gc, "
    "a DELETE on another replica); nothing was stored: send the request again."
)


def error_responses(*codes: int, **specific: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route answering with these error codes; ``specific`` overrides a
    code's meaning (keys like ``e404``)."""
    return {
        code: {
            "model": ErrorOut,
            "description": specific.get(f"e{code}", ERROR_MEANINGS[code]),
        }
        for code in codes
    }


def json_error_responses(*codes: int, **specific: str) -> dict[int | str, dict[str, Any]]:
    """:func:`error_responses` for a route whose own answer is not JSON (an HTML page):
    FastAPI would document a ``model`` under the route's media type, so the JSON error
    body is given as content of its own (ErrorOut, which the other routes register)."""
    return {
        code: {
            "description": response["description"],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
        }
        for code, response in error_responses(*codes, **specific).items()
    }


def csv_download(text: str, filename: str) -> Response:
    """A CSV answer that browsers save as ``filename``."""
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
