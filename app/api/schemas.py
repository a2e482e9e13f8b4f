"""Response models: what every answer holds, each field described, with examples from a real
run (what /docs shows). Request forms are in app.api.forms; tests/test_openapi_contract.py
fails on a field without a description."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import FastAPI
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.api import examples

#: Timestamps always carry their UTC offset (SQLite returns them naive).
UtcDatetime = Annotated[
    datetime, AfterValidator(lambda d: d if d.tzinfo else d.replace(tzinfo=UTC))
]

PHASH_16_EXAMPLE = "c6b1390e8d6a9c1de4a9b3c2d13a66a5e05e5b31a71e1a6d8c6e2b9931d4b2f1"
SET_NAME_EXAMPLE = "lung-window training candidates"
CREATED_EXAMPLE = "2025-05-14T09:21:07.412Z"


def _created(what: str) -> Any:
    return Field(description=f"When {what} was stored (UTC).", examples=[CREATED_EXAMPLE])


class ImageOut(BaseModel):
    """A stored real image."""

    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="Database id of the real image.", examples=[17])
    filename: str = Field(
        description="Name as uploaded (zip members: path inside the archive; frame N of a "
        "multi-frame DICOM file: `file.dcm#000N`).",
        examples=["used_0029.png"],
    )
    phash: str = Field(
        description="pHash as the hex string `str(imagehash.phash(img, hash_size))` gives.",
        examples=[PHASH_16_EXAMPLE],
    )
    sha256: str | None = Field(
        description="SHA-256 of the uploaded bytes; for a DICOM or 16-bit image, of the 8-bit "
        "PNG of its windowed pixels (what is fingerprinted and kept; no DICOM tag is); null "
        "for an image registered by its hash alone (`hashes` upload), which has no pixels.",
        examples=["9f2c1a8e5b7d4c3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f"],
    )
    width: int | None = Field(
        description="Width in pixels; null when registered by hash.", examples=[256]
    )
    height: int | None = Field(
        description="Height in pixels; null when registered by hash.", examples=[256]
    )


class DuplicateOut(BaseModel):
    """An uploaded file whose bytes were already uploaded: kept once."""

    filename: str = Field(description="The file that was not stored again.", examples=["b.png"])
    duplicate_of: str = Field(
        description="The earlier file with the same bytes.", examples=["a.png"]
    )


class RejectedOut(BaseModel):
    """An uploaded file that was not used, and why."""

    filename: str = Field(
        description="File name; zip members as `archive.zip:member`.", examples=["notes.txt"]
    )
    reason: str = Field(
        description="Why it was not used.",
        examples=["not an image (PNG, JPEG, BMP or TIFF expected)"],
    )


class CalibrationOut(BaseModel):
    """How a set's default /match threshold was derived from its own images."""

    method: str = Field(
        description="The calibration rule.", examples=["real-vs-real nearest-neighbour quantile"]
    )
    threshold: int = Field(
        description="Default /match threshold for this set (Hamming distance).", examples=[30]
    )
    quantile: float = Field(
        description="Share of real images allowed another real image within the threshold "
        "(`MEMAUDIT_CALIBRATION_QUANTILE`).",
        examples=[0.05],
    )
    n_images: int = Field(description="Images in the set when calibrated.", examples=[160])
    n_queries: int = Field(
        description="Real images whose nearest other real image was measured.", examples=[160]
    )
    nn_distance_percentiles: dict[str, int] = Field(
        description="Percentiles of each real image's distance to its nearest other real image.",
        examples=[{"p0": 18, "p5": 30, "p25": 36, "p50": 66, "p75": 88, "p95": 100}],
    )


WINDOW_CENTER_HELP = (
    "Center of the window DICOM and 16-bit images are brought to 8 bits with, in their "
    "rescaled values (HU for CT): values at or below center - width/2 become 0, at or above "
    "center + width/2 become 255, linear between. Part of the fingerprint: stored with the "
    "set and used for every later upload to it and /match against it."
)
WINDOW_NULL_HELP = (
    " Null: automatic windowing (CT DICOM: lung window center -600 width 1500; other DICOM: "
    "its own WindowCenter/WindowWidth, else each image's minimum to maximum; 16-bit PNG/TIFF "
    "refused)."
)


