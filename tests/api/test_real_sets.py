"""/real-sets over real HTTP (ASGI) against SQLite and PostgreSQL."""

from __future__ import annotations

import io

import imagehash
from PIL import Image
from sqlalchemy import create_engine, func, select

from app.db.models import RealImage, RealSet
from app.services import real_sets as real_sets_service
from tests.helpers import file_parts, raw_multipart, real_images, register, zip_bytes
from tests.imagegen import encode, phantom, png


def test_register_list_get_delete(client):
    entries = real_images(12)
    body = register(client, entries, name="trial A")
    assert body["name"] == "trial A"
    assert body["hash_size"] == 16
    assert body["image_count"] == 12
    assert body["duplicates"] == [] and body["rejected"] == []
    for image in body["images"]:
        expected = str(imagehash.phash(Image.open(io.BytesIO(entries[image["filename"]])), 16))
        assert image["phash"] == expected
        assert len(image["sha256"]) == 64
    assert body["calibrated_threshold"] is not None
    assert body["calibration"]["n_images"] == 12

    listed = client.get("/real-sets").json()
    assert [s["id"] for s in listed] == [body["id"]]

    page = client.get(f"/real-sets/{body['id']}", params={"offset": 10, "limit": 5}).json()
    assert [i["filename"] for i in page["images"]] == ["real_0010.png", "real_0011.png"]

    assert client.delete(f"/real-sets/{body['id']}").status_code == 204
    assert client.get(f"/real-sets/{body['id']}").status_code == 404
    assert client.delete(f"/real-sets/{body['id']}").status_code == 404


