"""Model size as an axis: a study whose models are rungs of a declared ladder gets the scaling
table, figure and finding, with slopes fitted through the seeds' paired differences."""

from __future__ import annotations

import math
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from discbench import results
from discbench.report import build_report
from discbench.report.scaling import (_figure_evaluations, scaling_frame, scaling_findings, size_ladders, slope_frame,
                                      trends)
from discbench.report.stats import line_fit
from discbench.report.study_view import build_view

TRAIN_LENGTH, FAR = 40, 144
RUNGS = {"seqmamba_nano": 6_650, "seqmamba_micro": 19_690, "seqmamba_tiny": 129_098}
SEEDS = (0, 1, 2)


def _top1(key: str, model: str, seed: int, length: int) -> float:
    """zoh/paper at 80 + 5·log10(params/6650) + seed noise; foh/paper's gap at the training length
    shrinks by 4 points per 10× parameters (−10 at nano), at L′=144 it is a flat −20 (seed noise ±1)."""
    decades = math.log10(RUNGS[model] / RUNGS["seqmamba_nano"])
    base = 80.0 + 5.0 * decades + (seed - 1) * 0.5
    if key == "zoh/paper":
        return base
    gap = -10.0 + 4.0 * decades if length == TRAIN_LENGTH else -20.0
    return base + gap + (0.5, -0.5, 0.0)[seed]


def _trial(study: Path, key: str, model: str, seed: int, reference: bool = False) -> None:
    method, variant = ("zoh", "paper") if reference else key.split("/")
    trial_id = f"{model}-{method}-{variant}-s{seed}" if not reference else f"ref-{model}-s{seed}"
    params = RUNGS.get(model, 10_000 if "nano" in model else 100_000)
    top1 = _top1(key, model, seed, TRAIN_LENGTH) if not reference else 90.0 + seed
    config = {"method": method, "variant": variant, "seed": seed, "model": {"name": model},
              "data": {"dataset": "mnist1d", "seq_length": TRAIN_LENGTH}}
    row = {"study": "sizes", "trial_id": trial_id, "method": method, "variant": variant,
           "method_key": f"{method}/{variant}", "seed": seed, "model": model, "dataset": "mnist1d", "status": "ok",
           "top1": top1, "params": params, "num_classes": 10, "config": config, "device": "cpu:test",
           "git_commit": "0123456789ab"}
    path = results.trial_dir(study, trial_id)
    results.write_trial(path, row)
    if not reference:
        results.append_measurements(path, [
            {"quantity": "transfer", "name": "top1", "value": _top1(key, model, seed, n), "unit": "%", "length": n,
             "delta_scale": TRAIN_LENGTH / n, "model": model, "method_key": key, "status": "ok"}
            for n in (TRAIN_LENGTH, 72, FAR)])


@pytest.fixture(scope="module")
def sizes_study(tmp_path_factory) -> Path:
    study = tmp_path_factory.mktemp("results") / "sizes"
    results.write_study_meta(study, "sizes", "name: sizes\nreferences: [seqgru_nano, seqgru_tiny]\n")
    for model in RUNGS:
        for key in ("zoh/paper", "foh/paper"):
            for seed in SEEDS:
                _trial(study, key, model, seed)
    for model in ("seqgru_nano", "seqgru_tiny"):
        for seed in SEEDS:
            _trial(study, "", model, seed, reference=True)
    results.consolidate(study)
    return study


def test_line_fit_is_least_squares_with_t_intervals_for_its_slope_and_its_mean():
    x = np.array([0.0, 1.0, 2.0, 3.0])
    fit = line_fit(x, np.array([1.0, 3.0, 2.0, 5.0]))
    # numpy's fit and hand t-intervals: s² = Σ residual² / (n − 2); se(b)² = s² / Σ(x − x̄)², se(ȳ)² = s² / n
    fitted = np.polyfit(x, [1.0, 3.0, 2.0, 5.0], 1)
    residual = np.array([1.0, 3.0, 2.0, 5.0]) - np.polyval(fitted, x)
    s2 = (residual ** 2).sum() / 2
    assert fit.slope == pytest.approx(fitted[0]) and fit.slope == pytest.approx(1.1)
    assert (fit.high - fit.low) / 2 == pytest.approx(4.302652729749464 * math.sqrt(s2 / 5.0))  # t(0.975, 2 dof)
    assert 0.05 < fit.p < 1.0
    assert fit.mean == pytest.approx(2.75) and (fit.mean_high - fit.mean_low) / 2 == pytest.approx(
        4.302652729749464 * math.sqrt(s2 / 4))
    # ȳ / se(ȳ) = 2.75 / 0.581 = 4.73 on 2 dof: two-sided p 0.042
    assert fit.mean_p == pytest.approx(2 * stats.t.sf(2.75 / math.sqrt(s2 / 4), 2)) and fit.mean_p < 0.05
    assert all(math.isnan(v) for v in astuple(line_fit(np.array([1.0, 1.0, 1.0]), np.array([1.0, 2.0, 3.0]))))


