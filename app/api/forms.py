"""One form model per multipart endpoint: it validates the text fields (with 422 answers that
name the field and the rule) AND is the endpoint's documented OpenAPI ``requestBody``, so the
two cannot drift. To add a field to a form, add it to its model here, nowhere else.

The text fields are collected by app.api.uploads.UploadReader while files stream; a model's
``parse`` takes them as strings. File parts are declared next to the text fields
(``file_fields``) for the documentation and the "expected ..." hints; UploadReader streams them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Self, cast

from fastapi import HTTPException
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError, core_schema

from app.imaging.hashers import DEFAULT_HASH_KIND, HASHERS, get_hasher
from app.imaging.windowing import Window
from app.scoring import methods as scoring_methods
from app.services.batches import SUMMARY_SCOPES, SummaryScope
from app.services.classification import ClassifyRequest
from app.services.copy_verification import VERIFY_MODES, VerifyMode
from app.services.matching import MatchRequest

#: Largest id or count accepted anywhere (PostgreSQL INTEGER); beyond it nothing can exist.
MAX_INT = 2**31 - 1
#: Bits of the largest supported hash: no Hamming distance is larger.
MAX_HASH_BITS = max(h.bits_per_hash(size) for h in HASHERS.values() for size in h.sizes)
#: Longest real set name (RealSet.name is String(200)).
MAX_NAME_CHARS = 200
_DEFAULT_HASHER = get_hasher(DEFAULT_HASH_KIND)


class OneOf:
    """A field whose value must be one of ``values``: validated, and documented as the
    schema's ``enum``. ``values`` may be a live list (the scoring-method table's), read at
    each validation and by the schema as the same list object."""

    def __init__(self, values: Sequence[Any]) -> None:
        self.values = values

    def __get_pydantic_core_schema__(self, source: Any, handler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def _check(self, value: Any) -> Any:
        if value not in self.values:
            raise PydanticCustomError("one_of", "not one of the choices", {"choices": self.values})
        return value


@dataclass(frozen=True)
class FileField:
    """A file part of a form: documented as binary, streamed by UploadReader."""

    name: str
    description: str
    #: Repeatable (many files); else one file.
    many: bool = True
    required: bool = False
    content_type: str | None = None

    def schema(self) -> dict:
        binary = {"type": "string", "format": "binary"}
        if self.many:
            return {"type": "array", "items": binary, "description": self.description}
        return {**binary, "description": self.description}


def _either(values: Sequence[Any]) -> str:
    """`a`, `a or b`, `a, b or c`."""
    names = [str(v) for v in values]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _message(error: dict, fields: dict[str, str | list[str]]) -> str:
    """A pydantic error as memaudit's 422 sentence (tests and clients read these)."""
    loc = error["loc"]
    name = str(loc[0]) if loc else "form"
    value = fields.get(name, "")
    if isinstance(value, list):  # a repeated field: the value at fault
        value = value[loc[1]] if len(loc) > 1 and isinstance(loc[1], int) else ""
    raw = value[:50]
    ctx = error.get("ctx") or {}
    match error["type"]:
        case "missing" | "string_too_short":
            return f"form field {name!r} is required"
        case "int_parsing" | "int_from_float" | "int_type":
            return f"{name} must be an integer, got {raw!r}"
        case "float_parsing" | "float_type":
            return f"{name} must be a number, got {raw!r}"
        case "finite_number":
            return f"{name} must be finite"
        case "greater_than" if ctx.get("gt") == 0:
            return f"{name} must be positive, got {raw}"
        case "greater_than_equal":
            return f"{name} must be at least {ctx['ge']}, got {raw}"
        case "less_than_equal":
            return f"{name} must be at most {ctx['le']}, got {raw}"
        case "string_too_long":
            return f"{name} is longer than {ctx['max_length']} characters"
        case "too_long":  # a repeated field
            return f"{name} may be given at most {ctx['max_length']} times"
        case "one_of":
            return f"{name} must be {_either(ctx['choices'])}, got {raw!r}"
        case "form_rule":  # a rule over several fields: its message is the sentence
            return str(error["msg"])
        case _:
            return f"{name}: {error['msg']}"


