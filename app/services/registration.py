"""The real-set workflows: register a set (images or precomputed hashes), add to it, delete it.

Each takes validated input, runs one transaction and returns what it stored; the hash cache
forgets a set whenever its hashes change.
"""

from __future__ import annotations

from typing import BinaryIO

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.db.models import RealImage, RealSet
from app.db.session import transaction
from app.imaging.windowing import Window
from app.services import hash_import, jobs, real_sets
from app.services.errors import Conflict, InvalidInput
from app.services.ingest import ImageIngest, IngestResult
from app.services.intake import ImageIntake
from app.services.retention import HeldImages, ImageRetention
from app.services.set_hash_cache import SetHashCache

CONCURRENT_ADD = "the set changed while uploading (concurrent add); retry"


def calibration_config(settings: Settings) -> real_sets.CalibrationConfig:
    return real_sets.CalibrationConfig(
        settings.calibration_quantile, settings.min_calibration_images
    )


#: Why an upload to a real set stored nothing.
NO_USABLE_NEW_IMAGE = "none of the uploaded files is a usable new image"


def no_usable_images(upload: IngestResult) -> InvalidInput:
    return InvalidInput(
        NO_USABLE_NEW_IMAGE,
        {
            "message": NO_USABLE_NEW_IMAGE,
            "rejected": upload.rejected_json(),
            "duplicates": upload.duplicates_json(),
        },
    )


def register_images(
    sessions: sessionmaker[Session],
    name: str,
    hash_size: int,
    upload: IngestResult,
    settings: Settings,
    window: Window | None = None,
    held: HeldImages | None = None,
) -> tuple[RealSet, list[RealImage]]:
    """A new set of the uploaded images (windowed with ``window``, stored with the set;
    ``held``: the request's hold on their bytes); returns it with its images."""
    if not upload.images:
        raise no_usable_images(upload)
    with transaction(sessions) as session:
        real_set = real_sets.create_real_set(
            session, name, hash_size, upload.images, calibration_config(settings), window=window
        )
        if held is not None:
            held.require_stored(session, (i.sha256 for i in upload.images))
        images = real_sets.list_images(session, real_set.id, 0, len(upload.images))
        jobs.record_result(session, real_set.id)  # last: the job's row is locked until commit
        return real_set, images


def parse_hashes(hashes: BinaryIO, hash_size: int, settings: Settings) -> hash_import.ParsedHashes:
    parsed = hash_import.parse_hash_file(hashes, hash_size, settings.max_hashes_per_request)
    if not len(parsed):
        raise InvalidInput("the 'hashes' file has no `filename,phash_hex` line")
    return parsed


def register_hashes(
    sessions: sessionmaker[Session],
    name: str,
    hash_size: int,
    hashes: BinaryIO,
    settings: Settings,
    window: Window | None = None,
) -> tuple[RealSet, hash_import.ParsedHashes]:
    """A new set of precomputed hashes (no pixels; ``window``: the one they were computed
    with, stored for later image uploads); all lines or nothing."""
    parsed = parse_hashes(hashes, hash_size, settings)
    with transaction(sessions) as session:
        real_set = hash_import.create_hash_set(session, name, parsed, calibration_config(settings))
        real_sets.set_window(real_set, window)
        session.flush()
        jobs.record_result(session, real_set.id)
        return real_set, parsed


def ingest_for_set(
    sessions: sessionmaker[Session],
    real_set_id: int,
    intake: ImageIntake,
    window: Window | None = None,
) -> ImageIngest:
    """The ingest of images added to a set: its hash size and window, its images already
    known (so re-uploads are duplicates and name clashes rejections); a request ``window``
    other than the set's is refused before anything is hashed or stored."""
    with sessions() as session:
        real_set = real_sets.get_real_set(session, real_set_id)
        real_sets.check_window(real_set, window)
        known_sha, known_names = real_sets.known_images(session, real_set_id)
    return intake.ingest(
        real_set.hash_size,
        known_sha,
        known_names,
        real_set.hash_kind,
        window=real_sets.window_of(real_set),
    )


def add_images(
    sessions: sessionmaker[Session],
    cache: SetHashCache,
    real_set_id: int,
    upload: IngestResult,
    settings: Settings,
    window: Window | None = None,
    held: HeldImages | None = None,
) -> tuple[RealSet, list[RealImage]]:
    """Append the uploaded images (``window``: the request's, refused unless the set's;
    ``held``: the request's hold on their bytes); returns the set and the images added."""
    try:
        with transaction(sessions) as session:
            real_set = real_sets.get_real_set(session, real_set_id, for_update=True)
            real_sets.check_window(real_set, window)
            if not upload.images:
                raise no_usable_images(upload)
            # Read under the set's lock (FOR UPDATE on PostgreSQL, the BEGIN IMMEDIATE of
            # transaction() on SQLite): the answer lists this request's images, no other's.
            start = real_set.image_count
            real_set = real_sets.add_images(
                session, real_set, upload.images, calibration_config(settings)
            )
            added = real_sets.list_images(session, real_set_id, start, len(upload.images))
            if held is not None:
                held.require_stored(session, (i.sha256 for i in upload.images))
            jobs.record_result(session, real_set_id)
    except IntegrityError:
        raise Conflict(CONCURRENT_ADD) from None
    cache.forget(real_set_id)
    return real_set, added


def add_hashes(
    sessions: sessionmaker[Session],
    cache: SetHashCache,
    real_set_id: int,
    hashes: BinaryIO,
    settings: Settings,
) -> tuple[RealSet, hash_import.ParsedHashes]:
    """Append precomputed hashes; all lines or nothing."""
    with sessions() as session:
        hash_size = real_sets.get_real_set(session, real_set_id).hash_size
    parsed = parse_hashes(hashes, hash_size, settings)
    try:
        with transaction(sessions) as session:
            real_set = real_sets.get_real_set(session, real_set_id, for_update=True)
            real_set = hash_import.append_hashes(
                session, real_set, parsed, calibration_config(settings)
            )
            jobs.record_result(session, real_set_id)
    except IntegrityError:
        raise Conflict(CONCURRENT_ADD) from None
    cache.forget(real_set_id)
    return real_set, parsed


def delete_set(
    sessions: sessionmaker[Session],
    cache: SetHashCache,
    retention: ImageRetention,
    real_set_id: int,
) -> None:
    """Delete the set's rows (hashes, thumbnails, embeddings), then, once that is committed,
    the stored bytes of its images that no other set or batch holds. Batches and
    classifications made against it stay, with ``real_set_id`` null."""
    with transaction(sessions) as session:
        digests = real_sets.delete_real_set(session, real_set_id)
    cache.forget(real_set_id)
    retention.remove_unreferenced(digests)
