"""Membership classification: gather real (and generated) pixels, score, persist, read back."""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, load_only, sessionmaker

from app.config import Settings
from app.db.bulk import insert_rows
from app.db.models import (
    Classification,
    ClassificationResult,
    GeneratedImage,
    MatchBatch,
    RealSet,
)
from app.db.models import RealImage as RealImageRow
from app.db.session import transaction
from app.imaging.decode import decode_grayscale
from app.imaging.features import (
    THUMBNAIL_SIDE,
    Keypoints,
    normalise_thumbnails,
    sift_keypoints,
    thumbnail_pixels,
)
from app.imaging.phash import hex_to_bytes
from app.scoring.base import Scorer, ScoreResult
from app.scoring.images import Embedder, ImageSource
from app.scoring.methods import ScoringContext, build_scorer
from app.search.calibration import Threshold, resolve_threshold
from app.search.copies import unit_vectors
from app.services import batches, jobs, real_sets
from app.services.errors import Conflict, InvalidInput, NotFound, Unavailable
from app.services.filenames import one_line, spreadsheet_cell
from app.services.ingest import HashedImage, IngestResult
from app.services.retention import HeldImages
from app.storage import FeatureStore, ImageStore

log = logging.getLogger("memaudit.classify")


class ClassificationNotFound(NotFound):
    def __init__(self, classification_id: int) -> None:
        super().__init__(f"classification {classification_id} does not exist")


#: The 409 of a /classify whose set or batch a DELETE removed before its result was stored.
DELETED_WHILE_SCORING = "the real set or batch was deleted while scoring; nothing was stored"


class MissingImages(Conflict):
    """Stored image bytes are gone (image store not shared, or cleaned)."""


class NoPixels(Conflict):
    """A set registered by hash alone has no pixels for a method that needs them."""


