"""What one API process lets all uploads together cost (memaudit issue 11): a shared budget of
image bytes waiting to be hashed, bounded rejection lists, and the per-image pixel limit."""

from __future__ import annotations

import io
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from app.config import Settings
from app.services import jobs
from tests.helpers import file_parts, real_images, zip_bytes

BUDGET_WAIT_S = 1.0


@pytest.fixture
def settings(database_url, tmp_path) -> Settings:
    """A budget of one byte: every uploaded file puts the process over it."""
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        hash_batch_size=64,
        hash_workers=0,
        max_process_pending_bytes=1,
        upload_budget_wait_s=BUDGET_WAIT_S,
        max_listed_rejections=5,
    )


def _register(client, name: str, images: dict[str, bytes], as_zip: bool):
    files = (
        [("files", (f"{name}.zip", zip_bytes(images), "application/zip"))]
        if as_zip
        else file_parts(images)
    )
    return client.post("/real-sets", data={"name": name}, files=files)


def test_uploads_over_the_process_budget_wait_their_turn_and_all_succeed(client):
    budget = client.app.state.upload_budget
    uploads = {
        f"set{i}": real_images(12, offset=100 * i, size=64 + 8 * i) for i in range(6)
    }  # distinct bytes per set
    with ThreadPoolExecutor(len(uploads)) as threads:
        answers = dict(
            zip(
                uploads,
                threads.map(
                    lambda item: _register(client, item[0], item[1], as_zip=item[0] < "set3"),
                    uploads.items(),
                ),
                strict=True,
            )
        )
    for name, answer in answers.items():
        assert answer.status_code == 201, answer.text
        listed = {image["filename"] for image in answer.json()["images"]}
        assert listed == set(uploads[name]), name
    assert budget.used == 0  # every upload gave its bytes back


def test_an_upload_that_finds_the_budget_held_is_answered_503_with_retry_after(client):
    budget = client.app.state.upload_budget
    held_elsewhere = 10_000_000  # as another upload's queued bytes would be
    budget.take(held_elsewhere)
    try:
        r = _register(client, "busy", real_images(3), as_zip=False)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"].isdigit()
        assert "MEMAUDIT_MAX_PROCESS_PENDING_BYTES" in r.json()["detail"]
        assert budget.used == held_elsewhere  # the refused upload gave back its own bytes
        assert all(s["name"] != "busy" for s in client.get("/real-sets").json())
    finally:
        budget.give(held_elsewhere)
    again = _register(client, "busy", real_images(3), as_zip=False)
    assert again.status_code == 201, again.text


def _bad_members_zip(count: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(count):
            zf.writestr(f"bad_{i:05d}.png", b"not an image %d" % i)
    return buffer.getvalue()


def test_rejections_beyond_the_listed_ones_are_counted_per_reason(client):
    """A zip of 2,000 bad members: 5 listed (max_listed_rejections), the rest summed up."""
    r = client.post(
        "/real-sets",
        data={"name": "bad"},
        files=[("files", ("bad.zip", _bad_members_zip(2000), "application/zip"))],
    )
    assert r.status_code == 422, r.text
    rejected = r.json()["detail"]["rejected"]
    listed = [entry for entry in rejected if entry["filename"].startswith("bad_")]
    summary = [entry for entry in rejected if not entry["filename"].startswith("bad_")]
    assert [e["filename"] for e in listed] == [f"bad_{i:05d}.png" for i in range(5)]
    assert len(summary) == 1
    assert summary[0]["filename"] == "(and 1,995 more files)"
    assert summary[0]["reason"] == listed[0]["reason"]
    assert len(r.content) < 5_000


def _png_of(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((height, width), np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_the_default_pixel_limit_admits_large_radiographs_not_larger(tmp_path, database_url):
    """4096 x 4096 (a mammogram fits) is the default; one pixel row more is refused unread."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    settings = Settings(data_dir=tmp_path / "d", database_url=database_url, hash_workers=0)
    assert settings.max_image_pixels == 4096 * 4096
    with TestClient(create_app(settings)) as client:
        images = {"big.png": _png_of(4096, 4096), "too_big.png": _png_of(4096, 4097)}
        r = client.post("/real-sets", data={"name": "px"}, files=file_parts(images))
    assert r.status_code == 201, r.text
    assert [i["filename"] for i in r.json()["images"]] == ["big.png"]
    [refused] = r.json()["rejected"]
    assert refused["filename"] == "too_big.png"
    assert str(4096 * 4096) in refused["reason"]


def test_a_job_waits_for_the_budget_as_long_as_it_takes(client):
    """A request is answered 503 after the budget wait; a job, which nobody waits on, keeps
    its place in line: cancelled while it waits it ends at once, else it succeeds once room
    comes."""
    budget = client.app.state.upload_budget
    held_elsewhere = 10_000_000

    def submit(name: str, offset: int) -> str:
        files = file_parts(real_images(3, offset=offset))
        answer = client.post(
            "/real-sets", data={"name": name}, files=files, headers={"Prefer": "respond-async"}
        )
        assert answer.status_code == 202, answer.text
        return answer.headers["location"]

    def ended(location: str) -> str:
        deadline = time.monotonic() + 30
        while (job := client.get(location).json())["state"] not in jobs.FINISHED:
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
        return job["state"]

    budget.take(held_elsewhere)
    try:
        cancelled, waits = submit("cancelled", 0), None
        time.sleep(3 * BUDGET_WAIT_S)  # past the wait a request gets
        assert client.get(cancelled).json()["state"] == "running"
        assert client.delete(cancelled).status_code == 202
        assert ended(cancelled) == "canceled"  # while the budget is still held
        waits = submit("waits", 50)
        time.sleep(3 * BUDGET_WAIT_S)
        assert client.get(waits).json()["state"] == "running"
    finally:
        budget.give(held_elsewhere)
    assert waits is not None and ended(waits) == "succeeded"
    assert [s["name"] for s in client.get("/real-sets").json()] == ["waits"]
