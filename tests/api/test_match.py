"""/match end to end: sources agree with a brute-force imagehash comparison; results persist."""

from __future__ import annotations

import csv
import io

import imagehash
import numpy as np
import pytest
from PIL import Image

from tests.helpers import file_parts, real_images, register, zip_bytes
from tests.imagegen import perturbed_copy, phantom, png


def _generated(reals: dict[str, bytes], copies: int, novel: int) -> tuple[dict, dict]:
    """Generated batch: perturbed copies of the first real images plus novel phantoms."""
    gen, truth = {}, {}
    names = sorted(reals)
    for i in range(copies):
        src = names[i % len(names)]
        arr = perturbed_copy(np.asarray(Image.open(io.BytesIO(reals[src]))), seed=100 + i)
        gen[f"generated_{i:05d}.png"] = png(arr)
        truth[f"generated_{i:05d}.png"] = src
    for j in range(novel):
        gen[f"generated_{copies + j:05d}.png"] = png(phantom(10_000 + j))
        truth[f"generated_{copies + j:05d}.png"] = None
    return gen, truth


def _brute_force(reals: dict[str, bytes], gen: dict[str, bytes], hash_size: int) -> dict:
    rh = {k: imagehash.phash(Image.open(io.BytesIO(v)), hash_size) for k, v in reals.items()}
    out = {}
    for name, data in gen.items():
        gh = imagehash.phash(Image.open(io.BytesIO(data)), hash_size)
        out[name] = min(gh - h for h in rh.values())
    return out


