"""The release gate, POST /filter, beside POST /match in the same run, through a served
memaudit (`memaudit serve`, SQLite, default hash workers). By hand (2 cores, shared machine):

    flock /tmp/memaudit-bench.lock .venv/bin/python bench/bench_filter.py \
        [--generated 10000] [--archive 1000000] [--skip-devsets]

Throughput: --generated images derived from the real CT slices under ../shared/data/ct (each
a slice edited at random: shifted, rotated, scaled, re-lit, noised; one zip part), against
(a) a set of 200 of those CT slices registered as images (so about 1 in 9 generated images
copies one of them), (b) an archive of --archive pHashes registered by a `hashes` list, derived
as bench/bench_archive_search.py derives its 10M set (scans between CT slices; by hashes
alone, so no copy-detection descriptors: pHash `source` only), and (c) both sets in one
/filter request (the upload read and hashed once) beside two /match calls. Each row: /match
(real_summary=none: the gate lists no real_summary either) and /filter of the same upload,
images/s of the whole request (upload, hashing, embedding, search, storing), after an untimed
20-image /match per set (its hashes loaded and calibrated) and an untimed /match of the whole
upload (its bytes stored once: every timed request finds them stored). Over 1,000 images
neither verifies copies geometrically (MEMAUDIT_MATCH_VERIFY_MAX_IMAGES); the dev sets' 500
are verified.

Agreement: on the dev sets (../shared/data/devsets/lung-window and iq-othnccd: 160 real
images registered, 500 generated, `sources.csv` says which copy a real image), the share of
copies withheld and of novel images released by /filter beside /match's `copy_of` shares
(and beside `copy_of` or `source`, the gate's rule) from the same run. Nothing from shared/
is committed; derived data is cached under /tmp/memaudit-archive-bench.
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import cv2
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_archive_search import CACHE, SHARED, archive_words, edited  # noqa: E402
from bench.common import load_average, memaudit_server  # noqa: E402

DEVSETS = ("lung-window", "iq-othnccd")
SMALL_SET = 200


def say(*parts: object) -> None:
    print(*parts, flush=True)


def ct_slices() -> list[str]:
    files = sorted(glob.glob(str(SHARED / "ct/*/*.png")))
    if not files:
        raise SystemExit(f"no CT slices under {SHARED / 'ct'}")
    return files


def generated_zip(n: int, slices: list[str]) -> bytes:
    """``n`` edited CT slices as one zip of PNGs (cached: encoding them takes a while)."""
    path = CACHE / f"filter_generated_{n}.zip"
    if path.exists():
        return path.read_bytes()
    rng = np.random.default_rng(7)
    images = [cv2.imread(f, cv2.IMREAD_GRAYSCALE) for f in slices]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for i in range(n):
            ok, png = cv2.imencode(".png", edited(images[i % len(images)], rng))
            assert ok
            archive.writestr(f"generated_{i:05d}.png", png.tobytes())
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out.getvalue())
    return out.getvalue()


def zip_head(zipped: bytes, n: int) -> bytes:
    """The first ``n`` members of a zip, as a zip."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(zipped)) as source, zipfile.ZipFile(out, "w") as head:
        for member in source.namelist()[:n]:
            head.writestr(member, source.read(member))
    return out.getvalue()


def hashes_csv(n: int) -> Path:
    """The derived archive of ``n`` 256-bit pHashes as a `filename,phash` list (cached)."""
    path = CACHE / f"filter_archive_{n}.csv"
    if path.exists():
        return path
    words, _ = archive_words(n, 16)
    rows = words.view(np.uint8).reshape(n, -1)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as out:
        out.write(b"filename,phash\n")
        for lo in range(0, n, 100_000):
            block = rows[lo : lo + 100_000]
            out.write(
                b"".join(
                    b"archive_%07d.png,%s\n" % (lo + i, row.tobytes().hex().encode())
                    for i, row in enumerate(block)
                )
            )
    tmp.rename(path)
    return path


def post_upload(
    client: httpx.Client, base: str, route: str, set_ids: list[int], upload: list, **fields: str
) -> tuple[float, dict]:
    """(seconds, answer) of one /match or /filter request."""
    data: dict = {"real_set_id": [str(i) for i in set_ids], **fields}
    start = time.perf_counter()
    response = client.post(f"{base}/{route}", data=data, files=upload)
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise SystemExit(f"{route} answered {response.status_code}: {response.text[:500]}")
    return elapsed, response.json()


def register_files(client: httpx.Client, base: str, name: str, paths: list[str]) -> dict:
    files = [("files", (Path(p).name, Path(p).read_bytes(), "image/png")) for p in paths]
    response = client.post(f"{base}/real-sets", data={"name": name}, files=files)
    response.raise_for_status()
    return response.json()


