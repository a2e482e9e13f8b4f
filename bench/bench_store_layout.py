"""A 10,000-image batch in the image store: one file per image (today) vs one file per batch.

Issue 11 asks whether a batch's bytes should go in one file (creating 10,000 files was said
to cost ~3 s of a /match). This measures, in one run on the same disk, for N blobs of the
size of a 256x256 CT PNG: writing them (ImageStore.put vs one packed file with an offset
index), reading 200 back at random, and deleting them; then what reference counting adds
to every upload and DELETE with the per-image layout (app.services.retention on SQLite with
the batch's N rows): the check that an upload's N digests are referenced (its release) and
the removal of N unreferenced files after the batch is deleted.

    .venv/bin/python bench/bench_store_layout.py [--count 10000] [--size 60000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from app.config import Settings  # noqa: E402
from app.db.migrate import upgrade_to_head  # noqa: E402
from app.db.models import GeneratedImage, MatchBatch  # noqa: E402
from app.db.session import make_engine, make_session_factory, transaction  # noqa: E402
from app.services import batches  # noqa: E402
from app.services.retention import ImageRetention  # noqa: E402
from app.storage import FeatureStore, ImageStore  # noqa: E402


def blobs(count: int, size: int) -> list[bytes]:
    """Distinct incompressible blobs (what a PNG's bytes look like to the file system)."""
    seed = os.urandom(size)
    return [i.to_bytes(8, "little") + seed[8:] for i in range(count)]


def write_files(store: ImageStore, items: list[tuple[str, bytes]]) -> None:
    for digest, data in items:
        store.put(digest, data)


def write_pack(path: Path, items: list[tuple[str, bytes]]) -> None:
    """One file: the blobs back to back, then (digest, offset, length) per blob, then the
    index's offset; written to a temporary name and renamed, as the store writes files."""
    tmp = path.with_name(".tmp-" + path.name)
    with tmp.open("wb") as fh:
        index = []
        for digest, data in items:
            index.append((digest, fh.tell(), len(data)))
            fh.write(data)
        start = fh.tell()
        for digest, offset, length in index:
            fh.write(bytes.fromhex(digest) + struct.pack("<QQ", offset, length))
        fh.write(struct.pack("<Q", start))
    os.replace(tmp, path)


def read_pack(path: Path, wanted: list[str]) -> int:
    with path.open("rb") as fh:
        fh.seek(-8, os.SEEK_END)
        end = fh.tell()
        (start,) = struct.unpack("<Q", fh.read(8))
        fh.seek(start)
        raw = fh.read(end - start)
        index = {
            raw[i : i + 32].hex(): struct.unpack("<QQ", raw[i + 32 : i + 48])
            for i in range(0, len(raw), 48)
        }
        total = 0
        for digest in wanted:
            offset, length = index[digest]
            fh.seek(offset)
            total += len(fh.read(length))
        return total


def timed(work, *args) -> tuple[float, object]:
    started = time.perf_counter()
    result = work(*args)
    return time.perf_counter() - started, result


def batch_rows(sessions, items: list[tuple[str, bytes]]) -> int:
    """A stored batch whose generated image rows name the ``items`` (as /match stores them)."""
    with transaction(sessions) as session:
        batch = MatchBatch(
            real_set_name="bench",
            real_set_revision=1,
            hash_size=16,
            threshold=0,
            threshold_source="paper",
            threshold_reason="bench",
            top_k=1,
            generated_count=len(items),
            matched_count=0,
        )
        session.add(batch)
        session.flush()
        session.execute(
            insert(GeneratedImage),
            [
                {
                    "batch_id": batch.id,
                    "position": i,
                    "filename": f"g{i}.png",
                    "sha256": digest,
                    "phash": "0" * 64,
                    "distance": 0,
                    "candidates": [],
                }
                for i, (digest, _) in enumerate(items)
            ],
        )
        return batch.id


def one_run(work: Path, items: list[tuple[str, bytes]], sample: list[str]) -> dict[str, float]:
    seconds: dict[str, float] = {}
    store = ImageStore(work / "images")
    seconds["files: write"], _ = timed(write_files, store, items)
    seconds["files: read 200"], _ = timed(lambda: [store.get(d) for d in sample])
    pack = work / "batch.pack"
    seconds["pack: write"], _ = timed(write_pack, pack, items)
    seconds["pack: read 200"], _ = timed(read_pack, pack, sample)
    seconds["pack: delete"], _ = timed(pack.unlink)

    settings = Settings(data_dir=work, database_url=f"sqlite:///{work / 'bench.db'}")
    engine = make_engine(settings.effective_database_url)
    try:
        upgrade_to_head(engine, settings.migrations_dir)
        sessions = make_session_factory(engine)
        batch_id = batch_rows(sessions, items)
        retention = ImageRetention(store, FeatureStore(work / "features"), sessions)
        digests = [d for d, _ in items]
        seconds[RELEASE], kept = timed(retention.remove_unreferenced, digests)
        assert kept.images == 0, kept.summary()
        with transaction(sessions) as session:
            batches.delete_batch(session, batch_id)
        seconds[DELETE], removed = timed(retention.remove_unreferenced, digests)
        assert removed.images == len(items), removed.summary()
    finally:
        engine.dispose()
    return seconds


RELEASE = "files: upload's release check (all referenced)"
DELETE = "files: DELETE aftermath (check + unlink all)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=60_000, help="bytes per image")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=str(ROOT / "data"), help="where to write (a disk)")
    args = parser.parse_args()
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    data = blobs(args.count, args.size)
    items = [(hashlib.sha256(b).hexdigest(), b) for b in data]
    sample = random.Random(0).sample([d for d, _ in items], min(200, args.count))
    rows: dict[str, list[float]] = {}

    for _ in range(args.repeats):
        work = Path(tempfile.mkdtemp(prefix="store-layout-", dir=args.dir))
        try:
            for name, seconds in one_run(work, items, sample).items():
                rows.setdefault(name, []).append(seconds)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    print(f"{args.count} images of {args.size} bytes, {args.repeats} runs, median seconds")
    med = {name: statistics.median(times) for name, times in rows.items()}
    for name, seconds in med.items():
        print(f"  {name:<48} {seconds:8.3f}   runs: " + " ".join(f"{t:.3f}" for t in rows[name]))
    print(
        f"write: files {med['files: write']:.3f} s vs pack {med['pack: write']:.3f} s "
        f"({med['files: write'] / med['pack: write']:.1f}x); read 200: files "
        f"{med['files: read 200']:.3f} s vs pack {med['pack: read 200']:.3f} s; delete: files "
        f"{med[DELETE]:.3f} s (with the reference "
        f"check) vs pack {med['pack: delete']:.4f} s"
    )


if __name__ == "__main__":
    main()
