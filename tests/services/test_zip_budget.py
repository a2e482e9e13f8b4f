"""A zip's members against the process byte budget (app.services.ingest): a member is counted
before it is read, an upload waiting for room holds no member's bytes, and every byte taken is
given back whatever happens to the members."""

from __future__ import annotations

import io
import tracemalloc
import zipfile

from app.services.byte_budget import ByteBudget
from app.services.ingest import FannedIngest, ImageIngest, IngestLimits
from tests.imagegen import phantom, png

MEMBER = 8_000_000
LIMITS = IngestLimits(max_file_bytes=20_000_000, max_files=100, max_pixels=10**8)


def _zip(entries: dict[str, bytes], corrupt: str | None = None) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    raw = bytearray(buffer.getvalue())
    if corrupt is not None:  # flip a byte of that member's compressed data: a bad CRC
        info = zipfile.ZipFile(io.BytesIO(bytes(raw))).getinfo(corrupt)
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
        raw[start + info.compress_size // 2] ^= 0xFF
    return io.BytesIO(bytes(raw))


def test_a_zip_waiting_for_room_holds_no_member_and_takes_its_size_first():
    budget = ByteBudget(15_000_000)
    budget.take(10_000_000)  # another upload's bytes
    ingest = ImageIngest(16, LIMITS, budget=budget)
    steps = ingest.zip_steps(_zip({"a.png": bytes(MEMBER), "b.png": bytes(MEMBER)}), "z.zip")
    assert next(steps) is True  # 10 MB held + 8 MB coming > 15 MB: waits before reading
    assert budget.used == 10_000_000  # nothing read, nothing taken
    budget.give(10_000_000)
    tracemalloc.start()
    try:
        # a.png is taken, read, queued; b.png does not fit beside it: a.png is hashed (it is
        # not an image: refused), then the upload waits again, before reading b.png.
        assert next(steps) is True
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < MEMBER / 2, f"{held} bytes still traced while waiting"
    assert budget.used == 0
    assert list(steps) == []
    ingest.finish()
    assert budget.used == 0
    assert [r.filename for r in ingest.result.rejected] == ["a.png", "b.png"]


def test_every_byte_taken_is_given_back_whatever_happens_to_the_members():
    budget = ByteBudget(64 * 2**20)
    ingests = [ImageIngest(16, LIMITS, budget=budget), ImageIngest(8, LIMITS, budget=budget)]
    fanned = FannedIngest(ingests)
    members = {
        "good.png": png(phantom(1, 64)),
        "corrupt.png": png(phantom(2, 64)) * 50,  # compressible: its CRC is flipped below
        "../escape.png": png(phantom(3, 64)),  # refused by name, never read
        "big.png": bytes(25_000_000),  # over the member limit by its header, never read
        "zeros.png": bytes(MEMBER),  # read, then refused as not an image
    }
    list(fanned.zip_steps(_zip(members, corrupt="corrupt.png"), "z.zip"))
    fanned.make_room()  # everything hashed: what is still counted is a leak (before release)
    assert budget.used == 0
    for ingest in ingests:
        ingest.finish()
    assert budget.used == 0
    reasons = {r.filename: r.reason for r in ingests[0].result.rejected}
    assert "cannot read member" in reasons["z.zip:corrupt.png"]
    assert "over the limit" in reasons["z.zip:big.png"]
    assert [i.filename for i in ingests[0].result.images] == ["good.png"]


def test_room_taken_by_the_wait_is_the_members_reservation_counted_once():
    """wait_for_room takes the coming member's room as it lets the upload through; reading
    it then counts it once (the reservation becomes the member's held bytes)."""
    import asyncio

    budget = ByteBudget(15_000_000)
    budget.take(10_000_000)
    ingest = ImageIngest(16, LIMITS, budget=budget)
    steps = ingest.zip_steps(_zip({"a.png": bytes(MEMBER)}), "z.zip")
    assert next(steps) is True and ingest.room_needed == MEMBER
    budget.give(10_000_000)
    assert asyncio.run(budget.wait_for_room(1, need=ingest.room_needed))
    ingest.let_through(MEMBER)
    assert budget.used == MEMBER
    assert list(steps) == []  # a.png read and queued, not hashed yet
    assert budget.used == MEMBER
    ingest.finish()
    assert budget.used == 0
