"""Errors to HTTP, in one place: registered on the app by create_app.

Service-layer errors get their status; a database that cannot be reached gets a JSON 503 with
``Retry-After`` (whichever endpoint met it); anything else a JSON 500. No answer carries a
host, port, path or driver message: those go to the log.
"""

from __future__ import annotations

import logging

import psycopg
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.api.jobs import JobAccepted, job_accepted_response
from app.services import errors

log = logging.getLogger("memaudit")

#: Most specific first: the first class an error is an instance of decides its status.
STATUS_OF: tuple[tuple[type[errors.ServiceError], int], ...] = (
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.TooLarge, 413),
    (errors.InvalidInput, 422),
    (errors.Unavailable, 503),
)

DATABASE_UNAVAILABLE = "database unavailable; retry in a few seconds"
RETRY_AFTER_SECONDS = 5
#: What the database layer raises when the server is gone, refuses connections, drops them,
#: or the pool has none to give: SQLAlchemy's wrappers, and psycopg's own where a raw
#: connection is used (COPY in app.db.bulk).
DATABASE_DOWN: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)


async def service_error_response(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.ServiceError)
    status = next((code for cls, code in STATUS_OF if isinstance(exc, cls)), 500)
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, errors.Busy) else None
    return JSONResponse(status_code=status, content={"detail": exc.body()}, headers=headers)


async def database_down_response(request: Request, exc: Exception) -> JSONResponse:
    """503 with a retry hint; the driver's message (host, port, database) is logged only."""
    message = str(exc).splitlines()[0] if str(exc) else ""
    log.warning(
        "database unavailable during %s %s: %s: %s",
        request.method,
        request.url.path,
        exc.__class__.__name__,
        message,
    )
    return JSONResponse(
        status_code=503,
        content={"detail": DATABASE_UNAVAILABLE},
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def internal_error_response(_request: Request, _exc: Exception) -> JSONResponse:
    """A JSON 500 instead of Starlette's text/plain one (the traceback is logged by the
    server)."""
    return JSONResponse(status_code=500, content={"detail": "internal server error"})


def register_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(errors.ServiceError, service_error_response)
    app.add_exception_handler(JobAccepted, job_accepted_response)
    for exc_class in DATABASE_DOWN:
        app.add_exception_handler(exc_class, database_down_response)
    app.add_exception_handler(Exception, internal_error_response)
