"""Real images registered by precomputed pHash alone (no pixels): parsing and storage.

A data pipeline that must not ship pixels sends `filename,phash_hex` lines, as many as a
million per request. They are parsed from a spooled file a chunk at a time into a few flat
buffers (names back to back, raw hash bytes, one 64-bit key per name for the duplicate
check), never one Python object per line, and stored in one transaction: COPY on
PostgreSQL, multi-row INSERTs elsewhere. The rows have no sha256, size or thumbnail, so
/match works on them (it only reads hashes) and /classify refuses them (it needs pixels).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.bulk import copy_text, insert_rows
from app.db.models import RealImage, RealSet, utcnow
from app.imaging.hashers import DEFAULT_HASH_KIND, get_hasher
from app.search.hamming import pack_words
from app.services import real_sets
from app.services.errors import InvalidInput, TooLarge
from app.services.filenames import MAX_FILENAME_CHARS, name_problem

#: Bytes read from the spooled file at a time.
READ_CHUNK = 1 << 20
#: Longest line accepted: the longest name in UTF-8, a comma, 64 hex digits, some slack.
MAX_LINE_BYTES = 4 * MAX_FILENAME_CHARS + 256
#: Line errors reported by name; the rest are only counted.
MAX_REPORTED_ERRORS = 20
#: Bytes per COPY write (PostgreSQL).
_COPY_CHUNK = 1 << 20
#: Names that look at most like this are checked against the database in one query.
_IN_CHUNK = 500

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class LineError:
    line: int
    error: str


class HashListInvalid(InvalidInput):
    """Some lines are unusable; nothing is stored. Keeps the first errors and the count."""

    def __init__(self, errors: list[LineError], count: int) -> None:
        super().__init__(f"{count} invalid line(s)")
        self.errors = sorted(errors, key=lambda e: e.line)[:MAX_REPORTED_ERRORS]
        self.count = count

    def body(self) -> dict:
        return self.detail()

    def detail(self) -> dict:
        shown = len(self.errors)
        more = f" (the first {shown} are listed)" if self.count > shown else ""
        return {
            "message": f"{self.count} line(s) of 'hashes' are invalid{more}; nothing was stored. "
            "Expected lines `filename,phash_hex` (an optional first line `filename,phash`), "
            "the hex exactly as str(imagehash.phash(image, hash_size)) prints it.",
            "error_count": self.count,
            "errors": [{"line": e.line, "error": e.error} for e in self.errors],
        }


class HashListTooLarge(TooLarge):
    """More lines than one request may carry."""

    def body(self) -> str:
        return f"{self}; nothing was stored"


@dataclass
class ParsedHashes:
    """Valid lines in file order, in flat buffers (about 70 bytes a line for 256-bit)."""

    hash_size: int
    names: bytearray = field(default_factory=bytearray)
    ends: array = field(default_factory=lambda: array("q"))
    hashes: bytearray = field(default_factory=bytearray)
    keys: array = field(default_factory=lambda: array("q"))
    lines: array = field(default_factory=lambda: array("q"))
    header: bool = False

    @property
    def nbytes(self) -> int:
        return self.hash_size * self.hash_size // 8

    def __len__(self) -> int:
        return len(self.ends)

    def name_bytes(self, i: int) -> bytes:
        return bytes(self.names[self.ends[i - 1] if i else 0 : self.ends[i]])

    def name(self, i: int) -> str:
        return self.name_bytes(i).decode("utf-8")

    def phash(self, i: int) -> str:
        n = self.nbytes
        return self.hashes[i * n : (i + 1) * n].hex()

    def rows(self) -> Iterator[tuple[bytes, str]]:
        """(UTF-8 name, phash hex) per entry; one pair alive at a time."""
        n, start = self.nbytes, 0
        for i, end in enumerate(self.ends):
            yield bytes(self.names[start:end]), self.hashes[i * n : (i + 1) * n].hex()
            start = end


class HashListParser:
    """Parses `filename,phash_hex` lines fed in chunks of any size.

    A name may contain commas (the hash is after the last one) and may be quoted as the
    csv module writes it. Hex digits may be upper or lower case (stored lower case, as
    imagehash prints them); blank lines are skipped; a UTF-8 byte order mark is ignored.
    """

    def __init__(self, hash_size: int, max_lines: int) -> None:
        self.parsed = ParsedHashes(hash_size)
        self._hex_digits = 2 * self.parsed.nbytes
        self._max_lines = max_lines
        self._carry = b""
        self._lineno = 0
        self._seen_content = False
        self._skipping_long_line = False
        self.errors: list[LineError] = []
        self.error_count = 0

    def _error(self, line: int, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(LineError(line, message))

    def feed(self, data: bytes) -> None:
        if self._skipping_long_line:  # the rest of a line already reported as too long
            end = data.find(b"\n")
            if end < 0:
                return
            data = data[end + 1 :]
            self._lineno += 1
            self._skipping_long_line = False
        lines = (self._carry + data).split(b"\n")
        self._carry = lines.pop()
        for line in lines:
            self._lineno += 1
            self._line(line)
        if len(self._carry) > MAX_LINE_BYTES:
            self._error(self._lineno + 1, f"line longer than {MAX_LINE_BYTES} bytes")
            self._carry = b""
            self._skipping_long_line = True

    def _line(self, raw: bytes) -> None:
        number = self._lineno
        if number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        text = raw.strip()
        if not text:
            return
        first = not self._seen_content
        self._seen_content = True
        name, comma, hex_ = text.rpartition(b",")
        name, hex_ = name.strip(), hex_.strip()
        if first and name.lower() in (b"filename", b'"filename"'):
            self.parsed.header = True
            return
        if not comma:
            self._error(number, "expected `filename,phash_hex`: no comma")
            return
        if len(name) >= 2 and name[:1] == b'"' and name[-1:] == b'"':
            name = name[1:-1].replace(b'""', b'"')
        if not name:
            self._error(number, "empty filename")
            return
        if len(hex_) != self._hex_digits:
            self._error(
                number,
                f"phash has {len(hex_)} characters; hash_size {self.parsed.hash_size} "
                f"needs {self._hex_digits} hex digits",
            )
            return
        try:
            digest = bytes.fromhex(hex_.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            digest = b""
        if len(digest) != self.parsed.nbytes:  # fromhex skips spaces between digit pairs
            self._error(number, f"phash is not hexadecimal: {hex_[:80].decode('latin-1')!r}")
            return
        try:
            text = name.decode("utf-8")
        except UnicodeDecodeError:
            self._error(number, "filename is not valid UTF-8")
            return
        problem = name_problem(text)  # the one policy images follow too
        if problem is not None:
            self._error(number, problem)
            return
        parsed = self.parsed
        if len(parsed) >= self._max_lines:
            raise HashListTooLarge(
                f"more than {self._max_lines} hashes in one request (line {number}); "
                "split the list and append the rest with POST /real-sets/{id}/hashes"
            )
        parsed.names += name
        parsed.ends.append(len(parsed.names))
        parsed.hashes += digest
        parsed.keys.append(hash(name))
        parsed.lines.append(number)

    def finish(self) -> ParsedHashes:
        """The parsed lines; raises HashListInvalid for bad or duplicate lines."""
        if self._carry:
            self._lineno += 1
            self._line(self._carry)
            self._carry = b""
        self._duplicates_within()
        if self.error_count:
            raise HashListInvalid(self.errors, self.error_count)
        return self.parsed

    def _duplicates_within(self) -> None:
        """Names given twice, found by sorting their 64-bit keys (exact names compared on
        equal keys), so no set of a million strings is built."""
        parsed = self.parsed
        keys = np.frombuffer(parsed.keys, dtype=np.int64) if len(parsed) else np.zeros(0)
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        tied = np.flatnonzero(ordered[1:] == ordered[:-1])
        first_seen: dict[bytes, int] = {}
        # Positions with a tied key, grouped by key, lowest index first within a group.
        for pos in np.unique(np.concatenate([tied, tied + 1])):
            i = int(order[pos])
            name = parsed.name_bytes(i)
            first = first_seen.setdefault(name, i)
            if first != i:
                self._error(
                    parsed.lines[i],
                    f"duplicate filename {name.decode()[:200]!r} "
                    f"(first on line {parsed.lines[first]})",
                )


def parse_hash_file(stream: BinaryIO, hash_size: int, max_lines: int) -> ParsedHashes:
    """Parse a spooled `hashes` part, a chunk at a time."""
    parser = HashListParser(hash_size, max_lines)
    stream.seek(0)
    while chunk := stream.read(READ_CHUNK):
        parser.feed(chunk)
    return parser.finish()


# --- storage ---------------------------------------------------------------------------


def create_hash_set(
    session: Session,
    name: str,
    parsed: ParsedHashes,
    calibration: real_sets.CalibrationConfig,
    hash_kind: str = DEFAULT_HASH_KIND,
) -> RealSet:
    """A new set whose images are the parsed hashes (of ``hash_kind``; revision 1),
    calibrated."""
    get_hasher(hash_kind).check_size(parsed.hash_size)
    real_set = RealSet(
        name=name,
        hash_kind=hash_kind,
        hash_size=parsed.hash_size,
        image_count=len(parsed),
        revision=1,
    )
    session.add(real_set)
    session.flush()
    _insert_hashes(session, real_set.id, 0, parsed)
    # From the parsed bytes: reading a million hashes back from the database would cost as
    # much as calibrating them (3 s).
    words = pack_words(np.frombuffer(parsed.hashes, np.uint8).reshape(-1, parsed.nbytes))
    real_sets.recalibrate(session, real_set, calibration, words)
    session.flush()
    return real_set


def append_hashes(
    session: Session,
    real_set: RealSet,
    parsed: ParsedHashes,
    calibration: real_sets.CalibrationConfig,
) -> RealSet:
    """Append to a set locked by the caller (SELECT ... FOR UPDATE); a name already in the
    set is a line error. Bumps the revision, so every replica's hash cache reloads."""
    _names_already_in_set(session, real_set.id, parsed)
    return real_sets.append_rows(
        session,
        real_set,
        len(parsed),
        lambda start: _insert_hashes(session, real_set.id, start, parsed),
        calibration,
    )


