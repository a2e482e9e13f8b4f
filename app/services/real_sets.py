"""Persistence of real sets: create, extend, read, delete; calibration kept up to date.

Every write runs inside the caller's transaction, so a failure anywhere leaves the database
as it was (nothing half-registered).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sqlalchemy import case, delete, func, select, update
from sqlalchemy.orm import Session

from app.db.bulk import insert_rows
from app.db.models import RealImage, RealSet, utcnow
from app.imaging.hashers import DEFAULT_HASH_KIND
from app.imaging.windowing import Window, describe_windowing
from app.search.calibration import calibrate
from app.search.copies import DESCRIPTOR_TAG_BYTES, UNTAGGED_MODEL
from app.services.errors import InvalidInput, NotFound
from app.services.ingest import HashedImage
from app.services.source_matching import words_from_hex


class RealSetNotFound(NotFound):
    def __init__(self, real_set_id: int) -> None:
        super().__init__(f"real set {real_set_id} does not exist")
        self.real_set_id = real_set_id


@dataclass(frozen=True)
class CalibrationConfig:
    quantile: float
    min_images: int


def get_real_set(session: Session, real_set_id: int, *, for_update: bool = False) -> RealSet:
    stmt = select(RealSet).where(RealSet.id == real_set_id)
    if for_update:
        stmt = stmt.with_for_update()
    real_set = session.scalars(stmt).first()
    if real_set is None:
        raise RealSetNotFound(real_set_id)
    return real_set


def window_of(real_set: RealSet) -> Window | None:
    """The set's window (None: automatic windowing)."""
    if real_set.window_center is None or real_set.window_width is None:
        return None
    return Window(real_set.window_center, real_set.window_width)


def set_window(real_set: RealSet, window: Window | None) -> None:
    real_set.window_center = None if window is None else window.center
    real_set.window_width = None if window is None else window.width


def check_window(real_set: RealSet, requested: Window | None) -> None:
    """An upload to a set (or /match against it) may repeat the set's window, never change
    it: the window is part of every windowed image's fingerprint."""
    if requested is None:
        return
    current = window_of(real_set)
    if requested != current:
        raise InvalidInput(
            f"real set {real_set.id} is windowed with {describe_windowing(current)}, and "
            "every upload to it and /match against it uses that window (it is part of the "
            f"fingerprints); this request asks for {requested.describe()}: send the set's "
            "window_center and window_width or none, or register a new set"
        )


def list_real_sets(session: Session) -> list[RealSet]:
    return list(session.scalars(select(RealSet).order_by(RealSet.id)))


def list_images(session: Session, real_set_id: int, offset: int, limit: int) -> list[RealImage]:
    return list(
        session.scalars(
            select(RealImage)
            .where(RealImage.real_set_id == real_set_id)
            .order_by(RealImage.position)
            .offset(offset)
            .limit(limit)
        )
    )


def descriptor_counts(session: Session, real_set_id: int) -> dict[str | None, int]:
    """How many of the set's images have a copy-detection descriptor of each embedding
    (app.search.copies.model_tag; None: no descriptor), counted in SQL from the descriptors'
    tags without reading them (an untagged descriptor has an even length)."""
    tagged = func.length(RealImage.embedding) % 2 == 1
    tag = case((tagged, func.substr(RealImage.embedding, 2, DESCRIPTOR_TAG_BYTES - 1)))
    present = RealImage.embedding.is_not(None)
    rows = session.execute(
        select(present, tag, func.count())
        .where(RealImage.real_set_id == real_set_id)
        .group_by(present, tag)
    ).all()
    counts: dict[str | None, int] = {}
    for has, prefix, count in rows:
        model = None if not has else UNTAGGED_MODEL if prefix is None else bytes(prefix).hex()
        counts[model] = counts.get(model, 0) + count
    return counts


def known_images(session: Session, real_set_id: int) -> tuple[dict[str, str], set[str]]:
    """(sha256 -> filename, filenames) of the images already in a set."""
    rows = session.execute(
        select(RealImage.sha256, RealImage.filename).where(RealImage.real_set_id == real_set_id)
    ).all()
    return {r.sha256: r.filename for r in rows}, {r.filename for r in rows}


def _insert_images(session: Session, real_set_id: int, start: int, images: list[HashedImage]):
    """Within the caller's transaction; COPY on PostgreSQL (see bench_pg_register)."""
    now = utcnow()
    columns = (
        "real_set_id",
        "position",
        "filename",
        "sha256",
        "phash",
        "width",
        "height",
        "thumbnail",
        "embedding",
        "created_at",
    )
    rows = (
        (
            real_set_id,
            start + i,
            img.filename,
            img.sha256,
            img.phash,
            img.width,
            img.height,
            img.thumbnail,
            img.embedding,
            now,
        )
        for i, img in enumerate(images)
    )
    insert_rows(session, RealImage, columns, rows)