class FormModel(BaseModel):
    """Base of the form models: text fields arrive as strings; an empty one is absent."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    #: File parts of the form, in documentation order.
    file_fields: ClassVar[tuple[FileField, ...]] = ()
    #: Text fields to wait for before hashing file parts (UploadReader.read_fields); parts
    #: that arrive earlier are parked on disk until then.
    needed_before_files: ClassVar[frozenset[str]] = frozenset()
    #: Text fields also read before hashing when they come before the first file part.
    optional_before_files: ClassVar[frozenset[str]] = frozenset()
    #: Text fields that may be given more than once (UploadReader collects their values).
    repeatable: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def parse(cls, fields: dict[str, str | list[str]], **context: Any) -> Self:
        """The form from the text fields received so far (absent ones take defaults); 422
        for an unknown field or the first field that breaks its rule."""
        allowed = set(cls.model_fields)
        unknown = set(fields) - allowed
        if unknown:
            expected = ", ".join(sorted(allowed | {f.name for f in cls.file_fields}))
            raise HTTPException(
                422,
                detail=f"unknown form field(s) {', '.join(sorted(unknown))}; expected {expected}",
            )
        given = {name: value for name, value in fields.items() if value != ""}
        try:
            return cls.model_validate(given, context=context)
        except ValidationError as exc:
            raise HTTPException(422, detail=_message(exc.errors()[0], fields)) from None

    @classmethod
    def rejection(cls, fields: dict[str, str | list[str]]) -> str:
        """The 422 sentence :meth:`parse` answers for these fields (a /docs example)."""
        try:
            cls.parse(fields)
        except HTTPException as exc:
            return str(exc.detail)
        raise ValueError(f"{fields} is a valid {cls.__name__}")

    @classmethod
    def openapi_extra(cls, *, also_urlencoded: bool = False) -> dict:
        """The operation's ``requestBody``: the text fields' JSON schema plus the file parts."""
        schema = cls.model_json_schema()
        properties: dict[str, dict] = {}
        for name, prop in schema["properties"].items():
            prop = _not_nullable(prop)
            prop.pop("title", None)
            for rule in cls.model_fields[name].metadata:
                if isinstance(rule, OneOf):
                    prop["enum"] = rule.values  # the same (possibly live) list
            properties[name] = prop
        for file in cls.file_fields:
            properties[file.name] = file.schema()
        required = [*schema.get("required", ()), *(f.name for f in cls.file_fields if f.required)]
        body: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
        }
        if required:
            body["required"] = required
        multipart: dict[str, Any] = {"schema": body}
        encoding = {f.name: {"contentType": f.content_type} for f in cls.file_fields}
        multipart["encoding"] = {k: v for k, v in encoding.items() if v["contentType"]}
        content = {"multipart/form-data": multipart}
        if also_urlencoded:  # text fields only: files need multipart
            text_only = {k: v for k, v in properties.items() if k in cls.model_fields}
            form = {**body, "properties": text_only}
            form.pop("required", None)
            if schema.get("required"):
                form["required"] = schema["required"]
            content["application/x-www-form-urlencoded"] = {"schema": form}
        return {"requestBody": {"required": True, "content": content}}


def _not_nullable(prop: dict) -> dict:
    """``anyOf: [X, null]`` (an optional field) as X: a form field is absent, never null."""
    branches = prop.get("anyOf")
    if not branches:
        return dict(prop)
    kept = [b for b in branches if b.get("type") != "null"]
    merged = {k: v for k, v in prop.items() if k != "anyOf"}
    if merged.get("default", ...) is None:
        del merged["default"]
    return {**kept[0], **merged} if len(kept) == 1 else {**merged, "anyOf": kept}


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
IMAGE_TYPES = "image/png, image/jpeg, image/bmp, image/tiff, application/zip"
HASH_LIST_TYPES = "text/csv, text/plain"
REAL_SUMMARY_HELP = (
    "Which real images `real_summary` lists: `all` (default), only those with verdict `used`, "
    "or `none`. `used_count` counts them all either way; a set of 1,000,000 hashes makes a "
    "130 MB answer with `all`."
)

HashSize = Annotated[
    int,
    OneOf(_DEFAULT_HASHER.sizes),
    Field(
        description="pHash side: 16 = 256-bit hashes as the paper's distances imply; "
        "8 = imagehash's 64-bit default.",
        examples=[16],
    ),
]


class WindowedForm(FormModel):
    """A form that may carry the window DICOM and 16-bit images are brought to 8 bits with:
    both fields or neither (neither: automatic windowing, see app.imaging.windowing)."""

    window_center: float | None = Field(
        default=None,
        allow_inf_nan=False,
        description="Window centre for DICOM and 16-bit images (HU for CT), with "
        "`window_width`; default: a lung window (-600/1500) for CT, else the file's own "
        "window, else min-max. Stored with a set and applied to every later upload to it.",
        examples=[-600],
    )
    window_width: float | None = Field(
        default=None,
        allow_inf_nan=False,
        gt=0,
        description="Window width, with `window_center`.",
        examples=[1500],
    )

    optional_before_files = frozenset({"window_center", "window_width"})

    @model_validator(mode="after")
    def _both_or_neither(self) -> Self:
        if (self.window_center is None) != (self.window_width is None):
            raise PydanticCustomError(
                "form_rule",
                "send both window_center and window_width (e.g. -600 and 1500 for a lung "
                "window in HU), or neither",
            )
        return self

    @property
    def window(self) -> Window | None:
        if self.window_center is None or self.window_width is None:
            return None
        return Window(self.window_center, self.window_width)


class NewSetForm(WindowedForm):
    """POST /real-sets: the set's name and hash size."""

    name: str = Field(
        min_length=1,
        max_length=MAX_NAME_CHARS,
        description="A name for the set.",
        examples=["lung-window training candidates"],
    )
    hash_size: HashSize = _DEFAULT_HASHER.default_size

    file_fields = (
        FileField(
            "files",
            "Real images (PNG, JPEG, BMP, TIFF) or .zip archives of them; repeat the field "
            "for many files (text fields may come before or after them). Give either `files` "
            "or `hashes`.",
            content_type=IMAGE_TYPES,
        ),
        FileField("hashes", HASHES_FILE_DOC, many=False, content_type=HASH_LIST_TYPES),
    )
    needed_before_files = frozenset({"name", "hash_size"})


