"""GET /real-sets/{id} says whether /match can decide copy_of with the set's descriptors:
counted per embedding in SQL (SQLite and PostgreSQL), with the sentence /match would give."""

from __future__ import annotations

import numpy as np
from sqlalchemy import select, update

from app.db.models import RealImage, RealSet
from app.search.copies import UNTAGGED_MODEL, model_tag, pack_descriptor
from app.services.matching import (
    MIXED_EMBEDDINGS,
    REEMBED,
    SET_WITHOUT_EMBEDDINGS,
    too_few_to_calibrate,
)
from tests.helpers import real_images, register

OTHER = "ab" * 32
#: Images enough to calibrate a copy rule on (MEMAUDIT_MIN_CALIBRATION_IMAGES is 10).
ENOUGH = 12


def _descriptors(client, set_id: int) -> dict:
    answer = client.get(f"/real-sets/{set_id}")
    assert answer.status_code == 200
    return answer.json()["descriptors"]


def _set_embeddings(client, set_id: int, values: list[bytes | None]) -> None:
    """Replace the first images' descriptors, bumping the set's revision as every change
    to a set does (the counts are kept per revision)."""
    with client.app.state.sessions.begin() as session:
        ids = session.scalars(
            select(RealImage.id).where(RealImage.real_set_id == set_id).order_by(RealImage.id)
        ).all()
        for image_id, value in zip(ids, values, strict=False):
            session.execute(
                update(RealImage).where(RealImage.id == image_id).values(embedding=value)
            )
        session.execute(
            update(RealSet).where(RealSet.id == set_id).values(revision=RealSet.revision + 1)
        )


def test_descriptors_of_each_embedding_are_counted_and_explained(client):
    set_id = register(client, real_images(ENOUGH))["id"]
    loaded = model_tag(client.app.state.models.embedding().info.sha256)
    fresh = _descriptors(client, set_id)
    assert fresh["state"] == "current"
    assert fresh["embeddings"] == {loaded: ENOUGH}
    assert (fresh["loaded_embedding"], fresh["without_descriptor"]) == (loaded, 0)

    other = pack_descriptor(np.full(128, 0.5), OTHER)
    _set_embeddings(client, set_id, [other, other])
    mixed = _descriptors(client, set_id)
    assert (mixed["state"], mixed["note"]) == ("mixed", MIXED_EMBEDDINGS)
    assert mixed["embeddings"] == {loaded: ENOUGH - 2, model_tag(OTHER): 2}

    _set_embeddings(client, set_id, [other] * ENOUGH)
    stale = _descriptors(client, set_id)
    assert stale["state"] == "stale" and REEMBED in stale["note"]
    assert model_tag(OTHER) in stale["note"] and loaded in stale["note"]

    untagged = np.full(128, 0.25, np.float16).tobytes()  # stored before descriptors had tags
    _set_embeddings(client, set_id, [untagged] * ENOUGH)
    legacy = _descriptors(client, set_id)  # read as the embedding shipped then
    assert legacy["embeddings"] == {UNTAGGED_MODEL: ENOUGH}
    assert legacy["state"] == ("current" if loaded == UNTAGGED_MODEL else "stale")


def test_a_set_whose_images_lack_descriptors_says_what_match_says(client):
    set_id = register(client, real_images(ENOUGH))["id"]
    loaded = model_tag(client.app.state.models.embedding().info.sha256)
    other = pack_descriptor(np.full(128, 0.5), OTHER)
    _set_embeddings(client, set_id, [None, other])  # /match: a missing one decides
    partial = _descriptors(client, set_id)
    assert (partial["state"], partial["note"]) == ("incomplete", SET_WITHOUT_EMBEDDINGS)
    assert partial["embeddings"] == {loaded: ENOUGH - 2, model_tag(OTHER): 1}
    assert partial["without_descriptor"] == 1
    _set_embeddings(client, set_id, [None] * ENOUGH)
    assert _descriptors(client, set_id)["state"] == "none"


def test_a_set_too_small_to_calibrate_on_is_not_current(client):
    small = _descriptors(client, register(client, real_images(5))["id"])
    assert (small["state"], small["note"]) == ("too_few", too_few_to_calibrate(10))


def test_a_set_registered_by_hash_alone_has_no_descriptors(client):
    lines = "filename,phash\n" + "".join(f"real_{i}.png,{'%064x' % (i * 7919)}\n" for i in range(3))
    answer = client.post(
        "/real-sets",
        data={"name": "hashes only"},
        files={"hashes": ("hashes.csv", lines.encode(), "text/csv")},
    )
    assert answer.status_code == 201, answer.text
    described = _descriptors(client, answer.json()["id"])
    assert (described["state"], described["note"]) == ("none", SET_WITHOUT_EMBEDDINGS)
    assert (described["embeddings"], described["without_descriptor"]) == ({}, 3)
