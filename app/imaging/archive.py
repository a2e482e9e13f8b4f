"""Safe expansion of uploaded .zip archives into (member name, bytes) pairs.

Members are only read, never written to disk, so path tricks like ``../x`` cannot escape
anywhere; they are still rejected with a reason because they signal a malformed archive.
"""

from __future__ import annotations

import posixpath
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class MemberComing:
    """The member about to be read, at most ``size`` bytes (its declared size, capped at the
    limit): yielded before reading when asked, so a caller can make room for it first."""

    name: str
    size: int


@dataclass(frozen=True, slots=True)
class MemberRejected:
    name: str
    reason: str


class ArchiveError(ValueError):
    """The archive as a whole cannot be read; ``str(err)`` is the reason."""


def looks_like_zip(head: bytes, filename: str = "", content_type: str = "") -> bool:
    return (
        head.startswith((ZIP_MAGIC, EMPTY_ZIP_MAGIC))
        or filename.lower().endswith(".zip")
        or content_type in {"application/zip", "application/x-zip-compressed"}
    )


def _unsafe_reason(name: str) -> str | None:
    if "\x00" in name:
        return "member name contains a NUL byte"
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":"):
        return "absolute path inside the archive"
    if ".." in normalized.split("/"):
        return "path escapes the archive ('..')"
    return None


def _is_hidden_metadata(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return (
        parts[0] == "__MACOSX"
        or parts[-1].startswith("._")
        or parts[-1]
        in {
            ".DS_Store",
            "Thumbs.db",
        }
    )


def iter_zip(
    stream: BinaryIO,
    max_member_bytes: int,
    on_count: Callable[[int], None] | None = None,
    announce: bool = False,
) -> Iterator[Member | MemberRejected | MemberComing]:
    """Yield every file member of the archive, or a rejection with the reason; ``on_count``
    is told how many will come once the archive's directory is read. With ``announce``, a
    :class:`MemberComing` precedes each member that is read (then its Member or rejection).

    Directory entries and OS metadata files (``__MACOSX``, ``.DS_Store``) are skipped. Names
    lose the single top-level folder that all members share (``real/a.png`` -> ``a.png``).
    """
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArchiveError(f"not a readable zip archive: {exc}") from None
    with archive:
        infos = [i for i in archive.infolist() if not i.is_dir()]
        infos = [i for i in infos if not _is_hidden_metadata(i.filename)]
        prefix = _common_folder([i.filename for i in infos])
        if on_count is not None:
            on_count(len(infos))
        for info in infos:
            display = info.filename[len(prefix) :] if prefix else info.filename
            label = display
            reason = _unsafe_reason(info.filename)
            if reason:
                yield MemberRejected(label, reason)
                continue
            if info.flag_bits & 0x1:
                yield MemberRejected(label, "member is encrypted")
                continue
            if info.file_size > max_member_bytes:
                yield MemberRejected(
                    label, f"member is {info.file_size} bytes, over the limit of {max_member_bytes}"
                )
                continue
            if announce:
                yield MemberComing(label, min(info.file_size, max_member_bytes + 1))
            try:
                with archive.open(info) as fh:
                    # Read one byte past the limit: a lying header cannot inflate memory use.
                    data = fh.read(max_member_bytes + 1)
            except Exception as e:  # zlib/lzma/bz2 errors, bad CRC, unsupported method, ...
                yield MemberRejected(label, f"cannot read member: {type(e).__name__}: {e}")
                continue
            # This frame lets go of the bytes before it suspends: a generator waiting (for
            # budget room before its next member) must not keep the last member alive.
            if len(data) > max_member_bytes:
                data = b""
                yield MemberRejected(label, f"member is over the limit of {max_member_bytes} bytes")
                continue
            member, data = Member(label, data), b""
            yield member
            del member


def _common_folder(names: list[str]) -> str:
    """'top/' when every member lives under one top-level folder, else ''."""
    if not names:
        return ""
    firsts = {n.replace("\\", "/").split("/", 1)[0] for n in names}
    if len(firsts) == 1 and all("/" in n.replace("\\", "/") for n in names):
        top = firsts.pop()
        if top not in {"", ".", ".."}:
            return posixpath.join(top, "")
    return ""