def test_rungs_of_a_ladder_form_the_size_axis_ordered_by_parameters(sizes_study):
    view = build_view(results.load_study(sizes_study))
    assert size_ladders(view) == {"seqmamba": sorted(RUNGS.items(), key=lambda r: r[1])}
    assert size_ladders(view, view.reference_names, view.references) == {
        "seqgru": [("seqgru_nano", 10_000.0), ("seqgru_tiny", 100_000.0)]}
    frame = scaling_frame(view)
    assert set(frame["evaluation"]) == {"trained", "L′=72", f"L′={FAR}"}  # every length; the slopes read each
    foh = frame[(frame["method_key"] == "foh/paper") & (frame["evaluation"] == "trained")].set_index("model")
    assert foh.loc["seqmamba_nano", "delta"] == pytest.approx(-10.0)
    assert foh.loc["seqmamba_nano", "params"] == RUNGS["seqmamba_nano"]


def test_the_gap_that_shrinks_and_the_gap_that_holds_are_told_apart(sizes_study, tmp_path):
    view = build_view(results.load_study(sizes_study))
    slopes = slope_frame(view).set_index("evaluation")
    trained, far = slopes.loc["trained"], slopes.loc[f"L′={FAR}"]
    # the seed pairs lie on −10 + 4·decades ± 0.5: slope 4 points per 10× parameters, the gap shrinks
    assert trained["slope"] == pytest.approx(4.0, abs=1e-9) and trained["low"] > 0
    assert trained["trend"] == "shrinks" and (trained["sizes"], trained["points"]) == (3, 9)
    assert far["slope"] == pytest.approx(0.0, abs=1e-9) and far["trend"] == "no trend detected"
    # no trend is not "holds": the flat −20 gap is there at every size, and the pooled gap says so
    assert far["mean_delta"] == pytest.approx(-20.0) and far["mean_high"] < -19.0
    assert far["mean_p_adj"] < 0.05 and far["mean_p_adj"] >= far["mean_p"]
    assert list(slopes.index) == ["trained", "L′=72", f"L′={FAR}"]  # the finding is per evaluation length
    sentences = scaling_findings(view)
    assert [s.split(": the gap")[0] for s in sentences] == [
        "Model size, seqmamba, at the training length", "Model size, seqmamba, at L′=72", f"Model size, seqmamba, at L′={FAR}"]
    assert sentences[0].startswith("Model size, seqmamba, at the training length: the gap to zoh/paper: foh/paper, "
                                   "shrinks (slope +4.00 [")
    assert "adjusted p < 0.001" in sentences[0] and (slopes["correction"] == "holm").all()
    assert "Fitted over 6,650–129,098 parameters on this task" in sentences[0]
    report = build_report(sizes_study, tmp_path / "reports")
    assert (report.out_dir / "fig_scaling.png").exists()
    assert _figure_evaluations(view) == ["trained", f"L′={FAR}"]  # the figure: 144/40 is further from 40 than 72
    table = (report.out_dir / "scaling.md").read_text()
    assert "seqmamba_nano (6,650)" in table and "shrinks (3 sizes, 9 seed pairs)" in table
    assert "the gap over the sizes [95% CI]" in table and "| −20.00 [" in table
    assert "Model size, seqmamba" in (report.out_dir / "index.md").read_text()


def test_the_slopes_are_one_family_and_a_trend_needs_the_adjusted_p():
    import pandas as pd

    raw = pd.DataFrame({"slope": [3.0, -2.0, 1.5, 2.0, 0.0], "mean_delta": [-5.0, -5.0, 4.0, 4.0, 4.0],
                        "p": [0.001, 0.012, 0.02, 0.3, float("nan")],
                        "mean_p": [0.5, 0.01, 0.02, 0.04, 0.001]})
    holm = trends(raw, "holm")
    # Holm over the 4 finite p: 0.004, 0.036, 0.04, 0.3; the NaN (no test) stays NaN
    assert holm["p_adj"].iloc[:4].tolist() == pytest.approx([0.004, 0.036, 0.04, 0.3])
    assert math.isnan(holm["p_adj"].iloc[4])
    # a slope against the mean Δ's sign shrinks the gap, with it grows it; raw p 0.02 alone is not enough
    assert holm["trend"].tolist() == ["shrinks", "grows", "grows", "no trend detected", "no trend detected"]
    strict = trends(raw.assign(p=[0.001, 0.02, 0.03, 0.3, float("nan")]), "holm")
    assert strict["trend"].tolist()[:3] == ["shrinks", "no trend detected", "no trend detected"]  # 0.06, 0.06
    assert (holm["correction"] == "holm").all()
    # the pooled gaps are their own family: Holm over their 5 p, not over the slopes'
    assert holm["mean_p_adj"].tolist() == pytest.approx([0.5, 0.04, 0.06, 0.08, 0.005])


def test_a_study_without_a_ladder_has_no_size_axis(tmp_path):
    study = tmp_path / "flat"
    results.write_study_meta(study, "flat", "name: flat\n")
    for key in ("zoh/paper", "foh/paper"):
        for seed in SEEDS:
            _trial(study, key, "seqmamba_micro", seed)
    results.consolidate(study)
    view = build_view(results.load_study(study))
    assert size_ladders(view) == {} and scaling_frame(view).empty and scaling_findings(view) == []
