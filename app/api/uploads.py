"""Feeding a streamed multipart upload into an ImageIngest while the body is still arriving.

The ingest (which needs the hash size) can only start once the fields that decide it have
arrived; file parts that come earlier wait in temporary files, never in memory.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from pathlib import PurePosixPath
from urllib.parse import parse_qs

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from app.api.multipart import FormField, FormFile, MultipartStream
from app.config import Settings
from app.imaging.archive import looks_like_zip
from app.services.ingest import ImageIngest, IngestLimits, IngestResult

#: Called with the fields seen so far and whether the body has ended; returns the ingest to
#: use, or None to keep waiting (only allowed while not final). May raise HTTPException.
IngestFactory = Callable[[dict[str, str], bool], ImageIngest | None]

FILES_FIELD = "files"


def ingest_limits(settings: Settings) -> IngestLimits:
    return IngestLimits(
        max_file_bytes=settings.max_file_bytes,
        max_files=settings.max_files_per_request,
        max_pixels=settings.max_image_pixels,
        batch_size=settings.hash_batch_size,
    )


def _clean_filename(raw: str) -> str:
    """Clients may send a full local path; keep the last component."""
    return PurePosixPath(raw.replace("\\", "/")).name.strip()


async def receive_upload(
    request: Request,
    settings: Settings,
    make_ingest: IngestFactory,
    *,
    other_file_fields: dict[str, IngestFactory] | None = None,
    require_files: bool = True,
) -> tuple[dict[str, str], IngestResult, dict[str, IngestResult]]:
    """Stream the body into one ingest per file field ('files', plus ``other_file_fields``).

    Returns the text fields, the 'files' result, and the results of the other file fields
    that received at least one part. Where files are optional, a plain
    application/x-www-form-urlencoded body (fields only) is accepted too.
    """
    if not require_files and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        body = await request.body()
        if len(body) > 64 * 1024:
            raise HTTPException(413, detail="form body larger than 64 KiB")
        parsed = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
        if len(parsed) > settings.max_fields_per_request:
            raise HTTPException(413, detail=f"more than {settings.max_fields_per_request} fields")
        for name, values in parsed.items():
            if len(values) > 1:
                raise HTTPException(422, detail=f"form field {name!r} given twice")
        return {k: v[0].strip() for k, v in parsed.items()}, IngestResult(), {}
    stream = MultipartStream(
        request,
        max_file_bytes=settings.max_file_bytes,
        max_zip_bytes=settings.max_zip_bytes,
        max_fields=settings.max_fields_per_request,
    )
    factories = {FILES_FIELD: make_ingest, **(other_file_fields or {})}
    fields: dict[str, str] = {}
    ingests: dict[str, ImageIngest] = {}
    waiting: dict[str, list[FormFile]] = {name: [] for name in factories}
    received: dict[str, int] = dict.fromkeys(factories, 0)

    async def start(name: str, final: bool) -> None:
        if name in ingests:
            return
        ingest = await run_in_threadpool(factories[name], dict(fields), final)
        if ingest is None:
            return
        ingests[name] = ingest
        for early in waiting[name]:
            await _feed(ingest, early, settings)
        waiting[name].clear()

    try:
        async for part in stream.parts():
            if isinstance(part, FormField):
                if part.name in factories and not part.value:
                    continue  # an empty file input, as Swagger UI sends it
                if part.name in fields:
                    raise HTTPException(422, detail=f"form field {part.name!r} given twice")
                fields[part.name] = part.value
                for name in factories:
                    if received[name]:
                        await start(name, False)
                continue
            if part.name not in factories:
                part.close()
                expected = " or ".join(repr(n) for n in factories)
                raise HTTPException(
                    422, detail=f"unexpected file field {part.name!r}; send images as {expected}"
                )
            received[part.name] += 1
            await start(part.name, False)
            if part.name in ingests:
                await _feed(ingests[part.name], part, settings)
            else:
                waiting[part.name].append(await run_in_threadpool(_spool, part))
        for name in factories:
            if received[name]:
                await start(name, True)
        if require_files and received[FILES_FIELD] == 0:
            raise HTTPException(
                422, detail="no files: send one or more images or zip archives as 'files'"
            )
        results = {}
        for name, ingest in ingests.items():
            results[name] = await run_in_threadpool(ingest.finish)
    finally:
        for parts in waiting.values():
            for early in parts:
                early.close()
    main = results.pop(FILES_FIELD, IngestResult())
    return fields, main, results


def _spool(part: FormFile) -> FormFile:
    """Move an in-memory file part to a temporary file while it waits for the fields."""
    if part.spool is None and not part.too_large:
        spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed by FormFile.close
        spool.write(part.data)
        spool.seek(0)
        part.spool = spool
        part.data = b""
        part.parked = True
    return part


async def _feed(ingest: ImageIngest, part: FormFile, settings: Settings) -> None:
    filename = _clean_filename(part.filename)
    try:
        if not filename:
            if part.size == 0:
                return  # an empty file input
            ingest.reject("(no filename)", "file part has no filename")
            return
        if part.too_large:
            limit = settings.max_zip_bytes if part.spool is not None else settings.max_file_bytes
            ingest.reject(filename, f"file is larger than the limit of {limit} bytes")
            return
        if part.spool is not None and part.parked:
            data = part.spool.read()
            if looks_like_zip(data[:4], filename, part.content_type):
                await run_in_threadpool(ingest.add_zip, io.BytesIO(data), filename)
                return
            ingest.add(filename, data)
        elif part.spool is not None:
            await run_in_threadpool(ingest.add_zip, part.spool, filename)
            return
        elif looks_like_zip(part.data[:4], filename, part.content_type):
            await run_in_threadpool(ingest.add_zip, io.BytesIO(part.data), filename)
            return
        else:
            ingest.add(filename, part.data)
        if ingest.needs_flush:
            await run_in_threadpool(ingest.flush)
    finally:
        part.close()
