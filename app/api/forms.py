"""Validation of text form fields with 422 answers that name the field and the rule."""

from __future__ import annotations

import math

from fastapi import HTTPException

#: Largest id or count accepted anywhere (PostgreSQL INTEGER); beyond it nothing can exist.
MAX_INT = 2**31 - 1


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
