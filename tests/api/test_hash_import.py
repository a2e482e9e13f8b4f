"""Real sets registered by precomputed pHash (`hashes` uploads) over the ASGI app, on SQLite
and PostgreSQL: import, append, /match equal to image registration, errors, limits."""

from __future__ import annotations

import io
import shutil

import imagehash
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import create_engine, func, select

from app.db.models import RealImage, RealSet
from app.main import create_app
from app.services.hash_import import MAX_LINE_BYTES, HashListInvalid, HashListParser
from tests.helpers import file_parts, raw_multipart, real_images, register, zip_bytes
from tests.imagegen import perturbed_copy, phantom, png


def phash_lines(entries: dict[str, bytes], hash_size: int, header: bool = True) -> bytes:
    """What a pipeline would send: imagehash's own hex, computed outside the service."""
    lines = ["filename,phash"] if header else []
    for name, data in entries.items():
        lines.append(f"{name},{imagehash.phash(Image.open(io.BytesIO(data)), hash_size)}")
    return ("\n".join(lines) + "\n").encode()


def import_hashes(client, text: bytes, name: str = "hashes", hash_size: int = 16):
    return client.post(
        "/real-sets",
        data={"name": name, "hash_size": str(hash_size)},
        files=[("hashes", ("hashes.csv", text, "text/csv"))],
    )


def generated_batch(reals: dict[str, bytes], copies: int, novel: int) -> dict[str, bytes]:
    names = sorted(reals)
    gen = {}
    for i in range(copies):
        arr = np.asarray(Image.open(io.BytesIO(reals[names[i % len(names)]])))
        gen[f"generated_{i:04d}.png"] = png(perturbed_copy(arr, seed=300 + i))
    for j in range(novel):
        gen[f"generated_{copies + j:04d}.png"] = png(phantom(20_000 + j))
    return gen


def match(client, set_id: int, gen: dict[str, bytes]) -> dict:
    r = client.post(
        "/match",
        data={"real_set_id": str(set_id), "top_k": "3"},
        files=[("files", ("gen.zip", zip_bytes(gen), "application/zip"))],
    )
    assert r.status_code == 200, r.text
    return r.json()


def same_outcome(a: dict, b: dict) -> None:
    assert (a["threshold"], a["threshold_source"]) == (b["threshold"], b["threshold_source"])
    keys = ("generated", "phash", "source", "distance", "candidates")
    assert [{k: m[k] for k in keys} for m in a["matches"]] == [
        {k: m[k] for k in keys} for m in b["matches"]
    ]
    assert a["real_summary"] == b["real_summary"]


def counts(settings) -> tuple[int, int]:
    engine = create_engine(settings.effective_database_url)
    with engine.connect() as conn:
        sets = conn.scalar(select(func.count()).select_from(RealSet))
        images = conn.scalar(select(func.count()).select_from(RealImage))
    engine.dispose()
    return sets, images


@pytest.mark.parametrize("hash_size", [8, 16])
def test_imported_set_matches_like_the_set_registered_from_images(client, hash_size):
    reals = real_images(30)
    from_images = register(client, reals, name="images", hash_size=hash_size)
    r = import_hashes(client, phash_lines(reals, hash_size), hash_size=hash_size)
    assert r.status_code == 201, r.text
    imported = r.json()
    assert imported["imported"] == 30 and imported["header"] is True
    assert imported["image_count"] == 30 and imported["revision"] == 1
    assert "images" not in imported  # a count, not a million-entry list
    assert imported["calibrated_threshold"] == from_images["calibrated_threshold"]
    assert imported["calibration"] == from_images["calibration"]

    page = client.get(f"/real-sets/{imported['id']}", params={"limit": 1000}).json()
    by_name = {i["filename"]: i["phash"] for i in from_images["images"]}
    assert [i["filename"] for i in page["images"]] == list(reals)
    for image in page["images"]:
        assert image["phash"] == by_name[image["filename"]]
        assert image["sha256"] is None and image["width"] is None and image["height"] is None

    gen = generated_batch(reals, copies=10, novel=10)
    via_images = match(client, from_images["id"], gen)
    via_hashes = match(client, imported["id"], gen)
    assert via_images["matched_count"] >= 8
    same_outcome(via_images, via_hashes)


