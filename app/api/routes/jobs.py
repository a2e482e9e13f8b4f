"""/jobs: long requests run in the background — where they stand, their result, cancelling."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Path, Query, Response

from app.api.deps import ApiKeysDep, JobRunnerDep, SessionDep, SessionsDep
from app.api.forms import MAX_INT
from app.api.jobs import job_document
from app.api.responses import error_responses
from app.api.schemas import JOB_ID_EXAMPLE, JobOut, JobPage
from app.api.security import PresentedKeyDep, require_admin
from app.services import jobs

router = APIRouter(prefix="/jobs", tags=["jobs"])
JobId = Path(
    min_length=32,
    max_length=32,
    pattern="^[0-9a-f]{32}$",
    description="Job id from the 202 answer's `Location`.",
    examples=["3f2c9a0e8b7d4c1fa6e5d4c3b2a19087"],
)
JOB_NOT_ENDED = str(jobs.JobNotEnded(JOB_ID_EXAMPLE, "running"))
NOT_FOUND = "Unknown job (finished jobs' records are kept for MEMAUDIT_JOB_KEEP_SECONDS)."
HOW = (
    "Any POST to /real-sets (and its /images, /hashes), /match, /filter or /classify runs as "
    "a job when sent with `Prefer: respond-async` (or when its body is over "
    "MEMAUDIT_JOB_AUTO_BYTES): it answers 202 with `Location: /jobs/{id}`."
)


@router.get(
    "/{job_id}",
    response_model=JobOut,
    summary="Where a job stands: state, progress, result link",
    description=f"{HOW} Poll this (every second or two) until `state` is `succeeded` (GET "
    "`result` for the answer the request would have given), `failed` (`error` holds that "
    "answer's status and detail) or `canceled`.\n\n"
    "```\ncurl -H 'Prefer: respond-async' -F real_set_id=1 -F files=@generated.zip "
    "http://localhost:8000/match\ncurl http://localhost:8000/jobs/3f2c9a0e8b7d4c1fa6e5d4c3b2a19087"
    "\n```",
    responses=error_responses(404, 422, e404=NOT_FOUND),
)
def get_job(session: SessionDep, job_id: str = JobId):
    return job_document(jobs.get_job(session, job_id))


@router.get(
    "",
    response_model=JobPage,
    summary="Jobs, newest first",
    description=HOW,
    responses=error_responses(422),
)
def list_jobs(
    session: SessionDep,
    state: Literal[jobs.STATES] | None = Query(  # type: ignore[valid-type]
        None, description="Only jobs in this state.", examples=["running"]
    ),
    offset: int = Query(0, ge=0, le=MAX_INT, description="Jobs to skip.", examples=[0]),
    limit: int = Query(100, ge=1, le=1000, description="Jobs per page.", examples=[100]),
):
    total, page = jobs.list_jobs(session, state, offset, limit)
    items = [job_document(job, files=False) for job in page]
    return {"total": total, "offset": offset, "limit": limit, "items": items}


@router.delete(
    "/{job_id}",
    response_model=JobOut,
    status_code=202,
    summary="Cancel a job (or, with forget=true, remove a finished job's record)",
    description="A queued job is cancelled at once; a running one stops at its next step "
    "and stores nothing (`state` `canceling`, then `canceled`). A job that has already ended "
    "is left as it is: a cancel that comes too late answers the job, `succeeded` with its "
    "`result`. `?forget=true` removes a finished job's record (204; its result stays: "
    "DELETE /match/{id} etc. deletes that). Cancelling a job that registers or changes a set "
    "needs an admin key, as the request did.\n\n"
    "```\ncurl -X DELETE http://localhost:8000/jobs/3f2c9a0e8b7d4c1fa6e5d4c3b2a19087\n```",
    responses={
        **error_responses(
            404,
            409,
            422,
            e404=NOT_FOUND,
            e409="forget=true on a job that has not ended.",
            bodies={409: JOB_NOT_ENDED},
        ),
        202: {"description": "The job after the cancellation (or as it ended, if it had)."},
        204: {"description": "forget=true: the finished job's record was removed."},
    },
)
def delete_job(
    session: SessionDep,
    sessions: SessionsDep,
    runner: JobRunnerDep,
    keys: ApiKeysDep,
    presented: PresentedKeyDep,
    job_id: str = JobId,
    forget: bool = Query(
        False, description="Remove the record of a job that has ended.", examples=[False]
    ),
):
    job = jobs.get_job(session, job_id)
    if job.needs_admin:
        require_admin(keys, presented)
    if forget:
        runner.forget(job_id)
        return Response(status_code=204)
    return job_document(jobs.request_cancel(sessions, job_id))
