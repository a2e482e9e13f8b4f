"""Feeding a streamed multipart upload into an ImageIngest while the body is still arriving.

The ingest (which needs the hash size) can only start once the fields that decide it have
arrived; file parts that come earlier wait in temporary files, never in memory.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import IO
from urllib.parse import parse_qs

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from app.api.multipart import FormField, FormFile, MultipartStream
from app.config import Settings
from app.imaging.archive import looks_like_zip
from app.services.decode_and_hash import HashingFailed
from app.services.ingest import ImageIngest, IngestLimits, IngestResult

#: Called with the fields seen so far and whether the body has ended; returns the ingest to
#: use, or None to keep waiting (only allowed while not final). May raise HTTPException.
IngestFactory = Callable[[dict[str, str], bool], ImageIngest | None]

FILES_FIELD = "files"
FORM_BODY_LIMIT = 64 * 1024


@dataclass
class SpooledParts:
    """File fields that are not images (e.g. 'hashes'): each part is taken whole to a
    temporary file (``limits``: field name -> most bytes) and handed to the caller in
    ``parts`` instead of being decoded. The caller closes them."""

    limits: dict[str, int]
    parts: dict[str, FormFile] = field(default_factory=dict)

    def close(self) -> None:
        for part in self.parts.values():
            part.close()
        self.parts.clear()


def ingest_limits(settings: Settings) -> IngestLimits:
    return IngestLimits(
        max_file_bytes=settings.max_file_bytes,
        max_files=settings.max_files_per_request,
        max_pixels=settings.max_image_pixels,
        batch_size=settings.hash_batch_size,
    )


def spool_dir(settings: Settings):
    """Temporary files of uploads live under the data directory (sized for them)."""
    path = settings.data_dir / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


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
    spooled: SpooledParts | None = None,
) -> tuple[dict[str, str], IngestResult, dict[str, IngestResult]]:
    """Stream the body into one ingest per file field ('files', plus ``other_file_fields``).

    Returns the text fields, the 'files' result, and the results of the other file fields
    that received at least one part. Where files are optional, a plain
    application/x-www-form-urlencoded body (fields only) is accepted too. File fields named
    in ``spooled`` are kept whole on disk in ``spooled.parts``; with one of them present,
    'files' is not required.
    """
    if not require_files and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > FORM_BODY_LIMIT:
            raise HTTPException(413, detail="form body larger than 64 KiB")
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > FORM_BODY_LIMIT:
                raise HTTPException(413, detail="form body larger than 64 KiB")
        parsed = parse_qs(bytes(body).decode("utf-8", errors="replace"), keep_blank_values=True)
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
        spool_dir=str(spool_dir(settings)),
        spool_fields=spooled.limits if spooled is not None else None,
    )
    factories = {FILES_FIELD: make_ingest, **(other_file_fields or {})}
    raw_fields = spooled.limits if spooled is not None else {}
    fields: dict[str, str] = {}
    ingests: dict[str, ImageIngest] = {}
    waiting = {name: ParkedFiles(str(spool_dir(settings))) for name in factories}
    received: dict[str, int] = dict.fromkeys(factories, 0)

    async def start(name: str, final: bool) -> None:
        if name in ingests:
            return
        ingest = await run_in_threadpool(factories[name], dict(fields), final)
        if ingest is None:
            return
        ingests[name] = ingest
        for early in waiting[name].replay():
            await _feed(ingest, early, settings)

    try:
        async for part in stream.parts():
            if isinstance(part, FormField):
                if (part.name in factories or part.name in raw_fields) and not part.value:
                    continue  # an empty file input, as Swagger UI sends it
                if part.name in raw_fields:
                    raise HTTPException(
                        422,
                        detail=f"send {part.name!r} as a file part "
                        f"(curl -F {part.name}=@{part.name}.csv), not as a text field",
                    )
                if part.name in fields:
                    raise HTTPException(422, detail=f"form field {part.name!r} given twice")
                fields[part.name] = part.value
                for name in factories:
                    if received[name]:
                        await start(name, False)
                continue
            if part.name in raw_fields:
                assert spooled is not None
                if part.name in spooled.parts:
                    part.close()
                    raise HTTPException(422, detail=f"file field {part.name!r} given twice")
                spooled.parts[part.name] = part
                continue
            if part.name not in factories:
                part.close()
                expected = " or ".join(repr(n) for n in [*factories, *raw_fields])
                raise HTTPException(
                    422, detail=f"unexpected file field {part.name!r}; send images as {expected}"
                )
            received[part.name] += 1
            await start(part.name, False)
            if part.name in ingests:
                await _feed(ingests[part.name], part, settings)
            else:
                await run_in_threadpool(waiting[part.name].park, part)
        for name in factories:
            if received[name]:
                await start(name, True)
        if require_files and received[FILES_FIELD] == 0 and not (spooled and spooled.parts):
            also = "".join(f", or a {name!r} file" for name in raw_fields)
            raise HTTPException(
                422, detail=f"no files: send one or more images or zip archives as 'files'{also}"
            )
        results = {}
        for name, ingest in ingests.items():
            results[name] = await run_in_threadpool(ingest.finish)
    except HashingFailed as exc:
        raise HTTPException(503, detail=f"{exc}; nothing was stored") from None
    finally:
        for parked in waiting.values():
            parked.close()
    main = results.pop(FILES_FIELD, IngestResult())
    return fields, main, results


class _Window(io.RawIOBase):
    """Read-only, seekable view of ``length`` bytes at ``offset`` of a shared spool file."""

    def __init__(self, file: IO[bytes], offset: int, length: int) -> None:
        self._file, self._offset, self._length, self._pos = file, offset, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, min(base + pos, self._length))
        return self._pos

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self._length - self._pos)
        if n <= 0:
            return 0
        self._file.seek(self._offset + self._pos)
        data = self._file.read(n)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


class ParkedFiles:
    """File parts that arrived before the fields that decide how to hash them, all in ONE
    temporary file (a request with thousands of early parts must not hold thousands of
    open files or their bytes in memory)."""

    def __init__(self, directory: str) -> None:
        self._dir = directory
        self._file: IO[bytes] | None = None
        self._items: list[tuple[FormFile, int, int]] = []

    def __len__(self) -> int:
        return len(self._items)

    def park(self, part: FormFile) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile(dir=self._dir)  # noqa: SIM115 - see close()
        self._file.seek(0, io.SEEK_END)
        offset = self._file.tell()
        if part.spool is not None:
            part.spool.seek(0)
            shutil.copyfileobj(part.spool, self._file, 1 << 20)
        else:
            self._file.write(part.data)
        length = self._file.tell() - offset
        was_zip = part.spool is not None
        part.close()
        meta = FormFile(
            part.name,
            part.filename,
            part.content_type,
            size=part.size,
            too_large=part.too_large,
            parked=was_zip,
        )
        self._items.append((meta, offset, length))

    def replay(self):
        """Yield the parked parts as FormFiles again, in arrival order."""
        for meta, offset, length in self._items:
            assert self._file is not None
            if meta.parked:  # a zip: hand over a window, not its bytes
                yield FormFile(
                    meta.name,
                    meta.filename,
                    meta.content_type,
                    spool=_Window(self._file, offset, length),  # type: ignore[arg-type]
                    size=meta.size,
                    too_large=meta.too_large,
                )
            else:
                self._file.seek(offset)
                yield FormFile(
                    meta.name,
                    meta.filename,
                    meta.content_type,
                    data=self._file.read(length),
                    size=meta.size,
                    too_large=meta.too_large,
                )
        self._items.clear()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


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
        if part.spool is not None:
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
