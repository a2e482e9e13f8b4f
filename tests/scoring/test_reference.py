"""The reference auditor on synthetic development sets."""

from __future__ import annotations

import cv2
import numpy as np

from app.scoring.reference import ReferenceConfig, ReferenceScorer
from app.training.synthetic import phantom, simulated_generator, synthetic_devset


def test_reference_scorer_separates_copied_images(devset):
    used, unused, generated = devset
    result = ReferenceScorer().score(used + unused, generated)
    truth = np.array([1] * len(used) + [0] * len(unused))
    from app.evaluation import roc_auc

    assert roc_auc(truth, result.scores) >= 0.9
    assert result.labels[len(used) :].mean() <= 0.25


def test_synthetic_devset_shape():
    used, unused, generated = synthetic_devset(n_used=3, n_unused=2, n_generated=5, size=64)
    assert len(used) == 3 and len(unused) == 2 and len(generated) == 5
    assert all(g.shape == (64, 64) and g.dtype == np.uint8 for g in generated)


def test_reference_scores_are_deterministic(devset):
    used, unused, generated = devset
    first = ReferenceScorer().score(used + unused, generated)
    second = ReferenceScorer().score(used + unused, generated)
    assert np.array_equal(first.scores, second.scores)


def test_reference_stops_verifying_images_once_conclusive(devset):
    """Rounds skip the rest of a copied image's shortlist: fewer SIFT/RANSAC checks, same
    verdicts as verifying every shortlisted generated image."""
    used, unused, generated = devset
    generated = generated + simulated_generator(used, 80, seed=4, copy_share=1.0)

    def run(verify_round: int, conclusive_score: float = 1.0):
        seen: list[tuple[str, int, int]] = []
        config = ReferenceConfig(verify_round=verify_round, conclusive_score=conclusive_score)
        result = ReferenceScorer(config).score(
            used + unused, generated, lambda *step: seen.append(step)
        )
        verified = [done for stage, done, _ in seen if stage == "verified generated images"]
        return result, verified[-1]

    everything, checked_all = run(0)
    in_rounds, checked_in_rounds = run(4)
    assert checked_in_rounds < checked_all
    assert np.array_equal(everything.labels, in_rounds.labels)
    assert everything.labels[: len(used)].mean() >= 0.75
    assert f"checked {checked_in_rounds} generated" in in_rounds.threshold_reason
    # Deciding at a higher threshold: conclusive only there, the same labels as a full check.
    stricter, checked_stricter = run(4, conclusive_score=2.5)
    assert checked_in_rounds < checked_stricter <= checked_all
    assert np.array_equal(stricter.scores >= 2.5, everything.scores >= 2.5)
    assert (everything.scores >= 2.5).any() and not (everything.scores >= 2.5).all()


def test_a_batch_from_another_scanner_is_no_evidence_of_membership():
    """Three patients outside the set, imaged with a smaller field of view and another
    window: their slices cast every vote all the same, and the few real images nearest to
    them drew enough to pass the vote bar (2 of 40 labelled used, vote evidence up to 8.6x
    its bar, before the votes were weighted by how close the batch sits to the real set)."""
    real = [phantom(i, 128) for i in range(40)]
    rng = np.random.default_rng(1)
    generated = []
    for i in range(120):
        patient = cv2.resize(phantom(900 + i % 3, 128), (80, 80), interpolation=cv2.INTER_AREA)
        slice_ = np.zeros((128, 128))
        slice_[24:104, 24:104] = patient * 0.6
        generated.append(np.clip(slice_ + rng.normal(0, 20, slice_.shape), 0, 255).astype(np.uint8))
    result = ReferenceScorer().score(real, generated)
    assert not result.labels.any()
    assert "how close the batch sits to the real set (0.00" in result.threshold_reason
    assert "so the votes count for nothing" in result.threshold_reason
