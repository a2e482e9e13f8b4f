"""/match on a set at or above MEMAUDIT_INDEX_MIN_IMAGES goes through the on-disk search
indices and answers as brute force does within the threshold (and copy_of as the exact
embedding search where the index probes every list)."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.search.hash_index import HashIndex
from tests.helpers import real_images, register, zip_bytes
from tests.imagegen import perturbed_copy, phantom, png


def _generated(reals: dict[str, bytes], copies: int, novel: int) -> dict[str, bytes]:
    names = sorted(reals)
    gen = {}
    for i in range(copies):
        arr = perturbed_copy(np.asarray(Image.open(io.BytesIO(reals[names[i]]))), seed=50 + i)
        gen[f"copy_{i:03d}.png"] = png(arr)
    for j in range(novel):
        gen[f"novel_{j:03d}.png"] = png(phantom(20_000 + j))
    return gen


def _match(client: TestClient, set_id: int, gen: dict[str, bytes], **fields: str) -> dict:
    r = client.post(
        "/match",
        data={"real_set_id": str(set_id), "top_k": "5", **fields},
        files=[("files", ("gen.zip", zip_bytes(gen), "application/zip"))],
    )
    assert r.status_code == 200, r.text
    return r.json()


def _same_within_threshold(indexed: dict, brute: dict) -> None:
    """Everything brute force decides within the threshold, the index answers alike."""
    t = brute["threshold"]
    assert indexed["threshold"] == t
    assert indexed["matched_count"] == brute["matched_count"]
    assert indexed["used_count"] == brute["used_count"]
    for a, b in zip(indexed["matches"], brute["matches"], strict=True):
        assert a["generated"] == b["generated"] and a["source"] == b["source"]
        if b["distance"] <= t:
            assert a["distance"] == b["distance"]
        else:  # a real image the index reached, beyond the threshold
            assert a["distance"] > t
        assert [c for c in a["candidates"] if c["distance"] <= t] == [
            c for c in b["candidates"] if c["distance"] <= t
        ]
    for a, b in zip(indexed["real_summary"], brute["real_summary"], strict=True):
        assert (a["filename"], a["matched_count"], a["verdict"]) == (
            b["filename"],
            b["matched_count"],
            b["verdict"],
        )
        if b["min_distance"] is not None and b["min_distance"] <= t:
            assert (a["min_distance"], a["closest_generated"]) == (
                b["min_distance"],
                b["closest_generated"],
            )


@pytest.fixture
def clients(settings):
    """(brute force, indexed) apps on one database and data dir."""
    indexed_settings = settings.model_copy(update={"index_min_images": 10})
    with TestClient(create_app(settings)) as brute, TestClient(create_app(indexed_settings)) as idx:
        yield brute, idx


def test_match_through_the_hash_index_equals_brute_force(clients, settings, monkeypatch):
    brute, indexed = clients
    reals = real_images(20)
    rng = np.random.default_rng(0)
    # The images' hashes plus 3,000 unrelated ones: a set the index prunes well.
    lines = ["filename,phash"]
    lines += [f"{n},{imagehash.phash(Image.open(io.BytesIO(d)), 16)}" for n, d in reals.items()]
    lines += [f"other_{i:05d}.png,{rng.bytes(32).hex()}" for i in range(3000)]
    r = brute.post(
        "/real-sets",
        data={"name": "archive", "hash_size": "16"},
        files=[("hashes", ("h.csv", ("\n".join(lines) + "\n").encode(), "text/csv"))],
    )
    assert r.status_code == 201, r.text
    set_id = r.json()["id"]
    gen = _generated(reals, copies=10, novel=10)
    searched = []
    real_search = HashIndex.search
    monkeypatch.setattr(
        HashIndex,
        "search",
        lambda self, q, radius: searched.append(radius) or real_search(self, q, radius),
    )
    for threshold in ("6", "14", "30", None):
        fields = {"threshold": threshold} if threshold else {}
        expected = _match(brute, set_id, gen, **fields)
        got = _match(indexed, set_id, gen, **fields)
        _same_within_threshold(got, expected)
        assert got["matched_count"] > 0
    assert {6, 14, 30} <= set(searched)  # these went through the index, not a scan
    folders = [p.name for p in (settings.data_dir / "indices").iterdir()]
    assert folders == [f"set-{set_id}-r1-phash"]
    # An append bumps the revision: the old index is dropped, the next /match builds anew.
    more = brute.post(
        f"/real-sets/{set_id}/hashes",
        files=[("hashes", ("m.csv", f"late.png,{rng.bytes(32).hex()}\n".encode(), "text/csv"))],
    )
    assert more.status_code in (200, 201), more.text
    _same_within_threshold(_match(indexed, set_id, gen), _match(brute, set_id, gen))
    folders = sorted(p.name for p in (settings.data_dir / "indices").iterdir())
    assert folders == [f"set-{set_id}-r2-phash"]


def test_copy_of_through_the_embedding_index_equals_exact_search(clients, settings):
    brute, indexed = clients
    reals = real_images(24)
    real_set = register(brute, reals)
    gen = _generated(reals, copies=8, novel=8)
    # The embedding bar alone on both sides: geometric verification needs the set's
    # descriptors in memory, which an indexed (large) set does not keep.
    expected = _match(brute, real_set["id"], gen, verify="never")
    got = _match(indexed, real_set["id"], gen, verify="never")
    if expected["copy_threshold"] is None:
        pytest.skip(f"no embedding loaded here: {expected['copy_rule']}")
    assert got["copy_threshold"] == pytest.approx(expected["copy_threshold"], abs=1e-6)
    for a, b in zip(got["matches"], expected["matches"], strict=True):
        assert (a["copy_of"] or {}).get("real") == (b["copy_of"] or {}).get("real")
    assert sum(m["copy_of"] is not None for m in got["matches"]) > 0
    # By default (verify=auto) an indexed set says why its batch was not verified.
    auto = _match(indexed, real_set["id"], gen)
    assert (
        "not verified geometrically: the set is searched through its embedding index"
        in (auto["copy_rule"])
    )
    # set-<id>-r<revision>-phash, set-<id>-r<revision>-embedding-<the embedding's tag>
    kinds = {p.name.split("-")[3] for p in (settings.data_dir / "indices").iterdir()}
    assert kinds == {"phash", "embedding"}
