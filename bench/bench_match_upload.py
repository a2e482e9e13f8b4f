"""POST /match with an ImageCLEF-2023-sized batch over real HTTP to a uvicorn server.

    .venv/bin/python bench/make_generated.py /tmp/memaudit-10k
    .venv/bin/python bench/bench_match_upload.py /tmp/memaudit-10k [--zip] [--repeats 3]

Starts `memaudit serve` on a free loopback port with a fresh SQLite database, registers
DIR/real, then uploads DIR/generated (as file parts, or as one zip with --zip) and reports
the wall time, the server's peak RSS, and for comparison the time to only decode the images.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.imaging.decode import decode_grayscale  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def memaudit_server(env: dict[str, str] | None = None):
    """`memaudit serve` (this checkout's code, this interpreter) on a free loopback port,
    by default with a fresh SQLite database; ``env`` overrides settings (DATABASE_URL, a
    shared MEMAUDIT_DATA_DIR, ...). Yields (process, base URL) once /ready answers."""
    port = free_port()
    full_env = dict(os.environ, MEMAUDIT_DATA_DIR=tempfile.mkdtemp(), MEMAUDIT_LOG_LEVEL="WARNING")
    full_env.pop("DATABASE_URL", None)
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(ROOT)
    server = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        env=full_env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if server.poll() is not None:
                raise RuntimeError(f"memaudit serve exited with {server.returncode}")
            try:
                if httpx.get(f"{base}/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield server, base
    finally:
        server.terminate()
        server.wait()


@contextlib.contextmanager
def bench_database():
    """A throwaway PostgreSQL cluster (fsync on, as in production) with an empty database
    `bench`; yields its SQLAlchemy URL. Exits with a hint when the server binaries are missing."""
    import psycopg

    from tests.pgcluster import pg_bindir, pg_cluster

    bindir = pg_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL server binaries not found (apt-get install postgresql)")
    with pg_cluster(bindir, fsync=True) as address:
        with psycopg.connect(f"postgresql://memaudit@{address}/postgres", autocommit=True) as c:
            c.execute("CREATE DATABASE bench")
        yield f"postgresql+psycopg://memaudit@{address}/bench"


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--zip", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    reals = sorted((args.folder / "real").glob("*.png"))
    gens = sorted((args.folder / "generated").glob("*.png"))
    with memaudit_server() as (server, base), httpx.Client(timeout=600) as client:
        r = client.post(
            f"{base}/real-sets",
            data={"name": "bench"},
            files=[("files", (p.name, p.read_bytes(), "image/png")) for p in reals],
        )
        r.raise_for_status()
        set_id = r.json()["id"]
        blobs = [(p.name, p.read_bytes()) for p in gens]
        if args.zip:
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
                for name, data in blobs:
                    zf.writestr(name, data)
            files = [("files", ("generated.zip", buf.getvalue(), "application/zip"))]
        else:
            files = [("files", (name, data, "image/png")) for name, data in blobs]
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            r = client.post(f"{base}/match", data={"real_set_id": str(set_id)}, files=files)
            times.append(time.perf_counter() - start)
            r.raise_for_status()
        body = r.json()
        rss = peak_rss_mb(server.pid)
    start = time.perf_counter()
    for p in [*reals, *gens]:
        decode_grayscale(p.read_bytes(), 50_000_000)
    decode = time.perf_counter() - start
    wall = statistics.median(times)
    print(
        f"POST /match {len(gens)} generated vs {len(reals)} real ({'zip' if args.zip else 'parts'})"
    )
    print(f"  wall (median of {args.repeats}): {wall:.2f} s  ({len(gens) / wall:.0f} images/s)")
    print(f"  server peak RSS: {rss:.0f} MB")
    print(f"  decode-only of the {len(reals) + len(gens)} images, one core: {decode:.2f} s")
    print(f"  wall / decode-only = {wall / decode:.2f}")
    print(f"  generated_count={body['generated_count']} matched={body['matched_count']}")


if __name__ == "__main__":
    main()
