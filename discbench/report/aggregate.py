"""Per-condition numbers that both tables and figures show, computed once.

Accuracy (top1/top5, %) comes from trials with status "ok" only: a diverged trial has no
meaningful accuracy and is reported as diverged instead. Cost columns (images/s, MiB) come
from every trial that measured them (a diverged trial's throughput is still its cost).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from . import stats
from .study_view import StudyView, divergence_text

COST_COLUMNS = {
    "train_images_per_s": "train images/s",
    "infer_images_per_s": "infer images/s",
    "infer_sequences_per_s": "infer sequences/s",
    "peak_mem_mb": "peak memory (MiB)",
    "peak_mem_delta_mb": "peak memory above the idle process (MiB)",
}


def _seed_values(rows: pd.DataFrame, metric: str) -> dict[int, float]:
    """{seed: value} of finite values; one value per seed (the mean if a seed repeats)."""
    rows = rows[pd.to_numeric(rows[metric], errors="coerce").notna()]
    return {int(seed): float(group[metric].astype(float).mean())
            for seed, group in rows.groupby("seed", sort=True)}


def seed_summary(values: dict[int, float], base_values: dict[int, float] | None) -> dict:
    """The columns every per-condition frame shares, from {seed: value} maps of a condition
    and of its baseline (None or empty: no comparison): mean, std, n, ci_low, ci_high
    (t-interval of the mean), delta, delta_low, delta_high, delta_how, delta_mde,
    delta_excludes_zero (see stats.Difference)."""
    summary = stats.summarize(list(values.values()))
    low, high = stats.mean_interval(list(values.values()))
    row = {"mean": summary.mean, "std": summary.std, "n": summary.n, "ci_low": low, "ci_high": high,
           "delta": math.nan, "delta_low": math.nan, "delta_high": math.nan, "delta_how": "",
           "delta_mde": math.nan, "delta_excludes_zero": False}
    if values and base_values:
        diff = stats.difference_to_baseline(values, base_values)
        row.update(delta=diff.delta, delta_low=diff.low, delta_high=diff.high, delta_how=diff.how,
                   delta_mde=diff.mde, delta_excludes_zero=diff.excludes_zero)
    return row


def accuracy_frame(view: StudyView, metric: str = "top1") -> pd.DataFrame:
    """One row per (model, condition) that has any trial.

    Columns: model, condition, method_key, the factor columns, the `seed_summary` columns (delta
    columns empty for the baseline itself or without a baseline), diverged (count),
    diverged_text, failed (count), is_baseline.
    """
    trials = view.trials
    rows = []
    for model in view.models:
        in_model = trials[trials["model"] == model]
        for condition in view.conditions:
            group = in_model[in_model["condition"] == condition]
            if group.empty:
                continue
            ok = group[group["status"] == "ok"]
            values = _seed_values(ok, metric) if metric in ok else {}
            diverged = group[group["status"] == "diverged"]
            is_baseline = condition[0] == view.baseline_key
            baseline = view.baseline_of(condition)
            base_values = None
            if baseline is not None and not is_baseline and metric in in_model:
                base_rows = in_model[(in_model["condition"] == baseline) & (in_model["status"] == "ok")]
                base_values = _seed_values(base_rows, metric)
            rows.append({
                "model": model, "condition": condition, "method_key": condition[0],
                **{f: v for f, v in zip(view.factors, condition[1:])},
                **seed_summary(values, base_values),
                "diverged": len(diverged),
                "diverged_text": "; ".join(divergence_text(v) for v in diverged["diverged_at"]),
                "failed": int((group["status"] == "failed").sum()),
                "is_baseline": is_baseline,
            })
    return pd.DataFrame(rows)


def transfer_frame(view: StudyView) -> pd.DataFrame:
    """Sampling-rate transfer (measurements kind "transfer", name "top1"): one row per
    (model, condition, evaluation length L′) with a value from any seed.

    Columns: model, condition, method_key, the factor columns, length (L′, tokens),
    train_length (L, the trial's config.data.seq_length, else L′·delta_scale), delta_scale
    (L/L′), the `seed_summary` columns (top-1 %, Δ against the baseline condition at the same
    L′), is_baseline. Empty when the study has no transfer rows.
    """
    m = view.results.measurements
    m = m[(m["quantity"] == "transfer") & (m["name"] == "top1")].copy()
    m["value"] = pd.to_numeric(m["value"], errors="coerce")
    m = m[m["status"].fillna("ok").eq("ok") & m["value"].notna()]
    if m.empty:
        return pd.DataFrame()
    trials = view.trials.set_index("trial_id")
    m = m[m["trial_id"].isin(trials.index)]
    m["condition"] = [trials.at[t, "condition"] for t in m["trial_id"]]
    m["model"] = [trials.at[t, "model"] for t in m["trial_id"]]
    m["seed"] = [trials.at[t, "seed"] for t in m["trial_id"]]
    m["length"] = pd.to_numeric(m["length"], errors="coerce")
    scale = pd.to_numeric(m["delta_scale"], errors="coerce")
    configured = (pd.to_numeric(trials["config.data.seq_length"], errors="coerce")
                  if "config.data.seq_length" in trials else pd.Series(math.nan, index=trials.index))
    m["train_length"] = [configured.get(t, math.nan) for t in m["trial_id"]]
    m["train_length"] = m["train_length"].fillna(m["length"] * scale)
    rows = []
    for model in view.models:
        in_model = m[m["model"] == model]
        for condition in view.conditions:
            group = in_model[in_model["condition"] == condition]
            baseline = view.baseline_of(condition)
            is_baseline = condition[0] == view.baseline_key
            for length, at_length in group.groupby("length", sort=True):
                base_values = None
                if baseline is not None and not is_baseline:
                    base = in_model[(in_model["condition"] == baseline) & (in_model["length"] == length)]
                    base_values = _seed_values(base, "value")
                train_lengths = sorted(set(at_length["train_length"].dropna()))
                rows.append({
                    "model": model, "condition": condition, "method_key": condition[0],
                    **{f: v for f, v in zip(view.factors, condition[1:])},
                    "length": int(length), "train_length": train_lengths[0] if len(train_lengths) == 1 else math.nan,
                    "delta_scale": float(pd.to_numeric(at_length["delta_scale"], errors="coerce").mean()),
                    **seed_summary(_seed_values(at_length, "value"), base_values),
                    "is_baseline": is_baseline,
                })
    return pd.DataFrame(rows)


def lambda_frame(view: StudyView) -> pd.DataFrame:
    """Learned λ (measurements kind "lambda"): one row per (model, condition, direction, layer).

    Columns: model, condition, method_key, the factor columns, direction, layer, mean (the mean
    over seeds of each trial's per-layer mean λ), std (sd of those means over seeds; nan with
    one), n (seeds), spread (the mean over seeds of each trial's within-layer sd of λ; nan
    without name="std" rows). λ is dimensionless. Empty when the study has no λ rows.
    """
    m = view.results.measurements
    m = m[m["quantity"] == "lambda"].copy()
    m["value"] = pd.to_numeric(m["value"], errors="coerce")
    trials = view.trials.set_index("trial_id")
    m = m[m["trial_id"].isin(trials.index) & m["value"].notna()]
    if m.empty:
        return pd.DataFrame()
    m["condition"] = [trials.at[t, "condition"] for t in m["trial_id"]]
    m["model"] = [trials.at[t, "model"] for t in m["trial_id"]]
    m["seed"] = [trials.at[t, "seed"] for t in m["trial_id"]]
    m["layer"] = pd.to_numeric(m["layer"], errors="coerce").astype("Int64")
    m["direction"] = m["direction"].fillna("unspecified").astype(str)
    rows = []
    for model in view.models:
        in_model = m[m["model"] == model]
        for condition in view.conditions:
            group = in_model[in_model["condition"] == condition]
            for (direction, layer), rows_here in group.groupby(["direction", "layer"], sort=True):
                means = _seed_values(rows_here[rows_here["name"] == "mean"], "value")
                spreads = _seed_values(rows_here[rows_here["name"] == "std"], "value")
                summary = stats.summarize(list(means.values()))
                rows.append({
                    "model": model, "condition": condition, "method_key": condition[0],
                    **{f: v for f, v in zip(view.factors, condition[1:])},
                    "direction": direction, "layer": int(layer),
                    "mean": summary.mean, "std": summary.std, "n": summary.n,
                    "spread": float(np.mean(list(spreads.values()))) if spreads else math.nan,
                })
    return pd.DataFrame(rows)


def cost_frame(view: StudyView) -> pd.DataFrame:
    """One row per (model, condition): mean of each COST_COLUMNS value over the trials that
    measured it, its count (`<col>_n`) and its ratio to the baseline condition (`<col>_rel`)."""
    trials = view.trials
    rows = []
    for model in view.models:
        in_model = trials[trials["model"] == model]
        means: dict[tuple, dict[str, float]] = {}
        for condition in view.conditions:
            group = in_model[in_model["condition"] == condition]
            if group.empty:
                continue
            entry: dict[str, float] = {}
            for column in COST_COLUMNS:
                values = pd.to_numeric(group[column], errors="coerce").dropna() if column in group else []
                entry[column] = float(values.mean()) if len(values) else math.nan
                entry[f"{column}_n"] = int(len(values))
            means[condition] = entry
        for condition, entry in means.items():
            baseline = means.get(view.baseline_of(condition) or ())
            for column in COST_COLUMNS:
                base = baseline[column] if baseline else math.nan
                entry[f"{column}_rel"] = entry[column] / base if base and not math.isnan(base) else math.nan
            rows.append({"model": model, "condition": condition, "method_key": condition[0],
                         **{f: v for f, v in zip(view.factors, condition[1:])}, **entry})
    return pd.DataFrame(rows)


def memory_metric(frame: pd.DataFrame) -> str:
    """The memory measurement a report shows: on the CPU the peak RSS above the window's start
    (peak_mem_delta_mb, what the model allocates), else the peak (CUDA: max allocated)."""
    return "peak_mem_delta_mb" if (frame["name"] == "peak_mem_delta_mb").any() else "peak_mem_mb"


def resolution_frame(view: StudyView) -> pd.DataFrame:
    """Throughput/memory against resolution: one row per (model, method_key, batch_size,
    resolution, name) with the mean value (NaN where out of memory) and status ('oom' if any
    repeat ran out of memory)."""
    m = view.results.measurements
    m = m[m["quantity"].isin(["throughput", "memory"])].copy()
    if m.empty:
        return m
    trial_model = dict(zip(view.trials["trial_id"], view.trials["model"]))
    m["model"] = [mod if isinstance(mod, str) and mod else trial_model.get(t, "unknown model")
                  for mod, t in zip(m["model"], m["trial_id"])]
    m["status"] = m["status"].fillna("ok")
    m["value"] = pd.to_numeric(m["value"], errors="coerce").where(m["status"] == "ok")
    m["batch_size"] = m["batch_size"].fillna(0)
    keys = ["model", "method_key", "batch_size", "resolution", "name"]
    return (m.groupby(keys, as_index=False, dropna=False)
             .agg(value=("value", "mean"), status=("status", lambda s: "oom" if (s == "oom").any() else "ok")))
