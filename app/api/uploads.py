"""Reading a streamed multipart upload, step by step as the route asks.

A route first reads the text fields that decide how images are hashed (``read_fields``),
asks its service for the ingest those fields call for, then streams every file part into
it (``read_files``) while the body is still arriving. File parts that come before the fields
they need wait in one temporary file, never in memory; text fields may come anywhere.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO
from urllib.parse import parse_qs

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from app.api.multipart import FormField, FormFile, MultipartStream, body_chunks
from app.config import Settings
from app.imaging.archive import looks_like_zip
from app.services.decode_and_hash import HashingFailed
from app.services.errors import Busy, Unavailable
from app.services.filenames import uploaded_name
from app.services.ingest import ImageIngest, IngestResult
from app.services.jobs import current_job

FILES_FIELD = "files"
#: A job's upload waits this long at most for room in the process budget (a request's
#: client is answered 503 after MEMAUDIT_UPLOAD_BUDGET_WAIT_S instead).
JOB_BUDGET_WAIT_S = 6 * 3600.0
FORM_BODY_LIMIT = 64 * 1024


def too_many_fields(most: int) -> str:
    """The 413 of a form with more than ``most`` non-file fields."""
    return f"more than {most} fields"


def spool_dir(settings: Settings) -> Path:
    """Temporary files of uploads live under the data directory (sized for them)."""
    path = settings.data_dir / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


class UploadReader:
    """One multipart request body, read in order.

    ``file_fields`` are image fields (each fed to its own ingest); ``spooled`` names file
    fields taken whole to a temporary file instead (e.g. a ``hashes`` list; name -> most
    bytes), found in :attr:`spooled_parts` after :meth:`read_files`; ``hint`` ends the
    answer to a file field the endpoint does not take. Where files are optional
    (``fields_only_allowed``) a plain application/x-www-form-urlencoded body is read too.
    ``repeatable`` text fields may be given more than once: their values are collected in a
    list, and :meth:`read_fields` reads every text field up to the first image part.
    Use as an async context manager: temporary files are removed on exit.
    """

    def __init__(
        self,
        request: Request,
        settings: Settings,
        *,
        file_fields: tuple[str, ...] = (FILES_FIELD,),
        spooled: dict[str, int] | None = None,
        hint: str = "",
        fields_only_allowed: bool = False,
        repeatable: frozenset[str] = frozenset(),
    ) -> None:
        self._settings = settings
        self._repeatable = repeatable
        self._hint = hint
        self._file_fields = file_fields
        self._spooled_limits = spooled or {}
        self._parts: AsyncIterator[FormField | FormFile]
        if fields_only_allowed and is_urlencoded(request):
            self._parts = _urlencoded_parts(request, settings)
        else:
            self._parts = MultipartStream(
                request,
                max_file_bytes=settings.max_file_bytes,
                max_zip_bytes=settings.max_zip_bytes,
                max_fields=settings.max_fields_per_request,
                spool_dir=str(spool_dir(settings)),
                spool_fields=self._spooled_limits or None,
            ).parts()
        self._parked = ParkedFiles(str(spool_dir(settings)))
        #: Text fields received so far (a list of values for a ``repeatable`` one).
        self.fields: dict[str, str | list[str]] = {}
        self.spooled_parts: dict[str, FormFile] = {}
        #: File parts received per image field (empty file inputs not counted).
        self.received: dict[str, int] = dict.fromkeys(file_fields, 0)
        self._ended = False
        #: Ingests fed by this request: their share of the process byte budget is given
        #: back on exit, however the request ends.
        self._fed: list[ImageIngest] = []

    async def __aenter__(self) -> UploadReader:
        return self

    async def __aexit__(self, *_exc) -> None:
        await self._parts.aclose()  # type: ignore[attr-defined]
        for ingest in self._fed:
            ingest.release()
        self._parked.close()
        for part in self.spooled_parts.values():
            part.close()

    async def read_fields(
        self, needed: frozenset[str] | set[str], optional: frozenset[str] = frozenset()
    ) -> dict[str, str | list[str]]:
        """Read until every field in ``needed`` has arrived or the body has ended; image
        parts met on the way are parked. ``optional`` fields (and, where some field is
        repeatable, all of them) count too when they come before the next image part
        (reading stops at that part, it does not wait for them). Returns the text fields
        seen so far."""
        while not self._ended and not needed <= self.fields.keys():
            await self._park_image(await self._next())
        while not self._ended and (self._repeatable or not optional <= self.fields.keys()):
            if await self._park_image(await self._next()):
                break
        return dict(self.fields)

    async def _park_image(self, part: FormField | FormFile | None) -> bool:
        """Park ``part`` if it is an image part; whether it was."""
        if isinstance(part, FormFile) and part.name in self._file_fields:
            self.received[part.name] += 1
            await run_in_threadpool(self._parked.park, part)
            return True
        return False

    async def read_files(self, ingests: dict[str, ImageIngest]) -> dict[str, str | list[str]]:
        """Feed the parked parts, then every remaining image part, to the ingest of its
        field (an image field without an ingest is refused); returns all text fields."""
        self._fed.extend(i for i in ingests.values() if i not in self._fed)
        for part in self._parked.replay():
            await self._feed(self._ingest_for(ingests, part), part)
        while not self._ended:
            part = await self._next()
            if isinstance(part, FormFile) and part.name in self._file_fields:
                self.received[part.name] += 1
                await self._feed(self._ingest_for(ingests, part), part)
        return dict(self.fields)

    def require_files(self) -> None:
        """422 unless some image or spooled file arrived."""
        if not self.received.get(FILES_FIELD) and not self.spooled_parts:
            also = "".join(f", or a {name!r} file" for name in self._spooled_limits)
            raise HTTPException(
                422, detail=f"no files: send one or more images or zip archives as 'files'{also}"
            )

    async def _next(self) -> FormField | FormFile | None:
        """The next part, with text fields and spooled parts recorded; None at the end."""
        try:
            part = await anext(self._parts)
        except StopAsyncIteration:
            self._ended = True
            return None
        if isinstance(part, FormField):
            self._take_field(part)
            return part
        if part.name in self._spooled_limits:
            if part.name in self.spooled_parts:
                part.close()
                raise HTTPException(422, detail=f"file field {part.name!r} given twice")
            self.spooled_parts[part.name] = part
            return part
        if part.name not in self._file_fields:
            part.close()
            expected = " or ".join(repr(n) for n in [*self._file_fields, *self._spooled_limits])
            raise HTTPException(
                422,
                detail=f"unexpected file field {part.name!r}; this endpoint takes {expected}"
                + self._hint,
            )
        return part

    def _take_field(self, part: FormField) -> None:
        file_inputs = (*self._file_fields, *self._spooled_limits)
        if part.name in file_inputs and not part.value:
            return  # an empty file input, as Swagger UI sends it
        if part.name in self._spooled_limits:
            raise HTTPException(
                422,
                detail=f"send {part.name!r} as a file part "
                f"(curl -F {part.name}=@{part.name}.csv), not as a text field",
            )
        if part.name in self.fields and part.name not in self._repeatable:
            raise HTTPException(422, detail=f"form field {part.name!r} given twice")
        if "\x00" in part.value:  # no database stores it (PostgreSQL refuses NUL in text)
            raise HTTPException(422, detail=f"form field {part.name!r} contains a NUL character")
        if part.name in self._repeatable:
            values = self.fields.setdefault(part.name, [])
            assert isinstance(values, list)
            values.append(part.value)
            return
        self.fields[part.name] = part.value

    def _ingest_for(self, ingests: dict[str, ImageIngest], part: FormFile) -> ImageIngest:
        ingest = ingests.get(part.name)
        if ingest is None:
            part.close()
            raise HTTPException(
                422, detail=f"this endpoint takes no {part.name!r} files{self._hint}"
            )
        return ingest

    async def _feed(self, ingest: ImageIngest, part: FormFile) -> None:
        filename = uploaded_name(part.filename)  # kept as sent unless it is a local path
        settings = self._settings
        try:
            if not filename.strip():
                if part.size == 0:
                    return  # an empty file input
                ingest.reject("(no filename)", "file part has no filename")
                return
            if part.too_large:
                limit = (
                    settings.max_zip_bytes if part.spool is not None else settings.max_file_bytes
                )
                ingest.reject(filename, f"file is larger than the limit of {limit} bytes")
                return
            if part.spool is not None:
                await self._feed_zip(ingest, part.spool, filename)
            elif looks_like_zip(part.data[:4], filename, part.content_type):
                await self._feed_zip(ingest, io.BytesIO(part.data), filename)
            else:
                ingest.add(filename, part.data)
                if ingest.needs_flush:
                    await run_in_threadpool(ingest.flush)
                await self._wait_for_budget(ingest)
        except HashingFailed as exc:
            raise Unavailable(f"{exc}; nothing was stored") from None
        finally:
            part.close()

    async def _feed_zip(self, ingest: ImageIngest, stream: IO[bytes], filename: str) -> None:
        """The members of a zip, a step at a time: between steps, wait for budget room."""
        steps = ingest.zip_steps(stream, filename)
        try:
            while await run_in_threadpool(next, steps, False):
                await self._wait_for_budget(ingest)
        finally:
            steps.close()

    async def _wait_for_budget(self, ingest: ImageIngest) -> None:
        """Over the process byte budget: hash what this upload holds, then wait for room
        (reading no more of the body); 503 with Retry-After if none comes in time."""
        if not ingest.over_budget:
            return
        await run_in_threadpool(ingest.make_room)
        assert ingest.budget is not None
        need = ingest.room_needed  # taken by the wait: the zip member about to be read
        wait_s = self._settings.upload_budget_wait_s
        job = current_job.get()
        if job is not None:  # nobody waits on a job's answer: it waits its turn, however long
            if await ingest.budget.wait_for_room(JOB_BUDGET_WAIT_S, job.stop.is_set, need):
                ingest.let_through(need)
                return
            job.check()  # a cancellation (or shutdown) while it waited
        if await ingest.budget.wait_for_room(wait_s, need=need):
            ingest.let_through(need)
        else:
            raise Busy(
                f"the server is busy: uploads in progress hold its budget of "
                f"{ingest.budget.limit} image bytes (MEMAUDIT_MAX_PROCESS_PENDING_BYTES) and "
                f"its turn did not come within {wait_s:g} s; retry later; nothing was stored"
            )


async def finish_ingest(ingest: ImageIngest) -> IngestResult:
    """Wait for the last images of an upload to be hashed (off the event loop)."""
    try:
        return await run_in_threadpool(ingest.finish)
    except HashingFailed as exc:
        raise Unavailable(f"{exc}; nothing was stored") from None


async def _urlencoded_parts(request: Request, settings: Settings) -> AsyncIterator[FormField]:
    """The fields of an application/x-www-form-urlencoded body (no files), capped."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > FORM_BODY_LIMIT:
        raise HTTPException(413, detail="form body larger than 64 KiB")
    body = bytearray()
    async for chunk in body_chunks(request):
        body.extend(chunk)
        if len(body) > FORM_BODY_LIMIT:
            raise HTTPException(413, detail="form body larger than 64 KiB")
    parsed = parse_qs(bytes(body).decode("utf-8", errors="replace"), keep_blank_values=True)
    if len(parsed) > settings.max_fields_per_request:
        raise HTTPException(413, detail=too_many_fields(settings.max_fields_per_request))
    for name, values in parsed.items():
        for value in values:  # a name given twice is refused by the reader
            yield FormField(name, value.strip())


def is_urlencoded(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded")


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

    def replay(self) -> Iterator[FormFile]:
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
