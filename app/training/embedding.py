"""Train the copy-detection embedding (SSCD-style, self-supervised) and export it to ONNX.

Two views of each real slice, each edited the way generators edit their training images
(re-synthesis at low resolution, blur, Gaussian/Poisson noise, elastic and affine warps,
gamma/contrast/window shifts, crops, blending with another slice, JPEG), are pulled together
by InfoNCE; every other slice of the batch is a negative, half of them the nearest slices of
another batch member (same scan, or nearest by pixels), so near-neighbour slices separate.
A KoLeo entropy term spreads the descriptors. Needs the `train` extra (PyTorch); serving
reads only the ONNX file (app/scoring/embedding.py).

Deterministic: the weights depend only on the images, the seed, the step count and the
number of torch threads (each step's augmentations are drawn from its own seeded generator,
so a run resumed from its checkpoint equals one run straight through).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from app.scoring.embedding import EMBED_SIDE, WORK_SIDE

#: What a view goes through, recorded in the manifest.
AUGMENTATIONS = (
    "blend with another slice (alpha 0.05-0.45, p 0.35)",
    "affine warp (rotation +-12 deg, scale 0.88-1.12, shift +-8%, p 0.9)",
    "crop 70-100% of the side, resized back (p 0.35)",
    "elastic warp (smooth random field, up to 5 px of 256, p 0.35)",
    "re-synthesis at low resolution (down 2-8x of 256 px, back up linear/cubic, p 0.5)",
    "Gaussian blur (sigma 0.5-2.5 px of 256, p 0.3)",
    "gamma 0.6-1.6, contrast 0.7-1.35, offset +-30, re-windowing clip (p 0.8)",
    "Gaussian noise (sigma 4-36 at 256 px, p 0.5); Poisson noise (peak 15-150, p 0.2)",
    "JPEG quality 15-90 (p 0.3)",
    "all edits at 128 px (the slices area-halved once), as serving area-halves 256 px input",
    "one view of each pair light (p 0.5): warp and noise at a quarter of the strength",
)


@dataclass
class EmbeddingConfig:
    """Architecture and optimisation settings (recorded in the manifest)."""

    side: int = EMBED_SIDE
    dim: int = 128
    widths: tuple[int, ...] = (24, 32, 32, 64, 64, 128, 128)
    spatial_channels: int = 32
    batch_slices: int = 64  # slices per step (half anchors, half their hard neighbours)
    hard_share: float = 0.5
    temperature: float = 0.07
    koleo_weight: float = 0.2
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    steps: int = 2400  # the schedule's length; a run may stop earlier (--minutes)
    neighbours: int = 6  # hard-negative candidates per slice


@dataclass
class TrainingData:
    """The slices trained on and each one's hard-negative candidates."""

    images: np.ndarray  # (n, WORK_SIDE, WORK_SIDE) uint8
    names: list[str]  # folder/file under the data root
    neighbours: np.ndarray  # (n, k) indices of near slices (same scan, or nearest pixels)
    summary: dict = field(default_factory=dict)


