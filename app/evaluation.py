"""Metrics in the ImageCLEF / membership-inference conventions, and an ROC curve as PNG."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import cohen_kappa_score, roc_auc_score, roc_curve


def binary_metrics(truth: np.ndarray, predicted: np.ndarray) -> dict:
    """The seed paper's Table 1 columns plus FPR and Cohen's kappa."""
    y = np.asarray(truth).astype(bool)
    p = np.asarray(predicted).astype(bool)
    tp = int((y & p).sum())
    tn = int((~y & ~p).sum())
    fp = int((~y & p).sum())
    fn = int((y & ~p).sum())
    total = max(tp + tn + fp + fn, 1)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    specificity = tn / (tn + fp) if tn + fp else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    kappa = float(cohen_kappa_score(y, p)) if len(set(y) | set(p)) > 1 else 0.0
    return {
        "accuracy": (tp + tn) / total,
        "precision": precision,
        "specificity": specificity,
        "recall": recall,
        "f1": f1,
        "tp": tp,
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "fpr": 1.0 - specificity,
        "kappa": kappa,
    }


def baseline_f1(truth: np.ndarray) -> dict[str, float]:
    """The F1 scores any F1 must be read against (field notes): labelling every image
    "used" gives 2p/(1+p) at prevalence p; guessing "used" at random with that same
    prevalence gives p (0.667 and 0.5 at 50%)."""
    prevalence = float(np.asarray(truth).astype(bool).mean()) if len(truth) else 0.0
    return {"all_used": 2 * prevalence / (1 + prevalence), "chance": prevalence}


def roc_auc(truth: np.ndarray, scores: np.ndarray) -> float:
    y = np.asarray(truth).astype(bool)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, scores))


def tpr_at_fpr(truth: np.ndarray, scores: np.ndarray, fpr_target: float = 0.01) -> float:
    """Largest TPR with FPR <= target (the membership-inference convention)."""
    y = np.asarray(truth).astype(bool)
    if y.all() or not y.any():
        return float("nan")
    fpr, tpr, _ = roc_curve(y, scores)
    ok = fpr <= fpr_target + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def write_roc_png(truth: np.ndarray, scores: np.ndarray, path: Path, title: str = "") -> None:
    """A plain ROC plot (OpenCV drawing, no plotting library needed)."""
    y = np.asarray(truth).astype(bool)
    fpr, tpr, _ = roc_curve(y, scores)
    size, pad = 480, 50
    img = np.full((size + 2 * pad, size + 2 * pad, 3), 255, np.uint8)
    cv2.rectangle(img, (pad, pad), (pad + size, pad + size), (0, 0, 0), 1)
    cv2.line(img, (pad, pad + size), (pad + size, pad), (180, 180, 180), 1)
    pts = np.stack([pad + fpr * size, pad + size - tpr * size], axis=1).astype(np.int32)
    cv2.polylines(img, [pts], False, (200, 60, 20), 2)
    label = f"{title}  AUC {roc_auc(y, scores):.3f}".strip()
    cv2.putText(img, label, (pad, pad - 15), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1)
    cv2.putText(
        img, "FPR", (pad + size // 2, pad + size + 35), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1
    )
    cv2.putText(img, "TPR", (5, pad + size // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
