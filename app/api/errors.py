"""Service-layer errors to HTTP, in one place: registered on the app by create_app."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.services import errors

#: Most specific first: the first class an error is an instance of decides its status.
STATUS_OF: tuple[tuple[type[errors.ServiceError], int], ...] = (
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.TooLarge, 413),
    (errors.InvalidInput, 422),
    (errors.Unavailable, 503),
)


async def service_error_response(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.ServiceError)
    status = next((code for cls, code in STATUS_OF if isinstance(exc, cls)), 500)
    return JSONResponse(status_code=status, content={"detail": exc.body()})


def register_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.ServiceError, service_error_response)
