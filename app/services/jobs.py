"""Jobs: long requests run in the background, their state kept in the database (the queue).

A job is a request whose body was stored (under ``Settings.jobs_dir``) and answered 202; a
server process then runs it through the same route (app.api.jobs) and records here where it
stands. What it creates is recorded in the same transaction that creates it
(:func:`record_result`), so a job either succeeded with its result or left nothing, also
when its process is killed; a job whose process stops writing (``heartbeat_at``) is claimed
by any process and run again from its stored upload.

Nothing here knows HTTP: the route layer gives the kind, path and body.
"""

from __future__ import annotations

import contextvars
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.db.models import Job, utcnow
from app.db.session import transaction
from app.services.errors import Conflict, NotFound

QUEUED, RUNNING, CANCELING = "queued", "running", "canceling"
SUCCEEDED, FAILED, CANCELED = "succeeded", "failed", "canceled"
#: States of a job not finished yet (a process owns it and writes its heartbeat).
ACTIVE = (QUEUED, RUNNING, CANCELING)
FINISHED = (SUCCEEDED, FAILED, CANCELED)
STATES = ACTIVE + FINISHED

#: What a job of each kind creates, as the URL its result is read at.
RESULT_PATHS = {
    "real_set": "/real-sets/{id}",
    "real_set_images": "/real-sets/{id}",
    "real_set_hashes": "/real-sets/{id}",
    "match": "/match/{id}",
    "filter": "/filter/{id}",
    "classify": "/classify/{id}",
}
#: The stage after hashing, by kind (until the result is stored).
WORK_STAGE = {
    "real_set": "registering",
    "real_set_images": "registering",
    "real_set_hashes": "importing",
    "match": "matching",
    "filter": "matching",
    "classify": "scoring",
}


#: Duplicates listed in a job's record (the rest counted in one entry).
MAX_LISTED_DUPLICATES = 1000


class JobCanceled(Conflict):
    """The job was cancelled before its result was stored: nothing was stored."""


# --- the job a piece of work belongs to --------------------------------------------------


@dataclass
class JobProgress:
    """Where one run of a job stands, updated by the work (any thread) and written to the
    database by its process every heartbeat. Plain counters: a reader may see a value one
    step old, never a torn one. ``owner`` and ``attempt`` fence this run's writes: a run
    whose job another process has since taken over changes nothing."""

    job_id: str
    kind: str
    body_bytes: int
    owner: str = ""
    attempt: int = 0
    #: Set to stop the run at its next step (a cancellation, or the process shutting down).
    stop: threading.Event = field(default_factory=threading.Event)
    body_read: int = 0
    #: Set by the work: a stage and its own units (e.g. scoring real images), or None.
    stage: str | None = None
    stage_done: int = 0
    stage_total: int | None = None
    #: The upload's ingests (app.services.ingest.ImageIngest): files queued and hashed.
    ingests: list = field(default_factory=list)
    body_done: bool = False

    def watch(self, ingest) -> None:
        """Count the files of ``ingest`` (an upload's images) in this job's progress, and
        stop its hashing between chunks when the run is stopped."""
        self.ingests.append(ingest)
        ingest.interrupt = self.check

    def report(self, stage: str, done: int, total: int | None) -> None:
        self.stage, self.stage_done, self.stage_total = stage[:60], done, total
        self.check()

    def check(self) -> None:
        """Raise :class:`JobCanceled` once the run is to stop (called between steps)."""
        if self.stop.is_set():
            raise JobCanceled("the job was stopped; nothing was stored")

    def fence(self) -> tuple:
        """SQL conditions that hold while this run is the job's current one."""
        return (Job.id == self.job_id, Job.owner == self.owner, Job.attempts == self.attempt)

    def files(self) -> tuple[int, int]:
        """(files hashed, files handed to hashing or known to come: a zip's members are
        counted once its directory is read) of the upload so far."""
        return (
            sum(i.files_done for i in self.ingests),
            sum(i.files_queued + i.files_coming for i in self.ingests),
        )

    def final_values(self, succeeded: bool = False) -> dict:
        """The columns of a job that has ended: how far it came (a success: its upload's
        files, or the last stage's units without files; otherwise where it stopped), and its
        upload's refused files and duplicates as the answer lists them (capped)."""
        hashed, queued = self.files()
        stopped_at = {}
        if not (succeeded and queued):
            stage, hashed, queued = self.snapshot()
            if not succeeded:  # where it stopped; its state says how
                stopped_at = {"stage": stage}
        rejected = [r for i in self.ingests for r in i.result.rejected_json()]
        duplicates = [d for i in self.ingests for d in i.result.duplicates_json()]
        if len(duplicates) > MAX_LISTED_DUPLICATES:
            more = len(duplicates) - MAX_LISTED_DUPLICATES
            summary = {"filename": f"(and {more:,} more files)", "duplicate_of": ""}
            duplicates = [*duplicates[:MAX_LISTED_DUPLICATES], summary]
        return {
            "done": hashed,
            "total": queued,
            "body_read": self.body_read,
            "rejected": rejected,
            "duplicates": duplicates,
            **stopped_at,
        }

    def snapshot(self) -> tuple[str, int, int | None]:
        """(stage, done, total): reading the stored upload (a zip part is read whole before
        its members), hashing its files, then the stage the work reports (or the kind's,
        without units)."""
        hashed, known = self.files()
        if self.stage is not None:
            return self.stage, self.stage_done, self.stage_total
        # Until the upload's images have an ingest, the body is still being parsed: a zip
        # sent before a form field is spooled whole first (a 3.6 GB one took 20 s).
        if not self.body_done or (not self.ingests and self.kind != "real_set_hashes"):
            return "reading upload", hashed, None
        if not all(i.finished for i in self.ingests):
            return "hashing", hashed, known
        return WORK_STAGE[self.kind], 0, None