def test_append_hashes_and_mix_with_images(client):
    reals = real_images(30)
    names = list(reals)
    first = {k: reals[k] for k in names[:18]}
    rest = {k: reals[k] for k in names[18:]}
    created = import_hashes(client, phash_lines(first, 16, header=False)).json()
    assert created["header"] is False
    r = client.post(
        f"/real-sets/{created['id']}/hashes",
        files=[("hashes", ("more.csv", phash_lines(rest, 16), "text/csv"))],
    )
    assert r.status_code == 201, r.text
    appended = r.json()
    assert appended["imported"] == 12
    assert (appended["image_count"], appended["revision"]) == (30, 2)
    from_images = register(client, reals, name="images")
    assert appended["calibrated_threshold"] == from_images["calibrated_threshold"]
    gen = generated_batch(reals, copies=8, novel=4)
    same_outcome(match(client, from_images["id"], gen), match(client, created["id"], gen))

    # Images with bytes can join a hash-only set, and hashes an image set; names stay unique.
    extra = {f"extra_{k}": v for k, v in real_images(2, offset=40).items()}
    r = client.post(f"/real-sets/{created['id']}/images", files=file_parts(extra))
    assert r.status_code == 201, r.text
    assert r.json()["image_count"] == 32
    r = client.post(
        f"/real-sets/{from_images['id']}/hashes",
        files=[("hashes", ("h.csv", b"hashed_only.png," + b"ab" * 32 + b"\n", "text/csv"))],
    )
    assert r.status_code == 201 and r.json()["image_count"] == 31
    page = client.get(f"/real-sets/{from_images['id']}", params={"offset": 30}).json()
    assert page["images"][0]["filename"] == "hashed_only.png"
    assert page["images"][0]["sha256"] is None


def test_bad_lines_are_numbered_and_nothing_is_stored(client, settings):
    good = "ab" * 32
    text = "\n".join(
        [
            "filename,phash",  # 1 header
            f"a.png,{good}",  # 2
            f"b.png,{'zz' * 32}",  # 3 not hex
            f"c.png,{good[:62]}",  # 4 too short
            f",{good}",  # 5 empty name
            "",  # 6 blank: skipped
            f"a.png,{good}",  # 7 duplicate of line 2
            f"{'n' * 1025},{good}",  # 8 too long
            "just-a-name.png",  # 9 no comma
            f"tab\tname.png,{good}",  # 10 control character
            f"d.png,{good[:-2]} f",  # 11 a space inside the hex
            f"e.png,{good}",  # 12 fine
        ]
    ).encode()
    r = import_hashes(client, text)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "nothing was stored" in detail["message"] and detail["error_count"] == 8
    by_line = {e["line"]: e["error"] for e in detail["errors"]}
    assert sorted(by_line) == [3, 4, 5, 7, 8, 9, 10, 11]
    assert "not hexadecimal" in by_line[3]
    assert "needs 64 hex digits" in by_line[4]
    assert "empty filename" in by_line[5]
    assert "duplicate filename 'a.png' (first on line 2)" in by_line[7]
    assert "longer than 1024" in by_line[8]
    assert "no comma" in by_line[9]
    assert "control character" in by_line[10]
    assert "not hexadecimal" in by_line[11]
    assert counts(settings) == (0, 0)

    # A 64-bit hash for a 256-bit set, on append: 422 naming the line, the set unchanged.
    created = import_hashes(client, f"a.png,{good}\nb.png,{'cd' * 32}\n".encode()).json()
    r = client.post(
        f"/real-sets/{created['id']}/hashes",
        files=[("hashes", ("h.csv", b"new.png,0123456789abcdef\n", "text/csv"))],
    )
    assert r.status_code == 422
    assert r.json()["detail"]["errors"] == [
        {"line": 1, "error": "phash has 16 characters; hash_size 16 needs 64 hex digits"}
    ]
    # A name the set already has, on append: also a numbered line error.
    r = client.post(
        f"/real-sets/{created['id']}/hashes",
        files=[("hashes", ("h.csv", f"x.png,{good}\nb.png,{good}\n".encode(), "text/csv"))],
    )
    assert r.status_code == 422
    assert r.json()["detail"]["errors"] == [
        {"line": 2, "error": f"filename 'b.png' is already in real set {created['id']}"}
    ]
    again = client.get(f"/real-sets/{created['id']}").json()
    assert (again["image_count"], again["revision"]) == (2, 1)
    assert counts(settings) == (1, 2)