def build_model(config: EmbeddingConfig):
    """Plain 3x3 conv stack (stride 2 where the width grows), batch-norm + ReLU; head: the
    global mean of the last map beside its flattened 1x1-reduced spatial layout -> linear ->
    L2 norm. Each image is standardised inside the graph (contrast shifts cost nothing)."""
    import torch
    from torch import nn

    class CopyEmbedding(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            previous, side = 1, config.side
            for i, width in enumerate(config.widths):
                stride = 2 if i == 0 or width != previous else 1
                side = side // stride
                layers += [
                    nn.Conv2d(previous, width, 3, stride, 1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                previous = width
            self.features = nn.Sequential(*layers)
            self.reduce = nn.Sequential(
                nn.Conv2d(previous, config.spatial_channels, 1, bias=False),
                nn.BatchNorm2d(config.spatial_channels),
                nn.ReLU(inplace=True),
            )
            self.project = nn.Linear(previous + config.spatial_channels * side * side, config.dim)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            mean = image.mean(dim=(2, 3), keepdim=True)
            std = image.std(dim=(2, 3), keepdim=True)
            x = self.features((image - mean) / (std + 0.02))
            pooled = x.mean(dim=(2, 3))
            spatial = self.reduce(x).flatten(1)
            z = self.project(torch.cat([pooled, spatial], dim=1))
            return nn.functional.normalize(z, dim=1)

    return CopyEmbedding()


# --------------------------------------------------------------------------- data


def devset_originals(devsets_root: Path) -> set[str]:
    """Every `folder/file` under data/ct that a dev set's real/ folder holds (labels.csv)."""
    excluded: set[str] = set()
    for labels in sorted(Path(devsets_root).glob("*/labels.csv")):
        with labels.open(newline="") as fh:
            excluded.update(row["original"] for row in csv.DictReader(fh) if row.get("original"))
    return excluded


def _manifest_rows(folder: Path) -> dict[str, dict]:
    path = folder / "manifest.csv"
    if not path.exists():
        return {}
    with path.open(newline="") as fh:
        return {row["filename"]: row for row in csv.DictReader(fh)}


def load_training_data(
    data_root: Path, exclude: set[str], neighbours: int = 6, log: Callable[[str], None] = print
) -> TrainingData:
    """Every image under ``data_root/<folder>/`` except ``exclude``; neighbours: the slices
    next to it in its scan (manifest patient_or_scan_id, filename order) and its nearest by
    32x32 pixel correlation (folders without scan ids)."""
    images, names, scans, folders_summary = [], [], [], {}
    for folder in sorted(p for p in Path(data_root).iterdir() if p.is_dir()):
        rows = _manifest_rows(folder)
        kept = skipped = 0
        licences: set[str] = set()
        for path in sorted(folder.glob("*.png")):
            name = f"{folder.name}/{path.name}"
            if name in exclude:
                skipped += 1
                continue
            gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if gray is None:
                continue
            if gray.shape != (WORK_SIDE, WORK_SIDE):
                gray = cv2.resize(gray, (WORK_SIDE, WORK_SIDE), interpolation=cv2.INTER_AREA)
            row = rows.get(path.name, {})
            images.append(gray)
            names.append(name)
            scans.append(f"{folder.name}|{row.get('patient_or_scan_id') or ''}")
            if row.get("license"):
                licences.add(row["license"])
            kept += 1
        if kept or skipped:
            folders_summary[folder.name] = {
                "images": kept,
                "excluded_devset_reals": skipped,
                "licences": sorted(licences),
            }
    if not images:
        raise ValueError(f"no training images under {data_root}")
    stack = np.stack(images)
    table = _neighbour_table(stack, scans, neighbours)
    log(f"embedding data: {len(names)} slices from {len(folders_summary)} folders")
    summary = {"images": len(names), "folders": folders_summary}
    return TrainingData(stack, names, table, summary)


def _neighbour_table(images: np.ndarray, scans: Sequence[str], k: int) -> np.ndarray:
    """(n, k): half the slices adjacent in the same scan (when it has an id), the rest the
    nearest by normalised correlation of 32x32 thumbnails."""
    thumbs = np.stack(
        [cv2.resize(g, (32, 32), interpolation=cv2.INTER_AREA) for g in images]
    ).reshape(len(images), -1)
    thumbs = thumbs.astype(np.float32) - thumbs.mean(axis=1, keepdims=True)
    thumbs /= np.linalg.norm(thumbs, axis=1, keepdims=True) + 1e-6
    similarity = thumbs @ thumbs.T
    np.fill_diagonal(similarity, -np.inf)
    by_pixels = np.argsort(-similarity, axis=1)
    table = np.empty((len(images), k), np.int64)
    members: dict[str, list[int]] = {}
    for i, scan in enumerate(scans):
        if not scan.endswith("|"):
            members.setdefault(scan, []).append(i)
    position = {i: (scan, j) for scan, idx in members.items() for j, i in enumerate(idx)}
    for i in range(len(images)):
        chosen: list[int] = []
        if i in position:
            scan, j = position[i]
            idx = members[scan]
            for step in (1, -1, 2, -2, 3, -3)[: k // 2]:
                if 0 <= j + step < len(idx):
                    chosen.append(idx[j + step])
        for candidate in by_pixels[i]:
            if len(chosen) == k:
                break
            if candidate not in chosen:
                chosen.append(int(candidate))
        table[i] = chosen
    return table


# --------------------------------------------------------------------------- augmentation


def _affine_maps(rng: np.random.Generator, side: int, strength: float):
    """Sampling maps (map_x, map_y) of an affine warp, a crop and an elastic field."""
    angle = rng.uniform(-12, 12) * strength
    scale = 1 + rng.uniform(-0.12, 0.12) * strength
    if rng.random() < 0.35 * strength:
        scale *= rng.uniform(1.0, 1 / 0.7)  # a crop of 70-100% of the side, resized back
    shift = rng.uniform(-0.08, 0.08, 2) * side * strength
    matrix = cv2.getRotationMatrix2D((side / 2, side / 2), angle, scale)
    matrix[:, 2] += shift
    inverse = cv2.invertAffineTransform(matrix)
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32)
    map_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    map_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    if rng.random() < 0.35 * strength:
        amplitude = rng.uniform(0.5, 2.5) * strength
        field_xy = rng.normal(0, 1, (2, 5, 5)).astype(np.float32)
        for axis, target in enumerate((map_x, map_y)):
            smooth = cv2.resize(field_xy[axis], (side, side), interpolation=cv2.INTER_CUBIC)
            target += amplitude * smooth / (np.abs(smooth).max() + 1e-6)
    return map_x.astype(np.float32), map_y.astype(np.float32)


def generator_edit(
    image: np.ndarray, partner: np.ndarray, rng: np.random.Generator, strength: float = 1.0
) -> np.ndarray:
    """One edited copy of a uint8 slice, as a generator that memorised it might emit."""
    side = image.shape[0]
    x = image.astype(np.float32)
    if rng.random() < 0.35 * strength:
        alpha = rng.uniform(0.05, 0.45)
        x = (1 - alpha) * x + alpha * partner.astype(np.float32)
    if rng.random() < 0.9:
        map_x, map_y = _affine_maps(rng, side, strength)
        x = cv2.remap(x, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if rng.random() < 0.5 * strength:
        factor = rng.uniform(1, 4)
        small = max(8, round(side / factor))
        x = cv2.resize(x, (small, small), interpolation=cv2.INTER_AREA)
        up = cv2.INTER_CUBIC if rng.random() < 0.5 else cv2.INTER_LINEAR
        x = cv2.resize(x, (side, side), interpolation=up)
    if rng.random() < 0.3 * strength:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.25, 1.25))
    if rng.random() < 0.8:
        x = np.clip(x, 0, 255) / 255.0
        x = x ** np.float32(np.exp(rng.uniform(np.log(0.6), np.log(1.6)) * strength))
        x = (x - 0.5) * rng.uniform(0.7, 1.35) ** strength + 0.5 + rng.uniform(-30, 30) / 255
        if rng.random() < 0.3 * strength:
            low, high = rng.uniform(0, 0.15), rng.uniform(0.85, 1.0)
            x = (np.clip(x, low, high) - low) / (high - low)
        x = x * 255.0
    if rng.random() < 0.5:
        x = x + rng.normal(0, rng.uniform(2, 18) * strength, x.shape).astype(np.float32)
    if rng.random() < 0.2 * strength:
        peak = rng.uniform(15, 150)
        x = rng.poisson(np.clip(x, 0, 255) / 255 * peak).astype(np.float32) * (255 / peak)
    out = np.clip(x, 0, 255).astype(np.uint8)
    if rng.random() < 0.3 * strength:
        quality = int(rng.integers(15, 91))
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return out


def _batch_indices(
    data: TrainingData, rng: np.random.Generator, config: EmbeddingConfig
) -> np.ndarray:
    """Distinct slices: anchors, then for a share of them one of their near slices."""
    n = len(data.images)
    size = min(config.batch_slices, n)
    hard = int(size * config.hard_share / 2) if n > size else 0
    chosen: list[int] = []
    seen: set[int] = set()
    for i in rng.permutation(n):
        if len(chosen) >= size - hard:
            break
        if i in seen:
            continue
        chosen.append(int(i))
        seen.add(int(i))
    for anchor in list(chosen):
        if len(chosen) >= size:
            break
        for j in rng.permutation(data.neighbours[anchor]):
            if int(j) not in seen:
                chosen.append(int(j))
                seen.add(int(j))
                break
    return np.asarray(chosen)


def make_views(
    data: TrainingData, indices: np.ndarray, rng: np.random.Generator, side: int
) -> tuple[np.ndarray, np.ndarray]:
    """Two edited views of each slice, area-resized to the network's side, in [0, 1]."""
    from app.scoring.embedding import embedding_input

    views: list[list[np.ndarray]] = [[], []]
    n = len(data.images)
    for i in indices:
        light = int(rng.integers(2)) if rng.random() < 0.5 else -1
        for v in (0, 1):
            partner = data.images[int(rng.integers(n))]
            strength = 0.25 if v == light else 1.0
            views[v].append(generator_edit(data.images[i], partner, rng, strength))
    return embedding_input(views[0], side), embedding_input(views[1], side)


# --------------------------------------------------------------------------- training


def contrastive_loss(z1, z2, temperature: float, koleo_weight: float):
    """Symmetric InfoNCE over the 2B views + KoLeo entropy (SSCD): (total, infonce, koleo)."""
    import torch

    z = torch.cat([z1, z2])
    n = z1.shape[0]
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    infonce = torch.nn.functional.cross_entropy(logits, targets)
    with torch.no_grad():
        gram = z1 @ z1.T
        gram.fill_diagonal_(-2.0)
        nearest = gram.argmax(dim=1)
    distance = (z1 - z1[nearest]).norm(dim=1)
    koleo = -torch.log(distance + 1e-4).mean()
    return infonce + koleo_weight * koleo, infonce, koleo


def _learning_rate(step: int, config: EmbeddingConfig) -> float:
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
    return config.learning_rate * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * progress)))


