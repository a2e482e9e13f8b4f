"""Label-free membership signals that compare descriptors, and the evidence lists they name.

Pure numpy (no images, no models): the reference auditor (app/scoring/reference.py) feeds it
thumbnails and copy-detection embeddings.

* **Hubness.** Some real images are near many images of any batch (a typical slice; the
  blurry mean a noisy generator collapses onto). Nearest-neighbour votes then pile onto
  them whatever the generator learned. CSLS (Conneau et al., 2018) corrects each similarity
  by how crowded both ends are: ``2 s(r, g) - rho_real(r) - rho_gen(g)``, where ``rho_real``
  is the mean similarity of the real image to its k nearest other real images and
  ``rho_gen`` that of the generated image to its k nearest real images.
* **Nulls from the real set.** Every signal is compared with what the real images give
  each other: the real set stands in for a generator that copied nothing. A null of votes
  is cast by as many real voters as the batch has images: a real image's share of m votes
  is noisier the smaller m is (one vote of a 50-image batch is worth three of a 150-image
  real set's own votes), so a null of the real set's size would let a small batch's chance
  votes pass and make a large batch's pass less often.
* **Closeness.** Votes are shares: a batch from another hospital, or a generator that
  learned nothing, still casts every vote, and a few real images its distribution happens
  to resemble collect them. A vote says something about membership only when the batch
  sits as close to the real set as the real images sit to each other, so the votes are
  scaled by that closeness (``batch_closeness``, at most 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.search.copies import nearest_other_similarity

#: Neighbours whose mean similarity measures how crowded an image's neighbourhood is.
HUBNESS_NEIGHBOURS = 10
#: Similarities held at once (float32) when a batch is compared block by block.
BLOCK_ENTRIES = 4_000_000
#: Null values drawn when the real voters are resampled to the batch's size (about; whole
#: draws of one value per real image).
NULL_DRAWS = 20_000


def top_k_mean(similarity: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Mean of the k largest values along ``axis`` (all of them when there are fewer)."""
    k = max(1, min(k, similarity.shape[axis]))
    part = np.partition(-similarity, k - 1, axis=axis)
    return -np.take(part, np.arange(k), axis=axis).mean(axis=axis)


def real_crowding(real: np.ndarray, k: int = HUBNESS_NEIGHBOURS) -> np.ndarray:
    """Per real row: mean similarity to its k nearest other real rows (CSLS's rho_real)."""
    if len(real) < 2:
        return np.zeros(len(real), np.float32)
    among = real @ real.T
    np.fill_diagonal(among, -np.inf)
    return top_k_mean(among, min(k, len(real) - 1), axis=1)  # never the -inf diagonal


def vote_weights(similarity: np.ndarray, temperature: float) -> np.ndarray:
    """Column-wise softmax over rows: column j is how voter j splits its one vote."""
    z = similarity / temperature
    z = z - z.max(axis=0, keepdims=True)
    w = np.exp(z)
    return w / w.sum(axis=0, keepdims=True)


def soft_votes(similarity: np.ndarray, temperature: float) -> np.ndarray:
    """Column-wise softmax over rows (real images), summed per row; mean 1 over rows."""
    w = vote_weights(similarity, temperature)
    return w.sum(axis=1) * similarity.shape[0] / max(similarity.shape[1], 1)


@dataclass(frozen=True)
class Votes:
    """Hubness-corrected nearest-neighbour votes per real image (mean 1 over the set) and
    the null: the votes real images get when as many real images as the batch holds vote
    over the others (several draws pooled)."""

    votes: np.ndarray
    null: np.ndarray
    #: How close the batch sits to the real set against the real images' closeness to
    #: each other (batch_closeness): 1.0 as close, 0.0 farther than any real image.
    closeness: float


