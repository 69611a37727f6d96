"""Aggregate statistics for benchmark scores (rliable's definitions; Agarwal et al., NeurIPS 2021).

Scores are arrays of per-episode (or per-run) values in [0, 1]. Confidence intervals are percentile
bootstrap intervals; with several tasks the bootstrap is stratified (runs resampled within tasks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

__all__ = ["bootstrap_ci", "iqm", "mean", "optimality_gap", "probability_of_improvement"]


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% of all scores (25% trimmed each side)."""
    return float(stats.trim_mean(np.asarray(scores, dtype=np.float64).ravel(), proportiontocut=0.25))


def mean(scores: np.ndarray) -> float:
    return float(np.mean(scores))


def optimality_gap(scores: np.ndarray, gamma: float = 1.0) -> float:
    """``gamma - mean(min(score, gamma))``: how far below the target the scores fall on average."""
    return float(gamma - np.mean(np.minimum(np.asarray(scores, dtype=np.float64), gamma)))


def bootstrap_ci(
    scores: Sequence[np.ndarray] | np.ndarray,
    statistic: Callable[[np.ndarray], float] = mean,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(point, low, high)``: the statistic and its percentile-bootstrap CI.

    ``scores`` is one array of runs, or a list of per-task arrays: then runs are resampled within each
    task (stratified bootstrap) and the statistic is taken over the pooled resample.
    """
    tasks = (
        [np.asarray(scores, dtype=np.float64).ravel()]
        if isinstance(scores, np.ndarray)
        else [np.asarray(s, dtype=np.float64).ravel() for s in scores]
    )
    point = statistic(np.concatenate(tasks))
    rng = np.random.default_rng(seed)
    samples = np.empty(reps)
    for i in range(reps):
        samples[i] = statistic(np.concatenate([t[rng.integers(0, len(t), len(t))] for t in tasks]))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(samples, [alpha, 1 - alpha])
    return float(point), float(low), float(high)


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) + P(X = Y)/2 for one task: the Mann-Whitney U statistic over ``len(x) * len(y)``."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    greater = (x[:, None] > y[None, :]).sum() + 0.5 * (x[:, None] == y[None, :]).sum()
    return float(greater / (len(x) * len(y)))
