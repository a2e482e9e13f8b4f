"""Membership classification: gather real (and generated) pixels, score, persist, read back."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import PurePosixPath

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app.db.models import Classification, ClassificationResult, GeneratedImage, MatchBatch
from app.db.models import RealImage as RealImageRow
from app.imaging.decode import decode_grayscale
from app.scoring.base import ScoreResult
from app.storage import ImageStore

log = logging.getLogger("memaudit.classify")
_INSERT_CHUNK = 5000


class ClassificationNotFound(LookupError):
    def __init__(self, classification_id: int) -> None:
        super().__init__(f"classification {classification_id} does not exist")


class MissingImages(LookupError):
    """Stored image bytes are gone (image store not shared, or cleaned)."""


class StoredImages(Sequence[np.ndarray]):
    """Grayscale pixels of stored images, decoded on access so memory stays flat."""

    def __init__(self, store: ImageStore, sha256s: list[str], max_pixels: int) -> None:
        missing = [s for s in sha256s if not store.has(s)]
        if missing:
            raise MissingImages(
                f"{len(missing)} image(s) are not in the image store "
                f"({store.root}); register or upload them again"
            )
        self._store = store
        self._shas = sha256s
        self._max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self._shas)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return decode_grayscale(self._store.get(self._shas[index]), self._max_pixels)


def real_set_images(session: Session, real_set_id: int) -> list[tuple[str, str]]:
    return _names_and_digests(session, RealImageRow, RealImageRow.real_set_id, real_set_id)


def batch_images(session: Session, batch_id: int) -> list[tuple[str, str]] | None:
    if session.get(MatchBatch, batch_id) is None:
        return None
    return _names_and_digests(session, GeneratedImage, GeneratedImage.batch_id, batch_id)


def _names_and_digests(session: Session, model, owner_column, owner_id: int):
    """(filename, sha256) of a set's or batch's images, in upload order."""
    rows = session.execute(
        select(model.filename, model.sha256)
        .where(owner_column == owner_id)
        .order_by(model.position)
    ).all()
    return [(r.filename, r.sha256) for r in rows]


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
    rows = [
        {
            "classification_id": row.id,
            "position": i,
            "filename": name,
            "score": float(result.scores[i]),
            "label": "used" if labels[i] else "unused",
            "components": {k: float(v[i]) for k, v in result.components.items()},
        }
        for i, name in enumerate(real_names)
    ]
    for lo in range(0, len(rows), _INSERT_CHUNK):
        session.execute(insert(ClassificationResult), rows[lo : lo + _INSERT_CHUNK])
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
