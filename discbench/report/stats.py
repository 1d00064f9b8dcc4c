"""Summary statistics, confidence intervals, tests and power over seeds and test items.

Every interval here is two-sided at `level` (default 95 %), every test two-sided at ALPHA.
Values are in the unit of the input (top-1 in %, images/s, ...); nothing is rescaled, except
per-example correctness (0/1 per test item), which becomes percentage points.

A difference to the baseline is one of:
- "paired t": over the seeds both sides share (≥ 2); the interval and p of scipy.stats.ttest_rel;
- "Welch": the seeds differ and fewer than 2 are shared; those of ttest_ind(equal_var=False);
- "paired t, seeds × items" / "Welch, seeds × items": either, widened for the test set's own
  sampling when every seed's per-example correctness is known (`crossed_difference`);
- "n=1": a single value on a side: no interval, no test.
A percentile bootstrap is never used: over 2–3 seeds its "95 %" interval covers far less.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import optimize as _optimize
from scipy import stats as _scipy_stats
from statsmodels.stats.multitest import multipletests

DEFAULT_LEVEL = 0.95
ALPHA = 1.0 - DEFAULT_LEVEL  # two-sided level of every test (matches the intervals)
MDE_ALPHA = ALPHA
MDE_POWER = 0.80
# statsmodels.stats.multitest method names, by the error rate a study controls.
CORRECTIONS = {"fwer": "holm", "fdr": "fdr_bh"}
CORRECTION_NAMES = {"holm": "Holm (family-wise error rate)", "fdr_bh": "Benjamini–Hochberg (false discovery rate)"}


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (ddof = 1; nan when n < 2) and count of some values."""

    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class Difference:
    """mean(candidate) − mean(baseline) with its confidence interval and two-sided p-value.

    how: see the module docstring. n: pairs (paired) or the candidate's seeds; n_other: the
    baseline's seeds when unpaired (None when paired). sd: the seed-level spread the MDE is
    computed from (paired: sd of the paired differences; unpaired: the pooled sd).

    The interval is delta ± half_width(level) with
        half_width = sqrt(t²_{(1+level)/2, seed_dof} · seed_var + z²_{(1+level)/2} · item_var):
    seed_var is the paired-t or Welch variance over seeds (seed_dof its dof), item_var the test
    items' own sampling variance (0 without per-example correctness). Adding the two terms'
    half-widths in quadrature (Banerjee's conservative form of the Behrens–Fisher interval)
    never covers less than `level` whatever their ratio; a pooled Satterthwaite dof would,
    since with 2–3 seeds a seed variance that comes out small by chance would also inflate the
    dof. With item_var = 0 it is exactly the paired t / Welch interval. p is the level at which
    the interval reaches 0 (so p < ALPHA exactly when the 95 % interval excludes 0).
    """

    delta: float
    low: float
    high: float
    how: str
    n: int
    seed_var: float = math.nan
    seed_dof: float = math.nan
    item_var: float = 0.0
    sd: float = math.nan
    n_other: int | None = None

    @property
    def has_interval(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    @property
    def excludes_zero(self) -> bool:
        """True when the interval lies wholly above or wholly below 0 (unadjusted for the
        other comparisons of its family); False without an interval."""
        return self.has_interval and (self.low > 0.0 or self.high < 0.0)

    @property
    def p(self) -> float:
        """Two-sided p-value of "no difference"; nan without an interval."""
        if not self.has_interval:
            return math.nan
        return _two_sided_p(self.delta, self.seed_var, self.seed_dof, self.item_var)

    def half_width(self, level: float = DEFAULT_LEVEL) -> float:
        return _half_width(self.seed_var, self.seed_dof, self.item_var, level)

    def mde(self, alpha: float = MDE_ALPHA, power: float = MDE_POWER) -> float:
        """`minimum_detectable_effect` of this comparison's design at level alpha."""
        return minimum_detectable_effect(self.sd, self.n, self.n_other, alpha, power)


def _half_width(seed_var: float, seed_dof: float, item_var: float, level: float) -> float:
    tail = (1.0 + level) / 2.0
    return math.sqrt(float(_scipy_stats.t.ppf(tail, seed_dof)) ** 2 * seed_var
                     + float(_scipy_stats.norm.ppf(tail)) ** 2 * item_var)


def _two_sided_p(distance: float, seed_var: float, seed_dof: float, item_var: float) -> float:
    """1 − the level whose half-width is |distance| (the t-test's p when item_var = 0)."""
    distance = abs(distance)
    if seed_var + item_var == 0.0:
        return 0.0 if distance > 0 else 1.0
    if item_var == 0.0:
        return float(2.0 * _scipy_stats.t.sf(distance / math.sqrt(seed_var), seed_dof))
    if seed_var == 0.0:
        return float(2.0 * _scipy_stats.norm.sf(distance / math.sqrt(item_var)))
    if distance == 0.0:
        return 1.0
    top = 1.0 - 1e-15
    if _half_width(seed_var, seed_dof, item_var, top) <= distance:
        return 1e-15
    level = _optimize.brentq(lambda lv: _half_width(seed_var, seed_dof, item_var, lv) - distance, 0.0, top,
                             xtol=1e-12)
    return float(1.0 - level)


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


def _interval(delta: float, seed_var: float, seed_dof: float, item_var: float, how: str, n: int,
              sd: float, n_other: int | None, level: float) -> Difference:
    half = _half_width(seed_var, seed_dof, item_var, level)
    return Difference(delta, delta - half, delta + half, how, n, seed_var, seed_dof, item_var, sd, n_other)


def paired_difference(candidate: Sequence[float], baseline: Sequence[float],
                      level: float = DEFAULT_LEVEL) -> Difference:
    """Paired t of candidate − baseline, value i of each a pair: the interval and p of
    scipy.stats.ttest_rel (seed_var = sd²/n of the differences, seed_dof = n − 1)."""
    a, b = np.asarray(candidate, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if a.size == 0 or a.size != b.size:
        raise ValueError(f"paired_difference needs pairs; got {a.size} and {b.size} values")
    delta = float(np.mean(a - b))
    if a.size == 1:
        return Difference(delta, math.nan, math.nan, "n=1", 1)
    sd = float(np.std(a - b, ddof=1))
    return _interval(delta, sd * sd / a.size, a.size - 1, 0.0, "paired t", int(a.size), sd, None, level)


def welch_difference(candidate: Sequence[float], baseline: Sequence[float],
                     level: float = DEFAULT_LEVEL) -> Difference:
    """Welch's t of mean(candidate) − mean(baseline), the groups independent: the interval and
    p of scipy.stats.ttest_ind(equal_var=False). n = the candidate's size, n_other the
    baseline's; either with one value gives no interval."""
    a, b = _finite(candidate), _finite(baseline)
    if a.size == 0 or b.size == 0:
        raise ValueError("welch_difference needs at least one value in each group")
    delta = float(a.mean() - b.mean())
    if min(a.size, b.size) < 2:
        return Difference(delta, math.nan, math.nan, "n=1", int(a.size), n_other=int(b.size))
    var, dof = _welch(a.var(ddof=1) / a.size, a.size, b.var(ddof=1) / b.size, b.size)
    return _interval(delta, var, dof, 0.0, "Welch", int(a.size), pooled_std(a, b), int(b.size), level)


def _welch(var_a: float, n_a: int, var_b: float, n_b: int) -> tuple[float, float]:
    """(var_a + var_b, Welch–Satterthwaite dof) for two means' variances var_a, var_b."""
    total = var_a + var_b
    if total == 0.0:
        return 0.0, float(n_a + n_b - 2)
    return total, total * total / (var_a * var_a / (n_a - 1) + var_b * var_b / (n_b - 1))


def difference_to_baseline(candidate: Mapping[int, float], baseline: Mapping[int, float],
                           level: float = DEFAULT_LEVEL) -> Difference:
    """Candidate − baseline from {seed: value} maps (non-finite values already removed).

    Paired by seed over the seeds both sides share when there are at least 2 of them (the seed
    fixes data order and initialisation, so a pair shares that noise; delta is then the mean
    over the shared seeds); otherwise the groups are independent (Welch).
    """
    if not candidate or not baseline:
        raise ValueError("difference_to_baseline needs values on both sides")
    shared = sorted(set(candidate) & set(baseline))
    if len(shared) >= 2 or set(candidate) == set(baseline):
        return paired_difference([candidate[s] for s in shared], [baseline[s] for s in shared], level)
    return welch_difference(list(candidate.values()), list(baseline.values()), level)


def crossed_difference(candidate: Mapping[int, np.ndarray], baseline: Mapping[int, np.ndarray],
                       level: float = DEFAULT_LEVEL) -> Difference:
    """Candidate − baseline accuracy (percentage points) from per-example correctness
    {seed: (N,) 0/1 array}, every array over the same N test items in the same order.

    Seeds and test items are both random: the estimand is the difference on the population the
    test items are drawn from, averaged over seeds. Seeds are paired as in
    `difference_to_baseline`. The variance splits into a seed term and an item term, the
    method-of-moments estimates of a crossed seeds × items random-effects design from the
    S×N matrices (Cornfield–Tukey):

        paired (D = 100·(A − B) on the shared seeds):
            seed_var = s²(seed means of D)/S                       (dof S − 1)
            item_var = max(0, s²(item means of D)/N − MS_resid(D)/(S·N))
        unpaired (A: S_A seeds, B: S_B seeds):
            seed_var = s²(seed means of A)/S_A + s²(seed means of B)/S_B    (Welch dof)
            item_var = max(0, s²(item means of A − item means of B)/N
                              − MS_resid(A)/(S_A·N) − MS_resid(B)/(S_B·N))

    MS_resid is the two-way (seed, item) residual mean square: it removes the per-seed noise
    that the item means and the seed means would otherwise both count. seed_var alone is the
    paired t / Welch variance; item_var is the test set's own sampling, shared by every seed,
    which a seed-level interval misses. See `Difference` for how the two form the interval.
    With one seed on a side there is no seed variance to estimate: no interval.
    """
    if not candidate or not baseline:
        raise ValueError("crossed_difference needs correctness on both sides")
    shared = sorted(set(candidate) & set(baseline))
    if len(shared) >= 2 or set(candidate) == set(baseline):
        d = 100.0 * (_matrix(candidate, shared) - _matrix(baseline, shared))
        delta, seeds = float(d.mean()), d.shape[0]
        if seeds < 2:
            return Difference(delta, math.nan, math.nan, "n=1", 1)
        per_seed = d.mean(axis=1)
        item_var = max(0.0, d.mean(axis=0).var(ddof=1) / d.shape[1] - _residual_ms(d) / d.size)
        return _interval(delta, per_seed.var(ddof=1) / seeds, seeds - 1, item_var, "paired t, seeds × items",
                         seeds, float(per_seed.std(ddof=1)), None, level)
    a = 100.0 * _matrix(candidate, sorted(candidate))
    b = 100.0 * _matrix(baseline, sorted(baseline))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"per-example correctness over different test sets: {a.shape[1]} and {b.shape[1]} items")
    delta = float(a.mean() - b.mean())
    if min(a.shape[0], b.shape[0]) < 2:
        return Difference(delta, math.nan, math.nan, "n=1", a.shape[0], n_other=b.shape[0])
    mean_a, mean_b = a.mean(axis=1), b.mean(axis=1)
    seed_var, dof = _welch(mean_a.var(ddof=1) / a.shape[0], a.shape[0], mean_b.var(ddof=1) / b.shape[0], b.shape[0])
    items = a.mean(axis=0) - b.mean(axis=0)
    item_var = max(0.0, items.var(ddof=1) / items.size - _residual_ms(a) / a.size - _residual_ms(b) / b.size)
    return _interval(delta, seed_var, dof, item_var, "Welch, seeds × items", a.shape[0],
                     pooled_std(mean_a, mean_b), b.shape[0], level)


def _matrix(correct: Mapping[int, np.ndarray], seeds: list[int]) -> np.ndarray:
    rows = [np.asarray(correct[s], dtype=np.float64) for s in seeds]
    if len({r.shape for r in rows}) > 1:
        raise ValueError(f"per-example correctness over different test sets: {sorted({r.size for r in rows})} items")
    return np.stack(rows)


def _residual_ms(x: np.ndarray) -> float:
    """Residual mean square of the two-way layout x (rows × columns, one value per cell)."""
    rows, cols = x.shape
    if rows < 2 or cols < 2:
        return 0.0
    resid = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + x.mean()
    return float((resid ** 2).sum() / ((rows - 1) * (cols - 1)))


def equivalence_p(diff: Difference, margin: float) -> float:
    """Two one-sided tests (TOST) of |true difference| < margin from the comparison's own
    interval: the larger of the one-sided p-values against −margin and +margin, each one half
    the two-sided p at that distance (with item_var = 0, statsmodels' ttost_paired/ttost_ind).
    Equivalence within ±margin is claimed when p < ALPHA. nan without an interval."""
    if not diff.has_interval or not margin > 0:
        return math.nan

    def one_sided(distance: float) -> float:  # p of "true difference ≤ delta − distance"
        half = _two_sided_p(distance, diff.seed_var, diff.seed_dof, diff.item_var) / 2.0
        return half if distance > 0 else 1.0 - half

    return float(max(one_sided(diff.delta + margin), one_sided(margin - diff.delta)))


def adjust(p_values: Sequence[float], method: str, alpha: float = ALPHA) -> np.ndarray:
    """Adjusted p-values within one family (statsmodels multipletests; method "holm" or
    "fdr_bh"). NaN p-values (comparisons without a test) stay NaN and are not counted."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        out[finite] = multipletests(p[finite], alpha=alpha, method=method)[1]
    return out


@dataclass(frozen=True)
class Rate:
    """k events in n trials, the rate k/n and its exact (Clopper–Pearson) interval."""

    k: int
    n: int
    rate: float
    low: float
    high: float


def divergence_rate(k: int, n: int, level: float = DEFAULT_LEVEL) -> Rate:
    """k diverged of n trials with scipy.stats.binomtest's exact interval (nan when n = 0)."""
    if n == 0:
        return Rate(k, n, math.nan, math.nan, math.nan)
    ci = _scipy_stats.binomtest(k, n).proportion_ci(level, method="exact")
    return Rate(k, n, k / n, float(ci.low), float(ci.high))


def rate_difference_p(rate: Rate, baseline: Rate) -> float:
    """Fisher's exact test (two-sided, scipy) of rate against baseline; nan if either n = 0."""
    if rate.n == 0 or baseline.n == 0:
        return math.nan
    table = [[rate.k, rate.n - rate.k], [baseline.k, baseline.n - baseline.k]]
    return float(_scipy_stats.fisher_exact(table).pvalue)


def pooled_std(a: Sequence[float], b: Sequence[float]) -> float:
    """sqrt(((n_a − 1) s_a² + (n_b − 1) s_b²) / (n_a + n_b − 2)); nan when n_a + n_b < 3."""
    a, b = _finite(a), _finite(b)
    dof = a.size + b.size - 2
    if dof < 1:
        return math.nan
    squares = float(((a - a.mean()) ** 2).sum() if a.size else 0.0) + float(((b - b.mean()) ** 2).sum() if b.size else 0.0)
    return math.sqrt(squares / dof)


def minimum_detectable_effect(sd: float, n: int, n_other: int | None = None,
                              alpha: float = MDE_ALPHA, power: float = MDE_POWER) -> float:
    """Smallest true difference δ > 0 that the two-sided t-test at level alpha detects with
    probability `power`, given the spread sd the design has: a property of the design (seeds
    and their spread), not a bound on any effect.

    Paired design (n_other None): sd is the sd of the n paired differences, dof = n − 1,
    se = sd/√n. Unpaired (n and n_other seeds): sd is the pooled sd, dof = n + n_other − 2,
    se = sd·√(1/n + 1/n_other). δ/sd is the root of `t_test_power` (exact noncentral t). For large dof it tends to (z_{1−α/2} + z_{power})·se.
    Units: those of sd.

    Returns nan with fewer than 2 values (paired: n < 2; unpaired: either group < 2) or a
    non-finite sd; 0 when sd is 0 (every difference would be detected).
    """
    if n < 2 or (n_other is not None and n_other < 2) or not math.isfinite(sd):
        return math.nan
    if sd == 0.0:
        return 0.0
    # statsmodels' solve_power does not always converge for 2–3 seeds at a corrected α (it
    # returns a δ of lower power): the power is bracketed and solved here instead.
    high = 4.0
    while t_test_power(high, n, n_other, alpha) < power:
        high *= 2.0
    d = _optimize.brentq(lambda e: t_test_power(e, n, n_other, alpha) - power, 0.0, high, xtol=1e-12, rtol=1e-12)
    return float(d) * sd


def t_test_power(effect_size: float, n: int, n_other: int | None = None, alpha: float = ALPHA) -> float:
    """Power of the two-sided t-test at level alpha for a true difference of effect_size sds.

    Paired (n_other None): n pairs, dof = n − 1, λ = effect_size·√n. Unpaired (n and n_other
    seeds, pooled sd): dof = n + n_other − 2, λ = effect_size/√(1/n + 1/n_other). With
    c = t_{1−α/2, dof}: power = P(T′ > c) + P(T′ < −c), T′ ~ noncentral t(dof, λ) — the formula
    of statsmodels' TTestPower/TTestIndPower, whose lower tail (scipy's nct.cdf far below the
    centre) returns nan: P(T′ < −c | λ) is taken as P(T′ > c | −λ) instead.
    """
    if n_other is None:
        dof, shift = n - 1, effect_size * math.sqrt(n)
    else:
        dof, shift = n + n_other - 2, effect_size / math.sqrt(1.0 / n + 1.0 / n_other)
    critical = _scipy_stats.t.ppf(1.0 - alpha / 2.0, dof)
    return float(_scipy_stats.nct.sf(critical, dof, shift) + _scipy_stats.nct.sf(critical, dof, -shift))


def seeds_needed(effect: float, sd: float, paired: bool, alpha: float = ALPHA, power: float = MDE_POWER) -> int:
    """Seeds (paired: pairs; unpaired: per side) for the two-sided t-test at level alpha to
    detect a true difference `effect` with probability `power`, given the spread sd: the
    smallest n (at least 2) whose `t_test_power` reaches it."""
    if not (math.isfinite(sd) and effect > 0):
        raise ValueError(f"seeds_needed needs a finite sd and an effect > 0; got sd={sd}, effect={effect}")
    if sd == 0.0:
        return 2
    n = 2
    while t_test_power(effect / sd, n, None if paired else n, alpha) < power:
        n += 1
    return n


@dataclass(frozen=True)
class LineFit:
    """A least-squares line y = a + b·x through points (x, y), with t-intervals on n − 2 degrees
    of freedom: the slope b (its interval and two-sided p of b = 0) and the mean ȳ, the line's
    height at x̄ (its interval and two-sided p of ȳ = 0, from the residual spread about the line).
    Every field is nan when there are fewer than 3 points or x does not vary."""
    slope: float
    low: float
    high: float
    p: float
    mean: float
    mean_low: float
    mean_high: float
    mean_p: float


def _t_estimate(value: float, se: float, dof: int, level: float) -> tuple[float, float, float]:
    """(low, high, two-sided p of value = 0) of an estimate with standard error se."""
    if se == 0.0:
        return value, value, 0.0 if value else 1.0
    half = _t_quantile(level, dof) * se
    return value - half, value + half, float(2.0 * _scipy_stats.t.sf(abs(value) / se, dof))


def line_fit(x: np.ndarray, y: np.ndarray, level: float = DEFAULT_LEVEL) -> LineFit:
    """The least-squares line through (x, y) with its slope's and mean's t-intervals (`LineFit`)."""
    n = len(x)
    sxx = float(((x - x.mean()) ** 2).sum()) if n else 0.0
    if n < 3 or sxx == 0.0:
        return LineFit(*[math.nan] * 8)
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / sxx)
    mean = float(y.mean())
    residual = y - (mean + slope * (x - x.mean()))
    variance = float((residual ** 2).sum()) / (n - 2)
    slope_interval = _t_estimate(slope, math.sqrt(variance / sxx), n - 2, level)
    mean_interval = _t_estimate(mean, math.sqrt(variance / n), n - 2, level)
    return LineFit(slope, *slope_interval, mean, *mean_interval)


def _finite(values: Sequence[float]) -> np.ndarray:
    array = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    return array[np.isfinite(array)]


def _t_quantile(level: float, dof: float) -> float:
    return float(_scipy_stats.t.ppf((1.0 + level) / 2.0, dof))
