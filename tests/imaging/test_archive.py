"""Zip expansion: members come out with clean names; unsafe or unreadable ones are rejected."""

from __future__ import annotations

import gc
import io
import zipfile

import pytest

from app.imaging.archive import ArchiveError, Member, MemberComing, MemberRejected, iter_zip


def _zip(entries: dict[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    buf.seek(0)
    return buf


def test_common_top_folder_is_stripped_and_metadata_skipped():
    items = list(
        iter_zip(_zip({"real/a.png": b"1", "real/sub/b.png": b"2", "__MACOSX/._a": b"x"}), 100)
    )
    assert items == [Member("a.png", b"1"), Member("sub/b.png", b"2")]


def test_traversal_absolute_and_oversized_members_are_rejected():
    items = list(iter_zip(_zip({"../evil.png": b"1", "/abs.png": b"2", "big.png": b"3" * 50}), 10))
    reasons = {i.name: i.reason for i in items if isinstance(i, MemberRejected)}
    assert "'..'" in reasons["../evil.png"]
    assert "absolute" in reasons["/abs.png"]
    assert "over the limit" in reasons["big.png"]


def test_not_a_zip_raises_archive_error():
    with pytest.raises(ArchiveError, match="not a readable zip"):
        list(iter_zip(io.BytesIO(b"PK\x03\x04 garbage"), 100))


def test_announce_precedes_each_read_with_its_size_and_keeps_no_bytes_while_suspended():
    members = {"a.png": b"1" * 40, "b.png": b"2" * 7, "big.png": b"3" * 50}
    items = iter_zip(_zip(members), 45, announce=True)
    assert next(items) == MemberComing("a.png", 40)
    first = next(items)
    assert first == Member("a.png", b"1" * 40)
    assert next(items) == MemberComing("b.png", 7)
    # Suspended before reading b.png: the generator no longer refers to a.png's bytes.
    assert not any(r is items for r in gc.get_referrers(first.data))
    assert next(items) == Member("b.png", b"2" * 7)
    rejected = next(items)  # over the limit by its header: refused before any read
    assert isinstance(rejected, MemberRejected) and "over the limit" in rejected.reason
    assert list(items) == []