class WindowUsedOut(BaseModel):
    source: Literal["request", "ct-lung", "dicom", "min-max"] = Field(
        description="Why this window: the request's (or set's), the lung window for CT, the "
        "DICOM file's own WindowCenter/WindowWidth, or each image's own minimum to maximum.",
        examples=["ct-lung"],
    )
    center: float | None = Field(
        description="Window center (null for min-max: each image its own).", examples=[-600.0]
    )
    width: float | None = Field(
        description="Window width (null for min-max: each image its own).", examples=[1500.0]
    )
    images: int = Field(description="Images of this request windowed so.", examples=[120])


WINDOWS_USED_HELP = (
    "How this request's DICOM and 16-bit images were brought to 8 bits, one entry per window; "
    "empty when all were 8-bit images (used unchanged)."
)


class RealSetSummary(BaseModel):
    """A registered real set, without its images."""

    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="Real set id, used as `real_set_id` in /match.", examples=[1])
    name: str = Field(description="The name given at registration.", examples=[SET_NAME_EXAMPLE])
    hash_kind: str = Field(
        description="Fingerprint the set's images are hashed with.", examples=["phash"]
    )
    hash_size: int = Field(
        description="pHash side: 16 = 256-bit hashes (default), 8 = 64-bit.", examples=[16]
    )
    image_count: int = Field(description="Images in the set.", examples=[160])
    revision: int = Field(description="Increases every time images are added.", examples=[1])
    calibrated_threshold: int | None = Field(
        description="Default /match threshold, null when the set is too small to calibrate.",
        examples=[30],
    )
    calibration: CalibrationOut | None = Field(
        default=None, description="How `calibrated_threshold` was derived; null when it is null."
    )
    window_center: float | None = Field(
        default=None, description=WINDOW_CENTER_HELP + WINDOW_NULL_HELP, examples=[-600.0]
    )
    window_width: float | None = Field(
        default=None,
        description="Width of the set's window (see window_center)." + WINDOW_NULL_HELP,
        examples=[1500.0],
    )
    created_at: UtcDatetime = _created("the set")
    updated_at: UtcDatetime = Field(
        description="When images were last added (UTC).", examples=[CREATED_EXAMPLE]
    )


class RealSetCreated(RealSetSummary):
    """A set and the images this request stored."""

    model_config = ConfigDict(json_schema_extra={"examples": [examples.REAL_SET_CREATED]})

    images: list[ImageOut] = Field(description="Images stored by this request, in order.")
    duplicates: list[DuplicateOut] = Field(
        description="Files whose bytes were already uploaded: kept once."
    )
    rejected: list[RejectedOut] = Field(description="Files that were not stored, with reasons.")
    windows_used: list[WindowUsedOut] = Field(default_factory=list, description=WINDOWS_USED_HELP)


class HashesImported(RealSetSummary):
    """A set and how many precomputed hashes this request stored."""

    model_config = ConfigDict(json_schema_extra={"examples": [examples.HASHES_IMPORTED]})

    imported: int = Field(
        description="Hashes stored by this request (the file's lines, less a header and "
        "blank lines). Page through them with GET /real-sets/{id}.",
        examples=[1000000],
    )
    header: bool = Field(
        description="Whether the first line was a `filename,...` header.", examples=[True]
    )