class AddImagesForm(WindowedForm):
    """POST /real-sets/{id}/images: image files only (hashed as the set's images were)."""

    file_fields = (
        FileField(
            "files",
            "More real images or .zip archives; same bytes as a stored image are reported as "
            "duplicates, not stored twice.",
            required=True,
            content_type=IMAGE_TYPES,
        ),
    )


class AddHashesForm(FormModel):
    """POST /real-sets/{id}/hashes: one hash list file."""

    file_fields = (
        FileField(
            "hashes",
            HASHES_FILE_DOC + "\n\nThe hex length must match the set's hash_size; a name "
            "already in the set is a bad line.",
            many=False,
            required=True,
            content_type=HASH_LIST_TYPES,
        ),
    )


class MatchForm(WindowedForm):
    """POST /match (whatever fields have arrived; absent optional ones take defaults)."""

    real_set_id: int = Field(ge=1, le=MAX_INT, description="Id from POST /real-sets.", examples=[1])
    # A distance is at most the set's bits (checked against the set by the service).
    threshold: int | None = Field(
        default=None,
        ge=0,
        le=MAX_HASH_BITS,
        description="Hamming distance at or below which the nearest real image is the "
        "source, at most the set's hash bits. Default: the set's calibrated value, or the "
        "paper's 50 (256-bit) when the set is too small.",
        examples=[30],
    )
    top_k: int = Field(
        default=1,
        ge=1,
        le=MAX_INT,
        description="Nearest real images listed per generated image (at most "
        "`MEMAUDIT_MAX_TOP_K`, 50 by default).",
        examples=[3],
    )
    real_summary: Annotated[str, OneOf(SUMMARY_SCOPES)] = Field(
        default="all", description=REAL_SUMMARY_HELP, examples=["used"]
    )
    verify: Annotated[str, OneOf(VERIFY_MODES)] = Field(
        default="auto",
        description="Check each `copy_of` candidate geometrically (SIFT keypoints + RANSAC "
        "against its most similar real image; more matches than any two real images of the "
        "set share make a copy): `auto` when the batch has at most "
        "`MEMAUDIT_MATCH_VERIFY_MAX_IMAGES` (1,000) generated images, else the embedding bar "
        "alone; `always`; `never` (the embedding bar alone). The batch's `copy_rule` says "
        "which rule decided.",
        examples=["auto"],
    )

    file_fields = (
        FileField(
            "files",
            "Generated images or .zip archives of them (10,000 per request is fine).",
            required=True,
            content_type=IMAGE_TYPES,
        ),
    )
    needed_before_files = frozenset({"real_set_id"})

    @field_validator("top_k")
    @classmethod
    def _top_k_within_setting(cls, value: int, info: ValidationInfo) -> int:
        maximum = (info.context or {}).get("max_top_k")
        if maximum is not None and value > maximum:
            raise PydanticCustomError("less_than_equal", "too large", {"le": maximum})
        return value

    def request(self) -> MatchRequest:
        return MatchRequest(
            real_set_id=self.real_set_id,
            threshold=self.threshold,
            top_k=self.top_k,
            real_summary=cast(SummaryScope, self.real_summary),
            window=self.window,
            verify=cast(VerifyMode, self.verify),
        )