def test_hash_size_8_and_zip_upload(client):
    entries = real_images(5)
    response = client.post(
        "/real-sets",
        data={"name": "zipped", "hash_size": "8"},
        files=[
            (
                "files",
                (
                    "real.zip",
                    zip_bytes({f"real/{k}": v for k, v in entries.items()}),
                    "application/zip",
                ),
            )
        ],
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["hash_size"] == 8
    assert sorted(i["filename"] for i in body["images"]) == sorted(entries)
    for image in body["images"]:
        expected = str(imagehash.phash(Image.open(io.BytesIO(entries[image["filename"]])), 8))
        assert image["phash"] == expected and len(image["phash"]) == 16
    # Too few images to calibrate: no calibrated threshold.
    assert body["calibrated_threshold"] is None


def test_duplicates_and_rejections_keep_good_files(client):
    good = real_images(3)
    evil_zip = zip_bytes(
        {"../escape.png": png(phantom(9)), "notes.txt": b"hello", "ok.png": png(phantom(10))}
    )
    files = [
        *file_parts(good),
        ("files", ("again.png", good["real_0000.png"], "image/png")),
        ("files", ("text.png", b"definitely not a png", "image/png")),
        ("files", ("cut.png", png(phantom(11))[:200], "image/png")),
        ("files", ("empty.png", b"", "image/png")),
        ("files", ("bundle.zip", evil_zip, "application/zip")),
    ]
    response = client.post("/real-sets", data={"name": "mixed"}, files=files)
    assert response.status_code == 201, response.text
    body = response.json()
    assert sorted(i["filename"] for i in body["images"]) == sorted([*good, "ok.png"])
    assert body["duplicates"] == [{"filename": "again.png", "duplicate_of": "real_0000.png"}]
    reasons = {r["filename"]: r["reason"] for r in body["rejected"]}
    assert "not an image" in reasons["text.png"]
    assert "truncated" in reasons["cut.png"]
    assert "empty" in reasons["empty.png"]
    assert "'..'" in reasons["bundle.zip:../escape.png"]
    assert "not an image" in reasons["notes.txt"]


def test_bad_requests_get_clear_4xx(client):
    assert client.post("/real-sets", data={"name": "x"}).status_code in (415, 422)
    r = client.post("/real-sets", files=file_parts(real_images(1)))
    assert r.status_code == 422 and "name" in r.json()["detail"]
    r = client.post(
        "/real-sets", data={"name": "x", "hash_size": "12"}, files=file_parts(real_images(1))
    )
    assert r.status_code == 422 and "hash_size must be 8 or 16" in r.json()["detail"]
    r = client.post(
        "/real-sets", data={"name": "x", "hash_size": "big"}, files=file_parts(real_images(1))
    )
    assert r.status_code == 422 and "integer" in r.json()["detail"]
    r = client.post(
        "/real-sets", data={"name": "x"}, files=[("files", ("a.txt", b"plain text", "text/plain"))]
    )
    assert r.status_code == 422
    assert r.json()["detail"]["rejected"][0]["filename"] == "a.txt"
    r = client.post("/real-sets", content=b"{}", headers={"content-type": "application/json"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    r = client.post(
        "/real-sets",
        data={"name": "x"},
        files=[("photos", ("a.png", png(phantom(1)), "image/png"))],
    )
    assert r.status_code == 422 and "'files'" in r.json()["detail"]
    assert client.get("/real-sets").json() == []  # none of this stored anything


def test_add_images_reports_duplicates_and_bumps_revision(client):
    body = register(client, real_images(4))
    more = real_images(3, offset=4)
    more_named = {f"extra_{k}": v for k, v in more.items()}
    files = [
        *file_parts(more_named),
        ("files", ("copy.png", real_images(1)["real_0000.png"], "image/png")),
    ]
    r = client.post(f"/real-sets/{body['id']}/images", files=files)
    assert r.status_code == 201, r.text
    added = r.json()
    assert added["image_count"] == 7 and added["revision"] == 2
    assert sorted(i["filename"] for i in added["images"]) == sorted(more_named)
    assert added["duplicates"] == [{"filename": "copy.png", "duplicate_of": "real_0000.png"}]
    assert client.post("/real-sets/999/images", files=file_parts(more)).status_code == 404


def test_failed_registration_leaves_nothing(client, settings, monkeypatch):
    def explode(*_args, **_kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(real_sets_service, "recalibrate", explode)
    from fastapi.testclient import TestClient

    raw = TestClient(client.app, raise_server_exceptions=False)
    r = raw.post("/real-sets", data={"name": "doomed"}, files=file_parts(real_images(3)))
    assert r.status_code == 500
    engine = create_engine(settings.effective_database_url)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(RealSet)) == 0
        assert conn.scalar(select(func.count()).select_from(RealImage)) == 0
    engine.dispose()


def test_fields_after_files_and_non_png_formats(client):
    img = phantom(3, 96)
    files = [
        ("files", ("a.jpg", encode(img, "JPEG", quality=95), "image/jpeg")),
        ("files", ("b.bmp", encode(img, "BMP"), "image/bmp")),
        ("files", ("c.tif", encode(phantom(4, 96), "TIFF"), "image/tiff")),
    ]
    # httpx puts data fields first; build the body by hand with the files first.
    body, end, headers = raw_multipart(
        [("files", name, data) for _field, (name, data, _ctype) in files]
        + [("name", None, b"late fields"), ("hash_size", None, b"8")]
    )
    r = client.post("/real-sets", content=body + end, headers=headers)
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["hash_size"] == 8 and out["name"] == "late fields"
    by_name = {i["filename"]: i["phash"] for i in out["images"]}
    for _field, (name, data, _ctype) in files:
        assert by_name[name] == str(imagehash.phash(Image.open(io.BytesIO(data)), 8))


def test_huge_ids_and_unknown_fields_are_4xx(client):
    assert client.get("/real-sets/99999999999999999999").status_code == 422
    assert client.get("/real-sets/2147483648").status_code == 422
    assert client.get("/real-sets/1", params={"offset": 10**20}).status_code == 422
    assert client.delete("/real-sets/-1").status_code == 422
    r = client.post(
        "/real-sets", data={"name": "x", "hashsize": "8"}, files=file_parts(real_images(1))
    )
    assert r.status_code == 422 and "hashsize" in r.json()["detail"]
    assert client.get("/real-sets").json() == []


def test_ids_are_never_reused(client):
    first = register(client, real_images(2))
    assert client.delete(f"/real-sets/{first['id']}").status_code == 204
    second = register(client, real_images(2, offset=10))
    assert second["id"] > first["id"]


def test_truncated_body_is_400_and_stores_nothing(client):
    body, _end, headers = raw_multipart(
        [("name", None, b"x")] + [("files", n, d) for n, d in real_images(3).items()]
    )
    # Cut inside the last file; no closing boundary.
    r = client.post("/real-sets", content=body[:-500], headers=headers)
    assert r.status_code == 400 and "closing boundary" in r.json()["detail"]
    assert client.get("/real-sets").json() == []


def test_many_parts_before_the_fields_and_a_corrupt_zip_member(client):
    """Early parts are parked in one temp file; a broken deflate stream is one rejection."""
    import zipfile

    good = real_images(2)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("broken.png", png(phantom(77)))
        zf.writestr("fine.png", png(phantom(78)))
    raw = bytearray(buf.getvalue())
    offset = raw.index(b"broken.png") + len(b"broken.png")
    raw[offset + 5 : offset + 25] = b"\xff" * 20  # garble the compressed data
    early = {f"dup_{i}.png": good["real_0000.png"] for i in range(300)}
    early.update({"other.png": good["real_0001.png"], "z.zip": bytes(raw)})
    body, end, headers = raw_multipart(
        [("files", n, d) for n, d in early.items()]
        + [("name", None, b"late"), ("hash_size", None, b"16")]
    )
    r = client.post("/real-sets", content=body + end, headers=headers)
    assert r.status_code == 201, r.text
    out = r.json()
    assert sorted(i["filename"] for i in out["images"]) == ["dup_0.png", "fine.png", "other.png"]
    assert len(out["duplicates"]) == 299
    reasons = {x["filename"]: x["reason"] for x in out["rejected"]}
    assert "cannot read member" in reasons["z.zip:broken.png"]
