"""Where one upload's time goes inside the server, in terms a busy machine does not distort:

    .venv/bin/python bench/profile_upload.py /tmp/memaudit-10k [--zip] [--zip-real] \\
        [--repeats 2] [--py-spy DIR] [--tree PATH]

Registers DIR/real (file parts, or one zip with --zip-real), then POSTs DIR/generated to
/match (file parts, or one zip with --zip) while sampling, every 10 ms, the scheduler state
of every thread of the API process and of each hash worker from /proc: a thread is either
running or waiting for a core (R), or blocked (S/D: waiting for input, a lock, the disk).
On a shared machine wall times stretch with the load, but "the workers were blocked 40% of
the request, waiting for images" does not. The samples are split at the moment the client
had sent the whole body. Also prints each process's CPU seconds. With --py-spy DIR, the
timed requests also run under `py-spy record --subprocesses` (flame graph SVGs and raw
folded stacks in DIR; py-spy must be installed in this interpreter's environment).
"""

from __future__ import annotations

import argparse
import multiprocessing
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_match_upload import post_with_breakdown  # noqa: E402
from bench.common import (  # noqa: E402
    Body,
    image_folders,
    load_average,
    memaudit_server,
    process_tree,
    upload_parts,
)


def thread_states(pid: int) -> dict[str, str]:
    """Scheduler state of every thread of a process, by thread name and id."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        out[f"{name}/{task.name}"] = stat.rsplit(")", 1)[1].split()[0]
    return out


def _sample(roles: dict[int, str], period: float, sent, stop, out) -> None:
    """The sampling loop, in its own process: in the client's, its /proc reads would take the
    GIL from the thread sending the body and slow the upload it measures."""
    counts: dict[str, Counter] = {"upload": Counter(), "after": Counter()}
    samples = Counter()
    while not stop.wait(period):
        phase = "after" if sent.is_set() else "upload"
        samples[phase] += 1
        for pid, role in roles.items():
            try:
                states = thread_states(pid)
            except OSError:
                continue
            for thread, state in states.items():
                if state == "R":
                    tid = int(thread.rsplit("/", 1)[1])
                    counts[phase][f"{role} {'main' if tid == pid else f'thread {tid}'}"] += 1
    out.send((counts, samples))


class StateSampler:
    """Counts R samples per (process role, thread), before and after the body was sent."""

    def __init__(self, roles: dict[int, str], period: float = 0.02) -> None:
        ctx = multiprocessing.get_context("fork")
        self.period = period
        self._sent, self._stop = ctx.Event(), ctx.Event()
        self._recv, send = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=_sample, args=(roles, period, self._sent, self._stop, send), daemon=True
        )
        self.counts: dict[str, Counter] = {}
        self.samples: Counter = Counter()

    def start(self) -> None:
        self._process.start()

    def mark_sent(self) -> None:
        """The client has sent the whole body: later samples count as 'after'."""
        self._sent.set()

    def stop(self) -> None:
        self._stop.set()
        self.counts, self.samples = self._recv.recv()
        self._process.join()

    def report(self) -> list[str]:
        lines = []
        for phase, counter in self.counts.items():
            n = self.samples[phase]
            if not n:
                continue
            busy = ", ".join(f"{k} {100 * v / n:.0f}%" for k, v in counter.most_common(8))
            lines.append(f"  {phase} ({n * self.period:.1f} s sampled): runnable share: {busy}")
        return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--zip", action="store_true", help="generated images as one zip")
    parser.add_argument("--zip-real", action="store_true", help="register the real set as a zip")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--py-spy", type=Path, default=None, help="folder for py-spy output")
    parser.add_argument("--tree", type=Path, default=ROOT)
    args = parser.parse_args()
    reals, gens = image_folders(args.folder)
    with memaudit_server(tree=args.tree) as (server, base), httpx.Client(timeout=3600) as client:
        register = Body.multipart({"name": "bench"}, upload_parts(reals, args.zip_real))
        set_id = register.post(client, f"{base}/real-sets").json()["id"]
        match = Body.multipart({"real_set_id": str(set_id)}, upload_parts(gens, args.zip))
        match.post(client, f"{base}/match")  # warm-up: workers started, set cached
        roles = {server.pid: "api"}
        roles |= {p: f"worker{i}" for i, p in enumerate(process_tree(server.pid)[1:])}
        for repeat in range(args.repeats):
            spy = None
            if args.py_spy is not None:
                args.py_spy.mkdir(parents=True, exist_ok=True)
                out = args.py_spy / f"match-{'zip' if args.zip else 'parts'}-{repeat}"
                spy = subprocess.Popen(
                    [str(Path(sys.executable).parent / "py-spy"), "record", "--subprocesses",
                     "--pid", str(server.pid), "--rate", "200", "--format", "raw",
                     "--output", f"{out}.txt", "--nonblocking"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip
                time.sleep(1.0)
            sampler = StateSampler(roles)
            sampler.start()
            breakdown, _ = post_with_breakdown(
                client, f"{base}/match", match, server.pid, on_sent=sampler.mark_sent
            )
            sampler.stop()
            if spy is not None:
                spy.send_signal(2)
                spy.wait()
            print(f"run {repeat + 1}: {breakdown.line()}; load {load_average()}")
            for line in sampler.report():
                print(line)


if __name__ == "__main__":
    main()
