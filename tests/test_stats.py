"""discbench.report.stats: intervals and tests against scipy/statsmodels, and the coverage of
the intervals under a known truth, simulated at a study's size (3 seeds, 1000 test items)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from scipy.stats import norm
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_ind, ttost_paired

from discbench.report import stats


def test_paired_and_welch_match_scipy():
    a, b = [73.0, 74.0, 78.0], [70.0, 72.0, 74.0]
    paired = stats.paired_difference(a, b)
    reference = scipy_stats.ttest_rel(a, b)
    assert paired.how == "paired t" and paired.n == 3 and paired.n_other is None
    assert paired.p == pytest.approx(reference.pvalue)
    assert (paired.low, paired.high) == pytest.approx(tuple(reference.confidence_interval(0.95)))
    c = [71.0, 75.0]
    welch = stats.welch_difference(c, b)
    reference = scipy_stats.ttest_ind(c, b, equal_var=False)
    assert welch.how == "Welch" and (welch.n, welch.n_other) == (2, 3)
    assert welch.p == pytest.approx(reference.pvalue)
    assert (welch.low, welch.high) == pytest.approx(tuple(reference.confidence_interval(0.95)))


def test_seeds_pair_when_at_least_two_are_shared():
    assert stats.difference_to_baseline({0: 3.0, 1: 5.0}, {0: 1.0, 1: 2.0}).how == "paired t"
    shared = stats.difference_to_baseline({0: 3.0, 1: 5.0, 2: 9.0}, {0: 1.0, 1: 2.0, 3: 4.0})
    assert shared.how == "paired t" and shared.n == 2 and shared.delta == pytest.approx(2.5)
    assert stats.difference_to_baseline({0: 3.0, 1: 5.0}, {0: 1.0, 2: 2.0, 3: 4.0}).how == "Welch"
    assert stats.difference_to_baseline({0: 3.0}, {0: 1.0}).how == "n=1"
    lone = stats.difference_to_baseline({0: 3.0}, {1: 1.0, 2: 2.0})
    assert lone.how == "n=1" and not lone.has_interval and math.isnan(lone.p)


def test_p_below_alpha_exactly_when_the_interval_excludes_zero():
    rng = np.random.default_rng(3)
    with_items = 0
    for _ in range(50):
        easy_a, easy_b = rng.random(200), rng.random(200)  # items' difficulty, shared by seeds
        a = {s: rng.random(200) < 0.3 + 0.5 * easy_a for s in range(3)}
        b = {s: rng.random(200) < 0.25 + 0.5 * easy_b for s in range(3)}
        diff = stats.crossed_difference(a, b)
        with_items += diff.item_var > 0
        assert (diff.p < stats.ALPHA) == diff.excludes_zero
        assert diff.delta == pytest.approx(100 * (np.mean([a[s].mean() for s in a]) - np.mean([b[s].mean() for s in b])))
    assert with_items > 25  # the p-value's root finding, not only the t-test's closed form


def test_crossed_difference_reduces_to_the_seed_level_test_without_item_variation():
    # Every item of a seed scored alike: the test items add nothing, so the interval is the paired t's.
    a = {s: np.full(50, v) for s, v in enumerate([1.0, 1.0, 0.0])}
    b = {s: np.full(50, v) for s, v in enumerate([0.0, 1.0, 0.0])}
    crossed = stats.crossed_difference(a, b)
    seed = stats.difference_to_baseline({s: 100 * a[s].mean() for s in a}, {s: 100 * b[s].mean() for s in b})
    assert crossed.item_var == 0.0
    assert (crossed.low, crossed.high, crossed.p) == pytest.approx((seed.low, seed.high, seed.p))


def test_tost_matches_statsmodels():
    a, b = np.array([73.0, 74.0, 76.0, 75.0]), np.array([72.5, 74.5, 75.0, 74.0])
    p, _, _ = ttost_paired(a, b, -3.0, 3.0)
    assert stats.equivalence_p(stats.paired_difference(a, b), 3.0) == pytest.approx(p)
    c = np.array([73.5, 74.0, 76.5])
    p, _, _ = ttost_ind(c, b, -3.0, 3.0, usevar="unequal")
    assert stats.equivalence_p(stats.welch_difference(c, b), 3.0) == pytest.approx(p)
    assert math.isnan(stats.equivalence_p(stats.difference_to_baseline({0: 1.0}, {0: 2.0}), 3.0))


def test_adjust_is_multipletests_and_skips_comparisons_without_a_test():
    p = [0.01, math.nan, 0.04, 0.03]
    holm = stats.adjust(p, "holm")
    assert math.isnan(holm[1])
    assert list(holm[[0, 2, 3]]) == pytest.approx(list(multipletests([0.01, 0.04, 0.03], method="holm")[1]))
    assert list(holm[[0, 2, 3]]) == pytest.approx([0.03, 0.06, 0.06])  # 3·0.01, then max(2·0.03, …), 0.04·1 → 0.06
    bh = stats.adjust(p, "fdr_bh")
    assert list(bh[[0, 2, 3]]) == pytest.approx([0.03, 0.04, 0.04])


def test_divergence_rate_is_exact_and_compared_by_fisher():
    rate = stats.divergence_rate(3, 3)
    assert (rate.rate, rate.high) == (1.0, 1.0)
    assert rate.low == pytest.approx(0.025 ** (1 / 3))  # Clopper–Pearson: p³ = 0.025
    none = stats.divergence_rate(0, 3)
    assert none.low == 0.0 and none.high == pytest.approx(1 - 0.025 ** (1 / 3))
    assert stats.rate_difference_p(rate, none) == pytest.approx(0.1)  # 2 of the 20 tables are this extreme
    assert math.isnan(stats.rate_difference_p(rate, stats.divergence_rate(0, 0)))


def test_power_is_statsmodels_where_it_converges_and_stays_finite_where_it_does_not():
    from statsmodels.stats.power import TTestIndPower, TTestPower

    assert stats.t_test_power(1.2, 5, alpha=0.01) == pytest.approx(TTestPower().power(1.2, 5, 0.01))
    assert stats.t_test_power(1.2, 4, 6) == pytest.approx(TTestIndPower().power(1.2, 4, 0.05, ratio=1.5))
    assert stats.minimum_detectable_effect(1.0, 3, alpha=0.025) > stats.minimum_detectable_effect(1.0, 3)
    assert stats.minimum_detectable_effect(1.0, 3, alpha=0.05 / 3) > stats.minimum_detectable_effect(1.0, 3, alpha=0.025)
    assert stats.t_test_power(stats.minimum_detectable_effect(1.0, 3, alpha=0.05 / 3), 3, alpha=0.05 / 3) == \
        pytest.approx(0.8)


def test_seeds_needed_reaches_the_power_it_promises():
    n = stats.seeds_needed(2.0, 1.5, paired=True)
    assert stats.minimum_detectable_effect(1.5, n) <= 2.0 < stats.minimum_detectable_effect(1.5, n - 1)
    per_side = stats.seeds_needed(2.0, 1.5, paired=False)
    assert (stats.minimum_detectable_effect(1.5, per_side, per_side) <= 2.0
            < stats.minimum_detectable_effect(1.5, per_side - 1, per_side - 1))
    # A stricter level (a family's correction) needs more seeds.
    assert stats.seeds_needed(2.0, 1.5, paired=True, alpha=0.05 / 18) > n


# ----------------------------------------------------------------------------- coverage

SEEDS, ITEMS, DRAWS = 3, 1000, 2000
MEANS = (0.45, 0.35)  # probit-scale means of the two methods


def _simulate(seed_sd: float, item_sd: float, interaction_sd: float, candidate_seeds: int,
              baseline_seeds: int, rng: np.random.Generator) -> tuple[float, float]:
    """Coverage of crossed_difference's 95% interval (and of the seed-level interval alone)
    over DRAWS studies. Item i of seed s of method m is right with probability
    Φ(μ_m + a_s + u_ms + α_i + γ_mi): a_s shared by the methods (paired seeds), u_ms each
    method's own seed effect, α_i the item's difficulty, γ_mi the method × item interaction;
    every effect normal. Then E[correct] = Φ(μ_m / √(1 + Σσ²)): the true difference is known."""
    spread = math.sqrt(1 + 0.1 ** 2 + seed_sd ** 2 + item_sd ** 2 + interaction_sd ** 2)
    truth = 100 * (norm.cdf(MEANS[0] / spread) - norm.cdf(MEANS[1] / spread))
    covered = seed_level = 0
    paired = candidate_seeds == baseline_seeds
    for _ in range(DRAWS):
        difficulty = rng.normal(0, item_sd, ITEMS)
        shared = rng.normal(0, 0.1, (candidate_seeds, 1))
        correct = []
        for mean, seeds in zip(MEANS, (candidate_seeds, baseline_seeds)):
            # unpaired: the baseline's seeds are other seeds, with effects of their own
            seed_effect = shared[:seeds] if paired else rng.normal(0, 0.1, (seeds, 1))
            z = (mean + seed_effect + rng.normal(0, seed_sd, (seeds, 1)) + difficulty
                 + rng.normal(0, interaction_sd, ITEMS))
            correct.append(rng.random((seeds, ITEMS)) < norm.cdf(z))
        a = dict(enumerate(correct[0]))
        b = {s if paired else 100 + s: row for s, row in enumerate(correct[1])}
        diff = stats.crossed_difference(a, b)
        covered += diff.low <= truth <= diff.high
        seed_level += abs(diff.delta - truth) <= diff.half_width() if diff.item_var == 0 else \
            abs(diff.delta - truth) <= stats._half_width(diff.seed_var, diff.seed_dof, 0.0, 0.95)
    return covered / DRAWS, seed_level / DRAWS


@pytest.mark.parametrize("candidate_seeds, baseline_seeds", [(3, 3), (3, 2)])
def test_intervals_cover_95_percent_at_the_studys_size(candidate_seeds, baseline_seeds):
    """A study's shape: 3 seeds (or 3 against 2 when a seed diverged), 1000 test items, seed
    noise of a few points and items of very different difficulty, as in the shipped studies."""
    rng = np.random.default_rng(20240)
    coverage, seed_only = _simulate(0.06, 1.0, 0.4, candidate_seeds, baseline_seeds, rng)
    print(f"\ncoverage of the 95% interval, {candidate_seeds} vs {baseline_seeds} seeds × {ITEMS} items, "
          f"{DRAWS} draws: seeds × items {coverage:.3f}; seeds only {seed_only:.3f}")
    assert 0.93 <= coverage <= 0.97


def test_intervals_never_undercover_when_the_test_set_dominates():
    """Little seed noise, a large method × item interaction: the seed-level interval misses the
    test set's sampling and undercovers; the seeds × items interval does not."""
    rng = np.random.default_rng(20241)
    coverage, seed_only = _simulate(0.02, 3.0, 1.5, 3, 3, rng)
    print(f"\ncoverage when the test items dominate: seeds × items {coverage:.3f}; seeds only {seed_only:.3f}")
    assert coverage >= 0.95 - 0.015 and seed_only < 0.9
