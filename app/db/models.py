"""SQLAlchemy 2.0 ORM models: registered real sets, their image hashes, and match batches."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


#: Ids are never reused, also on SQLite: a stale id must not silently name another set.
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


#: Longest hash kind name (app.imaging.hashers); kept short, it is stored on every set.
HASH_KIND_CHARS = 20
#: What rows written before hash kinds existed hold (migration 0004): they are all pHash.
HASH_KIND_SERVER_DEFAULT = "phash"


class RealSet(Base):
    """A registered set of real (training-candidate) images, fingerprinted with one hash
    kind at one hash size."""

    __tablename__ = "real_sets"
    __table_args__ = (NEVER_REUSE_IDS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    #: The fingerprint its images are hashed with (app.imaging.hashers.HASHERS).
    hash_kind: Mapped[str] = mapped_column(
        String(HASH_KIND_CHARS), server_default=HASH_KIND_SERVER_DEFAULT
    )
    hash_size: Mapped[int] = mapped_column(Integer)
    image_count: Mapped[int] = mapped_column(Integer, default=0)
    #: Incremented whenever the set's images change; lets caches of packed hashes expire.
    revision: Mapped[int] = mapped_column(Integer, default=1)
    #: Default /match threshold learned from the set's real-vs-real distances (None: too few).
    calibrated_threshold: Mapped[int | None] = mapped_column(Integer, nullable=True)
    calibration: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    #: The window DICOM and 16-bit images are brought to 8 bits with (part of their
    #: fingerprint; every upload to the set uses it); both NULL: automatic windowing.
    window_center: Mapped[float | None] = mapped_column(Float, nullable=True)
    window_width: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    images: Mapped[list[RealImage]] = relationship(
        back_populates="real_set", cascade="all, delete-orphan", passive_deletes=True
    )


class RealImage(Base):
    __tablename__ = "real_images"
    __table_args__ = (
        UniqueConstraint("real_set_id", "sha256", name="uq_real_images_set_sha256"),
        UniqueConstraint("real_set_id", "filename", name="uq_real_images_set_filename"),
        UniqueConstraint("real_set_id", "position", name="uq_real_images_set_position"),
        #: Which rows refer to a stored file (app.services.retention); migration 0007.
        Index("ix_real_images_sha256", "sha256"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    real_set_id: Mapped[int] = mapped_column(ForeignKey("real_sets.id", ondelete="CASCADE"))
    #: Order of registration within the set; ties in search go to the lower position.
    position: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(String(1024))
    #: None for images registered by their hash alone (no bytes were uploaded).
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: Hex fingerprint of the set's hash_kind (named for pHash, the first kind).
    phash: Mapped[str] = mapped_column(String(64))
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: 32x32 grayscale (INTER_AREA) computed at upload; candidates for /classify.
    thumbnail: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    #: Copy-detection descriptor computed at upload (float16, unit length); NULL for images
    #: registered by hash alone, or uploaded while no embedding was loaded.
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    real_set: Mapped[RealSet] = relationship(back_populates="images")


class MatchBatch(Base):
    """One /match request: a batch of generated images mapped onto a real set."""

    __tablename__ = "match_batches"
    __table_args__ = (
        #: The batches of one release gate (app.services.release); migration 0010.
        Index("ix_match_batches_gate_batch_id", "gate_batch_id"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: Kept (as NULL) if the real set is deleted later, so results stay readable.
    real_set_id: Mapped[int | None] = mapped_column(
        ForeignKey("real_sets.id", ondelete="SET NULL"), nullable=True
    )
    real_set_name: Mapped[str] = mapped_column(String(200))
    real_set_revision: Mapped[int] = mapped_column(Integer)
    #: The fingerprint the batch was matched with (its set's hash_kind at the time).
    hash_kind: Mapped[str] = mapped_column(
        String(HASH_KIND_CHARS), server_default=HASH_KIND_SERVER_DEFAULT
    )
    hash_size: Mapped[int] = mapped_column(Integer)
    #: Its set's window at the time (both NULL: automatic windowing).
    window_center: Mapped[float | None] = mapped_column(Float, nullable=True)
    window_width: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: The windows its DICOM and 16-bit images were brought to 8 bits with
    #: ([{"source", "center", "width", "images"}]); NULL for batches older than 0005.
    windows_used: Mapped[list | None] = mapped_column(JSON, nullable=True)
    threshold: Mapped[int] = mapped_column(Integer)
    threshold_source: Mapped[str] = mapped_column(String(20))
    threshold_reason: Mapped[str] = mapped_column(Text)
    top_k: Mapped[int] = mapped_column(Integer)
    generated_count: Mapped[int] = mapped_column(Integer)
    matched_count: Mapped[int] = mapped_column(Integer)
    rejected: Mapped[list] = mapped_column(JSON, default=list)
    duplicates: Mapped[list] = mapped_column(JSON, default=list)
    elapsed_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: For sets too large for one summary row per real image: the same per-real-image
    #: results, compressed (app.services.batches.pack_summary); else NULL.
    real_summary_packed: Mapped[bytes | None] = mapped_column(
        LargeBinary, nullable=True, deferred=True
    )
    #: The copy-detection rule the batch's `copy_of` answers were decided by (the set's
    #: calibrated similarity threshold and why); NULL without embeddings.
    copy_threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    copy_rule: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: A /filter against several real sets stores one batch per set: each carries the id of
    #: the first one (the gate's id) and how many there are, so the gate is read whole or
    #: refused once one of them is deleted. Not a foreign key: deleting the first batch must
    #: not unlink the others (ids are never reused). Both NULL for any other batch.
    gate_batch_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    gate_size: Mapped[int | None] = mapped_column(Integer, nullable=True)


class GeneratedImage(Base):
    """A generated image of a batch, its hash and its nearest real images."""

    __tablename__ = "generated_images"
    __table_args__ = (
        Index("ix_generated_images_batch_position", "batch_id", "position"),
        Index("ix_generated_images_sha256", "sha256"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("match_batches.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(String(64))
    #: Hex fingerprint of the batch's hash_kind (named for pHash, the first kind).
    phash: Mapped[str] = mapped_column(String(64))
    thumbnail: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    #: Copy-detection descriptor computed at upload (float16); see RealImage.embedding.
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)
    #: The real image this one copies by the copy-detection embedding, with the figures
    #: behind it ({"real", "similarity", "phash_distance", "decided_by"}); None: no copy.
    copy_of: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    #: Filename of the matched real image, None when the nearest is above the threshold.
    source: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    distance: Mapped[int] = mapped_column(Integer)
    #: [[real filename, distance], ...] nearest first (top_k entries).
    candidates: Mapped[list] = mapped_column(JSON)


class RealSummary(Base):
    """Per real image of a batch's set: how many generated images it sourced, and verdict."""

    __tablename__ = "match_real_summaries"
    __table_args__ = (Index("ix_match_real_summaries_batch_position", "batch_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("match_batches.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(String(1024))
    matched_count: Mapped[int] = mapped_column(Integer)
    min_distance: Mapped[int] = mapped_column(Integer)
    closest_generated: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    verdict: Mapped[str] = mapped_column(String(10))


class Classification(Base):
    """One /classify request: membership scores of a set of real images by one method."""

    __tablename__ = "classifications"
    __table_args__ = (NEVER_REUSE_IDS,)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    method: Mapped[str] = mapped_column(String(20))
    real_set_id: Mapped[int | None] = mapped_column(
        ForeignKey("real_sets.id", ondelete="SET NULL"), nullable=True
    )
    batch_id: Mapped[int | None] = mapped_column(
        ForeignKey("match_batches.id", ondelete="SET NULL"), nullable=True
    )
    threshold: Mapped[float] = mapped_column(Float)
    threshold_reason: Mapped[str] = mapped_column(Text)
    #: [{"name", "version", "sha256", "provider"}] of the models that produced the scores.
    models: Mapped[list] = mapped_column(JSON, default=list)
    real_count: Mapped[int] = mapped_column(Integer)
    generated_count: Mapped[int] = mapped_column(Integer)
    used_count: Mapped[int] = mapped_column(Integer)
    rejected: Mapped[list] = mapped_column(JSON, default=list)
    elapsed_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ClassificationResult(Base):
    __tablename__ = "classification_results"
    __table_args__ = (
        Index("ix_classification_results_cls_position", "classification_id", "position"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    classification_id: Mapped[int] = mapped_column(
        ForeignKey("classifications.id", ondelete="CASCADE")
    )
    position: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(String(1024))
    score: Mapped[float] = mapped_column(Float)
    label: Mapped[str] = mapped_column(String(10))
    components: Mapped[dict] = mapped_column(JSON, default=dict)
    #: The generated images behind the verdict (filenames and figures), strongest first.
    evidence: Mapped[list | None] = mapped_column(JSON, nullable=True)


class Job(Base):
    """A long request run in the background (``Prefer: respond-async``): its stored upload,
    where it stands, and what it produced. The upload is replayed through the same route,
    so a job answers exactly what the request would have."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_heartbeat", "state", "heartbeat_at"),)

    #: Random (uuid4 hex): a job's address is not guessable from another's.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    #: What the request was (app.services.jobs.RESULT_PATHS): real_set, real_set_images, match ...
    kind: Mapped[str] = mapped_column(String(20))
    #: The request replayed: its root path (behind a proxy's prefix), path, query string and
    #: Content-Type (the multipart boundary).
    root_path: Mapped[str] = mapped_column(String(200), default="")
    path: Mapped[str] = mapped_column(String(200))
    query: Mapped[str] = mapped_column(Text, default="")
    content_type: Mapped[str] = mapped_column(Text)
    #: Where the request body waits (relative to the jobs folder); removed when the job ends.
    body_file: Mapped[str | None] = mapped_column(String(100), nullable=True)
    body_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    #: Whether cancelling it needs an admin key (the route it replays did).
    needs_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    #: queued, running, canceling, then succeeded, failed or canceled.
    state: Mapped[str] = mapped_column(String(12))
    stage: Mapped[str] = mapped_column(String(60), default="queued")
    #: Files hashed (or, after hashing, the stage's own units) out of ``total``.
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    body_read: Mapped[int] = mapped_column(BigInteger, default=0)
    #: The id of what it created (a set, batch or classification); its URL follows from kind.
    result_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: {"status": 422, "detail": ...}: what the request would have answered instead.
    error: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    #: The upload's refused files and duplicates, as the answer lists them (a set's record
    #: does not keep them, so a registration job's would be lost otherwise).
    rejected: Mapped[list | None] = mapped_column(JSON, nullable=True)
    duplicates: Mapped[list | None] = mapped_column(JSON, nullable=True)
    #: Runs begun: an interrupted job is run again from its stored upload, a few times.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: The process running it, and when it last said so (epoch seconds).
    owner: Mapped[str | None] = mapped_column(String(80), nullable=True)
    heartbeat_at: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