@pytest.mark.parametrize("hash_size", [8, 16])
def test_match_agrees_with_brute_force_and_persists(client, hash_size):
    reals = real_images(30)
    real_set = register(client, reals, hash_size=hash_size)
    gen, truth = _generated(reals, copies=12, novel=18)
    r = client.post(
        "/match",
        data={"real_set_id": str(real_set["id"]), "top_k": "3"},
        files=[("files", ("gen.zip", zip_bytes(gen), "application/zip"))],
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["hash_size"] == hash_size and body["generated_count"] == 30
    assert body["threshold_source"] == "calibrated"
    assert body["threshold"] == real_set["calibrated_threshold"]
    brute = _brute_force(reals, gen, hash_size)
    for m in body["matches"]:
        assert m["distance"] == brute[m["generated"]]
        assert len(m["candidates"]) == 3
        assert [c["distance"] for c in m["candidates"]] == sorted(
            c["distance"] for c in m["candidates"]
        )
        assert (m["source"] is None) == (m["distance"] > body["threshold"])
    # Perturbed copies are matched to their true source.
    for m in body["matches"]:
        if truth[m["generated"]] is not None and m["source"] is not None:
            assert m["source"] == truth[m["generated"]]
    copies_found = sum(
        1 for m in body["matches"] if truth[m["generated"]] and m["source"] == truth[m["generated"]]
    )
    assert copies_found >= 10
    summary = {s["filename"]: s for s in body["real_summary"]}
    assert len(summary) == 30
    for name, s in summary.items():
        sourced = sum(1 for m in body["matches"] if m["source"] == name)
        assert s["matched_count"] == sourced
        assert s["verdict"] == ("used" if sourced else "unused")

    again = client.get(f"/match/{body['batch_id']}").json()
    assert again["matches"] == body["matches"]
    assert again["real_summary"] == body["real_summary"]
    assert body["real_summary_scope"] == again["real_summary_scope"] == "all"
    used = [s for s in body["real_summary"] if s["verdict"] == "used"]
    assert body["used_count"] == len(used) > 0
    for scope, expected in (("used", used), ("none", [])):
        stored = client.get(f"/match/{body['batch_id']}", params={"real_summary": scope}).json()
        assert stored["real_summary"] == expected and stored["real_summary_scope"] == scope
        assert stored["used_count"] == body["used_count"]
        assert stored["matches"] == body["matches"]
    only_used = client.post(
        "/match",
        data={"real_set_id": str(real_set["id"]), "top_k": "3", "real_summary": "used"},
        files=[("files", ("gen.zip", zip_bytes(gen), "application/zip"))],
    ).json()
    assert only_used["real_summary"] == used and only_used["used_count"] == len(used)
    assert only_used["matches"] == body["matches"]
    no_list = client.post(
        "/match",
        data={"real_set_id": str(real_set["id"]), "real_summary": "none"},
        files=[("files", ("gen.zip", zip_bytes(gen), "application/zip"))],
    ).json()
    assert no_list["real_summary"] == [] and no_list["real_summary_scope"] == "none"
    assert no_list["used_count"] == len(used)
    # Every real image's row is stored whatever the answer listed.
    stored = client.get(f"/match/{only_used['batch_id']}").json()
    assert stored["real_summary"] == body["real_summary"]
    rows = list(
        csv.DictReader(
            io.StringIO(client.get(f"/match/{body['batch_id']}", params={"format": "csv"}).text)
        )
    )
    assert [r["generated"] for r in rows] == [m["generated"] for m in body["matches"]]
    text = client.get(f"/match/{body['batch_id']}", params={"format": "text"}).text
    first = body["matches"][0]
    assert text.splitlines()[0] == (
        f"The source image for {first['generated']} is {first['source'] or 'None'} "
        f"with {first['distance']}"
    )


def test_threshold_from_request_and_paper_default(client):
    small = register(client, real_images(4), name="tiny")  # too small to calibrate
    gen = {"g.png": png(phantom(500))}
    r = client.post("/match", data={"real_set_id": str(small["id"])}, files=file_parts(gen))
    assert r.status_code == 200, r.text
    assert r.json()["threshold"] == 50 and r.json()["threshold_source"] == "paper_default"
    assert "paper" in r.json()["threshold_reason"]
    r = client.post(
        "/match", data={"real_set_id": str(small["id"]), "threshold": "256"}, files=file_parts(gen)
    )
    body = r.json()
    assert body["threshold"] == 256 and body["threshold_source"] == "request"
    assert body["matches"][0]["source"] is not None


def test_many_file_parts_in_one_request(client):
    """More parts than Starlette's default cap of 1000 files per request."""
    reals = real_images(10, size=32)
    real_set = register(client, reals)
    tiny = {f"g_{i:05d}.png": png(phantom(i % 40, 32)) for i in range(1200)}
    r = client.post("/match", data={"real_set_id": str(real_set["id"])}, files=file_parts(tiny))
    assert r.status_code == 200, r.text
    body = r.json()
    # Identical bytes are kept once: 40 distinct images, the rest reported as duplicates.
    assert body["generated_count"] == 40
    assert len(body["duplicates"]) == 1160


def test_match_errors(client):
    gen = file_parts({"g.png": png(phantom(1))})
    r = client.post("/match", data={"real_set_id": "999"}, files=gen)
    assert r.status_code == 404 and "999" in r.json()["detail"]
    r = client.post("/match", files=gen)
    assert r.status_code == 422 and "real_set_id" in r.json()["detail"]
    real_set = register(client, real_images(3))
    sid = str(real_set["id"])
    r = client.post("/match", data={"real_set_id": sid, "top_k": "0"}, files=gen)
    assert r.status_code == 422 and "top_k" in r.json()["detail"]
    r = client.post("/match", data={"real_set_id": sid, "threshold": "-1"}, files=gen)
    assert r.status_code == 422 and "threshold" in r.json()["detail"]
    r = client.post("/match", data={"real_set_id": sid, "real_summary": "some"}, files=gen)
    assert r.status_code == 422 and "real_summary must be all, used or none" in r.json()["detail"]
    r = client.post(
        "/match", data={"real_set_id": sid}, files=[("files", ("x.png", b"nope", "image/png"))]
    )
    assert r.status_code == 422
    assert r.json()["detail"]["rejected"] == [
        {"filename": "x.png", "reason": "not an image (PNG, JPEG, BMP or TIFF expected)"}
    ]
    assert client.get("/match/12345").status_code == 404
    assert client.get("/match/1", params={"format": "xml"}).status_code == 422
    assert client.get("/match/1", params={"real_summary": "x"}).status_code == 422


def test_batches_survive_set_deletion_and_cache_follows_revisions(client):
    reals = real_images(12)
    real_set = register(client, reals)
    sid = real_set["id"]
    extra = {"late.png": png(phantom(777))}
    copy = {"g.png": png(perturbed_copy(phantom(777), 1, strength=0.3))}
    first = client.post(
        "/match", data={"real_set_id": str(sid), "threshold": "30"}, files=file_parts(copy)
    ).json()
    assert first["matches"][0]["candidates"][0]["filename"] != "late.png"
    assert client.post(f"/real-sets/{sid}/images", files=file_parts(extra)).status_code == 201
    second = client.post(
        "/match", data={"real_set_id": str(sid), "threshold": "30"}, files=file_parts(copy)
    ).json()
    assert second["matches"][0]["source"] == "late.png"
    assert second["real_set_revision"] == 2
    assert client.delete(f"/real-sets/{sid}").status_code == 204
    kept = client.get(f"/match/{first['batch_id']}").json()
    assert kept["real_set_id"] is None and kept["matches"] == first["matches"]


def test_set_hash_cache_streams_sets_in_and_is_bounded_by_hashes(client):
    """Loaded in small chunks, a set's packed hashes equal its stored ones in order; the cache
    drops the least recently used sets once it holds too many hashes, keeping the newest."""
    from sqlalchemy import select

    from app.db.models import RealImage
    from app.services.real_sets import get_real_set
    from app.services.set_hash_cache import SetHashCache
    from app.services.source_matching import words_from_hex

    ids = [
        register(client, real_images(n, offset=100 * n), name=f"s{n}")["id"] for n in (11, 12, 13)
    ]
    cache = SetHashCache(max_hashes=25)
    cache.LOAD_CHUNK = 5
    with client.app.state.sessions() as session:
        for set_id in ids:
            hashes = cache.get(session, get_real_set(session, set_id))
            rows = session.execute(
                select(RealImage.filename, RealImage.phash)
                .where(RealImage.real_set_id == set_id)
                .order_by(RealImage.position)
            ).all()
            assert hashes.filenames == [r.filename for r in rows]
            assert np.array_equal(hashes.words, words_from_hex([r.phash for r in rows], 16))
        assert list(cache._items) == [ids[1], ids[2]]  # 11 + 12 + 13 > 25: 11 dropped
        first = cache.get(session, get_real_set(session, ids[0]))
        assert list(cache._items) == [ids[2], ids[0]]  # 12, least recently used, dropped
        assert cache.get(session, get_real_set(session, ids[0])) is first
        tiny = SetHashCache(max_hashes=1)
        tiny.get(session, get_real_set(session, ids[1]))
        assert list(tiny._items) == [ids[1]]  # the newest set stays even over the bound


def test_large_sets_keep_the_real_summary_packed(client, monkeypatch):
    """Above PACK_SUMMARY_ABOVE images a batch keeps its per-real-image results in one blob
    instead of a row each: every answer, and every stored read, is the same as with rows."""
    from sqlalchemy import func, select

    from app.db.models import MatchBatch, RealSummary
    from app.services import batches

    reals = real_images(14)
    real_set = register(client, reals)
    gen, _ = _generated(reals, copies=6, novel=6)
    files = [("files", ("gen.zip", zip_bytes(gen), "application/zip"))]
    data = {"real_set_id": str(real_set["id"]), "top_k": "2"}
    as_rows = client.post("/match", data=data, files=files).json()
    monkeypatch.setattr(batches, "PACK_SUMMARY_ABOVE", 10)
    packed = client.post("/match", data=data, files=files).json()
    with client.app.state.sessions() as session:
        for body, is_packed in ((as_rows, False), (packed, True)):
            batch = session.get(MatchBatch, body["batch_id"])
            assert (batch.real_summary_packed is not None) == is_packed
            rows = session.scalar(
                select(func.count()).where(RealSummary.batch_id == body["batch_id"])
            )
            assert rows == (0 if is_packed else 14)
    assert packed["real_summary"] == as_rows["real_summary"]
    assert any(s["verdict"] == "used" for s in packed["real_summary"])
    assert any(s["verdict"] == "unused" for s in packed["real_summary"])
    for scope in ("all", "used", "none"):
        params = {"real_summary": scope}
        a = client.get(f"/match/{as_rows['batch_id']}", params=params).json()
        b = client.get(f"/match/{packed['batch_id']}", params=params).json()
        assert b["real_summary"] == a["real_summary"] and b["used_count"] == a["used_count"]
        assert b["matches"] == a["matches"]
    assert client.get(f"/match/{packed['batch_id']}", params={"format": "csv"}).status_code == 200
