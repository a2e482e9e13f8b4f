"""The seed paper's CNN served through onnxruntime only (no PyTorch at serving time)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from app.scoring.base import ModelInfo, Progress, ScoreResult

#: Side of the square grayscale input the CNN was trained on (training imports it).
INPUT_SIDE = 64
log = logging.getLogger("memaudit.models")


def cnn_input(images: Sequence[np.ndarray]) -> np.ndarray:
    """(n, 1, 64, 64) float32 in [0, 1], as the model was trained."""
    out = np.empty((len(images), 1, INPUT_SIDE, INPUT_SIDE), np.float32)
    for i, gray in enumerate(images):
        small = cv2.resize(gray, (INPUT_SIDE, INPUT_SIDE), interpolation=cv2.INTER_AREA)
        out[i, 0] = small.astype(np.float32) / 255.0
    return out


def open_session(
    path: Path, want_cuda: bool, threads: int = 0
) -> tuple[ort.InferenceSession, str, str | None]:
    """(session, provider it really runs on, why CUDA is not used or None); ``threads``:
    onnxruntime's intra-op threads on CPU (0 = its default, one per core)."""
    # A service holding patient data sends nothing anywhere (onnxruntime's telemetry is on
    # by default in some builds, and may keep a device id in the home folder).
    ort.disable_telemetry_events()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    available = ort.get_available_providers()
    why = None
    if want_cuda and "CUDAExecutionProvider" in available:
        try:
            session = ort.InferenceSession(
                str(path),
                options,
                providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
            )
            actual = session.get_providers()[0]
            if actual == "CUDAExecutionProvider":
                return session, actual, None
            why = "onnxruntime lists CUDA but the session fell back to CPU (no usable GPU/CUDA)"
        except Exception as exc:  # CUDA libraries missing or broken: fall back, say why
            why = f"CUDA session failed: {exc}"[:300]
    elif want_cuda:
        why = "this onnxruntime build has no CUDA execution provider"
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session, session.get_providers()[0], why


class CnnScorer:
    """The paper's CNN (an ArtifactScorer): P(used) per real image, from its pixels alone."""

    name = "cnn"
    needs_generated = False

    def __init__(self, artifact: Path, info: ModelInfo, *, want_cuda: bool = True) -> None:
        self.session, provider, why = open_session(artifact, want_cuda)
        self.info = ModelInfo(info.name, info.version, info.sha256, provider)
        self.execution_provider = provider
        self.load_note = why
        if why:
            log.info("model %s runs on %s: %s", info.name, provider, why)
        else:
            log.info("model %s runs on %s", info.name, provider)

    def score(
        self,
        real: Sequence[np.ndarray],
        generated: Sequence[np.ndarray] | None = None,
        progress: Progress | None = None,
        batch: int = 256,
    ) -> ScoreResult:
        out = []
        for lo in range(0, len(real), batch):
            x = cnn_input([real[i] for i in range(lo, min(lo + batch, len(real)))])
            out.append(self.session.run(None, {"image": x})[0].reshape(-1))
        scores = np.concatenate(out) if out else np.zeros(0)
        return ScoreResult(
            scores=scores.astype(float),
            threshold=0.5,
            threshold_reason="the CNN's sigmoid output; used at >= 0.5 (as the paper)",
            models=[self.info],
        )