#: The job the current request replays (None for a client's own request): set by the job
#: runner for the task that runs it; threads started from it (run_in_threadpool) see it too.
current_job: contextvars.ContextVar[JobProgress | None] = contextvars.ContextVar(
    "memaudit_current_job", default=None
)


def report_progress(stage: str, done: int, total: int | None) -> None:
    """Tell the current job (if any) how far a stage has come; raises JobCanceled when the
    job is to stop (so a long step ends at its next report)."""
    job = current_job.get()
    if job is not None:
        job.report(stage, done, total)


def record_result(session: Session, result_id: int) -> None:
    """Within the transaction that stores a job's result: mark the job succeeded with it,
    or raise :class:`JobCanceled` (rolling the result back) when it was cancelled meanwhile.
    Outside a job, nothing."""
    job = current_job.get()
    if job is None:
        return
    marked = session.execute(
        update(Job)
        .where(*job.fence(), Job.state == RUNNING)
        .values(
            state=SUCCEEDED,
            result_id=result_id,
            stage=SUCCEEDED,
            finished_at=utcnow(),
            **job.final_values(succeeded=True),
        )
    ).rowcount
    if marked != 1:
        raise JobCanceled("the job was cancelled; nothing was stored")


# --- rows --------------------------------------------------------------------------------


def new_job_id() -> str:
    return uuid.uuid4().hex


def create_job(
    sessions: sessionmaker[Session],
    job_id: str,
    *,
    kind: str,
    path: str,
    query: str,
    root_path: str = "",
    content_type: str,
    body_file: str,
    body_bytes: int,
    needs_admin: bool,
    owner: str,
) -> Job:
    """A queued job owned by ``owner`` (the process that will run it)."""
    if kind not in RESULT_PATHS:
        raise ValueError(f"unknown job kind {kind!r}")
    with transaction(sessions) as session:
        job = Job(
            id=job_id,
            kind=kind,
            root_path=root_path,
            path=path,
            query=query,
            content_type=content_type,
            body_file=body_file,
            body_bytes=body_bytes,
            needs_admin=needs_admin,
            state=QUEUED,
            stage="queued",
            done=0,
            total=None,
            body_read=0,
            attempts=0,
            owner=owner,
            heartbeat_at=time.time(),
        )
        session.add(job)
        session.flush()
        session.expunge(job)
        return job


