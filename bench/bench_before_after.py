"""The same uploads against servers started from two source trees, interleaved, side by side:
is a change to the upload path or the service layer within noise of before?

    .venv/bin/python bench/make_generated.py /tmp/memaudit-10k
    git -C /work/main worktree add /work/wt/baseline <old commit>    # "before"
    flock /tmp/memaudit-bench.lock .venv/bin/python bench/bench_before_after.py /tmp/memaudit-10k \\
        --baseline-tree /work/wt/baseline [--tree .] [--repeats 3] [--modes parts,zip] \\
        [--requests register,match,classify,classify-batch] [--generated N]

Both servers run at once (idle, a server costs memory only), each on a fresh SQLite database,
with this interpreter and the code of its tree. After an untimed warm-up of each (hash
workers started, the reference scorer loaded), every round sends each request to both
servers one after the other, alternating which goes first (A B, then B A, ...), so a drift in
the shared machine's load hits both alike. Requests, each as file parts and as one stored zip
per file field (``--modes``):
  - register: POST /real-sets of DIR/real (200);
  - match: POST /match of DIR/generated (10,000) against the set registered in that round;
  - classify: POST /classify method=reference with DIR/real as `files` and DIR/generated as
    `generated_files` (uploads, hashing and scoring in one request);
  - classify-batch: POST /classify method=reference with the round's real_set_id and the
    batch_id of its file-parts /match (no upload: the service layer and scoring alone).
Bodies are encoded once before timing and sent byte for byte the same to both servers.
Prints per request the medians before and after, after/before, each run, and the spread of
the runs (the noise the ratio is read against), the decode floor of the same images on 2
processes, the CPU share other processes took, and whether both servers gave the same counts.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    Body,
    OtherLoad,
    decode_floor_s,
    image_folders,
    load_average,
    memaudit_server,
    side_by_side,
    spread,
    started_pool,
    timed,
    upload_parts,
)

REQUESTS = ("register", "match", "classify", "classify-batch")
MODES = ("parts", "zip")
#: Fields of an answer that must be the same from both trees.
COUNTS = {
    "register": ("image_count",),
    "match": ("generated_count", "matched_count"),
    "classify": ("real_count", "generated_count", "used_count"),
    "classify-batch": ("real_count", "generated_count", "used_count"),
}


@dataclass
class Server:
    label: str
    tree: Path
    base: str
    #: (request, mode) -> wall seconds of each round.
    walls: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    #: (request, mode) -> the counts of the last answer.
    counts: dict[tuple[str, str], tuple] = field(default_factory=dict)


@dataclass
class Bodies:
    """Every request body of one mode, encoded once."""

    real: list
    generated: list
    classify: Body

    @classmethod
    def build(cls, reals: list[Path], gens: list[Path], as_zip: bool) -> Bodies:
        real, generated = upload_parts(reals, as_zip), upload_parts(gens, as_zip)
        both = [*real, *upload_parts(gens, as_zip, "generated_files")]
        return cls(real, generated, Body.multipart({"method": "reference"}, both))


def send(client: httpx.Client, server: Server, url: str, body: Body, key: tuple) -> dict:
    """POST one body, record its wall time and the counts of its answer."""
    wall, response = timed(lambda: body.post(client, f"{server.base}{url}"))
    answer = response.json()  # type: ignore[attr-defined]
    server.walls.setdefault(key, []).append(wall)
    server.counts[key] = tuple(answer.get(k) for k in COUNTS[key[0]])
    return answer


def one_round(
    client: httpx.Client,
    server: Server,
    mode: str,
    bodies: Bodies,
    requests: set[str],
    round_no: int,
) -> None:
    """Every request of one mode against one server, the way a user chains them."""
    register = Body.multipart({"name": f"{mode}-{round_no}"}, bodies.real)
    real_set = send(client, server, "/real-sets", register, ("register", mode))
    if "match" in requests or "classify-batch" in requests:
        body = Body.multipart({"real_set_id": str(real_set["id"])}, bodies.generated)
        batch = send(client, server, "/match", body, ("match", mode))
        if "classify-batch" in requests and mode == MODES[0]:
            fields = {"method": "reference", "real_set_id": str(real_set["id"])}
            body = Body.multipart({**fields, "batch_id": str(batch["batch_id"])}, [])
            send(client, server, "/classify", body, ("classify-batch", "-"))
    if "classify" in requests:
        send(client, server, "/classify", bodies.classify, ("classify", mode))


def warm_up(client: httpx.Client, server: Server, reals: list[Path], gens: list[Path]) -> None:
    """Start the hash workers and load the reference scorer outside the timing."""
    scratch = Server(server.label, server.tree, server.base)
    one_round(client, scratch, "parts", Bodies.build(reals[:8], gens[:64], False), set(REQUESTS), 0)


def report(servers: list[Server], floor: float | None, n_images: int, load: OtherLoad) -> None:
    before, after = servers
    print(f"\n{'request (median s)':34s} {'before':>8s} {'after':>8s} {'after/before':>7s}")
    for key in before.walls:
        request, mode = key
        a, b = before.walls[key], after.walls[key]
        print(side_by_side(f"{request} ({mode})", a, b))
        extra = f"   spread of runs: before {100 * spread(a):.0f}%, after {100 * spread(b):.0f}%"
        if floor and request in ("match", "classify"):
            extra += (
                f"; x decode floor: before {statistics.median(a) / floor:.2f}, "
                f"after {statistics.median(b) / floor:.2f}"
            )
        print(extra)
    if floor:
        print(f"decode floor of the {n_images} images on 2 processes (median): {floor:.2f} s")
    same = all(before.counts[k] == after.counts[k] for k in before.counts)
    print(f"same counts from both trees: {same}")
    if not same:
        for key in before.counts:
            print(f"  {key}: before {before.counts[key]}, after {after.counts[key]}")
    print(f"CPU share of the cores used by other processes: {load.line()}")
    print(f"load average at the end: {load_average()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--baseline-tree", type=Path, required=True, help="'before' source tree")
    parser.add_argument("--tree", type=Path, default=ROOT, help="'after' source tree")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--requests", default=",".join(REQUESTS))
    parser.add_argument("--generated", type=int, default=0, help="use only the first N")
    parser.add_argument("--no-floor", action="store_true", help="skip the decode floor")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    requests = {r for r in args.requests.split(",") if r}
    if not set(modes) <= set(MODES) or not requests <= set(REQUESTS):
        parser.error(f"--modes from {MODES}, --requests from {REQUESTS}")
    reals, gens = image_folders(args.folder)
    gens = gens[: args.generated] if args.generated else gens
    print(
        f"{len(reals)} real, {len(gens)} generated under {args.folder}; before = "
        f"{args.baseline_tree.resolve()}, after = {args.tree.resolve()}; {args.repeats} rounds; "
        f"load average {load_average()}"
    )
    floor = None
    if not args.no_floor:
        pool = started_pool()
        floor = statistics.median(decode_floor_s(pool, [*reals, *gens]) for _ in range(3))
        pool.shutdown()
    bodies = {m: Bodies.build(reals, gens, m == "zip") for m in modes}
    load = OtherLoad()
    with contextlib.ExitStack() as stack, httpx.Client(timeout=3600) as client:
        servers = [
            Server(label, tree, stack.enter_context(memaudit_server(tree=tree))[1])
            for label, tree in (("before", args.baseline_tree), ("after", args.tree))
        ]
        for server in servers:
            warm_up(client, server, reals, gens)
        for round_no in range(args.repeats):
            for mode in modes:
                order = servers if round_no % 2 == 0 else servers[::-1]
                with load.phase(f"round {round_no + 1} {mode}"):
                    for server in order:
                        one_round(client, server, mode, bodies[mode], requests, round_no)
            print(f"round {round_no + 1} done; load average {load_average()}", flush=True)
    report(servers, floor, len(reals) + len(gens), load)


if __name__ == "__main__":
    main()