#: Real sets one /filter request may check against.
MAX_GATE_SETS = 20


class FilterForm(MatchForm):
    """POST /filter: a MatchForm whose ``real_set_id`` may be repeated (one or more sets)."""

    real_set_id: list[Annotated[int, Field(ge=1, le=MAX_INT)]] = Field(
        min_length=1,
        max_length=MAX_GATE_SETS,
        description="Id from POST /real-sets; repeat the field (before the files) to check "
        f"against several sets, at most {MAX_GATE_SETS}: an image is withheld when any set's "
        "evidence calls it a copy.",
        examples=[[1, 2]],
    )

    repeatable = frozenset({"real_set_id"})

    @field_validator("real_set_id")
    @classmethod
    def _each_set_once(cls, ids: list[int]) -> list[int]:
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise PydanticCustomError(
                "form_rule", f"real_set_id {repeated[0]} is given more than once"
            )
        return ids

    def request(self) -> MatchRequest:
        raise TypeError("a FilterForm makes one request per set: use requests()")

    def requests(self) -> list[MatchRequest]:
        """One match request per set; no real_summary (the gate's answer lists none)."""
        return [
            MatchRequest(
                real_set_id=real_set_id,
                threshold=self.threshold,
                top_k=self.top_k,
                real_summary="none",
                window=self.window,
                verify=cast(VerifyMode, self.verify),
            )
            for real_set_id in self.real_set_id
        ]


class ClassifyForm(FormModel):
    """POST /classify."""

    method: Annotated[str, OneOf(scoring_methods.LIVE_NAMES)] = Field(
        default=scoring_methods.DEFAULT_METHOD,
        description="The scoring method; the default is recommended. GET /models describes "
        "each and whether it can run now.",
        examples=[scoring_methods.DEFAULT_METHOD],
    )
    real_set_id: int | None = Field(
        default=None,
        ge=1,
        le=MAX_INT,
        description="Real images: a set registered with POST /real-sets (or upload `files`).",
        examples=[1],
    )
    batch_id: int | None = Field(
        default=None,
        ge=1,
        le=MAX_INT,
        description="Generated images: a batch from POST /match (or upload "
        "`generated_files`); methods that do not compare with the generator ignore them.",
        examples=[1],
    )
    threshold: float | None = Field(
        default=None,
        allow_inf_nan=False,
        description="Scores at or above it are labelled `used`. Default: the method's own "
        "(the answer's `threshold_reason` says which).",
        examples=[1.0],
    )

    file_fields = (
        FileField(
            "files", "Real images (or zips) instead of real_set_id.", content_type=IMAGE_TYPES
        ),
        FileField(
            "generated_files",
            "Generated images (or zips) instead of batch_id.",
            content_type=IMAGE_TYPES,
        ),
    )

    def request(self) -> ClassifyRequest:
        return ClassifyRequest(
            method=self.method,
            real_set_id=self.real_set_id,
            batch_id=self.batch_id,
            threshold=self.threshold,
        )
