"""Registering a set of 1,000,000 pHashes on PostgreSQL, and matching against it (issue 4):

    .venv/bin/python bench/bench_pg_register.py [--hashes 1000000] [--generated 10000]

Starts a throwaway PostgreSQL cluster (Debian server binaries, fsync on), creates the schema,
then times the service's own registration path (multi-row INSERTs in one transaction, plus
calibration) for precomputed hashes, and a /match-style search of random generated hashes
against the set loaded from the database (no image bytes involved).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.db.migrate import upgrade_to_head  # noqa: E402
from app.db.session import make_engine, make_session_factory, transaction  # noqa: E402
from app.services import real_sets  # noqa: E402
from app.services.ingest import HashedImage  # noqa: E402
from app.services.set_hash_cache import SetHashCache  # noqa: E402
from app.services.source_matching import match_sources  # noqa: E402
from bench.common import bench_database  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hashes", type=int, default=1_000_000)
    parser.add_argument("--generated", type=int, default=10_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    hexes = [row.tobytes().hex() for row in rng.integers(0, 256, (args.hashes, 32), np.uint8)]
    images = [
        HashedImage(f"real_{i:07d}.png", f"{i:064x}", h, 256, 256) for i, h in enumerate(hexes)
    ]
    with bench_database() as database_url:
        engine = make_engine(database_url)
        upgrade_to_head(engine, ROOT / "migrations")
        sessions = make_session_factory(engine)
        config = real_sets.CalibrationConfig(quantile=0.05, min_images=10)
        start = time.perf_counter()
        with transaction(sessions) as session:
            real_set = real_sets.create_real_set(session, "1M", 16, images, config)
        register_s = time.perf_counter() - start
        start = time.perf_counter()
        with sessions() as session:
            real_set = real_sets.get_real_set(session, real_set.id)
            cache = SetHashCache()
            hashes = cache.get(session, real_set)
        load_s = time.perf_counter() - start
        gen = [
            HashedImage(f"g{i}.png", "", row.tobytes().hex(), 256, 256)
            for i, row in enumerate(rng.integers(0, 256, (args.generated, 32), np.uint8))
        ]
        start = time.perf_counter()
        match_sources(hashes.filenames, hashes.words, gen, 16, 50)
        search_s = time.perf_counter() - start
        engine.dispose()
    print(
        f"register {args.hashes:,} hashes on PostgreSQL (one transaction, incl. calibration): "
        f"{register_s:.1f} s = {args.hashes / register_s:,.0f} hashes/s"
    )
    print(f"load the set's hashes from the database into the packed matrix: {load_s:.1f} s")
    print(f"search {args.generated:,} generated x {args.hashes:,} real (256-bit): {search_s:.1f} s")


if __name__ == "__main__":
    main()