class DescriptorsOut(BaseModel):
    """The set's copy-detection descriptors: whether /match can decide `copy_of` with them
    and, if not, what to do (e.g. run `memaudit reembed` after the embedding was replaced)."""

    state: Literal["current", "stale", "mixed", "incomplete", "none", "too_few", "no_embedding"] = (
        Field(
            description="`current`: every image has a descriptor of the loaded embedding; "
            "`stale`: they come from another embedding; `mixed`: from several; `incomplete`: "
            "some images have none; `none`: no image has one (registered by hash alone); "
            "`too_few`: too few images to calibrate the copy threshold on; `no_embedding`: no "
            "embedding is loaded.",
            examples=["current"],
        )
    )
    note: str = Field(
        description="What the state means for /match, in the words /match uses.",
        examples=[
            "every image has a descriptor of the loaded embedding: /match decides copy_of with them"
        ],
    )
    loaded_embedding: str | None = Field(
        description="The loaded embedding: the first 8 bytes of its file's SHA-256 (hex); "
        "null when none is loaded.",
        examples=["46af2d5a410c6299"],
    )
    embeddings: dict[str, int] = Field(
        description="Images per embedding their descriptors came from (same tags).",
        examples=[{"46af2d5a410c6299": 160}],
    )
    without_descriptor: int = Field(description="Images without a descriptor.", examples=[0])


class RealSetDetail(RealSetSummary):
    """A set with one page of its images."""

    images: list[ImageOut] = Field(description="One page of the set's images.")
    offset: int = Field(description="Images skipped (the request's `offset`).", examples=[0])
    limit: int = Field(description="Page size (the request's `limit`).", examples=[100])
    descriptors: DescriptorsOut = Field(
        description="Whether /match can decide `copy_of` with the set's copy-detection descriptors."
    )


class Candidate(BaseModel):
    """One of the nearest real images of a generated image."""

    filename: str = Field(description="Real image file name.", examples=["used_0029.png"])
    distance: int = Field(description="Hamming distance between the pHashes.", examples=[52])


class CopyOfOut(BaseModel):
    """The real image a generated image copies: its most similar by the copy-detection
    embedding, verified geometrically or above the embedding bar."""

    real: str = Field(description="The real image it copies.", examples=["used_0029.png"])
    similarity: float = Field(
        description="Cosine similarity of the two images' copy-detection descriptors (1: "
        "identical); at or above the batch's `copy_threshold` when `decided_by` is "
        "`embedding`.",
        examples=[0.93],
    )
    phash_distance: int = Field(
        description="Their pHash Hamming distance, for comparison with the paper's rule "
        "(edited copies are often far apart by pHash).",
        examples=[74],
    )
    decided_by: Literal["embedding", "verified"] = Field(
        description="The rule that decided it: `verified` (more SIFT keypoint matches that "
        "survive RANSAC than any two real images of the set share; see the batch's "
        "`copy_rule`) or `embedding` (similarity at or above `copy_threshold`, not verified).",
        examples=["verified"],
    )
    verified_inliers: int | None = Field(
        default=None,
        description="SIFT keypoint matches between the two images that survive RANSAC (one "
        "rotation, scale and shift); null when not verified.",
        examples=[41],
    )


class MatchOut(BaseModel):
    """A generated image and its most likely real source."""

    generated: str = Field(
        description="Generated image file name.", examples=["generated_0478.png"]
    )
    phash: str = Field(
        description="The generated image's hash (the batch's hash_kind, as hex).",
        examples=[PHASH_16_EXAMPLE],
    )
    source: str | None = Field(
        description="Real image it is a copy of, or null when the nearest is above the threshold.",
        examples=["used_0029.png"],
    )
    distance: int = Field(description="Distance to the nearest real image.", examples=[52])
    candidates: list[Candidate] = Field(description="The top_k nearest real images.")
    copy_of: CopyOfOut | None = Field(
        default=None,
        description="The real image this one copies by the strongest evidence memaudit has "
        "(the copy-detection embedding, calibrated on the set: see the batch's `copy_rule`), "
        "or null: no copy found, or not decided (the batch's `copy_rule` says why). `source` "
        "above is the paper's pHash rule, kept as it was.",
    )


