"""The reference auditor on synthetic development sets."""

from __future__ import annotations

import numpy as np

from app.scoring.reference import ReferenceConfig, ReferenceScorer
from app.training.synthetic import simulated_generator, synthetic_devset


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
