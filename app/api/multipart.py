"""Streaming multipart/form-data reader that hands over each part as soon as it is complete.

Starlette's ``request.form()`` buffers every file of a request (in memory below 1 MB each)
before the handler runs and caps files per request at 1000. An audit uploads 10,000 images
in one request, so the upload routes read the body themselves: text fields and small files
come out as bytes as they finish, zip archives are spooled to a temporary file (their index
is at the end). Limits are enforced while reading.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import IO

from fastapi import HTTPException, Request
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.requests import ClientDisconnect

from app.imaging.archive import looks_like_zip

#: Largest text field value accepted.
MAX_FIELD_BYTES = 64 * 1024
NO_BOUNDARY = "multipart/form-data without a boundary parameter"


def too_many_form_fields(most: int) -> str:
    """The 413 of a multipart body with more than ``most`` text fields."""
    return f"more than {most} form fields"


def not_multipart(content_type: str) -> str:
    """The 415 of a body of another content type."""
    return (
        "send the request as multipart/form-data (fields and files), "
        f"not {content_type or 'an unspecified content type'}"
    )


log = logging.getLogger("memaudit.uploads")


async def body_chunks(request: Request) -> AsyncIterator[bytes]:
    """The request body as it arrives. A client that goes away mid-upload is logged as one
    line and ends the request with a 400 nobody reads (uvicorn drops answers to a closed
    connection), instead of a ~50-line "Exception in ASGI application" traceback."""
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            yield chunk
    except ClientDisconnect:
        log.info(
            "client disconnected during %s %s after %d bytes; nothing was stored",
            request.method,
            request.url.path,
            received,
        )
        raise HTTPException(
            400, detail="the client disconnected before the upload ended; nothing was stored"
        ) from None


@dataclass
class FormField:
    name: str
    value: str


@dataclass
class FormFile:
    """A completed file part: ``data`` in memory, or ``spool`` (a zip) on disk."""

    name: str
    filename: str
    content_type: str
    data: bytes = b""
    spool: IO[bytes] | None = None
    size: int = 0
    too_large: bool = False
    #: Used by ParkedFiles: this parked part was a zip.
    parked: bool = False

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None


@dataclass
class _Part:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    name: str = ""
    filename: str | None = None
    content_type: str = ""
    buffer: bytearray = field(default_factory=bytearray)
    spool: IO[bytes] | None = None
    size: int = 0
    too_large: bool = False
    decided: bool = False  # zip-or-not decided (needs the first bytes)


class MultipartStream:
    """Async iterator of FormField / FormFile parts of a multipart request body."""

    def __init__(
        self,
        request: Request,
        *,
        max_file_bytes: int,
        max_zip_bytes: int,
        max_fields: int,
        spool_dir: str | None = None,
        spool_fields: dict[str, int] | None = None,
    ) -> None:
        content_type, options = parse_options_header(request.headers.get("content-type", ""))
        if content_type != b"multipart/form-data":
            raise HTTPException(
                status_code=415, detail=not_multipart(content_type.decode(errors="replace"))
            )
        boundary = options.get(b"boundary")
        if not boundary:
            raise HTTPException(400, detail=NO_BOUNDARY)
        self._request = request
        self._max_file = max_file_bytes
        self._max_zip = max_zip_bytes
        self._max_fields = max_fields
        self._spool_dir = spool_dir
        #: File fields always spooled to disk whatever their content (name -> byte limit):
        #: text files of a million lines that are parsed after the part has ended.
        self._spool_fields = spool_fields or {}
        self._fields = 0
        self._done: list[FormField | FormFile] = []
        self._part = _Part()
        self._header_name = b""
        self._header_value = b""
        self._error: HTTPException | None = None
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
            },
        )

    # --- parser callbacks -------------------------------------------------------------
    def _on_part_begin(self) -> None:
        self._part = _Part()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._part.headers.append((self._header_name.lower(), self._header_value))
        self._header_name = b""
        self._header_value = b""

    def _on_headers_finished(self) -> None:
        part = self._part
        disposition = b""
        for name, value in part.headers:
            if name == b"content-disposition":
                disposition = value
            elif name == b"content-type":
                part.content_type = value.decode("latin-1").strip().lower()
        _, options = parse_options_header(disposition)
        if b"name" not in options:
            self._fail(400, 'a multipart part has no Content-Disposition "name"')
            return
        part.name = options[b"name"].decode("utf-8", errors="replace")
        if b"filename" in options:
            part.filename = options[b"filename"].decode("utf-8", errors="replace")
            if part.name in self._spool_fields:
                part.decided = True
                part.spool = tempfile.TemporaryFile(dir=self._spool_dir)  # noqa: SIM115 - closed by FormFile.close

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        chunk = data[start:end]
        part.size += len(chunk)
        if part.filename is None:
            if part.size > MAX_FIELD_BYTES:
                self._fail(413, f"form field {part.name!r} is larger than {MAX_FIELD_BYTES} bytes")
                return
            part.buffer.extend(chunk)
            return
        if part.too_large:
            return
        if part.spool is not None:
            limit = self._spool_fields.get(part.name)
            if limit is not None and part.size > limit:
                self._fail(413, f"file field {part.name!r} is larger than {limit} bytes")
                return
            if part.size > self._max_zip:
                part.too_large = True
                return
            part.spool.write(chunk)
            return
        part.buffer.extend(chunk)
        if not part.decided and len(part.buffer) >= 4:
            part.decided = True
            if looks_like_zip(bytes(part.buffer[:4]), part.filename, part.content_type):
                part.spool = tempfile.TemporaryFile(dir=self._spool_dir)  # noqa: SIM115 - closed by FormFile.close
                part.spool.write(part.buffer)
                part.buffer = bytearray()
                return
        if part.size > self._max_file:
            part.too_large = True
            part.buffer = bytearray()

    def _on_part_end(self) -> None:
        part = self._part
        if part.filename is None:
            self._fields += 1
            if self._fields > self._max_fields:
                self._fail(413, too_many_form_fields(self._max_fields))
                return
            self._done.append(
                FormField(part.name, part.buffer.decode("utf-8", errors="replace").strip())
            )
            return
        if part.spool is not None:
            part.spool.seek(0)
        self._done.append(
            FormFile(
                name=part.name,
                filename=part.filename,
                content_type=part.content_type,
                data=bytes(part.buffer),
                spool=part.spool,
                size=part.size,
                too_large=part.too_large,
            )
        )
        self._part = _Part()

    def _fail(self, status: int, message: str) -> None:
        if self._error is None:
            self._error = HTTPException(status_code=status, detail=message)

    # --- iteration --------------------------------------------------------------------
    async def parts(self) -> AsyncIterator[FormField | FormFile]:
        try:
            async for chunk in body_chunks(self._request):
                if not chunk:
                    continue
                try:
                    self._parser.write(chunk)
                except Exception as exc:
                    self._fail(400, f"malformed multipart body: {exc}")
                if self._error is not None:
                    raise self._error
                while self._done:
                    yield self._done.pop(0)
            try:
                self._parser.finalize()
            except Exception as exc:
                self._fail(400, f"malformed multipart body: {exc}")
            if self._error is None and self._parser.state != MultipartState.END:
                self._fail(
                    400,
                    "the multipart body ended before its closing boundary (upload cut short?); "
                    "nothing was stored",
                )
            if self._error is not None:
                raise self._error
            while self._done:
                yield self._done.pop(0)
        finally:
            for item in self._done:
                if isinstance(item, FormFile):
                    item.close()
            if self._part.spool is not None:
                self._part.spool.close()
