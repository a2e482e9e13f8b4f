"""Membership classification: gather real (and generated) pixels, score, persist, read back."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.bulk import insert_rows
from app.db.models import Classification, ClassificationResult, GeneratedImage, MatchBatch
from app.db.models import RealImage as RealImageRow
from app.imaging.decode import decode_grayscale
from app.imaging.features import (
    THUMBNAIL_SIDE,
    Keypoints,
    normalise_thumbnails,
    sift_keypoints,
    thumbnail_pixels,
)
from app.scoring.base import ScoreResult
from app.scoring.images import ImageSource
from app.services.ingest import HashedImage
from app.storage import FeatureStore, ImageStore

log = logging.getLogger("memaudit.classify")


class ClassificationNotFound(LookupError):
    def __init__(self, classification_id: int) -> None:
        super().__init__(f"classification {classification_id} does not exist")


class MissingImages(LookupError):
    """Stored image bytes are gone (image store not shared, or cleaned)."""


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A stored image as scorers need it: its name, its bytes' digest, its thumbnail."""

    filename: str
    sha256: str | None
    thumbnail: bytes | None = None

    @classmethod
    def of(cls, image: HashedImage) -> ImageRef:
        """An image just uploaded (hashed, stored, not yet in the database)."""
        return cls(image.filename, image.sha256, image.thumbnail)


#: SIFT keypoints as app.imaging.features computes them; bump when its parameters change.
SIFT_FEATURE_KIND = "sift-v1"


class StoredImages(ImageSource):
    """Images in the image store: thumbnails from the database (computed at upload), SIFT
    keypoints from the feature cache, pixels decoded only for the images that need them."""

    def __init__(
        self,
        store: ImageStore,
        refs: Sequence[ImageRef],
        max_pixels: int,
        features: FeatureStore | None = None,
    ) -> None:
        without_bytes = sum(1 for r in refs if r.sha256 is None)
        if without_bytes:
            raise MissingImages(
                f"{without_bytes} image(s) were registered by hash only and have no pixels; "
                "this method needs the images themselves"
            )
        missing = [r.sha256 for r in refs if not store.has(r.sha256)]
        if missing:
            raise MissingImages(
                f"{len(missing)} image(s) are not in the image store "
                f"({store.root}); register or upload them again"
            )
        self._store = store
        self._refs = list(refs)
        self._max_pixels = max_pixels
        self._features = features

    def __len__(self) -> int:
        return len(self._refs)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return decode_grayscale(self._store.get(self._refs[index].sha256), self._max_pixels)

    def thumbnails(self) -> np.ndarray:
        side = THUMBNAIL_SIDE * THUMBNAIL_SIDE
        stored = [r.thumbnail for r in self._refs]
        if all(t is not None and len(t) == side for t in stored):
            pixels = np.frombuffer(b"".join(stored), np.uint8).reshape(len(stored), side)
            return normalise_thumbnails(pixels)
        pixels = np.empty((len(self._refs), side), np.uint8)
        for i, thumb in enumerate(stored):
            if thumb is not None and len(thumb) == side:
                pixels[i] = np.frombuffer(thumb, np.uint8)
            else:  # stored before thumbnails were kept
                pixels[i] = thumbnail_pixels(self[i]).ravel()
        return normalise_thumbnails(pixels)

    def keypoints(self, index: int) -> Keypoints:
        sha256 = self._refs[index].sha256
        if self._features is not None:
            cached = self._features.load(SIFT_FEATURE_KIND, sha256)
            if cached is not None:
                return Keypoints.from_arrays(cached)
        keypoints = sift_keypoints(self[index])
        if self._features is not None:
            self._features.save(SIFT_FEATURE_KIND, sha256, keypoints.to_arrays())
        return keypoints


def real_set_images(session: Session, real_set_id: int) -> list[ImageRef]:
    return _image_refs(session, RealImageRow, RealImageRow.real_set_id, real_set_id)


def batch_images(session: Session, batch_id: int) -> list[ImageRef] | None:
    if session.get(MatchBatch, batch_id) is None:
        return None
    return _image_refs(session, GeneratedImage, GeneratedImage.batch_id, batch_id)


def _image_refs(session: Session, model, owner_column, owner_id: int) -> list[ImageRef]:
    """A set's or batch's images in upload order (no pixels: those are read on demand)."""
    rows = session.execute(
        select(model.filename, model.sha256, model.thumbnail)
        .where(owner_column == owner_id)
        .order_by(model.position)
    ).all()
    return [ImageRef(r.filename, r.sha256, r.thumbnail) for r in rows]


def save_classification(
    session: Session,
    method: str,
    real_names: list[str],
    result: ScoreResult,
    *,
    real_set_id: int | None,
    batch_id: int | None,
    generated_count: int,
    rejected: list[dict],
    elapsed_seconds: float,
) -> dict:
    labels = result.labels
    row = Classification(
        method=method,
        real_set_id=real_set_id,
        batch_id=batch_id,
        threshold=float(result.threshold),
        threshold_reason=result.threshold_reason,
        models=[asdict(m) for m in result.models],
        real_count=len(real_names),
        generated_count=generated_count,
        used_count=int(labels.sum()),
        rejected=rejected,
        elapsed_seconds=elapsed_seconds,
    )
    session.add(row)
    session.flush()
    insert_rows(
        session,
        ClassificationResult,
        ("classification_id", "position", "filename", "score", "label", "components"),
        (
            (
                row.id,
                i,
                name,
                float(result.scores[i]),
                "used" if labels[i] else "unused",
                {k: float(v[i]) for k, v in result.components.items()},
            )
            for i, name in enumerate(real_names)
        ),
    )
    return load_classification(session, row.id)


def load_classification(session: Session, classification_id: int) -> dict:
    row = session.get(Classification, classification_id)
    if row is None:
        raise ClassificationNotFound(classification_id)
    results = session.scalars(
        select(ClassificationResult)
        .where(ClassificationResult.classification_id == classification_id)
        .order_by(ClassificationResult.position)
    ).all()
    return {
        "classification_id": row.id,
        "method": row.method,
        "real_set_id": row.real_set_id,
        "batch_id": row.batch_id,
        "models": row.models,
        "threshold": row.threshold,
        "threshold_reason": row.threshold_reason,
        "real_count": row.real_count,
        "generated_count": row.generated_count,
        "used_count": row.used_count,
        "created_at": row.created_at,
        "elapsed_seconds": row.elapsed_seconds,
        "results": [
            {
                "filename": r.filename,
                "score": r.score,
                "label": r.label,
                "components": r.components or {},
            }
            for r in results
        ],
        "rejected": row.rejected,
    }


def classification_csv(document: dict) -> str:
    out = io.StringIO()
    keys = sorted({k for r in document["results"] for k in r["components"]})
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["filename", "score", "label", *keys])
    for r in document["results"]:
        writer.writerow(
            [
                r["filename"],
                f"{r['score']:.6g}",
                r["label"],
                *(r["components"].get(k) for k in keys),
            ]
        )
    return out.getvalue()


def classification_imageclef(document: dict) -> str:
    """ImageCLEFmedical GANs submission lines: `<image id>,<1 used | 0 unused>`."""
    return "".join(
        f"{PurePosixPath(r['filename']).stem},{1 if r['label'] == 'used' else 0}\n"
        for r in document["results"]
    )
