"""Whether each finished trial converged, by the rule its study's analysis states.

A verdict about which method is better is only about what the methods end up computing when
every model has learned its task. `convergence_frame` judges every finished (ok) trial with the
study's `analysis.convergence` rule (discbench.analysis.ConvergenceSpec): over the last window of
its epochs, the second half's mean validation top-1 must differ from the first half's by less
than a tolerance, and its mean training loss by less than a fraction. Means over half-windows,
not two single epochs, so that one noisy epoch neither passes nor fails a trial. Diverged trials
are counted by the divergence findings instead.
"""

from __future__ import annotations

import math

import pandas as pd

from ..analysis import ConvergenceSpec
from .families import analysis_of
from .study_view import StudyView

COLUMNS = ["trial_id", "model", "condition", "method_key", "seed", "epochs", "window", "top1_rise",
           "loss_drop", "final_loss", "final_top1", "converged"]


def rule_text(spec: ConvergenceSpec) -> str:
    """The rule in words, for captions and findings."""
    return (f"over the last {100 * spec.window:g}% of its E epochs (w = max(2, ⌈{spec.window:g}·E⌉) epochs), the mean "
            f"validation top-1 of the window's second half (⌊w/2⌋ epochs) differs from that of its first half by "
            f"less than {spec.top1_tolerance:g} points and the mean training loss by less than "
            f"{100 * spec.loss_tolerance:g}% (either way), or the training loss ended below {spec.loss_floor:g}")


def window_epochs(epochs: int, spec: ConvergenceSpec) -> int:
    """w: the number of epochs in the window, at least two (a half each)."""
    return max(2, math.ceil(spec.window * epochs))


def convergence_frame(view: StudyView) -> pd.DataFrame:
    """One row per finished trial with epoch records (COLUMNS): epochs E, window w, top1_rise
    (points: the mean top-1 of the window's last h = ⌊w/2⌋ epochs minus that of the h before
    them; negative: a fall), loss_drop (the same halves' mean training loss, as a fraction of
    the first half's; negative: a rise), final_top1 (the last epoch's validation top-1, %) and
    converged (True/False; None when E < w, too few epochs to judge). Empty when no trial logged
    epochs."""
    epochs = view.results.epochs
    if epochs.empty or "top1" not in epochs or "train_loss" not in epochs:
        return pd.DataFrame(columns=COLUMNS)
    spec = analysis_of(view).convergence
    every = view.every_trial
    finished = every[every["status"] == "ok"].set_index("trial_id")
    rows = []
    for trial_id, records in epochs[epochs["trial_id"].isin(finished.index)].groupby("trial_id", sort=False):
        records = records.sort_values("epoch")
        count = len(records)
        w = window_epochs(count, spec)
        trial = finished.loc[trial_id]
        row = {"trial_id": trial_id, "model": trial["model"], "condition": trial["condition"],
               "method_key": trial["method_key"], "seed": trial["seed"], "epochs": count, "window": w,
               "top1_rise": math.nan, "loss_drop": math.nan, "final_loss": math.nan, "converged": None}
        top1 = pd.to_numeric(records["top1"], errors="coerce").to_numpy(dtype=float)
        row["final_top1"] = top1[-1]
        if count >= w:
            loss = pd.to_numeric(records["train_loss"], errors="coerce").to_numpy(dtype=float)
            h = w // 2
            first, second = slice(count - 2 * h, count - h), slice(count - h, count)
            row["top1_rise"] = top1[second].mean() - top1[first].mean()
            row["loss_drop"] = (loss[first].mean() - loss[second].mean()) / loss[first].mean()
            row["final_loss"] = loss[-1]
            if math.isfinite(row["top1_rise"]) and math.isfinite(row["loss_drop"]):  # else not judged
                settled_loss = abs(row["loss_drop"]) < spec.loss_tolerance or loss[-1] < spec.loss_floor
                row["converged"] = bool(abs(row["top1_rise"]) < spec.top1_tolerance and settled_loss)
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def convergence_sentence(view: StudyView) -> str:
    """The first finding: how many finished trials converged by the rule (empty without epochs)."""
    frame = convergence_frame(view)
    if frame.empty:
        return ""
    spec = analysis_of(view).convergence
    judged = frame[frame["converged"].notna()]
    failed = judged[~judged["converged"].astype(bool)]
    unjudged = len(frame) - len(judged)
    short = (f"; {unjudged} could not be judged (fewer epochs than the window, or no validation split)"
             if unjudged else "")
    rule = rule_text(spec)
    if judged.empty:
        return (f"Convergence not judged: none of the {len(frame)} finished trials could be (fewer epochs than the "
                f"window, or no validation split to judge by); the rule: {rule}.")
    if failed.empty and not unjudged:
        return f"Every finished trial converged ({len(frame)} of {len(frame)}; the rule: {rule})."
    if failed.empty:
        return (f"Convergence: {len(judged)} of {len(frame)} finished trials converged by the study's rule ({rule})"
                f"{short}.")
    # the report's order: baseline first, the references last
    order = list(dict.fromkeys(c[0] for c in view.all_conditions))
    by = failed.groupby(["model", "method_key"]).size()
    several = len(view.models) > 1
    listed = ", ".join(f"{f'{model} ' if several and model in view.models else ''}{key} {by[(model, key)]}"
                       for model in view.all_models for key in order if (model, key) in by)
    return (f"Not converged: {len(failed)} of {len(frame)} finished trials did not converge by the study's rule "
            f"({rule}){short}; the verdicts below compare models that were still learning "
            f"(per {'model and ' if several else ''}method: {listed}).")
