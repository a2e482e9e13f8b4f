"""The seed paper's model 2: SIFT descriptors -> k-means visual vocabulary -> bag-of-visual-
words histogram -> KNN classifier. Training and scoring share the featurisation here; the
fitted vocabulary and classifier are one joblib file, loaded only from ``models/`` after its
SHA-256 matched the manifest (never from a request)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import joblib
import numpy as np
from sklearn.cluster import MiniBatchKMeans
from sklearn.neighbors import KNeighborsClassifier

from app.scoring.base import ModelInfo, Progress, ScoreResult

#: SIFT keypoints per image in the bag of visual words. The shipped artifact was trained with
#: 200: changing it changes what its scores mean. (The reference auditor's verification keeps
#: its own count, app.imaging.features.VERIFICATION_SIFT_FEATURES.)
BOVW_SIFT_FEATURES = 200


def sift_descriptors(gray: np.ndarray) -> np.ndarray:
    sift = cv2.SIFT_create(nfeatures=BOVW_SIFT_FEATURES)
    _kps, desc = sift.detectAndCompute(gray, None)
    return desc if desc is not None else np.zeros((0, 128), np.float32)


def bovw_histogram(desc: np.ndarray, vocabulary: MiniBatchKMeans) -> np.ndarray:
    k = vocabulary.n_clusters
    if len(desc) == 0:
        return np.zeros(k, np.float32)
    words = vocabulary.predict(desc.astype(np.float32))
    hist = np.bincount(words, minlength=k).astype(np.float32)
    return hist / hist.sum()


def train_sift_knn(
    used: Sequence[np.ndarray],
    unused: Sequence[np.ndarray],
    generated: Sequence[np.ndarray],
    out: Path,
    *,
    words: int = 100,
    neighbours: int = 5,
    seed: int = 0,
) -> dict:
    """Vocabulary from generated + used + unused descriptors (as the paper), KNN on used/unused."""
    real = list(used) + list(unused)
    labels = np.array([1] * len(used) + [0] * len(unused))
    real_desc = [sift_descriptors(g) for g in real]
    vocab_desc = [d for d in real_desc if len(d)] + [
        d for d in (sift_descriptors(g) for g in generated) if len(d)
    ]
    stacked = np.concatenate(vocab_desc).astype(np.float32)
    vocabulary = MiniBatchKMeans(n_clusters=words, random_state=seed, n_init=3, batch_size=2048)
    vocabulary.fit(stacked)
    features = np.stack([bovw_histogram(d, vocabulary) for d in real_desc])
    knn = KNeighborsClassifier(n_neighbors=min(neighbours, len(real)))
    knn.fit(features, labels)
    out.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump({"vocabulary": vocabulary, "knn": knn, "format": 1}, out)
    return {
        "train_accuracy": float(knn.score(features, labels)),
        "words": words,
        "neighbours": neighbours,
        "descriptors": len(stacked),
    }


class SiftKnnScorer:
    """The paper's SIFT bag-of-words KNN (an ArtifactScorer): share of `used` neighbours."""

    name = "sift_knn"
    needs_generated = False
    execution_provider = "CPU (scikit-learn)"
    load_note = None

    def __init__(self, artifact: Path, info: ModelInfo) -> None:
        bundle = joblib.load(artifact)
        self.vocabulary: MiniBatchKMeans = bundle["vocabulary"]
        self.knn: KNeighborsClassifier = bundle["knn"]
        self.info = info

    def score(
        self,
        real: Sequence[np.ndarray],
        generated: Sequence[np.ndarray] | None = None,
        progress: Progress | None = None,
    ) -> ScoreResult:
        features = np.stack([bovw_histogram(sift_descriptors(g), self.vocabulary) for g in real])
        classes = list(self.knn.classes_)
        proba = self.knn.predict_proba(features)
        scores = proba[:, classes.index(1)] if 1 in classes else np.zeros(len(real))
        return ScoreResult(
            scores=scores,
            threshold=0.5,
            threshold_reason="the KNN's share of `used` neighbours; used at >= 0.5 (majority "
            "vote, as the paper)",
            models=[self.info],
        )
