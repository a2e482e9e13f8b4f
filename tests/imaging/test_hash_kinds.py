"""Fingerprint kinds: the registry, the decode-and-hash pipeline asking it, the kind stored
with sets and batches, and migration 0004 that added it."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
from PIL import Image

from app.imaging.hashers import DEFAULT_HASH_KIND, HASHERS, UnknownHashKind, get_hasher
from app.imaging.phash import SUPPORTED_HASH_SIZES
from app.services.decode_and_hash import hash_blobs
from app.services.ingest import ImageIngest, IngestLimits
from tests.helpers import real_images, register, zip_bytes
from tests.imagegen import encode, perturbed_copy, phantom

MAX_PIXELS = 50_000_000


def test_phash_is_the_default_kind_with_its_sizes() -> None:
    hasher = get_hasher("phash")
    assert DEFAULT_HASH_KIND == "phash"
    assert {"phash": hasher} == HASHERS
    assert hasher.sizes == SUPPORTED_HASH_SIZES
    assert [hasher.bits_per_hash(s) for s in hasher.sizes] == [64, 256]
    with pytest.raises(UnknownHashKind, match="hash_kind must be one of"):
        get_hasher("dhash")
    with pytest.raises(ValueError, match="hash_size must be one of"):
        hasher.check_size(12)


@pytest.mark.parametrize("hash_size", [8, 16])
def test_pipeline_hashes_with_the_kind_bit_identical_to_imagehash(hash_size: int) -> None:
    blobs = [encode(phantom(i, 96 + 16 * (i % 3))) for i in range(10)]
    blobs += [encode(perturbed_copy(phantom(i, 128), i)) for i in range(10)]
    hashed = hash_blobs([*blobs, b"not an image"], hash_size, MAX_PIXELS, "phash")
    expected = [str(imagehash.phash(Image.open(io.BytesIO(b)), hash_size)) for b in blobs]
    assert [h[0] for h in hashed[:-1]] == expected
    assert hashed[-1][0] is None and hashed[-1][4].startswith("not an image")


def test_ingest_refuses_an_unknown_kind_or_size() -> None:
    limits = IngestLimits(max_file_bytes=1 << 20, max_files=10, max_pixels=MAX_PIXELS)
    with pytest.raises(UnknownHashKind):
        ImageIngest(16, limits, hash_kind="nope")
    with pytest.raises(ValueError, match="hash_size"):
        ImageIngest(12, limits)
    ingest = ImageIngest(8, limits, hash_kind="phash")
    data = encode(phantom(3, 64))
    ingest.add("a.png", data)
    images = ingest.finish().images
    assert [i.phash for i in images] == [str(imagehash.phash(Image.open(io.BytesIO(data)), 8))]


def _match(client, real_set_id: int, entries: dict[str, bytes]) -> dict:
    response = client.post(
        "/match",
        data={"real_set_id": str(real_set_id)},
        files=[("files", ("g.zip", zip_bytes(entries), "application/zip"))],
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_sets_and_batches_answer_with_their_hash_kind(client) -> None:
    real_set = register(client, real_images(4))
    assert real_set["hash_kind"] == "phash"
    assert client.get(f"/real-sets/{real_set['id']}").json()["hash_kind"] == "phash"
    assert [s["hash_kind"] for s in client.get("/real-sets").json()] == ["phash"]
    batch = _match(client, real_set["id"], real_images(2, offset=40))
    assert batch["hash_kind"] == "phash"
    assert client.get(f"/match/{batch['batch_id']}").json()["hash_kind"] == "phash"


def test_downgrade_from_0004_keeps_rows_and_refuses_other_kinds(client, settings) -> None:
    """Going back to 0003 drops the hash_kind columns and keeps every set and batch; it
    refuses while a set of another kind exists; a downgrade that a later step refuses leaves
    the schema as it was (also on SQLite, whose DDL outside a transaction commits at once)."""
    from alembic import command
    from sqlalchemy import func, inspect, select, text, update

    from app.db.migrate import alembic_config, schema_status, upgrade_to_head
    from app.db.models import GeneratedImage, MatchBatch, RealImage, RealSet

    real_set = register(client, real_images(5))
    batch = _match(client, real_set["id"], real_images(3, offset=60))
    engine = client.app.state.engine
    config = alembic_config(settings.migrations_dir, engine.url.render_as_string(False))

    def downgrade(revision: str) -> None:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, revision)

    def counts() -> tuple[int, ...]:
        with engine.connect() as connection:
            return tuple(
                connection.scalar(select(func.count()).select_from(model))
                for model in (RealSet, RealImage, MatchBatch, GeneratedImage)
            )

    def columns(table: str) -> set[str]:
        return {c["name"] for c in inspect(engine).get_columns(table)}

    with engine.begin() as connection:
        connection.execute(update(RealSet).values(hash_kind="other"))
    with pytest.raises(RuntimeError, match="kind other than phash"):
        downgrade("0003")
    with engine.begin() as connection:
        connection.execute(update(RealSet).values(hash_kind="phash"))
        connection.execute(
            update(MatchBatch)
            .where(MatchBatch.id == batch["batch_id"])
            .values(real_summary_packed=b"x")
        )
    with pytest.raises(RuntimeError, match="delete those batches"):
        downgrade("0002")  # 0004's step ran, 0003's refused: all of it rolled back
    current, head = schema_status(engine, settings.migrations_dir)
    assert current == head
    assert "hash_kind" in columns("real_sets") and "hash_kind" in columns("match_batches")
    with engine.begin() as connection:
        connection.execute(update(MatchBatch).values(real_summary_packed=None))

    before = counts()
    assert before == (1, 5, 1, 3)
    downgrade("0003")
    assert schema_status(engine, settings.migrations_dir)[0] == "0003"
    assert "hash_kind" not in columns("real_sets") | columns("match_batches")
    assert counts() == before
    upgrade_to_head(engine, settings.migrations_dir)
    with engine.connect() as connection:
        kinds = connection.execute(
            text("SELECT hash_kind FROM real_sets UNION ALL SELECT hash_kind FROM match_batches")
        ).scalars()
        assert list(kinds) == ["phash", "phash"]


def test_hashers_hash_grayscale_uint8_of_any_shape() -> None:
    """Every registered kind gives one row of bits_per_hash bits per image, whatever its size."""
    rng = np.random.default_rng(5)
    pixels = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((40, 70), (64, 64))]
    for hasher in HASHERS.values():
        for size in hasher.sizes:
            bits = hasher.hash_bits(pixels, size)
            assert bits.shape == (2, hasher.bits_per_hash(size)) and bits.dtype == bool