def train_embedding(
    data: TrainingData,
    out: Path,
    *,
    config: EmbeddingConfig | None = None,
    seed: int = 0,
    threads: int = 1,
    max_steps: int | None = None,
    minutes: float | None = None,
    checkpoint: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Train (or resume from ``checkpoint``) until ``max_steps`` (default: the schedule's
    length) or ``minutes``; export ONNX to ``out``; return the figures for the manifest."""
    import torch

    config = config or EmbeddingConfig()
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)  # the edits too (OpenCV's results do not depend on it)
    torch.manual_seed(seed)
    model = build_model(config)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    step, seconds, recent = 0, 0.0, []
    #: [first step, schedule length] of each segment: a resumed run may lengthen the schedule.
    schedule = [[0, config.steps]]
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        same = {k: v for k, v in state["config"].items() if k != "steps"}
        if same != {k: v for k, v in asdict(config).items() if k != "steps"}:
            raise ValueError(f"{checkpoint} was written with another config")
        if state["seed"] != seed:
            raise ValueError(f"{checkpoint} was written with seed {state['seed']}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, seconds = state["step"], state["seconds"]
        schedule = state.get("schedule", [[0, state["config"]["steps"]]])
        if schedule[-1][1] != config.steps:
            schedule.append([step, config.steps])
        log(f"embedding: resumed at step {step} ({seconds / 60:.1f} min trained)")
    last_step = min(max_steps or config.steps, config.steps)
    started = time.monotonic()
    last_save = started
    model.train()
    while step < last_step:
        if minutes is not None and time.monotonic() - started >= minutes * 60:
            break
        rng = np.random.default_rng([seed, step])
        indices = _batch_indices(data, rng, config)
        view1, view2 = make_views(data, indices, rng, config.side)
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, config)
        z1 = model(torch.from_numpy(view1))
        z2 = model(torch.from_numpy(view2))
        loss, infonce, koleo = contrastive_loss(z1, z2, config.temperature, config.koleo_weight)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        recent.append((float(loss.detach()), float(infonce.detach()), float(koleo.detach())))
        if step % 50 == 0 or step == last_step:
            mean = np.mean(recent[-50:], axis=0)
            elapsed = seconds + time.monotonic() - started
            log(
                f"embedding step {step}/{last_step}: loss {mean[0]:.3f} (infonce {mean[1]:.3f}, "
                f"koleo {mean[2]:.3f}), {elapsed / 60:.1f} min"
            )
        if checkpoint is not None and time.monotonic() - last_save > 300:
            _save_checkpoint(
                checkpoint, model, optimizer, config, seed, step, seconds, started, schedule
            )
            last_save = time.monotonic()
    seconds += time.monotonic() - started
    if checkpoint is not None:
        _save_checkpoint(checkpoint, model, optimizer, config, seed, step, seconds, None, schedule)
    model.eval()
    parity = export_onnx(model, out, config)
    tail = np.mean(recent[-100:], axis=0) if recent else [float("nan")] * 3
    parameters = sum(p.numel() for p in model.parameters())
    return {
        "steps": step,
        "schedule_steps": config.steps,
        "schedule_segments": [
            {"from_step": first, "cosine_steps": length} for first, length in schedule
        ],
        "train_minutes": round(seconds / 60, 1),
        "torch_threads": threads,
        "seed": seed,
        "final_loss": round(float(tail[0]), 4),
        "final_infonce": round(float(tail[1]), 4),
        "parameters": int(parameters),
        "onnx_parity_max_abs": parity,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
    }


def _save_checkpoint(
    path, model, optimizer, config, seed, step, seconds, started, schedule
) -> None:
    import torch

    total = seconds + (time.monotonic() - started if started is not None else 0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "config": asdict(config),
            "seed": seed,
            "step": step,
            "seconds": total,
            "schedule": schedule,
        },
        tmp,
    )
    tmp.replace(path)


def export_onnx(model, out: Path, config: EmbeddingConfig) -> float:
    """Write ONNX (opset 17, dynamic batch); return the largest |torch - onnxruntime|
    difference on a few edited phantoms (raises if above 1e-4)."""
    import onnxruntime as ort
    import torch

    from app.training.synthetic import phantom

    out.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    dummy = torch.zeros(1, 1, config.side, config.side)
    torch.onnx.export(
        model,
        (dummy,),
        str(out),
        input_names=["image"],
        output_names=["embedding"],
        dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    from app.scoring.embedding import embedding_input

    probe = embedding_input([phantom(seed, 256) for seed in range(5)], config.side)
    with torch.no_grad():
        expected = model(torch.from_numpy(probe)).numpy()
    ort.disable_telemetry_events()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": probe})[0]
    difference = float(np.abs(expected - got).max())
    if difference > 1e-4:
        raise RuntimeError(f"ONNX export differs from torch by {difference}")
    return difference