def throughput(client: httpx.Client, base: str, args: argparse.Namespace) -> None:
    slices = ct_slices()
    started = time.perf_counter()
    zipped = generated_zip(args.generated, slices)
    say(
        f"{args.generated:,} generated images (edited CT slices, one {len(zipped) / 1e6:.0f} MB "
        f"zip) ready in {time.perf_counter() - started:.1f} s"
    )
    upload = [("files", ("generated.zip", zipped, "application/zip"))]
    small = register_files(client, base, f"{SMALL_SET} CT slices", slices[:SMALL_SET])
    targets: list[tuple[str, list[int]]] = [(f"{SMALL_SET}-image set", [small["id"]])]
    if args.archive:
        started = time.perf_counter()
        listing = hashes_csv(args.archive)
        say(f"{args.archive:,} derived hashes listed in {time.perf_counter() - started:.1f} s")
        with listing.open("rb") as fh:
            started = time.perf_counter()
            response = client.post(
                f"{base}/real-sets",
                data={"name": "archive", "hash_size": "16"},
                files=[("hashes", ("hashes.csv", fh, "text/csv"))],
            )
            response.raise_for_status()
        archive = response.json()
        say(
            f"registered the {args.archive:,}-hash archive by a hashes list in "
            f"{time.perf_counter() - started:.1f} s ({listing.stat().st_size / 1e6:.0f} MB)"
        )
        targets.append((f"{args.archive:,}-hash archive", [archive["id"]]))
        targets.append(("both sets", [small["id"], archive["id"]]))
    header = f"{'against':<34} {'/match img/s':>13} {'/filter img/s':>14}  withheld"
    say(f"\n{header}  ({load_average()})")
    warm_up = [("files", ("warm.zip", zip_head(zipped, 20), "application/zip"))]
    for _, set_ids in targets[:2]:  # each set's hashes loaded and calibrated once, untimed
        post_upload(client, base, "match", set_ids, warm_up, real_summary="none")
    # Untimed: the images' bytes stored once (content-addressed), so no timed request is the
    # one that writes them (in a first run without this, that request was /match).
    post_upload(client, base, "match", targets[0][1], upload, real_summary="none")
    match_times: list[float] = []
    for label, set_ids in targets:
        if len(set_ids) == 1:
            match_s, matched = post_upload(
                client, base, "match", set_ids, upload, real_summary="none"
            )
            assert matched["generated_count"] == args.generated, matched["generated_count"]
            match_times.append(match_s)
        else:  # the same images through /match once per set
            match_s = sum(match_times)
            label += " (/match: 2 calls)"
        filter_s, gate = post_upload(client, base, "filter", set_ids, upload)
        assert gate["generated_count"] == args.generated, gate["generated_count"]
        say(
            f"{label:<34} {args.generated / match_s:13.0f} {args.generated / filter_s:14.0f}  "
            f"{gate['withheld_count']:>8,}  ({match_s:.1f} s / {filter_s:.1f} s)"
        )
    say(load_average())


def devset_agreement(client: httpx.Client, base: str) -> None:
    say(
        "\ndev set        images  copies  /filter withheld  /match copy_of  /match copy_of|source"
        "   novel: /filter released  /match no copy_of"
    )
    for name in DEVSETS:
        folder = SHARED / "devsets" / name
        with (folder / "sources.csv").open() as fh:
            truth = {row["generated"]: bool(row["source"]) for row in csv.DictReader(fh)}
        real_set = register_files(client, base, name, sorted(glob.glob(str(folder / "real/*"))))
        generated = sorted(glob.glob(str(folder / "generated/*")))
        upload = [("files", (Path(p).name, Path(p).read_bytes(), "image/png")) for p in generated]
        _, matched = post_upload(client, base, "match", [real_set["id"]], upload)
        _, gate = post_upload(client, base, "filter", [real_set["id"]], upload)
        copy_of = {m["generated"]: m["copy_of"] is not None for m in matched["matches"]}
        either = {m["generated"]: bool(m["copy_of"] or m["source"]) for m in matched["matches"]}
        withheld = {i["generated"]: i["decision"] == "withhold" for i in gate["images"]}
        copies = [g for g in truth if truth[g] and g in withheld]
        novel = [g for g in truth if not truth[g] and g in withheld]

        def share(flags: dict[str, bool], names: list[str], value: bool = True) -> str:
            return f"{sum(flags[g] == value for g in names) / len(names):.3f}"

        say(
            f"{name:<14} {len(withheld):>6} {len(copies):>7} {share(withheld, copies):>17} "
            f"{share(copy_of, copies):>15} {share(either, copies):>22} "
            f"{share(withheld, novel, False):>26} {share(copy_of, novel, False):>19}"
        )
        disagree = [g for g in withheld if withheld[g] != either[g]]
        if disagree:
            say(f"  /filter and /match's copy_of|source differ on {len(disagree)}: {disagree[:5]}")
        only_source = [g for g in withheld if withheld[g] and not copy_of[g]]
        if only_source:
            say(
                f"  {len(only_source)} withheld by the pHash source alone (no copy_of): "
                f"{sum(truth[g] for g in only_source)} of them copies by sources.csv"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generated", type=int, default=10_000)
    parser.add_argument("--archive", type=int, default=1_000_000, help="0: no archive row")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-devsets", action="store_true")
    args = parser.parse_args()
    say(f"{os.cpu_count()} CPUs, {load_average()}; server data in {tempfile.gettempdir()}")
    with memaudit_server() as (_, base), httpx.Client(timeout=3600) as client:
        if not args.skip_throughput:
            throughput(client, base, args)
        if not args.skip_devsets:
            devset_agreement(client, base)


if __name__ == "__main__":
    main()