class JobNotFound(NotFound):
    """No such job: never queued, or its record was removed after it finished."""

    def __init__(self, job_id: str) -> None:
        super().__init__(
            f"job {job_id} does not exist (or no longer: finished jobs' records are removed "
            "after MEMAUDIT_JOB_KEEP_SECONDS, or by DELETE ?forget=true)"
        )


class JobNotEnded(Conflict):
    """DELETE ?forget=true on a job that is still queued or running."""

    def __init__(self, job_id: str, state: str) -> None:
        super().__init__(
            f"job {job_id} is {state}: cancel it (DELETE without forget) and forget it "
            "once it has ended"
        )


def get_job(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise JobNotFound(job_id)
    return job


def list_jobs(
    session: Session, state: str | None, offset: int, limit: int
) -> tuple[int, list[Job]]:
    """(how many jobs match, one page of them newest first)."""
    where = (Job.state == state,) if state is not None else ()
    total = session.scalar(select(func.count()).select_from(Job).where(*where)) or 0
    query = select(Job).where(*where).order_by(Job.created_at.desc(), Job.id)
    return total, list(session.scalars(query.offset(offset).limit(limit)))


def start(sessions: sessionmaker[Session], job_id: str, owner: str) -> Job | None:
    """Mark a queued job running for ``owner`` (one more attempt); None when it is not
    queued for ``owner`` any more (cancelled, or claimed by another process)."""
    with transaction(sessions) as session:
        started = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == QUEUED, Job.owner == owner)
            .values(
                state=RUNNING,
                stage="reading upload",
                attempts=Job.attempts + 1,
                started_at=utcnow(),
                heartbeat_at=time.time(),
            )
        ).rowcount
        if started != 1:
            return None
        job = session.get(Job, job_id)
        session.expunge(job)
        return job


def finish(
    sessions: sessionmaker[Session],
    job_id: str,
    state: str,
    error: dict | None = None,
    progress: JobProgress | None = None,
) -> bool:
    """End a job that has not ended: ``failed`` with ``error`` or ``canceled`` (with how
    far ``progress``'s run came, and only while that run is the job's current one)."""
    assert state in (FAILED, CANCELED)
    final = progress.final_values() if progress is not None else {}
    fence = progress.fence() if progress is not None else (Job.id == job_id,)
    with transaction(sessions) as session:
        return (
            session.execute(
                update(Job)
                .where(*fence, Job.state.in_(ACTIVE))
                .values(**{"stage": state, **final}, state=state, error=error, finished_at=utcnow())
            ).rowcount
            == 1
        )


def heartbeat(
    sessions: sessionmaker[Session],
    owner: str,
    held: Iterable[str],
    progress: Iterable[JobProgress],
) -> dict[str, str]:
    """Write each running job's progress and the heartbeat of the jobs ``owner`` holds
    (queued or running here); return their states (one another process cancelled reads
    ``canceling``). A job of ``owner`` it does not hold (its start failed) gets no
    heartbeat, so the takeover sweep runs it again."""
    held = list(held)
    now = time.time()
    with transaction(sessions) as session:
        for job in progress:
            stage, done, total = job.snapshot()
            session.execute(
                update(Job)
                .where(*job.fence(), Job.state == RUNNING)
                .values(stage=stage, done=done, total=total, body_read=job.body_read)
            )
        mine = (Job.id.in_(held), Job.owner == owner, Job.state.in_(ACTIVE))
        session.execute(update(Job).where(*mine).values(heartbeat_at=now))
        rows = session.execute(select(Job.id, Job.state).where(*mine)).all()
    return {job_id: state for job_id, state in rows}