def _names_already_in_set(session: Session, real_set_id: int, parsed: ParsedHashes) -> None:
    """Line errors for names the set already has: the stored names are streamed into 64-bit
    keys, and only names whose key is among them are looked up exactly."""
    if not len(parsed):
        return
    stored = array("q")
    names = session.scalars(
        select(RealImage.filename).where(RealImage.real_set_id == real_set_id)
    ).yield_per(20_000)
    for stored_name in names:
        stored.append(hash(stored_name.encode("utf-8")))
    if not stored:
        return
    new_keys = np.frombuffer(parsed.keys, dtype=np.int64)
    candidates = np.flatnonzero(np.isin(new_keys, np.frombuffer(stored, dtype=np.int64)))
    clashes: list[LineError] = []
    for lo in range(0, len(candidates), _IN_CHUNK):
        chunk = [int(i) for i in candidates[lo : lo + _IN_CHUNK]]
        wanted = {parsed.name(i): i for i in chunk}
        found = session.scalars(
            select(RealImage.filename).where(
                RealImage.real_set_id == real_set_id, RealImage.filename.in_(list(wanted))
            )
        )
        for clash in found:
            clashes.append(
                LineError(
                    parsed.lines[wanted[clash]],
                    f"filename {clash[:200]!r} is already in real set {real_set_id}",
                )
            )
    if clashes:
        raise HashListInvalid(clashes, len(clashes))


