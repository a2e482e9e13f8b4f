"""Jobs (Prefer: respond-async): a job answers what the request would have answered, shows
its progress, can be cancelled without storing anything, and survives its process being
killed (run again from its stored upload, its result stored once). SQLite and PostgreSQL."""

from __future__ import annotations

import io
import time

import httpx
import pytest

from app.db.models import Job
from app.db.session import transaction
from app.services import jobs
from app.services.ingest import ImageIngest, IngestLimits
from app.training.synthetic import perturbed_copy
from tests.helpers import file_parts, register, zip_bytes
from tests.imagegen import phantom, png
from tests.serving import free_port, serve_process

ASYNC = {"Prefer": "respond-async"}


def generated(copies: int = 4, novel: int = 4) -> dict[str, bytes]:
    out = {f"copy_{i}.png": png(perturbed_copy(phantom(i, 128), seed=i)) for i in range(copies)}
    out.update({f"novel_{i}.png": png(phantom(9000 + i, 128)) for i in range(novel)})
    return out


def wait_for(client, location: str, timeout: float = 60) -> dict:
    """Poll a job until it has ended; returns its last document."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(location).json()
        if job["state"] in jobs.FINISHED:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def comparable(batch: dict) -> list[tuple]:
    """What a match answer says about each image (ids and timings aside)."""
    return [
        (m["generated"], m["source"], m["distance"], (m["copy_of"] or {}).get("real"))
        for m in batch["matches"]
    ]


def test_match_as_a_job_answers_what_the_request_answers(client):
    real_set = register(client, {f"real_{i:03d}.png": png(phantom(i, 128)) for i in range(30)})
    uploads = generated()
    form = {"real_set_id": str(real_set["id"])}
    sync = client.post("/match", data=form, files=file_parts(uploads))
    assert sync.status_code == 200, sync.text

    accepted = client.post("/match", data=form, files=file_parts(uploads), headers=ASYNC)
    assert accepted.status_code == 202, accepted.text
    assert accepted.headers["preference-applied"] == "respond-async"
    location = accepted.headers["location"]
    assert location == f"/jobs/{accepted.json()['id']}"
    assert accepted.json()["state"] in ("queued", "running")
    assert accepted.json()["progress"]["upload_bytes"] > 0

    job = wait_for(client, location)
    assert job["state"] == "succeeded", job
    assert job["error"] is None and job["attempts"] == 1
    assert job["progress"]["upload_read"] == job["progress"]["upload_bytes"]
    assert job["result"].startswith("/match/")
    result = client.get(job["result"]).json()
    assert comparable(result) == comparable(sync.json())
    assert sum(m["copy_of"] is not None for m in result["matches"]) == 4
    # the job is listed; its stored body is gone once it ended
    listed = client.get("/jobs?state=succeeded").json()
    assert listed["total"] >= 1 and job["id"] in [j["id"] for j in listed["items"]]
    assert listed["items"][0]["rejected"] is None  # the list leaves the file lists out
    settings = client.app.state.settings
    assert list(settings.jobs_dir.iterdir()) == []


def test_a_failed_job_carries_the_answer_the_request_would_have_had(client):
    form = {"real_set_id": "999"}
    sync = client.post("/match", data=form, files=file_parts(generated(1, 1)))
    accepted = client.post("/match", data=form, files=file_parts(generated(1, 1)), headers=ASYNC)
    assert accepted.status_code == 202
    job = wait_for(client, accepted.headers["location"])
    assert job["state"] == "failed" and job["result"] is None
    assert job["error"] == {"status": sync.status_code, "detail": sync.json()["detail"]}
    assert sync.status_code == 404


def test_register_then_classify_as_jobs(client):
    reals = {f"real_{i:03d}.png": png(phantom(i, 128)) for i in range(24)}
    reals["notes.txt"] = b"not an image"
    reals["again.png"] = reals["real_000.png"]
    accepted = client.post(
        "/real-sets", data={"name": "as a job"}, files=file_parts(reals), headers=ASYNC
    )
    assert accepted.status_code == 202, accepted.text
    job = wait_for(client, accepted.headers["location"])
    assert job["state"] == "succeeded", job
    assert job["kind"] == "real_set" and job["result"].startswith("/real-sets/")
    # what the 201 would have listed, which the set's record does not keep
    assert [r["filename"] for r in job["rejected"]] == ["notes.txt"]
    assert job["duplicates"] == [{"filename": "again.png", "duplicate_of": "real_000.png"}]
    assert job["progress"]["done"] == job["progress"]["total"] == 26  # every file decided
    real_set = client.get(job["result"]).json()
    assert real_set["name"] == "as a job" and real_set["image_count"] == 24

    form = {"method": "reference", "real_set_id": str(real_set["id"])}
    parts = [("generated_files", part) for _field, part in file_parts(generated())]
    accepted = client.post("/classify", data=form, files=parts, headers=ASYNC)
    assert accepted.status_code == 202, accepted.text
    job = wait_for(client, accepted.headers["location"])
    assert job["state"] == "succeeded", job
    classification = client.get(job["result"]).json()
    assert classification["real_count"] == 24 and classification["generated_count"] == 8


def test_bodies_over_the_auto_size_run_as_jobs(settings):
    from fastapi.testclient import TestClient

    from app.main import create_app

    settings.job_auto_bytes = 10_000
    with TestClient(create_app(settings)) as client:
        real_set = register(client, {f"r{i}.png": png(phantom(i, 64)) for i in range(2)})
        small = client.post(
            "/match",
            data={"real_set_id": str(real_set["id"])},
            files=file_parts({"g.png": png(phantom(0, 64))}),
        )
        assert small.status_code == 200  # under the size: answered at once
        big = client.post(
            "/match", data={"real_set_id": str(real_set["id"])}, files=file_parts(generated())
        )
        assert big.status_code == 202 and "preference-applied" not in big.headers
        assert wait_for(client, big.headers["location"])["state"] == "succeeded"


def test_cancelling_a_running_job_stores_nothing(client):
    """A job cancelled while running: the transaction storing its result sees the
    cancellation and rolls back (the race a DELETE meets, whatever the timing)."""
    sessions = client.app.state.sessions
    job = make_job(sessions, "match", owner="test-process")
    assert jobs.start(sessions, job.id, "test-process").state == jobs.RUNNING
    canceling = client.delete(f"/jobs/{job.id}")
    assert canceling.status_code == 202 and canceling.json()["state"] == "canceling"

    written_meanwhile = jobs.new_job_id()  # stands for the result's rows
    run = jobs.JobProgress(job.id, "match", 1, owner="test-process", attempt=1)
    token = jobs.current_job.set(run)
    try:
        with pytest.raises(jobs.JobCanceled), transaction(sessions) as session:
            session.add(Job(**{**job_fields("match", "test-process"), "id": written_meanwhile}))
            session.flush()
            jobs.record_result(session, 1)
    finally:
        jobs.current_job.reset(token)
    with sessions() as session:
        assert session.get(Job, written_meanwhile) is None  # rolled back with it
    assert jobs.finish(sessions, job.id, jobs.CANCELED)
    assert client.get(f"/jobs/{job.id}").json()["state"] == "canceled"
    late = client.delete(f"/jobs/{job.id}")  # a cancel after the end changes nothing
    assert late.status_code == 202 and late.json()["state"] == "canceled"
    assert client.delete(f"/jobs/{job.id}?forget=true").status_code == 204
    assert client.get(f"/jobs/{job.id}").status_code == 404


def test_cancel_through_the_api_ends_canceled_with_nothing_stored(client):
    real_set = register(client, {f"real_{i:03d}.png": png(phantom(i, 128)) for i in range(10)})
    uploads = {f"g_{i:03d}.png": png(phantom(3000 + i, 256)) for i in range(300)}
    accepted = client.post(
        "/match",
        data={"real_set_id": str(real_set["id"])},
        files=file_parts(uploads),
        headers=ASYNC,
    )
    assert accepted.status_code == 202
    cancel = client.delete(accepted.headers["location"])
    assert cancel.status_code == 202, cancel.text
    job = wait_for(client, accepted.headers["location"])
    assert job["state"] == "canceled", job
    assert client.get("/match").json()["total"] == 0
    assert list(client.app.state.settings.jobs_dir.iterdir()) == []


def test_job_ids_are_checked(client):
    assert client.get("/jobs/not-a-job").status_code == 422
    assert client.get(f"/jobs/{'0' * 32}").status_code == 404


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_a_job_whose_server_is_killed_runs_again_and_stores_once(database, tmp_path, request):
    """kill -9 mid-job, restart: the job is run again from its stored upload (attempts 2)
    and exactly one batch is stored."""
    data_dir, db = tmp_path / "data", tmp_path / "memaudit.db"
    env = {
        "MEMAUDIT_JOB_STALE_S": "2",
        "MEMAUDIT_JOB_HEARTBEAT_S": "0.3",
        "MEMAUDIT_HASH_BATCH_SIZE": "8",
    }
    if database == "postgres":
        env["DATABASE_URL"] = request.getfixturevalue("postgres_url")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = serve_process(data_dir, db, port, **env)
    try:
        reals = {f"real_{i:03d}.png": png(phantom(i, 128)) for i in range(20)}
        real_set = httpx.post(
            f"{base}/real-sets", data={"name": "s"}, files=file_parts(reals), timeout=60
        ).json()
        uploads = {f"g_{i:03d}.png": png(phantom(4000 + i, 256)) for i in range(400)}
        accepted = httpx.post(
            f"{base}/match",
            data={"real_set_id": str(real_set["id"])},
            files=file_parts(uploads),
            headers=ASYNC,
            timeout=60,
        )
        assert accepted.status_code == 202, accepted.text
        location = base + accepted.headers["location"]
        deadline = time.monotonic() + 60
        while True:  # until the job shows progress: it is mid-way
            job = httpx.get(location).json()
            if job["state"] == "running" and job["progress"]["done"] > 0:
                break
            assert job["state"] in ("queued", "running") and time.monotonic() < deadline, job
            time.sleep(0.05)
        proc.kill()
        proc.wait(10)
        proc = serve_process(data_dir, db, port, **env)
        deadline = time.monotonic() + 120
        while True:
            job = httpx.get(location).json()
            if job["state"] in jobs.FINISHED:
                break
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        assert job["state"] == "succeeded", job
        assert job["attempts"] == 2
        batches = httpx.get(f"{base}/match").json()
        assert batches["total"] == 1
        assert httpx.get(base + job["result"]).json()["generated_count"] == 400
        assert list((data_dir / "jobs").iterdir()) == []
    finally:
        proc.kill()
        proc.wait(10)


def job_fields(kind: str, owner: str) -> dict:
    return {
        "kind": kind,
        "path": f"/{kind}",
        "query": "",
        "content_type": "multipart/form-data",
        "body_file": None,
        "body_bytes": 5 << 30,
        "needs_admin": False,
        "state": jobs.QUEUED,
        "stage": "queued",
        "done": 0,
        "body_read": 0,
        "attempts": 0,
        "owner": owner,
        "heartbeat_at": time.time(),
    }


def make_job(sessions, kind: str, owner: str) -> Job:
    fields = job_fields(kind, owner)
    return jobs.create_job(
        sessions,
        jobs.new_job_id(),
        kind=kind,
        path=fields["path"],
        query="",
        content_type=fields["content_type"],
        body_file="b.body",
        body_bytes=fields["body_bytes"],
        needs_admin=False,
        owner=owner,
    )


def test_a_queued_job_is_started_by_its_owner_only_and_not_once_cancelled(client):
    sessions = client.app.state.sessions
    job = make_job(sessions, "classify", owner="me")
    with sessions() as session:
        stored = session.get(Job, job.id)
        assert stored.body_bytes == 5 << 30 and stored.state == jobs.QUEUED  # 64-bit sizes
    assert jobs.start(sessions, job.id, "someone else") is None
    assert jobs.request_cancel(sessions, job.id).state == jobs.CANCELED
    assert jobs.start(sessions, job.id, "me") is None


def test_stale_jobs_are_taken_over_from_other_processes_only(client):
    sessions = client.app.state.sessions
    mine = make_job(sessions, "match", owner="me")
    theirs = make_job(sessions, "match", owner="a process that died")
    worn_out = make_job(sessions, "match", owner="a process that died")
    canceling = make_job(sessions, "match", owner="a process that died")
    for job in (worn_out, canceling):
        jobs.start(sessions, job.id, "a process that died")
    jobs.request_cancel(sessions, canceling.id)
    with transaction(sessions) as session:
        session.query(Job).update({"heartbeat_at": time.time() - 60})
        session.get(Job, worn_out.id).attempts = 3
    queued, ended = jobs.claim_stale(sessions, "me", {mine.id}, stale_s=30, max_attempts=3)
    assert queued == [theirs.id] and sorted(ended) == sorted([worn_out.id, canceling.id])
    with sessions() as session:
        assert session.get(Job, mine.id).state == jobs.QUEUED  # held by "me": never taken
        taken = session.get(Job, theirs.id)
        assert (taken.state, taken.owner) == (jobs.QUEUED, "me")
        assert session.get(Job, worn_out.id).error["detail"].startswith("the job was interrupted")
        assert session.get(Job, canceling.id).state == jobs.CANCELED
    # another process takes what "me" left stale, not what "me" just claimed (fresh heartbeat)
    assert jobs.claim_stale(sessions, "another", set(), stale_s=30, max_attempts=3) == (
        [mine.id],
        [],
    )


def test_a_run_whose_job_was_taken_over_cannot_store_its_result(client):
    """A process whose heartbeat stalled (not dead) finds its job run by another: its late
    result is refused, so the job is stored once, by the current run."""
    sessions = client.app.state.sessions
    job = make_job(sessions, "match", owner="slow")
    first = jobs.start(sessions, job.id, "slow")
    with transaction(sessions) as session:
        session.get(Job, job.id).heartbeat_at = time.time() - 600
    assert jobs.claim_stale(sessions, "other", set(), stale_s=60, max_attempts=3)[0] == [job.id]
    second = jobs.start(sessions, job.id, "other")
    assert (first.attempts, second.attempts) == (1, 2)
    runs = {
        "slow": jobs.JobProgress(job.id, "match", 1, owner="slow", attempt=1),
        "other": jobs.JobProgress(job.id, "match", 1, owner="other", attempt=2),
    }
    for owner, expected in (("slow", jobs.JobCanceled), ("other", None)):
        token = jobs.current_job.set(runs[owner])
        try:
            with transaction(sessions) as session:
                if expected is None:
                    jobs.record_result(session, 7)
                else:
                    with pytest.raises(expected):
                        jobs.record_result(session, 6)
        finally:
            jobs.current_job.reset(token)
    assert not jobs.finish(sessions, job.id, jobs.FAILED, {"status": 500}, runs["slow"])
    stored = client.get(f"/jobs/{job.id}").json()
    assert (stored["state"], stored["result"], stored["attempts"]) == ("succeeded", "/match/7", 2)


def test_filter_against_two_sets_as_a_job(client):
    first = register(client, {f"a_{i:03d}.png": png(phantom(i, 128)) for i in range(20)}, "a")
    second = register(
        client, {f"b_{i:03d}.png": png(phantom(100 + i, 128)) for i in range(20)}, "b"
    )
    uploads = {"copy_a.png": png(perturbed_copy(phantom(3, 128), seed=1))}
    uploads["novel.png"] = png(phantom(9000, 128))
    form = {"real_set_id": [str(first["id"]), str(second["id"])]}
    accepted = client.post("/filter", data=form, files=file_parts(uploads), headers={**ASYNC})
    assert accepted.status_code == 202, accepted.text
    job = wait_for(client, accepted.headers["location"])
    assert job["state"] == "succeeded" and job["result"].startswith("/filter/"), job
    gate = client.get(job["result"]).json()
    assert [s["real_set_id"] for s in gate["sets"]] == [first["id"], second["id"]]
    decisions = {image["generated"]: image["decision"] for image in gate["images"]}
    assert decisions["novel.png"] == "release"


def test_progress_reads_then_hashes_a_zips_members_then_works():
    ingest = ImageIngest(
        8, IngestLimits(max_file_bytes=10**7, max_files=100, max_pixels=10**7, batch_size=4)
    )
    progress = jobs.JobProgress("0" * 32, "match", 100)
    progress.watch(ingest)
    assert progress.snapshot() == ("reading upload", 0, None)
    progress.body_done = True
    seen = []
    ingest.expect = lambda count, real=ingest.expect: (real(count), seen.append(count))[0]
    ingest.add_zip(
        io.BytesIO(zip_bytes({f"i{i}.png": png(phantom(i, 64)) for i in range(6)})), "a.zip"
    )
    assert seen[0] == 6  # the members were announced before any was read
    stage, done, total = progress.snapshot()
    assert (stage, total) == ("hashing", 6) and done <= 6
    ingest.finish()
    assert progress.snapshot() == ("matching", 0, None)
    succeeded = progress.final_values(succeeded=True)
    assert succeeded["done"] == succeeded["total"] == 6 and "stage" not in succeeded
    assert progress.final_values()["stage"] == "matching"  # where a failed run stopped


def test_what_would_fail_is_refused_before_the_upload_is_stored(client):
    jobs_dir = client.app.state.settings.jobs_dir
    as_json = client.post("/match", json={"real_set_id": 1}, headers=ASYNC)
    assert as_json.status_code == 415 and "multipart" in as_json.json()["detail"]
    unknown = client.post(
        "/real-sets/99/images", files=file_parts({"a.png": png(phantom(1, 64))}), headers=ASYNC
    )
    assert unknown.status_code == 404 and "99" in unknown.json()["detail"]
    assert client.get("/jobs").json()["total"] == 0 and list(jobs_dir.iterdir()) == []


def test_a_cancel_after_the_end_leaves_the_job_succeeded(client):
    real_set = register(client, {f"real_{i:03d}.png": png(phantom(i, 128)) for i in range(12)})
    accepted = client.post(
        "/match",
        data={"real_set_id": str(real_set["id"])},
        files=file_parts(generated(1, 1)),
        headers=ASYNC,
    )
    done = wait_for(client, accepted.headers["location"])
    late = client.delete(accepted.headers["location"])
    assert late.status_code == 202 and late.json() == done  # as it ended, result and all
    assert client.delete(accepted.headers["location"] + "?forget=true").status_code == 204