def claim_stale(
    sessions: sessionmaker[Session],
    owner: str,
    held: Iterable[str],
    stale_s: float,
    max_attempts: int,
) -> tuple[list[str], list[str]]:
    """Take over active jobs nobody wrote for ``stale_s`` (their process stopped, or a start
    failed): queue them again for ``owner``, or fail those that already began
    ``max_attempts`` runs. Returns (queued, ended) job ids. Each claim is one conditional
    UPDATE, so two processes never both win; jobs ``owner`` holds are never taken (a
    heartbeat it could not write during a database outage must not start a second run), and
    a run that lost its job to a takeover can no longer write it (JobProgress.fence)."""
    cutoff = time.time() - stale_s
    keep = set(held)
    queued, failed = [], []
    with sessions() as session:
        stale = session.execute(
            select(Job.id, Job.attempts, Job.state).where(
                Job.state.in_(ACTIVE), Job.heartbeat_at < cutoff
            )
        ).all()
    for job_id, attempts, state in stale:
        if job_id in keep:
            continue
        with transaction(sessions) as session:
            claim = update(Job).where(
                Job.id == job_id, Job.state == state, Job.heartbeat_at < cutoff
            )
            if state == CANCELING:
                won = session.execute(
                    claim.values(state=CANCELED, stage=CANCELED, finished_at=utcnow())
                ).rowcount
                if won:
                    failed.append(job_id)
                continue
            if attempts >= max_attempts:
                error = {
                    "status": 500,
                    "detail": f"the job was interrupted {attempts} times (its server process "
                    "stopped each time); it is not run again",
                }
                won = session.execute(
                    claim.values(state=FAILED, stage=FAILED, error=error, finished_at=utcnow())
                ).rowcount
                if won:
                    failed.append(job_id)
                continue
            won = session.execute(
                claim.values(state=QUEUED, stage="queued", owner=owner, heartbeat_at=time.time())
            ).rowcount
            if won:
                queued.append(job_id)
    return queued, failed


def request_cancel(sessions: sessionmaker[Session], job_id: str) -> Job:
    """Cancel a queued job at once, ask a running one to stop (it ends ``canceled`` without
    storing anything, or ``succeeded`` if its result was already stored); returns the job.
    Each change is conditional on the state it changes, so a result committed meanwhile
    stays ``succeeded``."""
    with transaction(sessions) as session:
        get_job(session, job_id)  # 404 before anything
        canceled = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == QUEUED)
            .values(state=CANCELED, stage=CANCELED, finished_at=utcnow())
        ).rowcount
        if not canceled:
            session.execute(
                update(Job).where(Job.id == job_id, Job.state == RUNNING).values(state=CANCELING)
            )
    with sessions() as session:
        job = get_job(session, job_id)
        session.expunge(job)
        return job


def forget(sessions: sessionmaker[Session], job_id: str) -> str | None:
    """Remove a finished job's record; returns its body file name (to remove) if any.
    Conflict while it has not finished (cancel it first)."""
    with transaction(sessions) as session:
        job = get_job(session, job_id)
        if job.state not in FINISHED:
            raise JobNotEnded(job_id, job.state)
        body = job.body_file
        session.delete(job)
        return body


def drop_body(sessions: sessionmaker[Session], job_id: str) -> None:
    """The job's stored body is gone: forget its name."""
    with transaction(sessions) as session:
        session.execute(update(Job).where(Job.id == job_id).values(body_file=None))


def expire_finished(sessions: sessionmaker[Session], older_than: datetime) -> list[str | None]:
    """Remove the records of jobs that ended before ``older_than``; their body files'
    names (normally already removed) are returned for the caller to remove."""
    finished = (Job.state.in_(FINISHED), Job.finished_at < older_than)
    with sessions() as session:  # a read first: no write lock taken while nothing expires
        rows = session.execute(select(Job.id, Job.body_file).where(*finished)).all()
    if rows:
        with transaction(sessions) as session:
            session.execute(delete(Job).where(Job.id.in_([r.id for r in rows]), *finished))
    return [r.body_file for r in rows]


def finished_with_body(sessions: sessionmaker[Session]) -> list[tuple[str, str]]:
    """(job id, body file) of ended jobs whose body was not removed (their process stopped
    right after the job ended)."""
    with sessions() as session:
        rows = session.execute(
            select(Job.id, Job.body_file).where(Job.state.in_(FINISHED), Job.body_file.is_not(None))
        ).all()
    return [(job_id, body) for job_id, body in rows]


def body_files(sessions: sessionmaker[Session]) -> set[str]:
    """Body files some job record still names."""
    with sessions() as session:
        return set(session.scalars(select(Job.body_file).where(Job.body_file.is_not(None))))


def result_url(job: Job) -> str | None:
    """Where the result is read, under the root path the request came through."""
    if job.result_id is None:
        return None
    return job.root_path + RESULT_PATHS[job.kind].format(id=job.result_id)
