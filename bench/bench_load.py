"""50 concurrent clients against a real `memaudit serve` process, on SQLite and on PostgreSQL
(memaudit issue 11): requests/s, p50/p95 latency, answers by status, and afterwards the rows
checked against what the clients were told.

Mix per client (weights): register a small set (5 images) 10, append 3 images to one of its
own sets 15, /match 3 generated images against any set 25, GETs (set list, a set's first
page, a batch, /health) 35, /classify (method `reference`, a set and a batch) 15. Images are
distinct random 64 x 64 PNGs, so none is a duplicate. Every client has its own httpx
connection pool (keep-alive); requests time out after 120 s (counted as `timeout`).

Afterwards, for every set: its images in the database against the images of every 201 the
clients got for it (register and appends): `missing` = told but absent (must be 0),
`unreported` = present but never told (a request whose answer the client did not get).

    python bench/bench_load.py                       # both databases, 60 s each
    python bench/bench_load.py --db sqlite --seconds 30

Issue 11's figures on main, for comparison: SQLite 43.7 req/s, p95 2.85 s; PostgreSQL
34.3 req/s, p95 4.03 s; 0 5xx; 6 unreported rows.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, bench_database, load_average, memaudit_server

REFERENCE = {
    "sqlite": "43.7 req/s, p95 2.85 s, 0 5xx, 6 unreported rows",
    "postgres": "34.3 req/s, p95 4.03 s, 0 5xx, 6 unreported rows",
}
MIX = (("register", 10), ("append", 15), ("match", 25), ("get", 35), ("classify", 15))
NAME_PREFIX = "load-"


def random_png(rng: np.random.Generator) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class Shared:
    """What every client was told, and what happened to each request."""

    set_ids: list[int] = field(default_factory=list)
    batch_ids: list[int] = field(default_factory=list)
    #: set id -> file names that 201 answers listed for it.
    told: dict[int, set[str]] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    by_kind: Counter = field(default_factory=Counter)


class LoadClient:
    """One of the concurrent clients: a loop of weighted random requests until the deadline."""

    def __init__(self, index: int, base: str, shared: Shared, deadline: float) -> None:
        self.index = index
        self.shared = shared
        self.deadline = deadline
        self.rng = np.random.default_rng(index)
        self.pick = random.Random(index)
        self.http = httpx.AsyncClient(base_url=base, timeout=120)
        self.own_sets: list[int] = []
        self.counter = 0

    def _files(self, count: int, field_name: str = "files") -> list:
        parts = []
        for _ in range(count):
            self.counter += 1
            name = f"c{self.index:02d}_{self.counter:05d}.png"
            parts.append((field_name, (name, random_png(self.rng), "image/png")))
        return parts

    async def run(self) -> None:
        try:
            while time.monotonic() < self.deadline:
                kind = self.pick.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
                if not self.own_sets and kind in ("append", "match", "classify", "get"):
                    kind = "register"
                await self._timed(kind)
        finally:
            await self.http.aclose()

    async def _timed(self, kind: str) -> None:
        started = time.monotonic()
        try:
            response = await getattr(self, f"_{kind}")()
            status: int | str = response.status_code
        except httpx.TimeoutException:
            status = "timeout"
        except httpx.HTTPError as exc:
            status = exc.__class__.__name__
        self.shared.latencies.append(time.monotonic() - started)
        self.shared.statuses[status] += 1
        self.shared.by_kind[(kind, status)] += 1

    async def _register(self) -> httpx.Response:
        files = self._files(5)
        r = await self.http.post(
            "/real-sets", data={"name": f"{NAME_PREFIX}{self.index}-{self.counter}"}, files=files
        )
        if r.status_code == 201:
            body = r.json()
            self.own_sets.append(body["id"])
            self.shared.set_ids.append(body["id"])
            self.shared.told[body["id"]] = {i["filename"] for i in body["images"]}
        return r

    async def _append(self) -> httpx.Response:
        set_id = self.pick.choice(self.own_sets)
        r = await self.http.post(f"/real-sets/{set_id}/images", files=self._files(3))
        if r.status_code == 201:
            self.shared.told[set_id] |= {i["filename"] for i in r.json()["images"]}
        return r

    async def _match(self) -> httpx.Response:
        set_id = self.pick.choice(self.shared.set_ids)
        r = await self.http.post("/match", data={"real_set_id": str(set_id)}, files=self._files(3))
        if r.is_success:  # 200: the batch's answer, with its id
            self.shared.batch_ids.append(r.json()["batch_id"])
        return r

    async def _get(self) -> httpx.Response:
        choice = self.pick.randrange(4)
        if choice == 0:
            return await self.http.get("/real-sets")
        if choice == 1:
            return await self.http.get(f"/real-sets/{self.pick.choice(self.own_sets)}")
        if choice == 2 and self.shared.batch_ids:
            return await self.http.get(f"/match/{self.pick.choice(self.shared.batch_ids)}")
        return await self.http.get("/health")

    async def _classify(self) -> httpx.Response:
        if not self.shared.batch_ids:
            return await self._match()
        data = {
            "method": "reference",
            "real_set_id": str(self.pick.choice(self.own_sets)),
            "batch_id": str(self.pick.choice(self.shared.batch_ids)),
        }
        return await self.http.post("/classify", data=data)


async def drive(base: str, clients: int, seconds: float) -> tuple[Shared, float]:
    shared = Shared()
    started = time.monotonic()
    deadline = started + seconds
    await asyncio.gather(*(LoadClient(i, base, shared, deadline).run() for i in range(clients)))
    return shared, time.monotonic() - started


def stored_names(http: httpx.Client, set_id: int) -> set[str]:
    names: set[str] = set()
    offset = 0
    while True:
        page = http.get(f"/real-sets/{set_id}", params={"offset": offset, "limit": 1000})
        page.raise_for_status()
        images = page.json()["images"]
        names |= {i["filename"] for i in images}
        if len(images) < 1000:
            return names
        offset += 1000


def check_rows(base: str, shared: Shared) -> dict[str, int]:
    """Rows in the database against what 201 answers said."""
    missing = unreported = 0
    with httpx.Client(base_url=base, timeout=120) as http:
        for set_id, told in shared.told.items():
            stored = stored_names(http, set_id)
            missing += len(told - stored)
            unreported += len(stored - told)
        for summary in http.get("/real-sets").json():  # sets whose 201 no client saw
            if summary["name"].startswith(NAME_PREFIX) and summary["id"] not in shared.told:
                unreported += len(stored_names(http, summary["id"]))
        batches_gone = sum(
            http.get(f"/match/{batch_id}").status_code != 200 for batch_id in shared.batch_ids
        )
    return {"missing": missing, "unreported": unreported, "batches_gone": batches_gone}


def report(database: str, shared: Shared, wall: float, rows: dict[str, int], load: str) -> None:
    total = sum(shared.statuses.values())
    lat = sorted(shared.latencies)
    p95 = lat[int(0.95 * (len(lat) - 1))] if lat else float("nan")
    five_xx = sum(n for s, n in shared.statuses.items() if isinstance(s, int) and s >= 500)
    print(f"== {database}: {total} requests in {wall:.1f} s (load average before: {load})")
    print(
        f"   {total / wall:.1f} req/s, p50 {statistics.median(lat):.2f} s, p95 {p95:.2f} s, "
        f"{five_xx} 5xx"
    )
    print(f"   by status: {dict(sorted(shared.statuses.items(), key=str))}")
    kinds = Counter()
    for (kind, _status), n in shared.by_kind.items():
        kinds[kind] += n
    print(f"   by kind: {dict(kinds)}")
    non_2xx = {
        f"{k} {s}": n
        for (k, s), n in shared.by_kind.items()
        if not (isinstance(s, int) and 200 <= s < 300)
    }
    if non_2xx:
        print(f"   not 2xx by kind: {non_2xx}")
    print(
        f"   rows: {rows['missing']} told but missing, {rows['unreported']} unreported, "
        f"{rows['batches_gone']} batches told but gone; sets {len(shared.told)}, "
        f"batches {len(shared.batch_ids)}"
    )
    print(f"   issue 11 on main: {REFERENCE[database]}")
    print(f"   load average after: {load_average()}")


def run_one(database: str, clients: int, seconds: float, tree: Path) -> None:
    def measure(env: dict[str, str]) -> None:
        with memaudit_server(env, tree) as (_server, base):
            load = load_average()
            shared, wall = asyncio.run(drive(base, clients, seconds))
            rows = check_rows(base, shared)
        report(database, shared, wall, rows, load)

    if database == "sqlite":
        measure({})
    else:
        with bench_database() as url:
            measure({"DATABASE_URL": url})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--tree", type=Path, default=ROOT, help="memaudit source tree to serve (default: this one)"
    )
    args = parser.parse_args()
    print(f"{args.clients} clients, {args.seconds:g} s per database, serving {args.tree}")
    for database in ("sqlite", "postgres") if args.db == "both" else (args.db,):
        run_one(database, args.clients, args.seconds, args.tree)


if __name__ == "__main__":
    main()