def test_request_shape_errors(client):
    line = b"a.png," + b"ab" * 32 + b"\n"
    hashes = ("hashes", ("h.csv", line, "text/csv"))
    r = client.post("/real-sets", data={"name": "x"}, files=[hashes, *file_parts(real_images(1))])
    assert r.status_code == 422 and "not both" in r.json()["detail"]
    body, end, headers = raw_multipart([("name", None, b"x"), ("hashes", None, line)])
    r = client.post("/real-sets", content=body + end, headers=headers)
    assert r.status_code == 422 and "as a file part" in r.json()["detail"]
    r = client.post("/real-sets", data={"name": "x"}, files=[hashes, hashes])
    assert r.status_code == 422 and "given twice" in r.json()["detail"]
    r = import_hashes(client, b"\n\nfilename,phash\n")
    assert r.status_code == 422 and "no `filename,phash_hex` line" in r.json()["detail"]
    r = client.post("/real-sets", data={"hash_size": "16"}, files=[hashes])
    assert r.status_code == 422 and "'name' is required" in r.json()["detail"]
    r = client.post("/real-sets", data={"name": "x", "hashsize": "8"}, files=[hashes])
    assert r.status_code == 422 and "hashes" in r.json()["detail"]
    body, end, headers = raw_multipart([("name", None, b"x")])
    r = client.post("/real-sets", content=body + end, headers=headers)
    assert r.status_code == 422 and "or a 'hashes' file" in r.json()["detail"]
    assert client.get("/real-sets").json() == []

    created = import_hashes(client, line).json()
    url = f"/real-sets/{created['id']}/hashes"
    r = client.post(url, files=file_parts(real_images(1)))
    assert r.status_code == 422 and "/images" in r.json()["detail"]
    assert client.post(url, data={"x": "1"}).status_code == 422
    assert client.post("/real-sets/999/hashes", files=[hashes]).status_code == 404
    assert client.get(f"/real-sets/{created['id']}").json()["image_count"] == 1


def test_limits_are_413(settings):
    line = b"a.png," + b"ab" * 32 + b"\n"
    small = settings.model_copy(update={"max_hashes_per_request": 2, "max_hash_file_bytes": 500})
    with TestClient(create_app(small)) as client:
        text = b"".join(line.replace(b"a.png", f"{i}.png".encode()) for i in range(3))
        r = import_hashes(client, text)
        assert r.status_code == 413 and "more than 2 hashes" in r.json()["detail"]
        r = import_hashes(client, line * 10)
        assert r.status_code == 413 and "larger than 500 bytes" in r.json()["detail"]
        assert client.get("/real-sets").json() == []


def test_classify_refuses_a_set_without_pixels(client):
    reals = real_images(12)
    created = import_hashes(client, phash_lines(reals, 16)).json()
    batch = match(client, created["id"], generated_batch(reals, copies=4, novel=2))
    for method in ("reference", "phash", "cnn", "sift_knn"):
        r = client.post(
            "/classify",
            data={
                "method": method,
                "real_set_id": str(created["id"]),
                "batch_id": str(batch["batch_id"]),
            },
        )
        assert r.status_code == 409, (method, r.text)
        detail = r.json()["detail"]
        assert "12 image(s) registered by hash only" in detail and repr(method) in detail
        assert "POST /match" in detail


