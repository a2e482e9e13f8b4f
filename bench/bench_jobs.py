"""A large /match as a job (issue 12): progress through GET /jobs/{id} and the client's
progress lines, a kill -9 of the server mid-job and what follows, and the job machinery's
overhead beside the synchronous request on the same batch.

    .venv/bin/python bench/bench_jobs.py [--count 100000] [--size 256] [--kill-at 0.5]
                                         [--compare 10000]

Generated images are CT slices of ../shared/data/ct resized to ``--size`` with a unique
random crop and noise each (every one distinct bytes: no duplicate is skipped), written once
to a zip under /tmp (kept for reruns). The real set is 200 other slices. One server process
with its default hash workers; the client is `memaudit client match` as a pipeline runs it
(stderr not a terminal: one progress line per stage and every 30 s).
"""

from __future__ import annotations

import argparse
import functools
import glob
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import CT_DIR, free_port, load_average, memaudit_server  # noqa: E402

DATA = CT_DIR if CT_DIR.exists() else Path("/work/shared/data/ct")
CACHE = Path(tempfile.gettempdir()) / "memaudit-bench-jobs"


def _slices() -> list[str]:
    return sorted(glob.glob(str(DATA / "*/*.png")))


@functools.lru_cache(maxsize=4096)
def _slice(path: str, size: int) -> np.ndarray:
    """A slice resized to 110% of ``size`` (each worker reads each file once)."""
    import cv2

    image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    grown = size + size // 10
    return cv2.resize(image, (grown, grown), interpolation=cv2.INTER_AREA)


def _make(args: tuple[int, int, str]) -> tuple[str, bytes]:
    """Generated image ``index``: a random ``size`` crop of a slice with a little noise."""
    import cv2

    index, size, path = args
    rng = np.random.default_rng(index)
    image = _slice(path, size)
    dy, dx = rng.integers(0, size // 10 + 1, 2)
    crop = image[dy : dy + size, dx : dx + size].astype(np.int16)
    noisy = np.clip(crop + rng.integers(-2, 3, crop.shape), 0, 255).astype(np.uint8)
    return f"gen_{index:06d}.png", cv2.imencode(".png", noisy)[1].tobytes()


def generated_zip(count: int, size: int, slices: list[str]) -> Path:
    """``count`` distinct generated images in one zip (made once, in two processes)."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"generated-{count}-{size}.zip"
    if path.exists():
        return path
    started = time.perf_counter()
    tmp = path.with_suffix(".part")
    work = [(i, size, slices[200 + i % (len(slices) - 200)]) for i in range(count)]
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive, ProcessPoolExecutor(2) as pool:
        for name, data in pool.map(_make, work, chunksize=256):
            archive.writestr(name, data)
    tmp.rename(path)
    print(
        f"made {path} ({path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - started:.0f} s"
    )
    return path


def register(base: str, slices: list[str]) -> int:
    files = [("files", (Path(p).name, Path(p).read_bytes(), "image/png")) for p in slices[:200]]
    response = httpx.post(f"{base}/real-sets", data={"name": "bench"}, files=files, timeout=600)
    response.raise_for_status()
    return response.json()["id"]


def client_match(base: str, set_id: int, archive: Path, log: Path) -> subprocess.Popen:
    """`memaudit client match` as a pipeline runs it, stderr to ``log``."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.cli",
            "client",
            "--server",
            base,
            "match",
            str(archive),
            "--set",
            str(set_id),
            "--fail-on",
            "never",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )


def running_job(base: str) -> dict | None:
    try:
        listed = httpx.get(f"{base}/jobs", timeout=10).json()
    except httpx.HTTPError:
        return None
    return listed[0] if listed else None


def timeline_row(job: dict, started: float) -> tuple:
    """(seconds, state, stage, done, total, share of the upload read) of one look."""
    p = job["progress"]
    share = p["upload_read"] / max(p["upload_bytes"], 1)
    return (time.perf_counter() - started, job["state"], p["stage"], p["done"], p["total"], share)