class ReleaseImageOut(BaseModel):
    """One generated image's release decision and the evidence behind it."""

    generated: str = Field(
        description="Generated image file name.", examples=["generated_0478.png"]
    )
    decision: Literal["release", "withhold"] = Field(
        description="`withhold` when some evidence calls it a copy of a real image.",
        examples=["withhold"],
    )
    reasons: list[str] = Field(
        description="Why it is withheld (empty when released).",
        examples=[["copy of used_0029.png by the embedding (similarity 0.941)"]],
    )
    copy_of: CopyOfOut | None = Field(
        description="As in /match, against the set `real_set_id` names."
    )
    source: str | None = Field(description="As in /match: the pHash source, or null.")
    distance: int = Field(description="pHash distance to the nearest real image.", examples=[52])
    real_set_id: int | None = Field(
        description="The set `copy_of`, `source` and `distance` are from: the first set that "
        "withholds the image, else the one nearest to it by pHash relative to its hash bits "
        "(null: deleted since).",
        examples=[1],
    )
    withheld_by: list[GateEvidenceOut] = Field(
        description="Each set whose evidence withholds it, in the order of the sets (empty "
        "when released)."
    )


class GateEvidenceOut(BaseModel):
    """Why one real set withholds a generated image."""

    batch_id: int = Field(description="The set's batch of the gate.", examples=[1])
    real_set_id: int | None = Field(description="The set (null: deleted since).", examples=[1])
    real_set_name: str = Field(description="The set's name when checked.", examples=["lung CT"])
    copy_of: CopyOfOut | None = Field(description="As in /match, against this set.")
    source: str | None = Field(description="As in /match: the pHash source in this set.")
    distance: int | None = Field(
        description="pHash distance to this set's nearest real image (null: not checked "
        "against this set).",
        examples=[12],
    )
    reasons: list[str] = Field(
        description="Why, against this set.",
        examples=[["copy of used_0029.png by the embedding (similarity 0.941)"]],
    )


class GateSetOut(BaseModel):
    """One real set of a release gate and its batch."""

    batch_id: int = Field(description="The set's batch (GET /match/{batch_id}).", examples=[1])
    real_set_id: int | None = Field(description="The set (null: deleted since).", examples=[1])
    real_set_name: str = Field(description="The set's name when checked.", examples=["lung CT"])
    threshold: int = Field(description="The pHash threshold used for it.", examples=[29])
    copy_threshold: float | None = Field(description="As in /match.")
    copy_rule: str | None = Field(description="As in /match.")
    withheld_count: int = Field(
        description="Images this set's evidence withholds (an image may be counted by "
        "several sets).",
        examples=[12],
    )


class ReleaseOut(BaseModel):
    """The release gate's answer for a batch."""

    batch_id: int = Field(
        description="The stored batch (GET /match/{batch_id} and its report show the "
        "evidence); against several sets the first set's batch, which names the gate.",
        examples=[1],
    )
    real_set_id: int | None = Field(
        description="The real set it was checked against (the first, against several)."
    )
    real_set_name: str = Field(description="The set's name when the batch was made.")
    rule: str = Field(description="The rule, in words.")
    threshold: int = Field(description="The pHash threshold used (the first set's).", examples=[29])
    copy_threshold: float | None = Field(description="As in /match (the first set's).")
    copy_rule: str | None = Field(description="As in /match (the first set's).")
    sets: list[GateSetOut] = Field(
        description="Every real set checked against, in the order given, with its batch."
    )
    generated_count: int = Field(description="Generated images decided.", examples=[500])
    released_count: int = Field(description="Images that may be released.", examples=[150])
    withheld_count: int = Field(description="Images withheld.", examples=[350])
    images: list[ReleaseImageOut] = Field(description="One decision per generated image.")
    rejected: list[RejectedOut] = Field(description="Uploaded files not decided, with reasons.")


class RealSummaryOut(BaseModel):
    """A real image's verdict in a batch."""

    filename: str = Field(description="Real image file name.", examples=["used_0029.png"])
    matched_count: int = Field(
        description="Generated images whose source is this real image.", examples=[3]
    )
    min_distance: int | None = Field(
        description="Distance to the closest generated image (null: the batch had none).",
        examples=[34],
    )
    closest_generated: str | None = Field(
        description="The closest generated image.", examples=["generated_0480.png"]
    )
    verdict: Literal["used", "unused"] = Field(
        description="`used` when at least one generated image maps to it within the threshold.",
        examples=["used"],
    )


