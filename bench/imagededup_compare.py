"""imagededup's PHash next to memaudit: running it in its own virtualenv (it needs torch,
which memaudit never depends on) through bench/imagededup_runner.py, and how often its 64-bit
hashes and decisions agree with memaudit's hash_size=8 ones. Used by bench_compare_match.py."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import CORES, ROOT


def run_imagededup(
    python: str, real_dir: Path, gen_dir: Path, threshold: int, repeats: int
) -> tuple[dict | None, str]:
    """bench/imagededup_runner.py under imagededup's own interpreter; (report, "") or
    (None, why it could not be measured)."""
    if not Path(python).exists():
        return None, f"interpreter {python} does not exist"
    check = subprocess.run(
        [python, "-c", "import imagededup.methods"], capture_output=True, text=True
    )
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["no error output"])[-1]
        return None, f"`import imagededup.methods` fails under {python}: {last}"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "imagededup.json"
        run = subprocess.run(
            [
                python,
                str(ROOT / "bench/imagededup_runner.py"),
                str(real_dir),
                str(gen_dir),
                str(out),
                f"--threshold={threshold}",
                f"--workers={CORES}",
                f"--repeats={repeats}",
            ],
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            last = (run.stderr.strip().splitlines() or ["no error output"])[-1]
            return None, f"imagededup_runner.py exited {run.returncode}: {last}"
        return json.loads(out.read_text()), ""


def hex_bits(hexes: Sequence[str]) -> np.ndarray:
    """Hex hashes (imagehash's and imagededup's share the row-major bit order) to 0/1 rows."""
    raw = np.frombuffer(b"".join(bytes.fromhex(h) for h in hexes), np.uint8)
    return np.unpackbits(raw).reshape(len(hexes), -1)


def nearest_sets(gen_bits: np.ndarray, real_bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance matrix minimum per generated image, and a mask of every real at that minimum
    (ties are common at 64 bits, so agreement must not hinge on which tie is listed)."""
    dist = (gen_bits[:, None, :] != real_bits[None, :, :]).sum(axis=2)
    best = dist.min(axis=1)
    return best, dist == best[:, None]


@dataclass
class SideBySide:
    """Both tools' hashes of the same images, generated images in one order."""

    real_names: list[str]
    gen_names: list[str]
    matches: dict[str, dict]  # memaudit's match entry per generated image
    ma_real: np.ndarray
    ma_gen: np.ndarray
    idd_real: np.ndarray
    idd_gen: np.ndarray

    @classmethod
    def of(cls, real_images: list[dict], body: dict, idd: dict) -> SideBySide:
        real_names = [i["filename"] for i in real_images]
        by_gen = {m["generated"]: m for m in body["matches"]}
        gen_names = [g for g in sorted(by_gen) if g in idd["generated_hashes"]]
        return cls(
            real_names,
            gen_names,
            by_gen,
            hex_bits([i["phash"] for i in real_images]),
            hex_bits([by_gen[g]["phash"] for g in gen_names]),
            hex_bits([idd["real_hashes"][n] for n in real_names]),
            hex_bits([idd["generated_hashes"][g] for g in gen_names]),
        )


def _hash_lines(s: SideBySide, pct) -> list[str]:
    same_hash = (s.ma_gen == s.idd_gen).all(axis=1)
    hash_gap = (s.ma_gen != s.idd_gen).sum(axis=1)
    real_same_hash = (s.ma_real == s.idd_real).all(axis=1)
    return [
        f"identical 64-bit hash: {pct(same_hash.sum())} generated, "
        f"{int(real_same_hash.sum())}/{len(s.real_names)} real; bits differing per image: "
        f"median {np.median(hash_gap):.0f}, mean {hash_gap.mean():.2f}, max {hash_gap.max()}",
        "(imagededup thresholds at the median of the 63 AC coefficients with >=, imagehash at "
        "the median of all 64 with >, so the median coefficient's bit usually differs; it also "
        "resizes before converting to grayscale)",
    ]


def _decision_lines(s: SideBySide, idd: dict, pct) -> list[str]:
    ma_best, ma_ties = nearest_sets(s.ma_gen, s.ma_real)
    idd_best, idd_ties = nearest_sets(s.idd_gen, s.idd_real)
    assert all(
        s.matches[g]["distance"] == int(d) for g, d in zip(s.gen_names, ma_best, strict=True)
    )
    t = idd["threshold"]
    idd_hits = idd["nearest_real"]
    ma_copy = np.array([s.matches[g]["source"] is not None for g in s.gen_names])
    idd_copy = np.array([bool(idd_hits.get(g)) for g in s.gen_names])
    # imagededup's own search result must equal its hashes' brute-force neighbours within t.
    api_consistent = all(
        bool(idd_hits.get(g)) == (d <= t) for g, d in zip(s.gen_names, idd_best, strict=True)
    )
    both_copy = ma_copy & idd_copy
    same_source = sum(
        bool(both_copy[i])
        and s.matches[g]["source"] in {name for name, d in idd_hits[g] if d == idd_hits[g][0][1]}
        for i, g in enumerate(s.gen_names)
    )
    gap = np.abs(ma_best - idd_best)
    same_real = (ma_ties & idd_ties).any(axis=1)
    return [
        f"same nearest real image (ties count as agreement): {pct(same_real.sum())}",
        f"same nearest distance: {pct((ma_best == idd_best).sum())}; "
        f"|difference| mean {gap.mean():.2f}, max {gap.max()}",
        f"same copy decision at distance <= {t}: {pct((ma_copy == idd_copy).sum())} "
        f"(memaudit copies {int(ma_copy.sum())}, imagededup {int(idd_copy.sum())}, "
        f"both {int(both_copy.sum())}; same source among both: {same_source})",
        f"imagededup's find_duplicates agrees with brute force on its own hashes: {api_consistent}",
    ]


def agreement(real_images: list[dict], body: dict, idd: dict) -> list[str]:
    """memaudit (hash_size=8: its registered real images and /match answer) vs imagededup's
    PHash, per generated image."""
    s = SideBySide.of(real_images, body, idd)
    n = len(s.gen_names)
    pct = lambda k: f"{int(k)}/{n} ({100 * k / n:.1f}%)"  # noqa: E731
    head = (
        f"generated images compared: {n}; memaudit threshold at hash_size=8: "
        f"{body['threshold']} ({body['threshold_source']}), imagededup "
        f"max_distance_threshold={idd['threshold']}"
    )
    return [head, *_hash_lines(s, pct), *_decision_lines(s, idd, pct)]
