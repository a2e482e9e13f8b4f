"""POST /match with an ImageCLEF-2023-sized batch over real HTTP to a uvicorn server.

    .venv/bin/python bench/make_generated.py /tmp/memaudit-10k
    .venv/bin/python bench/bench_match_upload.py /tmp/memaudit-10k [--zip] [--repeats 3] \\
        [--breakdown] [--tree PATH]

Starts `memaudit serve` (the code of --tree, default this checkout) on a free loopback port
with a fresh SQLite database, registers DIR/real, then uploads DIR/generated (as file parts,
or as one zip with --zip) and reports the wall time, the server's peak RSS, and for
comparison the time to only decode the images. With --breakdown, each request also reports
when the client had sent the whole body, and the CPU seconds the API process and its hash
workers spent on it: where an upload's time goes. Two trees side by side:
bench_before_after.py.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    MAX_PIXELS,
    Body,
    file_parts,
    image_folders,
    load_average,
    memaudit_server,
    peak_rss_mb,
    process_tree,
    runs,
    tree_cpu_s,
    upload_parts,
)

SEND_CHUNK = 1 << 20


@dataclass
class Breakdown:
    """Where one request's wall time went, seen from outside the server."""

    wall_s: float
    body_sent_s: float
    api_cpu_s: float
    workers_cpu_s: float

    def line(self) -> str:
        return (
            f"wall {self.wall_s:.2f} s; body sent after {self.body_sent_s:.2f} s, answer "
            f"{self.wall_s - self.body_sent_s:.2f} s later; CPU: API process "
            f"{self.api_cpu_s:.2f} s, hash workers {self.workers_cpu_s:.2f} s"
        )


def post_with_breakdown(
    client: httpx.Client,
    url: str,
    body: Body,
    server_pid: int,
    on_sent: Callable[[], None] | None = None,
) -> tuple[Breakdown, dict]:
    """POST the body in 1 MiB chunks, noting when the last one was handed to the socket
    (``on_sent`` is called then), and the CPU the server's processes used meanwhile (by pid:
    the API process, the rest its hash workers)."""
    sent = [0.0]
    start = time.perf_counter()

    def chunks() -> Iterator[bytes]:
        for lo in range(0, len(body.content), SEND_CHUNK):
            yield body.content[lo : lo + SEND_CHUNK]
        sent[0] = time.perf_counter() - start
        if on_sent is not None:
            on_sent()

    cpu_before = tree_cpu_s(server_pid)
    start = time.perf_counter()
    headers = {**body.headers, "content-length": str(len(body.content))}
    response = client.post(url, content=chunks(), headers=headers)
    response.raise_for_status()
    wall = time.perf_counter() - start
    cpu_after = tree_cpu_s(server_pid)
    used = {pid: cpu_after[pid] - cpu_before.get(pid, 0.0) for pid in cpu_after}
    api = used.pop(server_pid, 0.0)
    return Breakdown(wall, sent[0], api, sum(used.values())), response.json()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--zip", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--breakdown", action="store_true")
    parser.add_argument("--tree", type=Path, default=ROOT, help="source tree the server runs")
    args = parser.parse_args()
    reals, gens = image_folders(args.folder)
    with memaudit_server(tree=args.tree) as (server, base), httpx.Client(timeout=600) as client:
        register = Body.multipart({"name": "bench"}, file_parts(reals))
        set_id = register.post(client, f"{base}/real-sets").json()["id"]
        match = Body.multipart({"real_set_id": str(set_id)}, upload_parts(gens, args.zip))
        times: list[float] = []
        answer: dict = {}
        for _ in range(args.repeats):
            if args.breakdown:
                breakdown, answer = post_with_breakdown(client, f"{base}/match", match, server.pid)
                times.append(breakdown.wall_s)
                print(f"  {breakdown.line()}; load {load_average()}", flush=True)
            else:
                start = time.perf_counter()
                answer = match.post(client, f"{base}/match").json()
                times.append(time.perf_counter() - start)
        workers = len(process_tree(server.pid)) - 1
        rss = peak_rss_mb(server.pid)
    from app.imaging.decode import decode_grayscale

    start = time.perf_counter()
    for p in [*reals, *gens]:
        decode_grayscale(p.read_bytes(), MAX_PIXELS)
    decode = time.perf_counter() - start
    wall = statistics.median(times)
    print(
        f"POST /match {len(gens)} generated vs {len(reals)} real ({'zip' if args.zip else 'parts'})"
    )
    print(f"  wall (median of {args.repeats}): {wall:.2f} s  ({len(gens) / wall:.0f} images/s)")
    print(f"  runs: {runs(times)}; load average {load_average()}")
    print(f"  server peak RSS: {rss:.0f} MB ({workers} child processes not counted)")
    print(f"  decode-only of the {len(reals) + len(gens)} images, one core: {decode:.2f} s")
    print(f"  wall / decode-only = {wall / decode:.2f}")
    print(f"  generated_count={answer['generated_count']} matched={answer['matched_count']}")


if __name__ == "__main__":
    main()