def recalibrate(
    session: Session,
    real_set: RealSet,
    config: CalibrationConfig,
    words: np.ndarray | None = None,
) -> None:
    """Calibrate the set's threshold on its hashes: ``words`` when the caller has all of them
    packed already (a new set), else read back from the database."""
    if words is None:
        hexes = session.scalars(
            select(RealImage.phash)
            .where(RealImage.real_set_id == real_set.id)
            .order_by(RealImage.position)
        ).all()
        words = words_from_hex(hexes, real_set.hash_size)
    result = calibrate(words, config.quantile, config.min_images, real_set.hash_size)
    real_set.calibrated_threshold = result.threshold if result else None
    real_set.calibration = result.as_json() if result else None


def image_sha256s(session: Session, real_set_id: int) -> list[str | None]:
    """The set's image digests in registration order (None: registered by hash alone)."""
    return list(
        session.scalars(
            select(RealImage.sha256)
            .where(RealImage.real_set_id == real_set_id)
            .order_by(RealImage.position)
        )
    )


#: The key of copy verification's inlier bar in a set's calibration.
COPY_VERIFICATION = "copy_verification"


def copy_verification_bar(real_set: RealSet) -> dict | None:
    """Copy verification's stored inlier bar (app.services.copy_verification.InlierBar)."""
    return (real_set.calibration or {}).get(COPY_VERIFICATION)


def keep_copy_verification(real_set: RealSet, bar: dict) -> None:
    """Store copy verification's inlier bar with the set's calibration (replaced, as the
    rest of it, when images are added)."""
    if real_set.calibration is not None:
        real_set.calibration = {**real_set.calibration, COPY_VERIFICATION: bar}


def drop_copy_verification(real_set: RealSet) -> None:
    """Forget the stored inlier bar (measured on descriptors since replaced)."""
    if real_set.calibration and COPY_VERIFICATION in real_set.calibration:
        real_set.calibration = {
            k: v for k, v in real_set.calibration.items() if k != COPY_VERIFICATION
        }


def create_real_set(
    session: Session,
    name: str,
    hash_size: int,
    images: list[HashedImage],
    calibration: CalibrationConfig,
    hash_kind: str = DEFAULT_HASH_KIND,
    window: Window | None = None,
) -> RealSet:
    real_set = RealSet(
        name=name, hash_kind=hash_kind, hash_size=hash_size, image_count=len(images), revision=1
    )
    set_window(real_set, window)
    session.add(real_set)
    session.flush()
    _insert_images(session, real_set.id, 0, images)
    recalibrate(
        session, real_set, calibration, words_from_hex([i.phash for i in images], hash_size)
    )
    session.flush()
    return real_set


def add_images(
    session: Session,
    real_set: RealSet,
    images: list[HashedImage],
    calibration: CalibrationConfig,
) -> RealSet:
    """Append images (already de-duplicated against the set) and bump the revision."""
    if not images:
        return real_set
    return append_rows(
        session,
        real_set,
        len(images),
        lambda start: _insert_images(session, real_set.id, start, images),
        calibration,
    )


def append_rows(
    session: Session,
    real_set: RealSet,
    count: int,
    insert: Callable[[int], None],
    calibration: CalibrationConfig,
) -> RealSet:
    """Append ``count`` rows that ``insert(first position)`` writes, bump the revision (so
    every replica's hash cache reloads) and recalibrate: shared by images and hash imports."""
    start = session.scalar(
        select(func.coalesce(func.max(RealImage.position) + 1, 0)).where(
            RealImage.real_set_id == real_set.id
        )
    )
    insert(int(start))
    session.execute(
        update(RealSet)
        .where(RealSet.id == real_set.id)
        .values(
            image_count=RealSet.image_count + count,
            revision=RealSet.revision + 1,
            updated_at=utcnow(),
        )
    )
    session.refresh(real_set)
    recalibrate(session, real_set, calibration)
    session.flush()
    return real_set


def delete_real_set(session: Session, real_set_id: int) -> list[str]:
    """Delete the set and its images; the SHA-256 of the images' stored bytes (read under
    the set's lock, so an append committing meanwhile is in them)."""
    get_real_set(session, real_set_id, for_update=True)
    digests = list(
        session.scalars(
            select(RealImage.sha256)
            .where(RealImage.real_set_id == real_set_id, RealImage.sha256.is_not(None))
            .distinct()
        )
    )
    session.execute(delete(RealImage).where(RealImage.real_set_id == real_set_id))
    session.execute(delete(RealSet).where(RealSet.id == real_set_id))
    return digests