class MatchBatchSummary(BaseModel):
    """A stored match batch without its per-image rows (what GET /match lists)."""

    batch_id: int = Field(description="Id for GET /match/{batch_id}.", examples=[1])
    real_set_id: int | None = Field(
        description="The real set matched against; null if it was deleted since.", examples=[1]
    )
    real_set_name: str = Field(
        description="The set's name at matching time.", examples=[SET_NAME_EXAMPLE]
    )
    real_set_revision: int = Field(
        description="The set's revision at matching time (images added later are not in it).",
        examples=[1],
    )
    hash_kind: str = Field(
        description="Fingerprint the batch was matched with (its set's).", examples=["phash"]
    )
    hash_size: int = Field(description="Hash side of the set (16: 256 bits).", examples=[16])
    window_center: float | None = Field(
        default=None,
        description="The set's window center when the batch was matched." + WINDOW_NULL_HELP,
        examples=[-600.0],
    )
    window_width: float | None = Field(
        default=None, description="The set's window width (see window_center).", examples=[1500.0]
    )
    threshold: int = Field(description="Hamming distance threshold used.", examples=[30])
    threshold_source: Literal["request", "calibrated", "paper_default"] = Field(
        description="Where the threshold came from: the request, the set's calibration, or "
        "the paper's default for a set too small to calibrate.",
        examples=["calibrated"],
    )
    threshold_reason: str = Field(
        description="Why this threshold, in words.",
        examples=[
            "calibrated on this set's real-vs-real distances: at most 5% of its 160 real "
            "images have another real image within 30 bits (median nearest-real distance 66), "
            "so a generated image that close is called a copy"
        ],
    )
    top_k: int = Field(description="Nearest real images listed per generated image.", examples=[1])
    generated_count: int = Field(description="Generated images matched.", examples=[500])
    matched_count: int = Field(
        description="Generated images with a source within the threshold.", examples=[12]
    )
    used_count: int = Field(description="Real images with verdict `used`.", examples=[9])
    copy_threshold: float | None = Field(
        default=None,
        description="Embedding similarity at or above which a generated image's most similar "
        "real image is its `copy_of` when copies are not verified geometrically (with "
        "verification, the inlier bar in `copy_rule` decides); null when copies were not "
        "decided (see `copy_rule`).",
        examples=[0.87],
    )
    copy_rule: str | None = Field(
        default=None,
        description="How `copy_of` was decided, in words: verified geometrically (the "
        "set's inlier bar) or by `copy_threshold` (and why not verified), or why `copy_of` "
        "was not decided (no embedding loaded, a set registered by hash alone); null for "
        "batches stored before copies were attributed.",
        examples=[
            "calibrated on this set's real-vs-real similarities: at most 5% of its 160 real "
            "images have another real image with embedding similarity 0.870 or more (median "
            "nearest-real similarity 0.640), so a generated image that similar to a real "
            "image is called a copy of it"
        ],
    )
    created_at: UtcDatetime = _created("the batch")
    elapsed_seconds: float = Field(description="Server time spent on the request.", examples=[0.84])


class MatchBatchOut(MatchBatchSummary):
    """A match batch: every generated image's source, every real image's verdict."""

    copied_count: int = Field(
        default=0,
        description="Generated images with a `copy_of`.",
        examples=[344],
    )
    model_config = ConfigDict(json_schema_extra={"examples": [examples.MATCH_BATCH]})

    windows_used: list[WindowUsedOut] = Field(default_factory=list, description=WINDOWS_USED_HELP)
    matches: list[MatchOut] = Field(description="One entry per generated image, in upload order.")
    real_summary_scope: Literal["all", "used", "none"] = Field(
        description="Which real images `real_summary` lists (the request's `real_summary`).",
        examples=["all"],
    )
    real_summary: list[RealSummaryOut] = Field(
        description="Per real image of the set (see `real_summary_scope`), in set order."
    )
    duplicates: list[DuplicateOut] = Field(
        description="Uploaded files whose bytes were already in the batch: matched once."
    )
    rejected: list[RejectedOut] = Field(description="Uploaded files not used, with reasons.")


