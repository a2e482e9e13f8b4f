"""Liveness and readiness probes."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import EngineDep, SettingsDep
from app.api.schemas import HealthOut, ReadyOut
from app.db.migrate import schema_status

router = APIRouter(tags=["health"])
log = logging.getLogger("memaudit")


@router.get("/health", response_model=HealthOut, summary="Liveness: the process answers")
def health() -> HealthOut:
    return HealthOut()


@router.get(
    "/ready",
    response_model=ReadyOut,
    summary="Readiness: database reachable and schema migrated to head",
    responses={503: {"model": ReadyOut, "description": "Not ready, with the reason."}},
)
def ready(engine: EngineDep, settings: SettingsDep):
    backend = engine.dialect.name
    try:  # connects: an unreachable database fails here
        current, head = schema_status(engine, settings.migrations_dir)
    except Exception as exc:  # any database failure means "not ready"
        # The driver's message names host, port and database: the log gets it, not the client.
        log.warning("/ready: database unreachable: %s: %s", exc.__class__.__name__, exc)
        body = ReadyOut(
            status="not ready",
            database=backend,
            schema_revision=None,
            head_revision=None,
            detail="database unreachable",
        )
        return JSONResponse(status_code=503, content=body.model_dump())
    if current != head:
        body = ReadyOut(
            status="not ready",
            database=backend,
            schema_revision=current,
            head_revision=head,
            detail="database schema is not at the newest migration; run `memaudit migrate`",
        )
        return JSONResponse(status_code=503, content=body.model_dump())
    return ReadyOut(status="ready", database=backend, schema_revision=current, head_revision=head)
