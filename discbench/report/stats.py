"""Summary statistics and confidence intervals for accuracy over seeds.

Every interval here is two-sided at `level` (default 95 %). Values are in the unit of the
input (top-1 in %, images/s, ...); nothing is rescaled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as _scipy_stats

DEFAULT_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (ddof = 1; nan when n < 2) and count of some values."""

    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class Difference:
    """mean(candidate) − mean(baseline) with its confidence interval.

    how: "paired t" (same seeds on both sides, n ≥ 2), "bootstrap" (seeds differ), or
    "n=1" (one pair only: no interval; low and high are nan).
    """

    delta: float
    low: float
    high: float
    how: str
    n: int

    @property
    def has_interval(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))


def summarize(values: Sequence[float]) -> Summary:
    """Summary of finite values (NaN and None dropped). n = 0 gives nan mean and std."""
    array = _finite(values)
    if array.size == 0:
        return Summary(math.nan, math.nan, 0)
    std = float(np.std(array, ddof=1)) if array.size >= 2 else math.nan
    return Summary(float(np.mean(array)), std, int(array.size))


def mean_interval(values: Sequence[float], level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    """Student-t interval for the mean of the values; (nan, nan) with fewer than 2 values."""
    array = _finite(values)
    if array.size < 2:
        return math.nan, math.nan
    half = _t_quantile(level, array.size - 1) * np.std(array, ddof=1) / math.sqrt(array.size)
    mean = float(np.mean(array))
    return mean - half, mean + half


def paired_t_interval(differences: Sequence[float], level: float = DEFAULT_LEVEL) -> Difference:
    """Mean of paired differences d_i with the t-interval mean ± t_{(1+level)/2, n−1} · sd/√n."""
    array = _finite(differences)
    if array.size == 0:
        raise ValueError("paired_t_interval needs at least one difference")
    delta = float(np.mean(array))
    if array.size == 1:
        return Difference(delta, math.nan, math.nan, "n=1", 1)
    low, high = mean_interval(array, level)
    return Difference(delta, low, high, "paired t", int(array.size))


def bootstrap_interval(candidate: Sequence[float], baseline: Sequence[float],
                       level: float = DEFAULT_LEVEL, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> Difference:
    """Percentile bootstrap of mean(candidate) − mean(baseline), each group resampled with
    replacement on its own (independent samples), seeded so that a report is reproducible.
    n in the result is the smaller group's size; either group with one value gives no interval."""
    a, b = _finite(candidate), _finite(baseline)
    if a.size == 0 or b.size == 0:
        raise ValueError("bootstrap_interval needs at least one value in each group")
    delta = float(a.mean() - b.mean())
    n = int(min(a.size, b.size))
    if n < 2:
        return Difference(delta, math.nan, math.nan, "n=1", n)
    rng = np.random.default_rng(seed)
    means_a = a[rng.integers(0, a.size, size=(resamples, a.size))].mean(axis=1)
    means_b = b[rng.integers(0, b.size, size=(resamples, b.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means_a - means_b, [tail, 100.0 - tail])
    return Difference(delta, float(low), float(high), "bootstrap", n)


def difference_to_baseline(candidate: Mapping[int, float], baseline: Mapping[int, float],
                           level: float = DEFAULT_LEVEL) -> Difference:
    """Candidate − baseline from {seed: value} maps (non-finite values already removed).

    Paired by seed when both sides have exactly the same seeds (the seed fixes data order and
    initialisation, so the pairs share that noise); otherwise the groups are independent and
    the interval is bootstrapped.
    """
    if not candidate or not baseline:
        raise ValueError("difference_to_baseline needs values on both sides")
    if set(candidate) == set(baseline):
        return paired_t_interval([candidate[s] - baseline[s] for s in sorted(candidate)], level)
    return bootstrap_interval(list(candidate.values()), list(baseline.values()), level)


def _finite(values: Sequence[float]) -> np.ndarray:
    array = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    return array[np.isfinite(array)]


def _t_quantile(level: float, dof: int) -> float:
    return float(_scipy_stats.t.ppf((1.0 + level) / 2.0, dof))
