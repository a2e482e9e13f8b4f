"""Feeding a streamed multipart upload into an ImageIngest while the body is still arriving.

The ingest (which needs the hash size) can only start once the fields that decide it have
arrived; file parts that come earlier wait in temporary files, never in memory.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from pathlib import PurePosixPath

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
    request: Request, settings: Settings, make_ingest: IngestFactory
) -> tuple[dict[str, str], IngestResult]:
    stream = MultipartStream(
        request,
        max_file_bytes=settings.max_file_bytes,
        max_zip_bytes=settings.max_zip_bytes,
        max_fields=settings.max_fields_per_request,
    )
    fields: dict[str, str] = {}
    ingest: ImageIngest | None = None
    waiting: list[FormFile] = []
    file_parts = 0
    try:
        async for part in stream.parts():
            if isinstance(part, FormField):
                if part.name == FILES_FIELD and not part.value:
                    continue  # an empty file input, as Swagger UI sends it
                if part.name in fields:
                    raise HTTPException(422, detail=f"form field {part.name!r} given twice")
                fields[part.name] = part.value
                if ingest is None:
                    ingest = await run_in_threadpool(make_ingest, dict(fields), False)
                    if ingest is not None:
                        for early in waiting:
                            await _feed(ingest, early, settings)
                        waiting.clear()
                continue
            if part.name != FILES_FIELD:
                part.close()
                raise HTTPException(
                    422, detail=f"unexpected file field {part.name!r}; send images as 'files'"
                )
            file_parts += 1
            if ingest is None:
                waiting.append(await run_in_threadpool(_spool, part))
            else:
                await _feed(ingest, part, settings)
        if ingest is None:
            ingest = await run_in_threadpool(make_ingest, dict(fields), True)
            assert ingest is not None
        for early in waiting:
            await _feed(ingest, early, settings)
        waiting.clear()
        if file_parts == 0:
            raise HTTPException(
                422, detail="no files: send one or more images or zip archives as 'files'"
            )
        result = await run_in_threadpool(ingest.finish)
    finally:
        for early in waiting:
            early.close()
    return fields, result


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