def sync_vs_job(base: str, set_id: int, archive: Path) -> None:
    """The same batch as one synchronous request and as a job (overhead of the machinery)."""

    def post(headers: dict) -> httpx.Response:
        with archive.open("rb") as fh:
            files = [("files", (archive.name, fh, "application/zip"))]
            return httpx.post(
                f"{base}/match",
                data={"real_set_id": str(set_id)},
                files=files,
                headers=headers,
                timeout=3600,
            )

    started = time.perf_counter()
    answer = post({})
    sync_s = time.perf_counter() - started
    assert answer.status_code == 200, answer.text[:300]
    count = answer.json()["generated_count"]
    started = time.perf_counter()
    accepted = post({"Prefer": "respond-async"})
    accepted_s = time.perf_counter() - started
    assert accepted.status_code == 202, accepted.text[:300]
    while (job := httpx.get(base + accepted.headers["location"]).json())["state"] not in (
        "succeeded",
        "failed",
        "canceled",
    ):
        time.sleep(0.2)
    job_s = time.perf_counter() - started
    assert job["state"] == "succeeded", job
    print(
        f"{count:,} images: synchronous /match {sync_s:.1f} s ({count / sync_s:,.0f} images/s); "
        f"as a job {job_s:.1f} s ({count / job_s:,.0f} images/s, 202 after {accepted_s:.1f} s, "
        f"ratio {job_s / sync_s:.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument(
        "--kill-at",
        type=float,
        default=0.5,
        help="kill -9 the server when this share of the files is hashed (0: no)",
    )
    parser.add_argument(
        "--compare",
        type=int,
        default=10_000,
        help="images in the synchronous-vs-job comparison (0: skip)",
    )
    args = parser.parse_args()
    slices = _slices()
    if len(slices) < 400:
        raise SystemExit(f"needs the CT slices of {DATA}")
    archive = generated_zip(args.count, args.size, slices)
    data_dir = tempfile.mkdtemp(prefix="memaudit-jobs-")
    env = {"MEMAUDIT_DATA_DIR": data_dir, "MEMAUDIT_LOG_LEVEL": "WARNING"}
    print(f"load {load_average()}; {os.cpu_count()} cores; data {data_dir}")
    log = Path(data_dir) / "client.log"
    port = free_port()
    with memaudit_server(env, port=port) as (server, base):
        set_id = register(base, slices)
        if args.compare:
            sync_vs_job(base, set_id, generated_zip(args.compare, args.size, slices))
        started = time.perf_counter()
        client = client_match(base, set_id, archive, log)
        timeline, killed = [], False
        while client.poll() is None:
            job = running_job(base)
            if job is not None:
                p = job["progress"]
                timeline.append(timeline_row(job, started))
                if (
                    args.kill_at
                    and not killed
                    and p["stage"] == "hashing"
                    and p["done"] >= args.kill_at * args.count
                ):
                    server.kill()
                    server.wait()
                    killed = True
                    print(f"kill -9 at {timeline[-1][0]:.0f} s: {p['done']:,} files hashed")
                    break
            time.sleep(1)
    if killed:
        restarted_at = time.perf_counter() - started
        with memaudit_server(env, port=port) as (server, base):
            print(f"restarted at {time.perf_counter() - started:.0f} s")
            while client.poll() is None:
                job = running_job(base)
                if job is not None:
                    timeline.append(timeline_row(job, started))
                time.sleep(1)
            job = running_job(base)
            batches = httpx.get(f"{base}/match").json()
    else:
        restarted_at = None
    total_s = time.perf_counter() - started
    print(
        f"client exit {client.returncode}; {args.count:,} images in {total_s:.0f} s "
        f"({args.count / total_s:,.0f} images/s end to end"
        + (f", restart at {restarted_at:.0f} s" if restarted_at else "")
        + ")"
    )
    if killed:
        print(
            f"job after the restart: state {job['state']}, attempts {job['attempts']}, "
            f"result {job['result']}; stored batches {batches['total']} "
            f"(1 from the comparison's sync request and 1 from its job when --compare)"
        )
    print("GET /jobs/{id} every 10 s (seconds, state, stage, done, total, upload read):")
    shown = -10.0
    for row in timeline:
        if row[0] - shown >= 10 or row is timeline[-1]:
            shown = row[0]
            print(
                f"  {row[0]:6.0f} {row[1]:9s} {row[2]:22s} {row[3]:>8,} "
                f"{'-' if row[4] is None else f'{row[4]:,}':>8} {row[5]:5.0%}"
            )
    print("the client's progress lines (stderr, not a terminal):")
    print("  " + log.read_text().replace("\n", "\n  "))


if __name__ == "__main__":
    main()
