"""Summary statistics, confidence intervals and minimum detectable effects over seeds.

Every interval here is two-sided at `level` (default 95 %). Values are in the unit of the
input (top-1 in %, images/s, ...); nothing is rescaled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import optimize as _optimize
from scipy import stats as _scipy_stats

DEFAULT_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
MDE_ALPHA = 1.0 - DEFAULT_LEVEL  # two-sided level of the test the MDE is for (matches the intervals)
MDE_POWER = 0.80


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (ddof = 1; nan when n < 2) and count of some values."""

    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class Difference:
    """mean(candidate) − mean(baseline) with its confidence interval and the minimum
    detectable effect of the comparison (see `minimum_detectable_effect`).

    how: "paired t" (same seeds on both sides, n ≥ 2), "bootstrap" (seeds differ), or
    "n=1" (one pair, or one value on a side: no interval and no MDE; low, high, mde are nan).
    mde: smallest true |difference| detected with MDE_POWER at two-sided MDE_ALPHA, in the
    unit of the values (nan when n < 2).
    """

    delta: float
    low: float
    high: float
    how: str
    n: int
    mde: float = math.nan

    @property
    def has_interval(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    @property
    def excludes_zero(self) -> bool:
        """True when the interval lies wholly above or wholly below 0 (a difference the
        study resolves); False without an interval."""
        return self.has_interval and (self.low > 0.0 or self.high < 0.0)


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
    mde = minimum_detectable_effect(float(np.std(array, ddof=1)), int(array.size))
    return Difference(delta, low, high, "paired t", int(array.size), mde)


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
    mde = minimum_detectable_effect(pooled_std(a, b), int(a.size), int(b.size))
    return Difference(delta, float(low), float(high), "bootstrap", n, mde)


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


def pooled_std(a: Sequence[float], b: Sequence[float]) -> float:
    """sqrt(((n_a − 1) s_a² + (n_b − 1) s_b²) / (n_a + n_b − 2)); nan when n_a + n_b < 3."""
    a, b = _finite(a), _finite(b)
    dof = a.size + b.size - 2
    if dof < 1:
        return math.nan
    squares = float(((a - a.mean()) ** 2).sum() if a.size else 0.0) + float(((b - b.mean()) ** 2).sum() if b.size else 0.0)
    return math.sqrt(squares / dof)


def t_test_power(effect: float, sd: float, n: int, n_other: int | None = None,
                 alpha: float = MDE_ALPHA) -> float:
    """Power of the two-sided t-test at level alpha when the true difference is `effect`.

    Paired (n_other None): n pairs, sd = sd of the paired differences, dof = n − 1,
    standard error se = sd/√n. Unpaired (two groups of n and n_other, sd = pooled sd):
    dof = n + n_other − 2, se = sd·√(1/n + 1/n_other). With λ = effect/se and
    c = t_{1−α/2, dof}:  power = P(T′ > c) + P(T′ < −c),  T′ ~ noncentral t(dof, λ).
    """
    dof, se = _dof_and_se(sd, n, n_other)
    critical = _scipy_stats.t.ppf(1.0 - alpha / 2.0, dof)
    shift = effect / se
    # P(T′ < −c | λ) = P(T′ > c | −λ): scipy's nct.cdf far in the lower tail returns nan.
    return float(_scipy_stats.nct.sf(critical, dof, shift) + _scipy_stats.nct.sf(critical, dof, -shift))


def minimum_detectable_effect(sd: float, n: int, n_other: int | None = None,
                              alpha: float = MDE_ALPHA, power: float = MDE_POWER) -> float:
    """Smallest true difference δ > 0 that the two-sided t-test at level alpha detects with
    probability `power`, given the spread the study measured.

    Paired design (the same seeds on both sides; n_other None): sd is the sample sd of the
    n paired differences, dof = n − 1, se = sd/√n. Unpaired (n and n_other seeds): sd is the
    pooled sd, dof = n + n_other − 2, se = sd·√(1/n + 1/n_other). The MDE solves

        P(T′ > c) + P(T′ < −c) = power,   T′ ~ noncentral t(dof, δ/se),  c = t_{1−α/2, dof}

    for δ exactly (root of `t_test_power`, scipy.stats.nct). For large dof it tends to the
    normal approximation δ ≈ (z_{1−α/2} + z_{power})·se (= 2.80·se at α = 0.05, power 0.8);
    for few seeds it is larger (few dof: wide t quantiles). Units: those of sd.

    Unpaired differences get a bootstrap interval in the report; their MDE is that of the
    pooled two-sample t-test, the interval's parametric counterpart.

    Returns nan with fewer than 2 values (paired: n < 2; unpaired: either group < 2) or a
    non-finite sd; 0 when sd is 0 (every difference would be detected).
    """
    if n < 2 or (n_other is not None and n_other < 2) or not math.isfinite(sd):
        return math.nan
    if sd == 0.0:
        return 0.0
    _, se = _dof_and_se(sd, n, n_other)
    # power rises monotonically in δ from alpha at 0; bracket the root, then solve.
    high = 4.0 * se
    while t_test_power(high, sd, n, n_other, alpha) < power:
        high *= 2.0
    return float(_optimize.brentq(lambda d: t_test_power(d, sd, n, n_other, alpha) - power,
                                  0.0, high, xtol=1e-12 * se, rtol=1e-12))


def _dof_and_se(sd: float, n: int, n_other: int | None) -> tuple[int, float]:
    if n_other is None:
        return n - 1, sd / math.sqrt(n)
    return n + n_other - 2, sd * math.sqrt(1.0 / n + 1.0 / n_other)


def _finite(values: Sequence[float]) -> np.ndarray:
    array = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    return array[np.isfinite(array)]


def _t_quantile(level: float, dof: int) -> float:
    return float(_scipy_stats.t.ppf((1.0 + level) / 2.0, dof))
