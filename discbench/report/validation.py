"""How far apart the methods end on the validation split: what a study's design is chosen by.

A report's verdicts read the test split. A choice between study designs (which study is the
default, because it tells the methods apart best) must not read the split whose numbers it then
reports, so it reads each trial's last-epoch validation top-1 (its epoch records) instead: per
model and factor combination, each method's difference to the baseline, paired over seeds, with
its 95% interval. The separation is how many of those intervals exclude 0 and how large the
differences are. Nothing here is adjusted for multiplicity: it describes the design, it is not a
verdict.
"""

from __future__ import annotations

import math

import pandas as pd

from .convergence import convergence_frame
from .stats import difference_to_baseline
from .study_view import StudyView
from .tables import _num

COLUMNS = ["model", "condition", "method_key", "n", "delta", "low", "high", "separated"]


def separation_frame(view: StudyView) -> pd.DataFrame:
    """One row per (model, non-baseline condition) with validation top-1 on both sides (COLUMNS):
    delta = mean over seeds of (method − baseline) last-epoch validation top-1 (points), [low,
    high] its 95% interval (paired t over shared seeds, else Welch), n the method's seeds and
    separated whether the interval excludes 0. Empty without epoch records or a baseline."""
    frame = convergence_frame(view)
    if frame.empty or not view.has_baseline:
        return pd.DataFrame(columns=COLUMNS)
    frame = frame[pd.to_numeric(frame["final_top1"], errors="coerce").notna()]
    rows = []
    for model in view.models:
        here = frame[frame["model"] == model]
        by_condition = {c: dict(zip(t["seed"], t["final_top1"].astype(float)))
                        for c, t in here.groupby("condition", sort=False)}
        for condition in view.conditions:
            baseline = view.baseline_of(condition)
            if condition == baseline or baseline is None:
                continue
            candidate, reference = by_condition.get(condition, {}), by_condition.get(baseline, {})
            if len(candidate) < 2 or len(reference) < 2:
                continue
            diff = difference_to_baseline(candidate, reference)
            separated = math.isfinite(diff.low) and (diff.low > 0 or diff.high < 0)
            rows.append({"model": model, "condition": condition, "method_key": condition[0], "n": len(candidate),
                         "delta": diff.delta, "low": diff.low, "high": diff.high, "separated": separated})
    return pd.DataFrame(rows, columns=COLUMNS)


def separation_sentence(view: StudyView) -> str:
    """How many method-vs-baseline differences on validation have a 95% interval excluding 0,
    with the median and largest |Δ| (empty when there is nothing to compare)."""
    frame = separation_frame(view)
    if frame.empty:
        return ""
    size = frame["delta"].abs()
    largest = frame.loc[size.idxmax()]
    return (f"On validation (the last epoch's top-1; what a choice between study designs may read, not a verdict): "
            f"{int(frame['separated'].sum())} of {len(frame)} differences to {view.baseline_key} have a paired 95% "
            f"interval (seeds) that excludes 0, unadjusted; |Δ| median {size.median():.2f} points, largest "
            f"{_num(largest['delta'], signed=True)} ({view.condition_label(largest['condition'])}"
            f"{f', {largest.model}' if len(view.models) > 1 else ''}).")