def test_match_never_reads_real_image_bytes(client, settings):
    """The set's hashes come from the database: emptying the image store changes nothing."""
    reals = real_images(15)
    real_set = register(client, reals)
    gen = generated_batch(reals, copies=5, novel=5)
    before = match(client, real_set["id"], gen)
    shutil.rmtree(settings.effective_image_store_dir)
    client.app.state.hash_cache.forget(real_set["id"])
    same_outcome(before, match(client, real_set["id"], gen))


def test_openapi_documents_hashes_with_an_example(client):
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/real-sets"]["post"]
    assert "hashes=@hashes.csv" in post["description"]
    schema = post["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert "filename,phash" in schema["properties"]["hashes"]["description"]
    assert "/real-sets/{real_set_id}/hashes" in spec["paths"]
    # The example lines in the docs are themselves valid.
    doc = schema["properties"]["hashes"]["description"]
    example = doc.split("```\n")[1].split("\n```")[0].encode()
    parser = HashListParser(16, 10)
    parser.feed(example)
    assert len(parser.finish()) == 2


# --- the parser on its own ---------------------------------------------------------------


def parse(text: bytes, hash_size: int = 8, step: int | None = None):
    parser = HashListParser(hash_size, 1000)
    step = step or len(text) or 1
    for lo in range(0, len(text), step):
        parser.feed(text[lo : lo + step])
    return parser.finish()


def test_parser_formats_and_chunk_boundaries():
    h = "0123456789ABCDEF"
    text = (
        "\ufefffilename,phash\r\n"
        f'"quoted, with comma.png",{h}\r\n'
        f'"say ""hi"".png",{h.lower()}\r\n'
        f"  spaced name.png , {h} \n"
        f"ünïcode/dir\\name.png,{h}"  # no final newline
    ).encode()
    whole = parse(text)
    assert whole.header
    assert [whole.name(i) for i in range(len(whole))] == [
        "quoted, with comma.png",
        'say "hi".png',
        "spaced name.png",
        "ünïcode/dir\\name.png",
    ]
    assert {whole.phash(i) for i in range(len(whole))} == {h.lower()}
    for step in (1, 3, 7):
        again = parse(text, step=step)
        assert bytes(again.names) == bytes(whole.names)
        assert bytes(again.hashes) == bytes(whole.hashes)
        assert list(again.lines) == [2, 3, 4, 5]


def test_parser_long_lines_and_many_duplicates():
    h = "0123456789abcdef"
    long_line = b"x" * (3 * MAX_LINE_BYTES) + b"," + h.encode() + b"\n"
    text = b"a.png," + h.encode() + b"\n" + long_line + b"b.png," + h.encode() + b"\n"
    with pytest.raises(HashListInvalid) as err:
        parse(text, step=1000)
    assert [(e.line, e.error) for e in err.value.errors] == [
        (2, f"line longer than {MAX_LINE_BYTES} bytes")
    ]
    dupes = b"".join(b"same.png," + h.encode() + b"\n" for _ in range(4))
    with pytest.raises(HashListInvalid) as err:
        parse(b"other.png," + h.encode() + b"\n" + dupes)
    assert [e.line for e in err.value.errors] == [3, 4, 5]
    assert all("(first on line 2)" in e.error for e in err.value.errors)
    many_bad = b"".join(b"bad.png,xyz\n" for _ in range(50))
    with pytest.raises(HashListInvalid) as err:
        parse(many_bad)
    assert err.value.count == 50 and len(err.value.errors) == 20
    assert "the first 20 are listed" in err.value.detail()["message"]
