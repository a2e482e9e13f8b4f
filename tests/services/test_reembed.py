"""`memaudit reembed`'s service (app.services.reembed): stale descriptors are replaced, fresh
ones left alone, and a set changed meanwhile is left whole for a next run."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from app.cli import main as cli_main
from app.db.models import RealImage, RealSet
from app.search.copies import descriptor_model, model_tag, pack_descriptor
from app.services.reembed import _Reembedding, reembed
from tests.helpers import real_images, register

OTHER = "ab" * 32


def test_stale_descriptors_are_replaced_and_fresh_ones_left(client):
    set_id = register(client, real_images(6))["id"]
    state = client.app.state
    embedder = state.models.embedding()
    with state.sessions.begin() as session:  # two images as if embedded by another model
        ids = session.scalars(select(RealImage.id).where(RealImage.real_set_id == set_id)).all()
        for image_id in ids[:2]:
            session.execute(
                update(RealImage)
                .where(RealImage.id == image_id)
                .values(embedding=pack_descriptor([0.5] * 128, OTHER))
            )
        revision = session.get(RealSet, set_id).revision
    done = reembed(state.sessions, state.image_store, embedder, 10**8, log=lambda _: None)
    assert (done.sets, done.images, done.without_pixels) == (1, 2, 0)
    with state.sessions() as session:
        blobs = session.scalars(
            select(RealImage.embedding).where(RealImage.real_set_id == set_id)
        ).all()
        assert {descriptor_model(b) for b in blobs} == {model_tag(embedder.info.sha256)}
        assert session.get(RealSet, set_id).revision == revision + 1
    again = reembed(state.sessions, state.image_store, embedder, 10**8, log=lambda _: None)
    assert (again.sets, again.images) == (0, 0)


def test_a_set_changed_meanwhile_stores_nothing(client):
    set_id = register(client, real_images(3))["id"]
    state = client.app.state
    work = _Reembedding(state.image_store, state.models.embedding(), 10**8, False, print)
    with state.sessions() as session:
        revision = session.get(RealSet, set_id).revision
    rows = [{"id": 10**9, "embedding": pack_descriptor([0.5] * 128, OTHER)}]  # no such image
    assert work.write(state.sessions, RealImage, rows, set_id) is False
    assert work.write(state.sessions, RealImage, rows, 10**9) is None  # a set deleted meanwhile
    with state.sessions() as session:
        assert session.get(RealSet, set_id).revision == revision


def test_the_command_refuses_a_data_dir_without_an_image_store(client, database_url, tmp_path):
    register(client, real_images(2))
    with pytest.raises(SystemExit, match="no image store at"):
        cli_main(["reembed", "--db", database_url, "--data-dir", str(tmp_path / "elsewhere")])


def test_the_command_fails_when_no_image_to_do_has_pixels(client, database_url, tmp_path):
    set_id = register(client, real_images(2))["id"]
    with client.app.state.sessions.begin() as session:
        session.execute(
            update(RealImage)
            .where(RealImage.real_set_id == set_id)
            .values(embedding=pack_descriptor([0.5] * 128, OTHER))
        )
    (tmp_path / "elsewhere" / "images").mkdir(parents=True)  # a store, but not this one
    cli = ["reembed", "--db", database_url, "--data-dir", str(tmp_path / "elsewhere")]
    assert cli_main(cli) == 1
    assert (
        cli_main(
            ["reembed", "--db", database_url, "--data-dir", str(client.app.state.settings.data_dir)]
        )
        == 0
    )
