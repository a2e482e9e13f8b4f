"""Long requests as jobs: ``Prefer: respond-async`` (RFC 7240), or a body over a size.

A route that may run as a job lists :func:`runs_as_job` among its dependencies (after the
access checks). When the client asks for it (or its Content-Length is over
``MEMAUDIT_JOB_AUTO_BYTES``) the body is stored under ``<data_dir>/jobs`` and the answer is
202 with ``Location: /jobs/{id}``. The process's :class:`JobRunner` then replays the stored
request through the app itself: the same route, form parsing, limits and errors, so a job's
result (or error) is exactly what the request would have answered. Its progress (files
hashed, the stage) is written to the database every heartbeat.

Restart: the jobs of a process that stops (crash, kill, restart, deploy) keep their stored
upload; once their heartbeat is ``MEMAUDIT_JOB_STALE_S`` old any process runs them
again from the start (the result is stored in one transaction with the job's success, so
nothing is stored twice), up to ``MEMAUDIT_JOB_MAX_ATTEMPTS`` runs, then they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app import metrics
from app.api.deps import JobRunnerDep, SessionsDep, SettingsDep
from app.api.forms import MAX_INT
from app.api.frontdoor import REPLAY_SCOPE_KEY
from app.api.schemas import JobOut
from app.config import Settings
from app.db.models import Job, utcnow
from app.services import jobs, real_sets
from app.services.errors import Busy, InvalidInput, TooLarge, Unavailable

log = logging.getLogger("memaudit.jobs")

#: Body bytes written to the job's file at once.
SPOOL_CHUNK = 1 << 20
#: Most bytes of an error answer kept in the job (rejection lists are capped well below).
MAX_ERROR_BYTES = 1 << 20
PREFER_HELP = (
    "`respond-async` (RFC 7240): run as a job; the answer is 202 with `Location: /jobs/{id}` "
    "(poll it for progress and the result). Bodies over MEMAUDIT_JOB_AUTO_BYTES (1 GiB) run "
    "as jobs anyway."
)


class JobAccepted(Exception):
    """Raised by :func:`runs_as_job` once the request is stored as a job: answered 202."""

    def __init__(self, job: Job, asked: bool, root_path: str = "") -> None:
        super().__init__(job.id)
        self.job = job
        self.asked = asked
        self.root_path = root_path


def job_document(job: Job, files: bool = True) -> dict[str, Any]:
    """A job as GET /jobs/{id} answers it (app.api.schemas.JobOut); without ``files`` (the
    list) its refused files and duplicates are left out (null)."""
    return {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "progress": {
            "stage": job.stage,
            "done": job.done,
            "total": job.total,
            "upload_bytes": job.body_bytes,
            "upload_read": job.body_read,
        },
        "result": jobs.result_url(job),
        "error": job.error,
        "rejected": (job.rejected or []) if files else None,
        "duplicates": (job.duplicates or []) if files else None,
        "attempts": job.attempts,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


async def job_accepted_response(_request: Request, exc: Exception) -> JSONResponse:
    """202 with the job's address (and ``Preference-Applied`` when the client asked)."""
    assert isinstance(exc, JobAccepted)
    headers = {"Location": f"{exc.root_path}/jobs/{exc.job.id}", "Retry-After": "2"}
    if exc.asked:
        headers["Preference-Applied"] = "respond-async"
    content = jsonable_encoder(JobOut.model_validate(job_document(exc.job)))
    return JSONResponse(status_code=202, content=content, headers=headers)


def prefers_async(prefer: str | None) -> bool:
    """Whether a ``Prefer`` header (possibly several, comma-separated) asks respond-async."""
    if not prefer:
        return False
    return any(p.split(";", 1)[0].strip().lower() == "respond-async" for p in prefer.split(","))


def runs_as_job(kind: str, needs_admin: bool = False) -> Any:
    """The dependency of a route that may run as a job of ``kind``."""

    async def offer_job(
        request: Request,
        settings: SettingsDep,
        sessions: SessionsDep,
        runner: JobRunnerDep,
        prefer: Annotated[str | None, Header(description=PREFER_HELP)] = None,
    ) -> None:
        replaying = jobs.current_job.get()
        if replaying is not None:  # the job's own replay, of the route it was accepted for
            if replaying.kind != kind:
                raise InvalidInput(f"a {replaying.kind} job cannot replay a {kind} request")
            return
        asked = prefers_async(prefer)
        declared = request.headers.get("content-length", "")
        big = (
            settings.job_auto_bytes > 0
            and declared.isdigit()
            and int(declared) > settings.job_auto_bytes
        )
        if not (asked or big):
            return
        await run_in_threadpool(refuse_early, request, sessions, kind)
        job = await runner.submit(request, kind, needs_admin)
        raise JobAccepted(job, asked, request.scope.get("root_path", ""))

    return Depends(offer_job)