class Page(BaseModel):
    """Where a page sits in a list."""

    total: int = Field(description="How many items match the filter, all pages.", examples=[42])
    offset: int = Field(description="Items skipped (the request's `offset`).", examples=[0])
    limit: int = Field(description="Page size (the request's `limit`).", examples=[100])


class MatchBatchPage(Page):
    """One page of GET /match."""

    items: list[MatchBatchSummary] = Field(description="Batches on this page, newest first.")


class ModelOut(BaseModel):
    """A model artifact that produced a classification's scores."""

    name: str = Field(
        description="Artifact name (models/manifest.json).", examples=["memaudit-cnn"]
    )
    version: str = Field(description="Artifact version.", examples=["1"])
    sha256: str = Field(
        description="SHA-256 of the artifact file (empty: no artifact).",
        examples=["7a5088402242e364f3713d65397c118bafdd0b62b74bcd6f0ac283d32a493ec6"],
    )
    provider: str | None = Field(
        default=None,
        description="onnxruntime execution provider the model really runs on.",
        examples=["CPUExecutionProvider"],
    )


class EvidenceOut(BaseModel):
    """A generated image that supports a real image's verdict, with its figures."""

    generated: str = Field(description="Generated image file name.", examples=["gen_0042.png"])
    similarity: float | None = Field(
        default=None,
        description="Cosine similarity by the copy-detection embedding; null without one.",
        examples=[0.953],
    )
    ncc: float | None = Field(
        default=None, description="Thumbnail (32x32) normalised correlation.", examples=[0.81]
    )
    phash_distance: int | None = Field(
        default=None, description="pHash-16 Hamming distance to the real image.", examples=[38]
    )
    inliers: int | None = Field(
        default=None,
        description="SIFT + RANSAC inliers against the real image; null when not verified.",
        examples=[64],
    )
    verified_copy: bool = Field(
        default=False,
        description="Verification credited this real image with it (a geometric copy).",
        examples=[True],
    )


class ClassificationResultOut(BaseModel):
    """A real image's membership score."""

    filename: str = Field(description="Real image file name.", examples=["real_0001.png"])
    score: float = Field(description="Higher = more likely used in training.", examples=[3.2])
    label: Literal["used", "unused"] = Field(
        description="`used` when the score is at or above the threshold.", examples=["used"]
    )
    components: dict[str, float] = Field(
        default_factory=dict,
        description="Method-specific evidence behind the score.",
        examples=[{"copy_evidence": 3.2, "vote_evidence": 0.4, "best_inliers": 71}],
    )
    evidence: list[EvidenceOut] = Field(
        default_factory=list,
        description="The generated images (up to a few, strongest first) behind the verdict "
        "with their figures, so a `used` can be checked by eye; empty for a method that "
        "compares with no generated image (cnn, sift_knn) or a classification stored before.",
    )


class ClassificationSummary(BaseModel):
    """A stored classification without its per-image scores (what GET /classify lists)."""

    classification_id: int = Field(
        description="Id for GET /classify/{classification_id}.", examples=[1]
    )
    method: str = Field(
        description="The scoring method (GET /models lists them).", examples=["reference"]
    )
    real_set_id: int | None = Field(
        description="The real set scored; null for uploaded real files or a deleted set.",
        examples=[1],
    )
    real_set_name: str | None = Field(
        description="That set's name; null when `real_set_id` is.", examples=[SET_NAME_EXAMPLE]
    )
    batch_id: int | None = Field(
        description="The match batch compared with; null for uploaded generated files, a "
        "method that needs none, or a deleted batch.",
        examples=[1],
    )
    threshold: float = Field(description="Scores at or above are labelled used.", examples=[1.0])
    threshold_reason: str = Field(
        description="Where the threshold comes from, in words.",
        examples=["the reference auditor's default: one copy-evidence unit"],
    )
    real_count: int = Field(description="Real images scored.", examples=[160])
    generated_count: int = Field(
        description="Generated images compared with (0 for a method that needs none).",
        examples=[500],
    )
    used_count: int = Field(description="Real images labelled `used`.", examples=[62])
    created_at: UtcDatetime = _created("the classification")
    elapsed_seconds: float = Field(description="Server time spent on the request.", examples=[4.7])