def csls_votes(
    real: np.ndarray,
    generated: np.ndarray,
    temperature: float,
    k: int = HUBNESS_NEIGHBOURS,
    block_entries: int = BLOCK_ENTRIES,
) -> Votes:
    """Every generated row casts a soft vote over the real rows by CSLS-corrected
    similarity; in the null, real rows vote over the others, corrected the same way, in a
    batch of the generated batch's size (size_matched_votes)."""
    n, m = len(real), len(generated)
    rho_real = real_crowding(real, k)
    vote_sum = np.zeros(n, np.float64)
    nearest_real = np.empty(m, np.float32)
    block = max(1, block_entries // max(n, 1))
    for lo in range(0, m, block):
        sim = real @ generated[lo : lo + block].T  # (n, block)
        nearest_real[lo : lo + sim.shape[1]] = sim.max(axis=0)
        rho_gen = top_k_mean(sim, k, axis=0)
        corrected = 2 * sim - rho_real[:, None] - rho_gen[None, :]
        vote_sum += soft_votes(corrected, temperature) * sim.shape[1] / n
    votes = vote_sum * n / max(m, 1)
    if n < 2:
        return Votes(votes, np.ones(n), 1.0)
    among = real @ real.T
    np.fill_diagonal(among, -np.inf)
    closeness = batch_closeness(among.max(axis=1), nearest_real)
    corrected = 2 * among - rho_real[:, None] - rho_real[None, :]
    null = size_matched_votes(vote_weights(corrected, temperature), max(m, 1))
    return Votes(votes, null, closeness)


def batch_closeness(real_nearest_other: np.ndarray, generated_nearest_real: np.ndarray) -> float:
    """How close a batch sits to the real set, against the real images' closeness to each
    other: each generated image's similarity to its nearest real image is ranked among the
    real images' similarities to their nearest other real image (the share at or below it),
    and the mean rank is divided by the real images' own mean rank (about 0.5); at most 1.

    Measured on the reference auditor's thumbnails: the dev sets' batches sit at 0.39-0.54
    (edited outputs are farther from their sources than neighbouring slices of one scan
    are from each other), their reverse splits at 0.40-0.48, batches re-synthesised from
    other patients' slices at 0.30-0.33 (same hospital) and 0.007 (another hospital;
    bench/membership_controls.py). A share, not a cut: a generator's votes keep their order,
    and a noisy generator that did learn its training images keeps part of them."""
    if not len(generated_nearest_real) or not len(real_nearest_other):
        return 1.0
    null = np.sort(np.asarray(real_nearest_other, np.float64))
    own = np.searchsorted(null, null, side="right").mean()
    batch = np.searchsorted(null, np.asarray(generated_nearest_real, np.float64), side="right")
    return float(min(1.0, batch.mean() / own))


def size_matched_votes(
    weights: np.ndarray, batch: int, draws: int = NULL_DRAWS, seed: int = 0
) -> np.ndarray:
    """The votes (mean 1 over rows, as soft_votes) that rows get from a batch of ``batch``
    of the columns' voters, each voter used as evenly as ``batch`` allows: every one
    ``batch // n`` times, plus a different random ``batch % n`` of them without replacement
    in each draw (seeded: the same null every call); all draws pooled. A batch of n voters,
    or a multiple, is the voters themselves (one draw)."""
    rows, n = weights.shape
    full, rest = divmod(batch, n)
    base = weights.sum(axis=1) * full
    if not rest:
        return base * rows / batch
    rng = np.random.default_rng(seed)
    rounds = max(1, -(-draws // rows))
    picks = np.stack([rng.choice(n, rest, replace=False) for _ in range(rounds)])
    chosen = np.zeros((n, rounds), weights.dtype)
    np.put_along_axis(chosen, picks.T, 1.0, axis=0)  # voter x draw: 1 when it votes
    return ((base[:, None] + weights @ chosen) * rows / batch).ravel()


def nearest_other(real: np.ndarray) -> np.ndarray:
    """The similarity of real rows to their nearest other real row (the copy null): the
    same sampled, blocked computation as /match's copy bar (an n x n matrix of a 200,000-image
    set would not fit in memory)."""
    if len(real) < 2:
        return np.full(len(real), -1.0, np.float32)
    return nearest_other_similarity(real)


@dataclass(frozen=True)
class Bar:
    """A signal's decision bar from its null: ``scale`` maps the null's median to 0 and the
    bar to 1, so signals measured in different units can be compared and combined."""

    median: float
    bar: float

    @classmethod
    def of(cls, null: np.ndarray, quantile: float) -> Bar:
        if not len(null):
            return cls(0.0, 1.0)
        median = float(np.median(null))
        return cls(median, max(float(np.quantile(null, quantile)), median + 1e-6))

    def scale(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, np.float64) - self.median) / (self.bar - self.median)


def top_generated(
    real: np.ndarray, generated: np.ndarray, k: int, block_entries: int = BLOCK_ENTRIES
) -> tuple[np.ndarray, np.ndarray]:
    """Per real row: its k most similar generated rows, most similar first (ties: lower
    index), as (indices (n, k), similarities (n, k)); computed block by block."""
    n, m = len(real), len(generated)
    k = min(k, m)
    best_sim = np.full((n, k), -np.inf, np.float32)
    best_idx = np.zeros((n, k), np.int64)
    block = max(1, block_entries // max(n, 1))
    for lo in range(0, m, block):
        sim = real @ generated[lo : lo + block].T
        cand_sim = np.concatenate([best_sim, sim], axis=1)
        cand_idx = np.concatenate(
            [best_idx, np.broadcast_to(np.arange(lo, lo + sim.shape[1]), sim.shape)], axis=1
        )
        keep = top_indices(cand_sim, k)
        best_sim = np.take_along_axis(cand_sim, keep, axis=1)
        best_idx = np.take_along_axis(cand_idx, keep, axis=1)
    return best_idx, best_sim


def top_indices(values: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k largest values, largest first (deterministic)."""
    if k >= values.shape[1]:
        return np.argsort(-values, axis=1, kind="stable")[:, :k]
    part = np.argpartition(-values, k - 1, axis=1)[:, :k]
    part.sort(axis=1)  # among equal values the lower index comes first
    picked = np.take_along_axis(values, part, axis=1)
    order = np.argsort(-picked, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def hamming(bits_a: np.ndarray, bits_b: np.ndarray) -> int:
    """Bits that differ between two boolean hash vectors."""
    return int(np.count_nonzero(bits_a != bits_b))