#: Bodies a job's route reads: multipart uploads (and /classify's url-encoded fields).
JOB_BODY_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def refuse_early(request: Request, sessions: sessionmaker[Session], kind: str) -> None:
    """What is known before the body is stored and would only fail the job later: a body
    no route reads (415) and a set in the path that does not exist (404)."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type not in JOB_BODY_TYPES:
        raise HTTPException(
            415, detail="send multipart/form-data (curl -F ...) with Prefer: respond-async"
        )
    real_set_id = request.path_params.get("real_set_id")
    if real_set_id is not None:
        if not (real_set_id.isdigit() and 1 <= int(real_set_id) <= MAX_INT):
            raise HTTPException(422, detail=f"real_set_id must be an integer 1..{MAX_INT}")
        with sessions() as session:
            real_sets.get_real_set(session, int(real_set_id))


def _process_name() -> str:
    """Who owns a job: this host and process, and a nonce (a restarted container has pid 1
    again)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{jobs.new_job_id()[:8]}"


class JobRunner:
    """Runs this process's jobs (``job_workers`` at once), writes their progress, takes over
    jobs nobody runs any more, and expires old records."""

    #: Seconds a shutdown waits for running jobs to reach a step where they can stop.
    STOP_WAIT_S = 20.0

    def __init__(self, app: FastAPI, settings: Settings, sessions: sessionmaker[Session]):
        self.app = app
        self.settings = settings
        self.sessions = sessions
        self.folder: Path = settings.jobs_dir
        self.owner = _process_name()
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        #: Jobs this process holds: queued here or running here (their heartbeat is written).
        self._held: set[str] = set()
        #: job id -> (its run's progress, the task replaying it)
        self._running: dict[str, tuple[jobs.JobProgress, asyncio.Task]] = {}
        self._tasks: list[asyncio.Task] = []
        self._stopping = False

    # --- life ------------------------------------------------------------------------------
    async def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(self.settings.job_workers):
            self._tasks.append(asyncio.create_task(self._work()))
        self._tasks.append(asyncio.create_task(self._beat()))

    async def stop(self) -> None:
        """Stop running jobs at their next step: they stay ``running`` in the database and are
        run again (by this process's successor or another) once their heartbeat is stale."""
        self._stopping = True
        for progress, _task in list(self._running.values()):
            progress.stop.set()
        replays = [task for _, task in self._running.values()]
        if replays:
            await asyncio.wait(replays, timeout=self.STOP_WAIT_S)
        for task in (*replays, *self._tasks):
            task.cancel()
        await asyncio.gather(*replays, *self._tasks, return_exceptions=True)

    # --- submission ------------------------------------------------------------------------
    async def submit(self, request: Request, kind: str, needs_admin: bool) -> Job:
        """Store the request body and queue a job for it: 413 over the job body limit, 503
        (retry later) when this process holds too many jobs or the disk would fill."""
        if len(self._held) >= self.settings.job_max_queued:
            raise Busy(
                f"this server process holds {len(self._held)} jobs, its limit "
                "(MEMAUDIT_JOB_MAX_QUEUED); retry when some have finished"
            )
        declared = request.headers.get("content-length", "")
        self._check_room(int(declared) if declared.isdigit() else 0)
        job_id = jobs.new_job_id()
        body_file = f"{job_id}.body"
        path = self.folder / body_file
        size = await self._spool(request, path)
        try:
            job = await run_in_threadpool(
                jobs.create_job,
                self.sessions,
                job_id,
                kind=kind,
                root_path=request.scope.get("root_path", ""),
                path=request.scope["path"],
                query=request.scope.get("query_string", b"").decode("latin-1"),
                content_type=request.headers.get("content-type", ""),
                body_file=body_file,
                body_bytes=size,
                needs_admin=needs_admin,
                owner=self.owner,
            )
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        self._hold(job.id)
        log.info("job %s (%s %s): %d bytes stored, queued", job.id, kind, job.path, size)
        return job

    def _check_room(self, coming: int) -> None:
        """503 when storing ``coming`` more bytes would leave less than the disk reserve."""
        free = shutil.disk_usage(self.folder).free
        if free - coming < self.settings.job_min_free_bytes:
            raise Busy(
                f"not enough disk space to store this upload as a job ({free:,} bytes free, "
                f"{self.settings.job_min_free_bytes:,} kept in reserve: "
                "MEMAUDIT_JOB_MIN_FREE_BYTES); nothing was kept"
            )

    async def _spool(self, request: Request, path: Path) -> int:
        limit = self.settings.job_max_body_bytes
        size = checked = 0
        buffer = bytearray()
        handle = await run_in_threadpool(open, path, "xb")
        try:  # (a full disk is an OSError: answered 503 below, nothing kept)
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise TooLarge(
                        f"the request body is over {limit} bytes, the most a job stores "
                        "(MEMAUDIT_JOB_MAX_BODY_BYTES); send it in parts (POST "
                        "/real-sets/{id}/images appends)"
                    )
                buffer += chunk
                if len(buffer) >= SPOOL_CHUNK:
                    await run_in_threadpool(handle.write, bytes(buffer))
                    buffer.clear()
                if size - checked >= 64 * SPOOL_CHUNK:  # a body without Content-Length too
                    checked = size
                    self._check_room(0)
            await run_in_threadpool(handle.write, bytes(buffer))
            await run_in_threadpool(handle.close)
        except BaseException as exc:  # a client gone (ClientDisconnect), a limit, a cancel
            handle.close()
            path.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise Unavailable(
                    f"the job's upload could not be stored ({exc.strerror}); nothing was kept"
                ) from None
            raise
        return size

    def _hold(self, job_id: str) -> None:
        self._held.add(job_id)
        metrics.JOBS_ACTIVE.labels(jobs.QUEUED).inc()
        self._queue.put_nowait(job_id)

    # --- running ---------------------------------------------------------------------------
    async def _work(self) -> None:
        while True:
            job_id = await self._queue.get()
            try:
                await self._run(job_id)
            except asyncio.CancelledError:
                raise
            except Exception:  # the runner must outlive any one job (the job, unheld, is
                log.exception("job %s: the runner failed", job_id)  # taken over later)
            finally:
                self._held.discard(job_id)

    async def _run(self, job_id: str) -> None:
        metrics.JOBS_ACTIVE.labels(jobs.QUEUED).dec()
        if self._stopping:
            return
        job = await run_in_threadpool(jobs.start, self.sessions, job_id, self.owner)
        if job is None:
            return  # cancelled while queued, or claimed elsewhere
        progress = jobs.JobProgress(
            job.id, job.kind, job.body_bytes, owner=self.owner, attempt=job.attempts
        )
        task = asyncio.create_task(self._replay(job, progress))
        self._running[job.id] = (progress, task)
        metrics.JOBS_ACTIVE.labels(jobs.RUNNING).inc()
        try:
            # Not cancelled from outside: a cancellation or shutdown sets progress.stop and
            # the run ends at its next step, with its threads (this worker's slot held).
            status, body = await asyncio.shield(task)
        except asyncio.CancelledError:
            if self._stopping:
                raise
            status, body = 499, b""
        except Exception:
            log.exception("job %s: the request failed", job.id)
            status, body = 500, b""
        finally:
            self._running.pop(job.id, None)
            metrics.JOBS_ACTIVE.labels(jobs.RUNNING).dec()
        if self._stopping:
            return  # left running: taken over after the restart
        state = await run_in_threadpool(self._conclude, job, progress, status, body)
        metrics.JOBS_ENDED.labels(state).inc()
        log.info("job %s: %s (%d)", job.id, state, status)

    def _conclude(self, job: Job, progress: jobs.JobProgress, status: int, body: bytes) -> str:
        """Record how this run ended (a success is already recorded with its result) and
        remove the stored body; nothing when another process has taken the job over."""
        with self.sessions() as session:
            now = jobs.get_job(session, job.id)
            state, current = now.state, (now.owner, now.attempts) == (self.owner, job.attempts)
        if not current:
            return state
        ending = None
        if state == jobs.CANCELING or progress.stop.is_set():
            ending = (jobs.CANCELED, None)
        elif state == jobs.RUNNING:
            ending = (jobs.FAILED, _error(status, body))
        if ending is not None and jobs.finish(self.sessions, job.id, *ending, progress):
            state = ending[0]
        if job.body_file:
            self._unlink(job.body_file)
            jobs.drop_body(self.sessions, job.id)
        return state

    def _unlink(self, body_file: str) -> None:
        (self.folder / body_file).unlink(missing_ok=True)

    async def _replay(self, job: Job, progress: jobs.JobProgress) -> tuple[int, bytes]:
        """Run the stored request through the app as this job; (status, error body)."""
        jobs.current_job.set(progress)  # this task's context, and the threads it starts
        assert job.body_file is not None
        handle = await run_in_threadpool(open, self.folder / job.body_file, "rb")
        ended = asyncio.Event()
        status = 500
        error = bytearray()

        async def receive() -> dict:
            if progress.stop.is_set():  # as a client that went away: the route unwinds
                return {"type": "http.disconnect"}
            if progress.body_done:
                await ended.wait()  # "still connected" until the answer is sent
                return {"type": "http.disconnect"}
            chunk = await run_in_threadpool(handle.read, SPOOL_CHUNK)
            progress.body_read += len(chunk)
            progress.body_done = not chunk or progress.body_read >= job.body_bytes
            return {"type": "http.request", "body": chunk, "more_body": not progress.body_done}

        async def send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status >= 300:
                error.extend(message.get("body", b"")[: MAX_ERROR_BYTES - len(error)])

        headers = [
            (b"content-type", job.content_type.encode("latin-1")),
            (b"content-length", str(job.body_bytes).encode()),
            (b"host", b"memaudit-job"),
        ]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": job.path,
            "raw_path": job.path.encode(),
            "root_path": job.root_path,
            "query_string": job.query.encode("latin-1"),
            "headers": headers,
            "client": None,
            "server": None,
            "state": {},
            REPLAY_SCOPE_KEY: job.id,
        }
        try:
            await self.app(scope, receive, send)
        except Exception:
            log.exception("job %s: unhandled error", job.id)
            status = 500
        finally:
            ended.set()
            await run_in_threadpool(handle.close)
        return status, bytes(error)

    # --- heartbeat, takeover, expiry -------------------------------------------------------
    async def _beat(self) -> None:
        every = self.settings.job_heartbeat_s
        last_sweep = 0.0
        while True:
            try:
                await self._beat_once()
                if time.monotonic() - last_sweep >= min(self.settings.job_stale_s / 2, 60):
                    last_sweep = time.monotonic()
                    await self._take_over()
                    await run_in_threadpool(self._expire)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a database outage: try again next beat
                log.warning("job heartbeat failed: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(every)

    async def _beat_once(self) -> None:
        if not self._held:
            return  # nothing of this process's to report (no write every beat on SQLite)
        running = dict(self._running)
        states = await run_in_threadpool(
            jobs.heartbeat,
            self.sessions,
            self.owner,
            set(self._held),
            [p for p, _ in running.values()],
        )
        for job_id, (progress, _task) in running.items():
            if states.get(job_id) == jobs.CANCELING and not progress.stop.is_set():
                log.info("job %s: cancelled by request; stopping at its next step", job_id)
                progress.stop.set()

    async def _take_over(self) -> None:
        queued, ended = await run_in_threadpool(
            jobs.claim_stale,
            self.sessions,
            self.owner,
            set(self._held),
            self.settings.job_stale_s,
            self.settings.job_max_attempts,
        )
        for job_id in ended:  # (their bodies go in the sweep's _expire, as every ended job's)
            log.warning(
                "job %s: nobody ran it any more; ended (cancelled, or out of attempts)", job_id
            )
        for job_id in queued:
            log.warning("job %s: nobody ran it any more; running it again here", job_id)
            self._hold(job_id)

    def forget(self, job_id: str) -> None:
        """Remove a finished job's record (and its body file, should one be left)."""
        name = jobs.forget(self.sessions, job_id)
        if name:
            self._unlink(name)

    def _expire(self) -> None:
        """Old finished records go; body files no record names (a crash between storing
        the body and its record) go once as old as the image sweeps' minimum age."""
        cutoff = utcnow() - timedelta(seconds=self.settings.job_keep_seconds)
        for name in jobs.expire_finished(self.sessions, cutoff):
            if name:
                self._unlink(name)
        for job_id, name in jobs.finished_with_body(self.sessions):
            self._unlink(name)
            jobs.drop_body(self.sessions, job_id)
        named = jobs.body_files(self.sessions)
        too_old = time.time() - self.settings.gc_min_age_seconds
        for path in self.folder.glob("*.body"):
            with contextlib.suppress(FileNotFoundError):
                if path.name not in named and path.stat().st_mtime < too_old:
                    path.unlink()


def _error(status: int, body: bytes) -> dict:
    """The failed request's status and ``detail`` (what the synchronous answer held)."""
    detail: Any = "the request failed inside the server (see its log)"
    if status == 499:
        detail = "cancelled"
    with contextlib.suppress(ValueError):
        parsed = json.loads(body.decode("utf-8"))
        if isinstance(parsed, dict) and "detail" in parsed:
            detail = parsed["detail"]
    if status < 400:  # a 2xx without a recorded result: a route that does not record one
        status, detail = 500, "the job ended without storing its result (a bug; see the log)"
    return {"status": status, "detail": detail}


#: The OpenAPI answer of a route that may run as a job.
ACCEPTED_AS_JOB: dict[int | str, dict[str, Any]] = {
    202: {
        "model": JobOut,
        "description": "Running as a job (`Prefer: respond-async`, or a body over "
        "MEMAUDIT_JOB_AUTO_BYTES): poll `Location` (GET /jobs/{id}) for progress and the result.",
        "headers": {
            "Location": {
                "schema": {"type": "string"},
                "example": "/jobs/3f2c9a0e8b7d4c1fa6e5d4c3b2a19087",
            },
            "Preference-Applied": {"schema": {"type": "string"}, "example": "respond-async"},
        },
    }
}