class ClassificationOut(ClassificationSummary):
    """Membership scores of every real image."""

    model_config = ConfigDict(json_schema_extra={"examples": [examples.CLASSIFICATION]})

    models: list[ModelOut] = Field(
        description="Model artifacts behind the scores (empty for methods without one)."
    )
    results: list[ClassificationResultOut] = Field(
        description="One entry per real image, in set or upload order."
    )
    rejected: list[RejectedOut] = Field(description="Uploaded files not used, with reasons.")


class ClassificationPage(Page):
    """One page of GET /classify."""

    items: list[ClassificationSummary] = Field(
        description="Classifications on this page, newest first."
    )


class UploadProblem(BaseModel):
    """422 detail when no uploaded file was usable: which were refused and why."""

    message: str = Field(
        description="What went wrong, in words.",
        examples=["none of the uploaded files is a usable generated image"],
    )
    rejected: list[RejectedOut] = Field(
        default_factory=list, description="Files refused, with reasons."
    )
    duplicates: list[DuplicateOut] = Field(
        default_factory=list, description="Files that repeated earlier bytes."
    )


class HashLineError(BaseModel):
    """A bad line of a `hashes` file."""

    line: int = Field(description="Line number (1 = first line of the file).", examples=[3])
    error: str = Field(
        description="What is wrong with it.", examples=["phash is not 64 hex digits"]
    )


class HashLinesProblem(BaseModel):
    """422 detail for a `hashes` file with bad lines (nothing was stored)."""

    message: str = Field(
        description="What went wrong and what is expected, in words.",
        examples=["1 line(s) of 'hashes' are invalid; nothing was stored. ..."],
    )
    error_count: int = Field(description="Bad lines in the file, all of them.", examples=[1])
    errors: list[HashLineError] = Field(description="The first bad lines, in file order.")


class ParameterProblem(BaseModel):
    """One entry of FastAPI's own 422 list (a bad path or query parameter)."""

    loc: list[str | int] = Field(
        description="Where: `path` or `query`, then the parameter.",
        examples=[["path", "batch_id"]],
    )
    msg: str = Field(description="What is wrong.", examples=["Input should be a valid integer"])
    type: str = Field(description="Pydantic's error type.", examples=["int_parsing"])