@dataclass(frozen=True)
class ClassifyRequest:
    """Which real images to score (a set, or uploaded files), against which generated ones
    (a /match batch, or uploaded files), with which method; ``threshold`` overrides the
    method's own."""

    method: str = "reference"
    real_set_id: int | None = None
    batch_id: int | None = None
    threshold: float | None = None


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A stored image as scorers need it: its name, its bytes' digest, its thumbnail."""

    filename: str
    sha256: str | None
    thumbnail: bytes | None = None
    #: Copy-detection descriptor computed at upload (float16 bytes), or None.
    embedding: bytes | None = None
    #: Its pHash as stored (hex, at its set's or batch's hash size), or None.
    phash: str | None = None

    @classmethod
    def of(cls, image: HashedImage) -> ImageRef:
        """An image just uploaded (hashed, stored, not yet in the database)."""
        return cls(image.filename, image.sha256, image.thumbnail, image.embedding, image.phash)


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
            # The store's path is for the log, not for the client.
            log.warning("%d image(s) missing from the image store %s", len(missing), store.root)
            raise MissingImages(
                f"{len(missing)} image(s) are not in the image store; register or upload them again"
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

    def embeddings(self, embedder: Embedder | None) -> np.ndarray | None:
        """The descriptors stored at upload; computed by ``embedder`` when any is missing or
        came from another embedding than it. None without an embedder: which embedding the
        other side's descriptors came from would be unknown."""
        if embedder is None:
            return None
        stored = unit_vectors([r.embedding for r in self._refs], embedder.info.sha256)
        return stored if stored is not None else super().embeddings(embedder)

    def phash_bits(self, indices: Sequence[int], hash_size: int) -> np.ndarray:
        """The pHashes stored at upload where they are of ``hash_size``; the others (a set
        hashed at another size) from pixels."""
        nbytes = hash_size * hash_size // 8
        stored = [self._refs[i].phash for i in indices]
        if all(h is not None and len(h) == 2 * nbytes for h in stored):
            packed = hex_to_bytes(stored, hash_size)  # type: ignore[arg-type]
            return np.unpackbits(packed, axis=1).astype(bool)
        return super().phash_bits(indices, hash_size)

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


def classify(
    sessions: sessionmaker[Session],
    request: ClassifyRequest,
    real_upload: IngestResult,
    generated_upload: IngestResult | None,
    *,
    models,
    images: ImageStore,
    features: FeatureStore,
    settings: Settings,
    started: float,
    held: HeldImages | None = None,
) -> dict:
    """Score the real images (a set's or uploaded) against the generated ones (a batch's or
    uploaded) with the request's method; store and return the classification. ``held``:
    the request's hold, which keeps a set's or batch's bytes while they are scored (the
    uploaded ones are only scored: no row keeps them, they go when the request ends)."""
    if request.real_set_id is not None and real_upload.images:
        raise InvalidInput("send either real_set_id or real 'files', not both")
    if request.batch_id is not None and generated_upload is not None:
        raise InvalidInput("send either batch_id or 'generated_files', not both")
    with sessions() as session:
        scorer = _scorer(session, request, models, settings)
        real = _real_refs(session, request, real_upload)
        generated = _generated_refs(session, request, generated_upload)
    if not real:
        raise InvalidInput(
            "no real images",
            {
                "message": "no real images: give real_set_id or upload real 'files'",
                "rejected": real_upload.rejected_json(),
            },
        )
    if scorer.needs_generated and not generated:
        raise InvalidInput(
            "no generated images",
            {
                "message": f"method {request.method!r} compares with the generator's output: "
                "give a batch_id from /match or upload usable 'generated_files'",
                "rejected": generated_upload.rejected_json() if generated_upload else [],
            },
        )
    if held is not None:  # a DELETE meanwhile leaves them until scored (checked below)
        held.hold(ref.sha256 for ref in (*real, *generated) if ref.sha256 is not None)
    real_px = StoredImages(images, real, settings.max_image_pixels, features)
    gen_px = StoredImages(images, generated, settings.max_image_pixels, features)
    log.info("classify %s: %d real, %d generated", request.method, len(real), len(generated))
    result = scorer.score(
        real_px,
        gen_px if scorer.needs_generated else None,
        progress=_progress_logger(request.method),
    )
    if request.threshold is not None:
        result = result.with_threshold(request.threshold)
    rejected = real_upload.rejected_json() + (
        generated_upload.rejected_json() if generated_upload else []
    )
    try:
        with transaction(sessions) as session:
            return save_classification(
                session,
                request.method,
                [ref.filename for ref in real],
                result,
                real_set_id=request.real_set_id,
                batch_id=request.batch_id,
                generated_names=[ref.filename for ref in generated],
                rejected=rejected,
                elapsed_seconds=time.perf_counter() - started,
            )
    except IntegrityError:
        raise Conflict(DELETED_WHILE_SCORING) from None


def _scorer(session: Session, request: ClassifyRequest, models, settings: Settings) -> Scorer:
    """The request's method, given what it needs: the pHash rule the threshold the batch
    applied (else the set's calibrated one), the reference auditor the request's threshold
    as its early-stop bar."""
    hash_size, match_threshold = 16, None
    if request.batch_id is not None:
        batch = session.get(MatchBatch, request.batch_id)
        if batch is not None:
            hash_size = batch.hash_size
            match_threshold = Threshold(
                batch.threshold,
                batch.threshold_source,  # type: ignore[arg-type]
                f"the threshold match batch {batch.id} used ({batch.threshold_source})",
            )
    elif request.real_set_id is not None:
        real_set = session.get(RealSet, request.real_set_id)  # a missing one: 404 later
        if real_set is not None:
            hash_size = real_set.hash_size
        if real_set is not None and real_set.calibration:
            match_threshold = resolve_threshold(
                hash_size,
                real_set.image_count,
                settings.min_calibration_images,
                real_set.calibration,
            )
    context = ScoringContext(
        artifacts=models,
        requested_threshold=request.threshold,
        match_threshold=match_threshold,
        hash_size=hash_size,
        calibration_quantile=settings.calibration_quantile,
        min_calibration_images=settings.min_calibration_images,
    )
    try:
        return build_scorer(request.method, context)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    except LookupError as exc:
        raise Unavailable(str(exc)) from None


def _real_refs(session: Session, request: ClassifyRequest, upload: IngestResult) -> list[ImageRef]:
    if request.real_set_id is None:
        return [ImageRef.of(i) for i in upload.images]
    real_sets.get_real_set(session, request.real_set_id)
    without_pixels = hash_only_count(session, request.real_set_id)
    if without_pixels:
        raise NoPixels(no_pixels_message(request.real_set_id, without_pixels, request.method))
    return real_set_images(session, request.real_set_id)


def _generated_refs(
    session: Session, request: ClassifyRequest, upload: IngestResult | None
) -> list[ImageRef]:
    if request.batch_id is not None:
        found = batch_images(session, request.batch_id)
        if found is None:
            raise batches.BatchNotFound(request.batch_id)
        return found
    return [ImageRef.of(i) for i in upload.images] if upload is not None else []


def _progress_logger(method: str) -> Callable[[str, int, int], None]:
    """Log long scoring runs every 10% so an operator can follow them (and a job's
    client: its progress shows the stage)."""
    last: dict[str, int] = {}

    def report(stage: str, done: int, total: int) -> None:
        jobs.report_progress(stage, done, total)
        step = max(total // 10, 1)
        if done == total or done // step != last.get(stage, -1):
            last[stage] = done // step
            log.info("classify %s: %s %d/%d", method, stage, done, total)

    return report


def hash_only_count(session: Session, real_set_id: int) -> int:
    """Images of a set that were registered by hash alone (no bytes in the image store)."""
    return session.scalar(
        select(func.count())
        .select_from(RealImageRow)
        .where(RealImageRow.real_set_id == real_set_id, RealImageRow.sha256.is_(None))
    )


def no_pixels_message(real_set_id: int, count: int, method: str) -> str:
    return (
        f"real set {real_set_id} has {count} image(s) registered by hash only (POST "
        f"/real-sets with 'hashes'), so there are no pixels for method {method!r}. Register "
        "the images themselves to classify them, or use POST /match, which needs only the "
        "hashes (its real_summary gives the pHash rule's used/unused verdicts)."
    )


def real_set_images(session: Session, real_set_id: int) -> list[ImageRef]:
    return _image_refs(session, RealImageRow, RealImageRow.real_set_id, real_set_id)


def batch_images(session: Session, batch_id: int) -> list[ImageRef] | None:
    if session.get(MatchBatch, batch_id) is None:
        return None
    return _image_refs(session, GeneratedImage, GeneratedImage.batch_id, batch_id)


def _image_refs(session: Session, model, owner_column, owner_id: int) -> list[ImageRef]:
    """A set's or batch's images in upload order (no pixels: those are read on demand)."""
    rows = session.execute(
        select(model.filename, model.sha256, model.thumbnail, model.embedding, model.phash)
        .where(owner_column == owner_id)
        .order_by(model.position)
    ).all()
    return [ImageRef(r.filename, r.sha256, r.thumbnail, r.embedding, r.phash) for r in rows]


def save_classification(
    session: Session,
    method: str,
    real_names: list[str],
    result: ScoreResult,
    *,
    real_set_id: int | None,
    batch_id: int | None,
    generated_names: list[str],
    rejected: list[dict],
    elapsed_seconds: float,
) -> dict:
    labels = result.labels
    evidence = named_evidence(result.evidence, generated_names, len(real_names))
    row = Classification(
        method=method,
        real_set_id=real_set_id,
        batch_id=batch_id,
        threshold=float(result.threshold),
        threshold_reason=result.threshold_reason,
        models=[asdict(m) for m in result.models],
        real_count=len(real_names),
        generated_count=len(generated_names),
        used_count=int(labels.sum()),
        rejected=rejected,
        elapsed_seconds=elapsed_seconds,
    )
    session.add(row)
    session.flush()
    insert_rows(
        session,
        ClassificationResult,
        ("classification_id", "position", "filename", "score", "label", "components", "evidence"),
        (
            (
                row.id,
                i,
                name,
                float(result.scores[i]),
                "used" if labels[i] else "unused",
                {k: float(v[i]) for k, v in result.components.items()},
                evidence[i],
            )
            for i, name in enumerate(real_names)
        ),
    )
    document = load_classification(session, row.id)
    jobs.record_result(session, row.id)  # last: the job's row is locked until the commit
    return document


def named_evidence(
    evidence: list[list[dict]] | None, generated_names: list[str], real_count: int
) -> list[list[dict]]:
    """The scorer's evidence with each generated image named by its file (not its index)."""
    if evidence is None:
        return [[] for _ in range(real_count)]
    return [
        [
            {"generated": generated_names[item["generated_index"]], **_figures(item)}
            for item in items
        ]
        for items in evidence
    ]


def _figures(item: dict) -> dict:
    return {k: v for k, v in item.items() if k != "generated_index"}


def load_classification(session: Session, classification_id: int) -> dict:
    found = session.execute(
        select(Classification, RealSet.name)
        .outerjoin(RealSet, RealSet.id == Classification.real_set_id)
        .where(Classification.id == classification_id)
    ).first()
    if found is None:
        raise ClassificationNotFound(classification_id)
    row, real_set_name = found
    results = session.scalars(
        select(ClassificationResult)
        .where(ClassificationResult.classification_id == classification_id)
        .order_by(ClassificationResult.position)
    ).all()
    return {
        **classification_summary(row, real_set_name),
        "models": row.models,
        "results": [
            {
                "filename": r.filename,
                "score": r.score,
                "label": r.label,
                "components": r.components or {},
                "evidence": r.evidence or [],
            }
            for r in results
        ],
        "rejected": row.rejected,
    }


def delete_classification(sessions: sessionmaker[Session], classification_id: int) -> None:
    """Delete a stored classification and its per-image scores. It keeps no image bytes of
    its own: uploaded images were removed when its request ended."""
    with transaction(sessions) as session:
        if session.get(Classification, classification_id) is None:
            raise ClassificationNotFound(classification_id)
        session.execute(
            delete(ClassificationResult).where(
                ClassificationResult.classification_id == classification_id
            )
        )
        session.execute(delete(Classification).where(Classification.id == classification_id))


def classification_summary(row: Classification, real_set_name: str | None) -> dict:
    """What GET /classify lists per classification: everything but the per-image rows."""
    return {
        "classification_id": row.id,
        "method": row.method,
        "real_set_id": row.real_set_id,
        "real_set_name": real_set_name,
        "batch_id": row.batch_id,
        "threshold": row.threshold,
        "threshold_reason": row.threshold_reason,
        "real_count": row.real_count,
        "generated_count": row.generated_count,
        "used_count": row.used_count,
        "created_at": row.created_at,
        "elapsed_seconds": row.elapsed_seconds,
    }


def list_classifications(
    session: Session, real_set_id: int | None, batch_id: int | None, offset: int, limit: int
) -> dict:
    """One page of stored classifications, newest first, optionally of one real set and/or
    one match batch; counts and the page come from SQL."""
    where = []
    if real_set_id is not None:
        where.append(Classification.real_set_id == real_set_id)
    if batch_id is not None:
        where.append(Classification.batch_id == batch_id)
    total = session.scalar(select(func.count()).select_from(Classification).where(*where))
    page = session.execute(
        select(Classification, RealSet.name)
        .options(load_only(*SUMMARY_COLUMNS))
        .outerjoin(RealSet, RealSet.id == Classification.real_set_id)
        .where(*where)
        .order_by(Classification.id.desc())  # ids only grow (never reused): newest first
        .offset(offset)
        .limit(limit)
    ).all()
    return {
        "total": total or 0,
        "offset": offset,
        "limit": limit,
        "items": [classification_summary(row, name) for row, name in page],
    }


#: Columns a classification summary reads (not its models or rejected files).
SUMMARY_COLUMNS = (
    Classification.id,
    Classification.method,
    Classification.real_set_id,
    Classification.batch_id,
    Classification.threshold,
    Classification.threshold_reason,
    Classification.real_count,
    Classification.generated_count,
    Classification.used_count,
    Classification.created_at,
    Classification.elapsed_seconds,
)


def classification_csv(document: dict) -> str:
    """One row per real image; the name and evidence cells formula-neutralised
    (filenames.spreadsheet_cell): the evidence cell names generated files."""
    out = io.StringIO()
    keys = sorted({k for r in document["results"] for k in r["components"]})
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["filename", "score", "label", *keys, "evidence"])
    for r in document["results"]:
        writer.writerow(
            [
                spreadsheet_cell(r["filename"]),
                f"{r['score']:.6g}",
                r["label"],
                *(r["components"].get(k) for k in keys),
                spreadsheet_cell(evidence_text(r.get("evidence") or [])),
            ]
        )
    return out.getvalue()


def evidence_text(evidence: list[dict]) -> str:
    """Evidence in one line: `gen.png (similarity 0.953, ncc 0.81, phash 38, inliers 64,
    verified copy); ...`, strongest first."""
    parts = []
    for item in evidence:
        figures = [
            f"{label} {item[key]:g}"
            for key, label in (
                ("similarity", "similarity"),
                ("ncc", "ncc"),
                ("phash_distance", "phash"),
                ("inliers", "inliers"),
            )
            if item.get(key) is not None
        ]
        if item.get("verified_copy"):
            figures.append("verified copy")
        parts.append(f"{item['generated']} ({', '.join(figures)})")
    return "; ".join(parts)


def classification_imageclef(document: dict) -> str:
    """ImageCLEFmedical GANs submission lines: `<image id>,<1 used | 0 unused>`. The id is
    one line (control characters escaped) and CSV-quoted when it holds a comma or a quote,
    so a name can neither add a line nor move the label column."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for r in document["results"]:
        image_id = one_line(PurePosixPath(r["filename"]).stem)
        writer.writerow([image_id, 1 if r["label"] == "used" else 0])
    return out.getvalue()
