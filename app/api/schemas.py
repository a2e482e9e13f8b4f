"""Response models and multipart request documentation (what /docs shows, with examples)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.scoring import methods as scoring_methods

#: Timestamps always carry their UTC offset (SQLite returns them naive).
UtcDatetime = Annotated[
    datetime, AfterValidator(lambda d: d if d.tzinfo else d.replace(tzinfo=UTC))
]

PHASH_16_EXAMPLE = "c6b1390e8d6a9c1de4a9b3c2d13a66a5e05e5b31a71e1a6d8c6e2b9931d4b2f1"


class ImageOut(BaseModel):
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
    width: int | None = Field(description="Null when registered by hash.", examples=[256])
    height: int | None = Field(description="Null when registered by hash.", examples=[256])


class DuplicateOut(BaseModel):
    filename: str = Field(description="The file that was not stored again.", examples=["b.png"])
    duplicate_of: str = Field(
        description="The earlier file with the same bytes.", examples=["a.png"]
    )


class RejectedOut(BaseModel):
    filename: str = Field(
        description="File name; zip members as `archive.zip:member`.", examples=["notes.txt"]
    )
    reason: str = Field(
        description="Why it was not used.",
        examples=["not an image (PNG, JPEG, BMP or TIFF expected)"],
    )


class CalibrationOut(BaseModel):
    method: str = Field(examples=["real-vs-real nearest-neighbour quantile"])
    threshold: int = Field(
        description="Default /match threshold for this set (Hamming distance).", examples=[30]
    )
    quantile: float = Field(examples=[0.05])
    n_images: int = Field(examples=[160])
    n_queries: int = Field(examples=[160])
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
    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="Real set id, used as `real_set_id` in /match.", examples=[1])
    name: str = Field(examples=["lung-window training candidates"])
    hash_kind: str = Field(
        description="Fingerprint the set's images are hashed with.", examples=["phash"]
    )
    hash_size: int = Field(
        description="pHash side: 16 = 256-bit hashes (default), 8 = 64-bit.", examples=[16]
    )
    image_count: int = Field(examples=[160])
    revision: int = Field(description="Increases every time images are added.", examples=[1])
    calibrated_threshold: int | None = Field(
        description="Default /match threshold, null when the set is too small to calibrate.",
        examples=[30],
    )
    calibration: CalibrationOut | None = None
    window_center: float | None = Field(
        default=None, description=WINDOW_CENTER_HELP + WINDOW_NULL_HELP, examples=[-600.0]
    )
    window_width: float | None = Field(
        default=None,
        description="Width of the set's window (see window_center)." + WINDOW_NULL_HELP,
        examples=[1500.0],
    )
    created_at: UtcDatetime
    updated_at: UtcDatetime


class RealSetCreated(RealSetSummary):
    images: list[ImageOut] = Field(description="Images stored by this request, in order.")
    duplicates: list[DuplicateOut] = Field(
        description="Files whose bytes were already uploaded: kept once."
    )
    rejected: list[RejectedOut] = Field(description="Files that were not stored, with reasons.")
    windows_used: list[WindowUsedOut] = Field(default_factory=list, description=WINDOWS_USED_HELP)


class HashesImported(RealSetSummary):
    imported: int = Field(
        description="Hashes stored by this request (the file's lines, less a header and "
        "blank lines). Page through them with GET /real-sets/{id}.",
        examples=[1000000],
    )
    header: bool = Field(
        description="Whether the first line was a `filename,...` header.", examples=[True]
    )


class RealSetDetail(RealSetSummary):
    images: list[ImageOut] = Field(description="One page of the set's images.")
    offset: int = Field(examples=[0])
    limit: int = Field(examples=[100])


class Candidate(BaseModel):
    filename: str = Field(description="Real image file name.", examples=["used_0029.png"])
    distance: int = Field(description="Hamming distance between the pHashes.", examples=[52])


class MatchOut(BaseModel):
    generated: str = Field(
        description="Generated image file name.", examples=["generated_0478.png"]
    )
    phash: str = Field(examples=[PHASH_16_EXAMPLE])
    source: str | None = Field(
        description="Real image it is a copy of, or null when the nearest is above the threshold.",
        examples=["used_0029.png"],
    )
    distance: int = Field(description="Distance to the nearest real image.", examples=[52])
    candidates: list[Candidate] = Field(description="The top_k nearest real images.")


class RealSummaryOut(BaseModel):
    filename: str = Field(examples=["used_0029.png"])
    matched_count: int = Field(
        description="Generated images whose source is this real image.", examples=[3]
    )
    min_distance: int | None = Field(
        description="Distance to the closest generated image.", examples=[34]
    )
    closest_generated: str | None = Field(examples=["generated_0480.png"])
    verdict: Literal["used", "unused"] = Field(
        description="`used` when at least one generated image maps to it within the threshold.",
        examples=["used"],
    )


class MatchBatchOut(BaseModel):
    batch_id: int = Field(description="Id for GET /match/{batch_id}.", examples=[1])
    real_set_id: int | None = Field(
        description="Null if the real set was deleted since.", examples=[1]
    )
    real_set_name: str = Field(examples=["lung-window training candidates"])
    real_set_revision: int = Field(examples=[1])
    hash_kind: str = Field(
        description="Fingerprint the batch was matched with (its set's).", examples=["phash"]
    )
    hash_size: int = Field(examples=[16])
    window_center: float | None = Field(
        default=None,
        description="The set's window center when the batch was matched." + WINDOW_NULL_HELP,
        examples=[-600.0],
    )
    window_width: float | None = Field(
        default=None, description="The set's window width (see window_center).", examples=[1500.0]
    )
    windows_used: list[WindowUsedOut] = Field(default_factory=list, description=WINDOWS_USED_HELP)
    threshold: int = Field(description="Hamming distance threshold used.", examples=[30])
    threshold_source: Literal["request", "calibrated", "paper_default"] = Field(
        description="Where the threshold came from.", examples=["calibrated"]
    )
    threshold_reason: str = Field(
        description="Why this threshold, in words.",
        examples=[
            "calibrated on this set's real-vs-real distances: at most 5% of its 160 real "
            "images have another real image within 30 bits (median nearest-real distance 66), "
            "so a generated image that close is called a copy"
        ],
    )
    top_k: int = Field(examples=[1])
    generated_count: int = Field(examples=[500])
    matched_count: int = Field(
        description="Generated images with a source within the threshold.", examples=[12]
    )
    used_count: int = Field(description="Real images with verdict `used`.", examples=[9])
    created_at: UtcDatetime
    elapsed_seconds: float = Field(description="Server time spent on the request.")
    matches: list[MatchOut]
    real_summary_scope: Literal["all", "used", "none"] = Field(
        description="Which real images `real_summary` lists (the request's `real_summary`).",
        examples=["all"],
    )
    real_summary: list[RealSummaryOut]
    duplicates: list[DuplicateOut]
    rejected: list[RejectedOut]


class ErrorOut(BaseModel):
    detail: str | dict = Field(
        description="Why the request failed.",
        examples=["real set 42 does not exist"],
    )


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyOut(BaseModel):
    status: Literal["ready", "not ready"]
    database: str = Field(description="Database backend.", examples=["sqlite"])
    schema_revision: str | None = Field(examples=["0001"])
    head_revision: str | None = Field(examples=["0001"])
    detail: str | None = None


def _binary_files(description: str) -> dict:
    return {
        "type": "array",
        "items": {"type": "string", "format": "binary"},
        "description": description,
    }


def _window_fields(description: str) -> dict:
    """The two optional window fields of a multipart form."""
    return {
        "window_center": {
            "type": "number",
            "description": description,
            "example": -600,
        },
        "window_width": {
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "Width of the window (see window_center); send both or neither.",
            "example": 1500,
        },
    }


NEW_SET_WINDOW_DOC = (
    "How DICOM and 16-bit PNG/TIFF images are brought to 8 bits before fingerprinting: "
    "values at or below center - width/2 become 0, at or above center + width/2 become 255 "
    "(DICOM: in rescaled values, HU for CT; 16-bit PNG/TIFF: in the stored values). Without "
    "a window: CT DICOM gets the lung window (center -600, width 1500), other DICOM its own "
    "WindowCenter/WindowWidth or else its minimum to maximum, and 16-bit PNG/TIFF is "
    "refused with this hint. 8-bit images are used unchanged. Stored with the set: every "
    "later upload to it and /match against it uses the same window. Send it before the files."
)
SET_WINDOW_DOC = (
    "Optional: the set's stored window is always used; a different window is refused with a "
    "422 naming the set's."
)

HASHES_FILE_DOC = (
    "Precomputed pHashes instead of images, for pipelines that must not ship pixels: a "
    "text/CSV file of lines `filename,phash_hex`, the hex exactly as "
    "`str(imagehash.phash(image, hash_size))` prints it (16 hex digits for hash_size 8, 64 "
    "for 16); an optional first line `filename,phash`; names may be quoted as CSV. Up to "
    "2,000,000 lines by default (`MEMAUDIT_MAX_HASHES_PER_REQUEST`). All or nothing: any bad "
    "line (not hex, wrong length, empty, duplicate or over-long name) gives a 422 listing "
    "the first bad line numbers, and nothing is stored. Example file:\n\n"
    "```\nfilename,phash\n"
    "real_0000.png,c6b1390e8d6a9c1de4a9b3c2d13a66a5e05e5b31a71e1a6d8c6e2b9931d4b2f1\n"
    "real_0001.png,93c46c3b3e1e61c6a5a55a5a1e1ec3c3b4b44b4bc3c36c6c1b1be4e4d8d82727\n```"
)

REAL_SET_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {
                            "type": "string",
                            "maxLength": 200,
                            "description": "A name for the set.",
                            "example": "lung-window training candidates",
                        },
                        "hash_size": {
                            "type": "integer",
                            "enum": [8, 16],
                            "default": 16,
                            "description": "pHash side: 16 = 256-bit hashes as the paper's "
                            "distances imply; 8 = imagehash's 64-bit default.",
                        },
                        **_window_fields(NEW_SET_WINDOW_DOC),
                        "files": _binary_files(
                            "Real images (PNG, JPEG, BMP, TIFF, DICOM) or .zip archives of them; "
                            "repeat the field for many files (text fields may come before "
                            "or after them). Give either `files` or `hashes`."
                        ),
                        "hashes": {
                            "type": "string",
                            "format": "binary",
                            "description": HASHES_FILE_DOC,
                        },
                    },
                },
                "encoding": {
                    "files": {"contentType": "image/png, application/zip"},
                    "hashes": {"contentType": "text/csv, text/plain"},
                },
            }
        },
    }
}

ADD_IMAGES_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": _binary_files(
                            "More real images or .zip archives; same bytes as a stored image "
                            "are reported as duplicates, not stored twice."
                        ),
                        **_window_fields(SET_WINDOW_DOC),
                    },
                }
            }
        },
    }
}

ADD_HASHES_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["hashes"],
                    "properties": {
                        "hashes": {
                            "type": "string",
                            "format": "binary",
                            "description": HASHES_FILE_DOC
                            + "\n\nThe hex length must match the set's hash_size; a name "
                            "already in the set is a bad line.",
                        }
                    },
                },
                "encoding": {"hashes": {"contentType": "text/csv, text/plain"}},
            }
        },
    }
}

REAL_SUMMARY_HELP = (
    "Which real images `real_summary` lists: `all` (default), only those with verdict `used`, "
    "or `none`. `used_count` counts them all either way; a set of 1,000,000 hashes makes a "
    "130 MB answer with `all`."
)

MATCH_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["real_set_id", "files"],
                    "properties": {
                        "real_set_id": {
                            "type": "integer",
                            "description": "Id from POST /real-sets.",
                            "example": 1,
                        },
                        "threshold": {
                            "type": "integer",
                            "minimum": 0,
                            "description": "Hamming distance at or below which the nearest "
                            "real image is the source. Default: the set's calibrated value, "
                            "or the paper's 50 (256-bit) when the set is too small.",
                        },
                        "top_k": {
                            "type": "integer",
                            "minimum": 1,
                            "default": 1,
                            "description": "Nearest real images listed per generated image.",
                        },
                        "real_summary": {
                            "type": "string",
                            "enum": ["all", "used", "none"],
                            "default": "all",
                            "description": REAL_SUMMARY_HELP,
                        },
                        **_window_fields(SET_WINDOW_DOC),
                        "files": _binary_files(
                            "Generated images or .zip archives of them (10,000 per request "
                            "is fine)."
                        ),
                    },
                }
            }
        },
    }
}


class ModelOut(BaseModel):
    name: str = Field(examples=["memaudit-cnn"])
    version: str = Field(examples=["1"])
    sha256: str = Field(description="SHA-256 of the artifact file (empty: no artifact).")
    provider: str | None = Field(
        default=None,
        description="onnxruntime execution provider the model really runs on.",
        examples=["CPUExecutionProvider"],
    )


class ClassificationResultOut(BaseModel):
    filename: str = Field(examples=["real_0001.png"])
    score: float = Field(description="Higher = more likely used in training.", examples=[3.2])
    label: Literal["used", "unused"] = Field(examples=["used"])
    components: dict[str, float] = Field(
        default_factory=dict,
        description="Method-specific evidence behind the score.",
        examples=[{"copy_evidence": 3.2, "vote_evidence": 0.4, "best_inliers": 71}],
    )


class ClassificationOut(BaseModel):
    classification_id: int = Field(examples=[1])
    method: str = Field(
        description="The scoring method (GET /models lists them).", examples=["reference"]
    )
    real_set_id: int | None = Field(examples=[1])
    batch_id: int | None = Field(examples=[1])
    models: list[ModelOut]
    threshold: float = Field(description="Scores at or above are labelled used.", examples=[1.0])
    threshold_reason: str = Field(description="Where the threshold comes from, in words.")
    real_count: int = Field(examples=[160])
    generated_count: int = Field(examples=[500])
    used_count: int = Field(examples=[62])
    created_at: UtcDatetime
    elapsed_seconds: float
    results: list[ClassificationResultOut]
    rejected: list[RejectedOut]


CLASSIFY_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "method": {
                            "type": "string",
                            # The method table's own list: methods registered later show.
                            "enum": scoring_methods.LIVE_NAMES,
                            "default": scoring_methods.DEFAULT_METHOD,
                            "description": "The scoring method; the default is recommended. "
                            "GET /models describes each and whether it can run now.",
                        },
                        "real_set_id": {
                            "type": "integer",
                            "description": "Real images: a set registered with POST /real-sets.",
                            "example": 1,
                        },
                        "batch_id": {
                            "type": "integer",
                            "description": "Generated images: a batch from POST /match.",
                            "example": 1,
                        },
                        "files": _binary_files("Real images (or zips) instead of real_set_id."),
                        "generated_files": _binary_files(
                            "Generated images (or zips) instead of batch_id."
                        ),
                    },
                }
            }
        },
    }
}
