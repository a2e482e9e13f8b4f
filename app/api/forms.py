"""Text form fields to the services' validated input, with 422 answers that name the field and
the rule: one parser per multipart endpoint, used however the fields arrived."""

from __future__ import annotations

import math

from fastapi import HTTPException

from app.config import Settings
from app.imaging.hashers import DEFAULT_HASH_KIND, HASHERS, get_hasher
from app.imaging.windowing import Window
from app.scoring.methods import DEFAULT_METHOD, method_names
from app.services.batches import SUMMARY_SCOPES
from app.services.classification import ClassifyRequest
from app.services.matching import MatchRequest

#: Largest id or count accepted anywhere (PostgreSQL INTEGER); beyond it nothing can exist.
MAX_INT = 2**31 - 1
#: Bits of the largest supported hash: no Hamming distance is larger.
MAX_HASH_BITS = max(h.bits_per_hash(size) for h in HASHERS.values() for size in h.sizes)


def int_field(
    fields: dict[str, str],
    name: str,
    *,
    default: int | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
    choices: tuple[int, ...] | None = None,
) -> int | None:
    raw = fields.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPException(422, detail=f"{name} must be an integer, got {raw[:50]!r}") from None
    if not -MAX_INT <= value <= MAX_INT:
        raise HTTPException(422, detail=f"{name} is out of range, got {raw[:50]}")
    if choices is not None and value not in choices:
        allowed = " or ".join(str(c) for c in choices)
        raise HTTPException(422, detail=f"{name} must be {allowed}, got {value}")
    if minimum is not None and value < minimum:
        raise HTTPException(422, detail=f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise HTTPException(422, detail=f"{name} must be at most {maximum}, got {value}")
    return value


def float_field(fields: dict[str, str], name: str) -> float | None:
    raw = fields.get(name, "")
    if raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise HTTPException(422, detail=f"{name} must be a number, got {raw[:50]!r}") from None
    if not math.isfinite(value):
        raise HTTPException(422, detail=f"{name} must be finite")
    return value


def required_int(fields: dict[str, str], name: str, **rules) -> int:
    value = int_field(fields, name, **rules)
    if value is None:
        raise HTTPException(422, detail=f"form field {name!r} is required")
    return value


def name_field(fields: dict[str, str], name: str = "name", max_length: int = 200) -> str:
    value = fields.get(name, "").strip()
    if not value:
        raise HTTPException(422, detail=f"form field {name!r} is required (a name for the set)")
    if len(value) > max_length:
        raise HTTPException(422, detail=f"{name} is longer than {max_length} characters")
    return value


def reject_unknown_fields(
    fields: dict[str, str], allowed: set[str], file_fields: tuple[str, ...] = ("files",)
) -> None:
    """422 for a misspelt or unsupported field instead of silently ignoring it."""
    unknown = set(fields) - allowed
    if unknown:
        expected = ", ".join(sorted(allowed | set(file_fields)))
        raise HTTPException(
            422,
            detail=f"unknown form field(s) {', '.join(sorted(unknown))}; expected {expected}",
        )


#: Fields that must arrive before image parts can be hashed (later parts wait on disk).
NEW_SET_NEEDS = frozenset({"name", "hash_size"})
MATCH_NEEDS = frozenset({"real_set_id"})
#: Optional fields: the window DICOM and 16-bit images are brought to 8 bits with.
WINDOW_FIELDS = frozenset({"window_center", "window_width"})


def window_form(fields: dict[str, str]) -> Window | None:
    """window_center and window_width, both or neither (None: automatic windowing)."""
    center = float_field(fields, "window_center")
    width = float_field(fields, "window_width")
    if center is None and width is None:
        return None
    if center is None or width is None:
        raise HTTPException(
            422,
            detail="send both window_center and window_width (e.g. -600 and 1500 for a lung "
            "window in HU), or neither",
        )
    if width <= 0:
        raise HTTPException(422, detail=f"window_width must be positive, got {width:g}")
    return Window(center, width)


def new_set_form(fields: dict[str, str]) -> tuple[str, int]:
    """POST /real-sets: the set's name and hash size (its window: :func:`window_form`)."""
    reject_unknown_fields(fields, {"name", "hash_size", *WINDOW_FIELDS}, ("files", "hashes"))
    hasher = get_hasher(DEFAULT_HASH_KIND)
    hash_size = int_field(fields, "hash_size", default=hasher.default_size, choices=hasher.sizes)
    assert hash_size is not None
    return name_field(fields), hash_size


def match_form(fields: dict[str, str], settings: Settings) -> MatchRequest:
    """POST /match (whatever fields have arrived; absent optional ones take defaults)."""
    reject_unknown_fields(
        fields, {"real_set_id", "threshold", "top_k", "real_summary", *WINDOW_FIELDS}
    )
    scope = fields.get("real_summary") or "all"
    if scope not in SUMMARY_SCOPES:
        raise HTTPException(
            422, detail=f"real_summary must be all, used or none, got {scope[:50]!r}"
        )
    top_k = int_field(fields, "top_k", default=1, minimum=1, maximum=settings.max_top_k)
    assert top_k is not None
    return MatchRequest(
        real_set_id=required_int(fields, "real_set_id"),
        # A distance is at most the set's bits (checked against the set by the service).
        threshold=int_field(fields, "threshold", minimum=0, maximum=MAX_HASH_BITS),
        top_k=top_k,
        real_summary=scope,  # type: ignore[arg-type]
        window=window_form(fields),
    )


def classify_form(fields: dict[str, str]) -> ClassifyRequest:
    """POST /classify."""
    method = fields.get("method") or DEFAULT_METHOD
    if method not in method_names():
        raise HTTPException(422, detail=f"method must be one of {', '.join(method_names())}")
    reject_unknown_fields(
        fields, {"method", "real_set_id", "batch_id", "threshold"}, ("files", "generated_files")
    )
    return ClassifyRequest(
        method=method,
        real_set_id=int_field(fields, "real_set_id", minimum=1),
        batch_id=int_field(fields, "batch_id", minimum=1),
        threshold=float_field(fields, "threshold"),
    )
