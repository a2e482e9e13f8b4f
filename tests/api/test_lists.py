"""GET /match and GET /classify list what was stored (newest first, paged, filtered);
GET /match/{id}?format=csv&part=real exports the per-real-image verdicts."""

from __future__ import annotations

import csv
import io

import pytest

from app.services import batches
from tests.helpers import file_parts, real_images, register
from tests.imagegen import perturbed_copy, phantom, png


def match(client, real_set_id: int, generated: dict[str, bytes]) -> dict:
    r = client.post("/match", data={"real_set_id": str(real_set_id)}, files=file_parts(generated))
    assert r.status_code == 200, r.text
    return r.json()


def copies_of(offsets: list[int], size: int = 128) -> dict[str, bytes]:
    """Perturbed copies of real_images' phantoms at these offsets, plus one novel image."""
    generated = {
        f"copy_of_{i:04d}.png": png(perturbed_copy(phantom(i, size), seed=i)) for i in offsets
    }
    generated["novel.png"] = png(phantom(9999, size))
    return generated


def test_batches_are_listed_newest_first_paged_and_filtered(client):
    first = register(client, real_images(12), name="first")
    second = register(client, real_images(12, offset=50), name="second")
    made = [
        match(client, first["id"], copies_of([0, 1])),
        match(client, second["id"], copies_of([50])),
        match(client, first["id"], copies_of([2])),
    ]
    page = client.get("/match").json()
    assert page["total"] == 3 and page["offset"] == 0 and page["limit"] == 100
    assert [b["batch_id"] for b in page["items"]] == [b["batch_id"] for b in reversed(made)]
    newest = page["items"][0]
    assert newest["real_set_name"] == "first" and newest["generated_count"] == 2
    assert newest["matched_count"] == made[2]["matched_count"] == 1
    assert newest["used_count"] == made[2]["used_count"] == 1
    assert newest["threshold"] == made[2]["threshold"]
    assert newest["threshold_source"] == made[2]["threshold_source"]
    assert "matches" not in newest and "real_summary" not in newest

    paged = client.get("/match", params={"offset": 1, "limit": 1}).json()
    assert paged["total"] == 3 and [b["batch_id"] for b in paged["items"]] == [made[1]["batch_id"]]
    of_first = client.get("/match", params={"real_set_id": first["id"]}).json()
    assert of_first["total"] == 2
    assert [b["batch_id"] for b in of_first["items"]] == [made[2]["batch_id"], made[0]["batch_id"]]
    assert client.get("/match", params={"real_set_id": 999}).json() == {
        "total": 0,
        "offset": 0,
        "limit": 100,
        "items": [],
    }
    assert client.get("/match", params={"limit": 0}).status_code == 422


def test_classifications_are_listed_and_filtered_by_set_and_batch(client):
    real_set = register(client, real_images(8), name="scored")
    batch = match(client, real_set["id"], copies_of([0, 1]))
    other = match(client, real_set["id"], copies_of([3]))
    ids = []
    for batch_id in (batch["batch_id"], other["batch_id"], batch["batch_id"]):
        r = client.post(
            "/classify",
            data={"method": "phash", "real_set_id": str(real_set["id"]), "batch_id": str(batch_id)},
        )
        assert r.status_code == 200, r.text
        ids.append(r.json()["classification_id"])
    uploaded = client.post(
        "/classify", data={"method": "cnn"}, files=file_parts(real_images(2, offset=30))
    )
    listed = client.get("/classify").json()
    expected_total = 4 if uploaded.status_code == 200 else 3  # cnn needs its artifact
    assert listed["total"] == expected_total
    assert [c["classification_id"] for c in listed["items"]][-3:] == ids[::-1]
    item = listed["items"][-1]
    assert item["method"] == "phash" and item["real_set_name"] == "scored"
    assert item["real_count"] == 8 and item["generated_count"] == 3
    assert "results" not in item and item["threshold_reason"]

    by_batch = client.get("/classify", params={"batch_id": batch["batch_id"]}).json()
    assert [c["classification_id"] for c in by_batch["items"]] == [ids[2], ids[0]]
    both = client.get(
        "/classify", params={"real_set_id": real_set["id"], "batch_id": other["batch_id"]}
    ).json()
    assert both["total"] == 1 and both["items"][0]["classification_id"] == ids[1]
    assert client.get("/classify", params={"offset": 2, "limit": 5}).json()["total"] == (
        expected_total
    )


@pytest.mark.parametrize("packed", [False, True], ids=["summary-rows", "packed-summary"])
def test_real_image_csv_lists_every_real_verdict(client, monkeypatch, packed):
    if packed:  # sets above the limit keep their summary in one blob; the CSV reads both
        monkeypatch.setattr(batches, "PACK_SUMMARY_ABOVE", 5)
    real_set = register(client, real_images(12))
    batch = match(client, real_set["id"], copies_of([4, 7]))
    url = f"/match/{batch['batch_id']}"

    r = client.get(url, params={"format": "csv", "part": "real"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert f"match-{batch['batch_id']}-real.csv" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["real"] for row in rows] == [f"real_{i:04d}.png" for i in range(12)]
    used = {row["real"]: row for row in rows if row["verdict"] == "used"}
    assert set(used) == {"real_0004.png", "real_0007.png"}
    assert used["real_0004.png"]["closest_generated"] == "copy_of_0004.png"
    assert used["real_0004.png"]["matched_count"] == "1"
    json_rows = {s["filename"]: s for s in batch["real_summary"]}
    for row in rows:
        assert int(row["min_distance"]) == json_rows[row["real"]]["min_distance"]

    only_used = client.get(url, params={"format": "csv", "part": "real", "real_summary": "used"})
    assert [row["real"] for row in csv.DictReader(io.StringIO(only_used.text))] == [
        "real_0004.png",
        "real_0007.png",
    ]
    generated = client.get(url, params={"format": "csv"}).text  # the default part
    assert generated.splitlines()[0] == (
        "generated,source,distance,candidates,copy_of,copy_similarity,copy_verified_inliers"
    )
    refused = client.get(url, params={"part": "real"})
    assert refused.status_code == 422 and "format=csv" in refused.json()["detail"]
    assert client.get("/match/999", params={"format": "csv", "part": "real"}).status_code == 404
