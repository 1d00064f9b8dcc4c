"""`discbench report` and `discbench plan` on a study that declares its analysis: a primary
family, the false discovery rate, an equivalence margin, a target MDE and the last-epoch
fallback; every trial stores its per-example correctness, and one method diverged on every seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from discbench import results
from discbench.cli import main as cli_main
from discbench.report import build_report, stats
from discbench.report.aggregate import accuracy_frame, transfer_frame
from discbench.report.plan import plan_frame
from discbench.report.study_view import build_view
from discbench.results import ResultsError

ITEMS = 200
SEEDS = (0, 1, 2)
TRAIN_LENGTH, SHORT = 64, 32
ANALYSIS = """
analysis:
  families: [{name: short signals, table: transfer, lengths: [32], methods: [foh/paper]}]
  error_rate: fdr
  equivalence_margin: 5.0
  target_mde: 1.0
  divergence_fallback: last_epoch
"""


def _correct(key: str, seed: int, length: int) -> np.ndarray:
    """Items' correctness: one fixed pattern (60% right) that every method shares, foh/paper
    also right on 30 more items (40 at L′=32), each seed flipping its own 4 items."""
    pattern = np.random.default_rng(7).random(ITEMS) < 0.6
    if key == "foh/paper":
        wrong = np.flatnonzero(~pattern)
        pattern = pattern.copy()
        pattern[wrong[:30 if length == TRAIN_LENGTH else 40]] = True
    flips = np.random.default_rng(1000 * seed + len(key) + length).choice(ITEMS, 4, replace=False)
    out = pattern.copy()
    out[flips] = ~out[flips]
    return out


def _trial(study: Path, key: str, seed: int, status: str) -> None:
    method, variant = key.split("/")
    config = {"method": method, "variant": variant, "seed": seed, "model": {"name": "seq_micro"},
              "data": {"dataset": "mnist1d", "seq_length": TRAIN_LENGTH}, "train": {"preset": "digits"}}
    correct = {length: _correct(key, seed, length) for length in (SHORT, TRAIN_LENGTH)}
    row = {"study": "declared", "trial_id": f"{method}-{variant}-s{seed}", "method": method, "variant": variant,
           "method_key": key, "seed": seed, "model": "seq_micro", "dataset": "mnist1d", "status": status,
           "top1": 100.0 * correct[TRAIN_LENGTH].mean() if status == "ok" else None, "num_classes": 10,
           "diverged_at": "epoch 3, step 12" if status == "diverged" else None, "config": config,
           "device": "cpu:test", "git_commit": "0123456789ab"}
    path = results.trial_dir(study, row["trial_id"])
    results.write_trial(path, row)
    for epoch in (1, 2):
        results.append_epoch(path, {"epoch": epoch, "top1": 30.0 + 10 * epoch})
    if status == "ok":
        results.write_correctness(path, [{"evaluation": "test", "length": TRAIN_LENGTH, "correct": correct[TRAIN_LENGTH]}]
                                  + [{"evaluation": "transfer", "length": n, "correct": c} for n, c in correct.items()])
        results.append_measurements(path, [
            {"quantity": "transfer", "name": "top1", "value": 100.0 * c.mean(), "unit": "%", "length": n,
             "delta_scale": TRAIN_LENGTH / n, "model": "seq_micro", "method_key": key, "status": "ok"}
            for n, c in correct.items()])


@pytest.fixture(scope="module")
def declared_study(tmp_path_factory) -> Path:
    study = tmp_path_factory.mktemp("results") / "declared"
    results.write_study_meta(study, "declared", "name: declared\n" + ANALYSIS)
    for key in ("zoh/paper", "foh/paper", "trapezoid/paper", "rk4/paper"):
        for seed in SEEDS:
            _trial(study, key, seed, "diverged" if key == "rk4/paper" else "ok")
    results.consolidate(study)
    return study


@pytest.fixture(scope="module")
def view(declared_study):
    return build_view(results.load_study(declared_study))


def _items(key: str, length: int) -> dict[int, np.ndarray]:
    return {seed: _correct(key, seed, length) for seed in SEEDS}


def test_intervals_cover_the_test_items_when_their_correctness_is_stored(view):
    frame = accuracy_frame(view).set_index("method_key")
    foh = frame.loc["foh/paper"]
    expected = stats.crossed_difference(_items("foh/paper", TRAIN_LENGTH), _items("zoh/paper", TRAIN_LENGTH))
    assert foh["delta_how"] == "paired t, seeds × items"
    assert (foh["delta"], foh["delta_low"], foh["delta_high"]) == pytest.approx(
        (expected.delta, expected.low, expected.high))
    seed_level = stats.difference_to_baseline({s: 100 * c.mean() for s, c in _items("foh/paper", TRAIN_LENGTH).items()},
                                              {s: 100 * c.mean() for s, c in _items("zoh/paper", TRAIN_LENGTH).items()})
    assert foh["delta"] == pytest.approx(seed_level.delta)
    assert expected.item_var > 0 and foh["delta_high"] - foh["delta_low"] > seed_level.high - seed_level.low


def test_declared_families_and_the_false_discovery_rate(view):
    accuracy = accuracy_frame(view).set_index("method_key")
    transfer = transfer_frame(view).set_index(["method_key", "length"])
    short = transfer.loc[("foh/paper", SHORT)]
    assert short["family"] == "short signals" and short["family_primary"] and short["family_size"] == 1
    assert short["correction"] == "fdr_bh" and short["delta_p_adj"] == pytest.approx(short["delta_p"])
    # Not declared: secondary, one family per table (trapezoid at L′=32; the accuracy table).
    assert transfer.loc[("trapezoid/paper", SHORT), "family"] == \
        "transfer: every method vs the baseline at the other evaluation lengths"
    assert accuracy.loc["foh/paper", "family"] == "accuracy, other comparisons"
    assert not accuracy.loc["foh/paper", "family_primary"] and accuracy.loc["foh/paper", "family_size"] == 2
    p = [accuracy.loc[k, "delta_p"] for k in ("foh/paper", "trapezoid/paper")]
    assert [accuracy.loc[k, "delta_p_adj"] for k in ("foh/paper", "trapezoid/paper")] == \
        pytest.approx(list(stats.adjust(p, "fdr_bh")))


def test_equivalence_only_from_tost_against_the_declared_margin(view):
    accuracy = accuracy_frame(view).set_index("method_key")
    trap, foh = accuracy.loc["trapezoid/paper"], accuracy.loc["foh/paper"]
    assert trap["equivalence_p"] == pytest.approx(stats.equivalence_p(trap["comparison"], 5.0))
    assert trap["equivalent"] and not foh["equivalent"]  # foh is 15 points above


def test_a_method_that_diverged_everywhere_is_a_finding(declared_study, tmp_path):
    report = build_report(declared_study, tmp_path)
    accuracy = accuracy_frame(build_view(results.load_study(declared_study))).set_index("method_key")
    rk4 = accuracy.loc["rk4/paper"]
    assert (rk4["n"], rk4["diverged"], rk4["finished"]) == (0, 3, 3)
    assert rk4["diverged_p"] == pytest.approx(0.1)  # Fisher: 3/3 against 0/3
    # Each diverged seed scores its last finite epoch's top-1 (50 %), paired with zoh's seeds.
    zoh = {s: 100 * c.mean() for s, c in _items("zoh/paper", TRAIN_LENGTH).items()}
    assert rk4["delta_fallback"] == pytest.approx(50.0 - np.mean(list(zoh.values())))
    assert rk4["fallback"] == "its last finite epoch"
    finding = next(f for f in report.findings if "rk4/paper diverged" in f)
    assert finding.startswith("seq_micro: rk4/paper diverged on 3 of 3 finished seeds (every seed: it has no "
                              "accuracy here), 100% [exact 95% interval 29%, 100%], against 0 of 3 for zoh/paper "
                              "(Fisher's exact p 0.100")
    assert "scoring each diverged seed as its last finite epoch, Δ top-1 = −" in finding
    convergence, untuned, validation, families = report.findings[:4]
    assert untuned.startswith("Untuned: every method ran at one shared recipe")
    # one epoch each: too few to judge
    assert convergence.startswith("Convergence not judged: none of the 9 finished trials could be (fewer epochs")
    # rk4/paper diverged on every seed: only foh/paper and trapezoid/paper are compared on validation
    assert validation.startswith("On validation (the last epoch's top-1; what a choice between study designs may "
                                 "read, not a verdict): 0 of 2 differences to zoh/paper")
    assert families.startswith("Families and corrections: “short signals” (primary; 1 test, Benjamini–Hochberg")
    within = next(f for f in report.findings if f.startswith("seq_micro:") and "equivalent to" in f)
    assert "equivalent to zoh/paper within ±5.00 points (TOST, adjusted p < 0.05): trapezoid/paper" in within
    target = report.findings[-1]
    assert target.startswith("Target MDE 1.00 points (declared): not met; 0 of 1 primary comparisons reach it")
    table = (report.out_dir / "accuracy.md").read_text()
    assert "Benjamini–Hochberg (false discovery rate)" in table and "diverged [95% CI]" in table
    assert "3/3 = 100% [29%, 100%]; Fisher p 0.100" in table
    assert "“short signals” (primary" in (report.out_dir / "transfer.md").read_text()


def test_plan_gives_the_seeds_each_comparison_needs(view, declared_study, capsys):
    plan = plan_frame(view, effect=2.0).set_index("comparison")
    short = plan.loc["foh/paper, L′=32"]
    assert short["family"] == "short signals" and short["alpha"] == pytest.approx(0.05)
    assert short["seeds_needed"] == stats.seeds_needed(2.0, short["sd"], True, 0.05)
    accuracy = plan.loc["foh/paper"]
    assert accuracy["alpha"] == pytest.approx(0.025)  # two tests in its family
    assert stats.minimum_detectable_effect(accuracy["sd"], int(accuracy["seeds_needed"]), alpha=0.025) <= 2.0
    assert "rk4/paper" not in plan.index  # no finished seed: nothing to plan from
    assert cli_main(["plan", str(declared_study), "--effect", "2"]) == 0
    out = capsys.readouterr().out
    assert "family “short signals” (1 test, α/m = 0.05)" in out
    assert f"foh/paper, L′=32: paired, 3 seeds now, sd {short['sd']:.2f} → {short['seeds_needed']} seeds" in out
    assert cli_main(["plan", str(declared_study), "--effect", "0"]) == 2
    assert "--effect must be > 0" in capsys.readouterr().err


def test_a_bad_analysis_section_in_the_results_is_a_clear_error(tmp_path):
    study = tmp_path / "bad"
    results.write_study_meta(study, "bad", "name: bad\nanalysis: {error_rate: sometimes}\n")
    _trial(study, "zoh/paper", 0, "ok")
    results.consolidate(study)
    with pytest.raises(ResultsError, match=r"analysis section is invalid: analysis.error_rate: Input should be"):
        build_report(study, tmp_path / "out")