#: Columns of a hash-only row (sha256, size and thumbnail stay NULL), on both backends.
HASH_ONLY_COLUMNS = ("real_set_id", "position", "filename", "phash", "created_at")


def _insert_hashes(session: Session, real_set_id: int, start: int, parsed: ParsedHashes) -> None:
    """Rows with filename and hash only. On PostgreSQL the COPY text is built here from the
    parsed bytes in large buffers instead of a Python tuple per row (bulk.insert_rows, which
    the other databases take)."""
    now = utcnow()
    if session.get_bind().dialect.name != "postgresql":
        insert_rows(
            session,
            RealImage,
            HASH_ONLY_COLUMNS,
            (
                (real_set_id, start + i, name.decode("utf-8"), hex_, now)
                for i, (name, hex_) in enumerate(parsed.rows())
            ),
        )
        return
    prefix = f"{real_set_id}\t".encode()
    stamp = f"\t{now.isoformat()}\n".encode()
    with copy_text(session, RealImage, HASH_ONLY_COLUMNS) as copy:
        buffer = bytearray()
        for i, (name, hex_) in enumerate(parsed.rows()):
            # Text COPY in HASH_ONLY_COLUMNS order: control characters were refused, only
            # backslash needs escaping.
            buffer += prefix + b"%d\t%s\t%s" % (
                start + i,
                name.replace(b"\\", b"\\\\"),
                hex_.encode(),
            )
            buffer += stamp
            if len(buffer) >= _COPY_CHUNK:
                copy.write(buffer)
                buffer = bytearray()
        if buffer:
            copy.write(buffer)