class ErrorOut(BaseModel):
    """Every error answer: `{"detail": ...}`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                examples.BAD_FIELD,
                examples.NO_USABLE_FILE,
                examples.BAD_HASH_LINES,
                examples.BAD_PARAMETER,
            ]
        }
    )

    detail: str | UploadProblem | HashLinesProblem | list[ParameterProblem] = Field(
        description="Why the request failed: a sentence; an object with `message` and the "
        "`rejected`/`duplicates` files (no usable file); an object with `errors` (bad "
        "`hashes` lines); or FastAPI's list for a bad path or query parameter.",
        examples=["real set 42 does not exist"],
    )


JOB_ID_EXAMPLE = "3f2c9a0e8b7d4c1fa6e5d4c3b2a19087"


class JobProgressOut(BaseModel):
    """How far a job has come."""

    stage: str = Field(
        description="`queued`; `reading upload` (the stored body; `upload_read` of "
        "`upload_bytes`, a zip part is read whole before its members); `hashing` "
        "(fingerprinting its files: `done` of `total`, a zip's members counted once its "
        "directory is read); "
        "then the work itself (`matching`, `registering`, `importing`, or the scoring stage "
        "of /classify such as `verified generated images`); finally the job's state.",
        examples=["hashing"],
    )
    done: int = Field(description="Units of the stage done (files while hashing).", examples=[1200])
    total: int | None = Field(description="Units of the stage in all, when known.", examples=[None])
    upload_bytes: int = Field(description="Bytes of the stored upload.", examples=[52428800])
    upload_read: int = Field(
        description="Bytes of the upload read so far (a measure of progress while `total` "
        "is not known).",
        examples=[12582912],
    )


class JobError(BaseModel):
    """What the request would have answered instead of its result."""

    status: int = Field(description="The HTTP status it would have had.", examples=[422])
    detail: Any = Field(
        description="Its `detail`, as the synchronous answer would give it.",
        examples=["real set 42 does not exist"],
    )


class JobOut(BaseModel):
    """A long request run in the background (POST with `Prefer: respond-async`)."""

    model_config = ConfigDict(json_schema_extra={"examples": [examples.JOB_RUNNING]})

    id: str = Field(description="The job's id (GET /jobs/{id}).", examples=[JOB_ID_EXAMPLE])
    kind: str = Field(
        description="What was asked: `real_set`, `real_set_images`, `real_set_hashes`, "
        "`match`, `filter` or `classify`.",
        examples=["match"],
    )
    state: Literal["queued", "running", "canceling", "succeeded", "failed", "canceled"] = Field(
        description="`queued` → `running` → `succeeded` (see `result`), `failed` (see "
        "`error`) or `canceled` (DELETE /jobs/{id}; nothing was stored). A job whose server "
        "process stopped is run again from its stored upload (`attempts` counts the runs).",
        examples=["running"],
    )
    progress: JobProgressOut = Field(description="How far it has come.")
    result: str | None = Field(
        description="Where the result is read once `succeeded` (the same document the "
        "synchronous request answers), else null.",
        examples=["/match/12"],
    )
    error: JobError | None = Field(description="Why it failed (null unless `failed`).")
    rejected: list[RejectedOut] | None = Field(
        description="Files of the upload that were not used, and why (once it has ended; "
        "null in GET /jobs, which lists jobs without them).",
        examples=[[]],
    )
    duplicates: list[DuplicateOut] | None = Field(
        description="Files whose bytes came earlier in the upload or are already stored "
        "(null in GET /jobs).",
        examples=[[]],
    )
    attempts: int = Field(description="Runs begun (more than 1 after a restart).", examples=[1])
    created_at: UtcDatetime = _created("the job")
    started_at: UtcDatetime | None = Field(
        description="When its latest run began (UTC).", examples=[CREATED_EXAMPLE]
    )
    finished_at: UtcDatetime | None = Field(
        description="When it ended (UTC), else null.", examples=[None]
    )


class JobPage(Page):
    """One page of GET /jobs."""

    items: list[JobOut] = Field(
        description="Jobs on this page, newest first (`rejected` and `duplicates` null: "
        "GET /jobs/{id} has them)."
    )


class HealthOut(BaseModel):
    """The process answers."""

    status: Literal["ok"] = Field(default="ok", description="Always `ok`.")


class ReadyOut(BaseModel):
    """Whether the service can take requests, and if not why."""

    status: Literal["ready", "not ready"] = Field(
        description="`ready` when the database is reachable and migrated.", examples=["ready"]
    )
    database: str = Field(description="Database backend.", examples=["sqlite"])
    schema_revision: str | None = Field(
        description="The database's migration revision (null: unreachable or empty).",
        examples=["0004"],
    )
    head_revision: str | None = Field(
        description="The newest migration this code ships.", examples=["0004"]
    )
    detail: str | None = Field(
        default=None, description="Why not ready (null when ready).", examples=[None]
    )


#: Models whose examples are whole answers. FastAPI writes /openapi.json without nulls
#: (exclude_none), which leaves these examples without their required null fields
#: (`"source": null`); :func:`keep_example_nulls` puts them back.
ANSWER_EXAMPLE_MODELS: tuple[type[BaseModel], ...] = (
    RealSetCreated,
    HashesImported,
    MatchBatchOut,
    ClassificationOut,
    JobOut,
    ErrorOut,
)


def keep_example_nulls(app: FastAPI) -> None:
    """Make ``app.openapi()`` publish the answer examples as written, nulls included."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        spec = generate()  # cached by FastAPI after the first call
        components = spec.get("components", {}).get("schemas", {})
        for model in ANSWER_EXAMPLE_MODELS:
            if model.__name__ in components:
                components[model.__name__]["examples"] = model.model_config["json_schema_extra"][
                    "examples"
                ]  # type: ignore[index]
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
