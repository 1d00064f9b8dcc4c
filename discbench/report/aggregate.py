"""Per-condition numbers that both tables and figures show, computed once.

Accuracy (top1/top5, %) comes from trials with status "ok" only: a diverged trial has no
meaningful accuracy and is reported as diverged instead. Cost columns (images/s, MiB) come
from every trial that measured them (a diverged trial's throughput is still its cost).
"""

from __future__ import annotations

import math

import pandas as pd

from . import stats
from .study_view import StudyView, divergence_text

COST_COLUMNS = {
    "train_images_per_s": "train images/s",
    "infer_images_per_s": "infer images/s",
    "peak_mem_mb": "peak memory (MiB)",
}


def _seed_values(rows: pd.DataFrame, metric: str) -> dict[int, float]:
    """{seed: value} of finite values; one value per seed (the mean if a seed repeats)."""
    rows = rows[pd.to_numeric(rows[metric], errors="coerce").notna()]
    return {int(seed): float(group[metric].astype(float).mean())
            for seed, group in rows.groupby("seed", sort=True)}


def accuracy_frame(view: StudyView, metric: str = "top1") -> pd.DataFrame:
    """One row per (model, condition) that has any trial.

    Columns: model, condition, method_key, the factor columns, mean, std, n, ci_low, ci_high
    (t-interval of the mean), delta, delta_low, delta_high, delta_how (see stats.Difference;
    empty for the baseline itself or without a baseline), diverged (count), diverged_text,
    failed (count), is_baseline.
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
            summary = stats.summarize(list(values.values()))
            low, high = stats.mean_interval(list(values.values()))
            diverged = group[group["status"] == "diverged"]
            row = {
                "model": model, "condition": condition, "method_key": condition[0],
                **{f: v for f, v in zip(view.factors, condition[1:])},
                "mean": summary.mean, "std": summary.std, "n": summary.n,
                "ci_low": low, "ci_high": high,
                "delta": math.nan, "delta_low": math.nan, "delta_high": math.nan, "delta_how": "",
                "diverged": len(diverged),
                "diverged_text": "; ".join(divergence_text(v) for v in diverged["diverged_at"]),
                "failed": int((group["status"] == "failed").sum()),
                "is_baseline": condition[0] == view.baseline_key,
            }
            baseline = view.baseline_of(condition)
            if baseline is not None and not row["is_baseline"] and values:
                base_rows = in_model[(in_model["condition"] == baseline) & (in_model["status"] == "ok")]
                base_values = _seed_values(base_rows, metric)
                if base_values:
                    diff = stats.difference_to_baseline(values, base_values)
                    row.update(delta=diff.delta, delta_low=diff.low, delta_high=diff.high,
                               delta_how=diff.how)
            rows.append(row)
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


def resolution_frame(view: StudyView) -> pd.DataFrame:
    """Throughput/memory against resolution: one row per (model, method_key, batch_size,
    resolution, name) with the mean value (NaN where out of memory) and status ('oom' if any
    repeat ran out of memory)."""
    m = view.results.measurements
    m = m[m["kind"].isin(["throughput", "memory"])].copy()
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
