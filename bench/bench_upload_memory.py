"""Peak memory of one API process under concurrent hostile zips, two source trees side by side.

    git -C /work/main worktree add /work/wt/baseline <old commit>    # "before"
    .venv/bin/python bench/bench_upload_memory.py --baseline-tree /work/wt/baseline [--tree .]
        [--uploads 1,6] [--members 8] [--member-mb 49] [--budget-mib 64] [--repeats 2]

Each upload is a zip of ``--members`` members of ``--member-mb`` MB of zeros (a few hundred KB
on the wire, refused 422 as not images): what a client sends to make the server inflate as much
as it can per byte. ``--uploads`` of them are sent at once to a fresh `memaudit serve` (SQLite,
one hash worker, ``MEMAUDIT_MAX_PROCESS_PENDING_BYTES`` = ``--budget-mib``), and the server's
peak resident set size (VmHWM, Linux) is read when they are answered; the trees alternate
which goes first in each repeat. Prints the medians side by side and after/before.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import memaudit_server  # noqa: E402


def zeros_zip(members: int, size: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(members):
            zf.writestr(f"{i}.png", bytes(size))
    return buffer.getvalue()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def run_once(tree: Path, body: bytes, uploads: int, budget: int) -> tuple[float, float, float]:
    """(idle MB, peak MB, seconds) of one server answering ``uploads`` zips at once."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "DATABASE_URL": f"sqlite:///{Path(tmp) / 'db.sqlite'}",
            "MEMAUDIT_DATA_DIR": str(Path(tmp) / "data"),
            "MEMAUDIT_HASH_WORKERS": "1",
            "MEMAUDIT_MAX_PROCESS_PENDING_BYTES": str(budget),
        }
        with memaudit_server(env, tree) as (proc, base):
            idle = peak_rss_mb(proc.pid)

            def post(i: int) -> int:
                with httpx.Client(timeout=600) as client:
                    files = {"files": ("zeros.zip", body, "application/zip")}
                    r = client.post(f"{base}/real-sets", data={"name": f"z{i}"}, files=files)
                    return r.status_code

            start = time.perf_counter()
            with ThreadPoolExecutor(uploads) as pool:
                statuses = list(pool.map(post, range(uploads)))
            seconds = time.perf_counter() - start
            if set(statuses) != {422}:
                raise RuntimeError(f"{tree}: unexpected answers {statuses}")
            return idle, peak_rss_mb(proc.pid), seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline-tree", type=Path, required=True)
    parser.add_argument("--tree", type=Path, default=ROOT)
    parser.add_argument("--uploads", default="1,6")
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--member-mb", type=int, default=49)
    parser.add_argument("--budget-mib", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    body = zeros_zip(args.members, args.member_mb * 1_000_000)
    budget = args.budget_mib * 2**20
    trees = {"before": args.baseline_tree.resolve(), "after": args.tree.resolve()}
    print(
        f"{args.members} x {args.member_mb} MB of zeros per zip ({len(body) / 1e6:.1f} MB sent), "
        f"process budget {args.budget_mib} MiB; peak RSS of the API process (VmHWM)"
    )
    for uploads in [int(u) for u in args.uploads.split(",")]:
        peaks: dict[str, list[float]] = {name: [] for name in trees}
        idles: dict[str, list[float]] = {name: [] for name in trees}
        times: dict[str, list[float]] = {name: [] for name in trees}
        for repeat in range(args.repeats):
            order = list(trees) if repeat % 2 == 0 else list(reversed(trees))
            for name in order:
                idle, peak, seconds = run_once(trees[name], body, uploads, budget)
                idles[name].append(idle)
                peaks[name].append(peak)
                times[name].append(seconds)
        before, after = (statistics.median(peaks[n]) for n in ("before", "after"))
        print(
            f"{uploads} concurrent upload(s): peak before {before:.0f} MB, after {after:.0f} MB "
            f"(after/before {after / before:.2f}; idle {statistics.median(idles['before']):.0f} / "
            f"{statistics.median(idles['after']):.0f} MB; runs {peaks['before']} / "
            f"{peaks['after']}); answered in {statistics.median(times['before']):.1f} s / "
            f"{statistics.median(times['after']):.1f} s"
        )


if __name__ == "__main__":
    main()
