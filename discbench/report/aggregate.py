"""Per-condition numbers that both tables and figures show, computed once.

Accuracy (top1/top5, %) comes from trials with status "ok" only (the per-protocol Δ); a
diverged trial is counted instead in the divergence rate (with its exact interval and
Fisher's test against the baseline) and in a sensitivity Δ that scores it as a named fallback
(analysis.divergence_fallback). Differences to the baseline are tested within their family
(families.py). Cost columns (images/s, MiB) come from every trial that measured them (a
diverged trial's throughput is still its cost).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import results as _results
from . import families, stats
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


def seed_summary(values: dict[int, float], base_values: dict[int, float] | None,
                 correct: dict[int, np.ndarray] | None = None,
                 base_correct: dict[int, np.ndarray] | None = None) -> dict:
    """The columns every per-condition frame shares, from {seed: value} maps of a condition
    and of its baseline (None or empty: no comparison): mean, std, n, ci_low, ci_high
    (t-interval of the mean), delta, delta_low, delta_high, delta_how, delta_p (raw, two-sided),
    delta_excludes_zero (raw) and comparison (the stats.Difference, None without one).
    With per-example correctness {seed: (N,) bool} for every seed on both sides, the interval
    also covers the test items' sampling (stats.crossed_difference)."""
    summary = stats.summarize(list(values.values()))
    low, high = stats.mean_interval(list(values.values()))
    row = {"mean": summary.mean, "std": summary.std, "n": summary.n, "ci_low": low, "ci_high": high,
           "delta": math.nan, "delta_low": math.nan, "delta_high": math.nan, "delta_how": "",
           "delta_p": math.nan, "delta_excludes_zero": False, "comparison": None}
    if values and base_values:
        if correct is not None and base_correct is not None:
            diff = stats.crossed_difference(correct, base_correct)
        else:
            diff = stats.difference_to_baseline(values, base_values)
        row.update(delta=diff.delta, delta_low=diff.low, delta_high=diff.high, delta_how=diff.how,
                   delta_p=diff.p, delta_excludes_zero=diff.excludes_zero, comparison=diff)
    return row


def _seed_correct(view: StudyView, rows: pd.DataFrame, evaluation: str, length: float | None = None
                  ) -> dict[int, np.ndarray] | None:
    """{seed: per-example correctness} of the trials in `rows` (one per seed) for one
    evaluation ("test", or "transfer" at `length`); None unless every seed has it."""
    table = view.results.correctness
    if table.empty or rows.empty:
        return None
    table = table[table["evaluation"] == evaluation]
    if length is not None:
        table = table[pd.to_numeric(table["length"], errors="coerce") == length]
    by_trial = {t: r for t, r in zip(table["trial_id"], table.to_dict("records"))}
    out = {}
    for seed, trial_id in zip(rows["seed"], rows["trial_id"]):
        if trial_id not in by_trial or int(seed) in out:
            return None
        out[int(seed)] = _results.unpack_correctness(by_trial[trial_id])
    return out


def fallback_score(view: StudyView, trial: pd.Series, how: str) -> float:
    """The top-1 (%) a diverged trial scores in the sensitivity Δ: "chance" (100/num_classes,
    from the trial row or config.data.num_classes) or "last_epoch" (its last finite top-1 on the val split);
    nan when the trial did not record what that needs."""
    if how == "chance":
        for column in ("num_classes", "config.data.num_classes"):
            value = pd.to_numeric(pd.Series([trial.get(column)]), errors="coerce").iloc[0]
            if value and value == value:
                return 100.0 / float(value)
        return math.nan
    epochs = view.results.epochs
    top1 = pd.to_numeric(epochs.loc[epochs["trial_id"] == trial["trial_id"], "top1"], errors="coerce").dropna()
    return float(top1.iloc[-1]) if len(top1) else math.nan


FALLBACK_NAMES = {"chance": "chance (100/classes)", "last_epoch": "its last finite epoch"}


def _with_fallback(view: StudyView, group: pd.DataFrame, how: str) -> dict[int, float]:
    """{seed: top-1} of a condition's finished trials, a diverged one scoring `fallback_score`."""
    values = {}
    for _, trial in group[group["status"].isin(["ok", "diverged"])].iterrows():
        value = trial["top1"] if trial["status"] == "ok" else fallback_score(view, trial, how)
        values[int(trial["seed"])] = float(value) if value is not None else math.nan
    return values


def _accuracy_raw(view: StudyView, metric: str) -> pd.DataFrame:
    trials = view.trials
    fallback = families.analysis_of(view).divergence_fallback
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
            base_values = base_correct = correct = None
            base_group = in_model[in_model["condition"] == baseline] if baseline is not None else group.iloc[:0]
            if baseline is not None and not is_baseline and metric in in_model:
                base_ok = base_group[base_group["status"] == "ok"]
                base_values = _seed_values(base_ok, metric)
                if metric == "top1":
                    correct, base_correct = _seed_correct(view, ok, "test"), _seed_correct(view, base_ok, "test")
            rate = stats.divergence_rate(len(diverged), int(group["status"].isin(["ok", "diverged"]).sum()))
            base_rate = stats.divergence_rate(int((base_group["status"] == "diverged").sum()),
                                              int(base_group["status"].isin(["ok", "diverged"]).sum()))
            sensitivity = {}
            if (metric == "top1" and base_values is not None
                    and (len(diverged) or (base_group["status"] == "diverged").any())):
                with_fb, base_fb = _with_fallback(view, group, fallback), _with_fallback(view, base_group, fallback)
                if all(v == v for v in [*with_fb.values(), *base_fb.values()]) and with_fb and base_fb:
                    diff = stats.difference_to_baseline(with_fb, base_fb)
                    sensitivity = {"delta_fallback": diff.delta, "delta_fallback_low": diff.low,
                                   "delta_fallback_high": diff.high, "delta_fallback_how": diff.how}
            rows.append({
                "model": model, "condition": condition, "method_key": condition[0],
                **{f: v for f, v in zip(view.factors, condition[1:])},
                **seed_summary(values, base_values, correct, base_correct),
                "diverged": len(diverged),
                "diverged_text": "; ".join(divergence_text(v) for v in diverged["diverged_at"]),
                "failed": int((group["status"] == "failed").sum()),
                "finished": rate.n, "diverged_rate": rate.rate, "diverged_low": rate.low,
                "diverged_high": rate.high,
                # Fisher's test only where a side diverged: 0 of n against 0 of m tests nothing.
                "diverged_p": (stats.rate_difference_p(rate, base_rate)
                               if not is_baseline and baseline is not None and (rate.k or base_rate.k) else math.nan),
                "fallback": FALLBACK_NAMES[fallback],
                "delta_fallback": math.nan, "delta_fallback_low": math.nan, "delta_fallback_high": math.nan,
                "delta_fallback_how": "", **sensitivity,
                "is_baseline": is_baseline,
            })
    return pd.DataFrame(rows)


def accuracy_frame(view: StudyView, metric: str = "top1") -> pd.DataFrame:
    """One row per (model, condition) that has any trial.

    Columns: model, condition, method_key, the factor columns, the `seed_summary` columns (delta
    columns empty for the baseline itself or without a baseline), diverged (count),
    diverged_text, failed (count), finished (ok + diverged trials), diverged_rate with its
    Clopper–Pearson diverged_low/high, diverged_p (Fisher's test against the baseline's rate),
    fallback (what a diverged seed scores) and delta_fallback[_low, _high, _how] (the
    sensitivity Δ with diverged seeds scored so, nan when no side diverged), is_baseline. For
    top-1 also the family columns of families.annotate.
    """
    raw = _accuracy_raw(view, metric)
    if metric != "top1" or raw.empty:
        return raw
    return families.annotate(view, raw, _transfer_raw(view))[0]


def transfer_frame(view: StudyView) -> pd.DataFrame:
    """`_transfer_raw` with the family columns of families.annotate (empty without transfer rows)."""
    raw = _transfer_raw(view)
    if raw.empty:
        return raw
    return families.annotate(view, _accuracy_raw(view, "top1"), raw)[1]


def _transfer_raw(view: StudyView) -> pd.DataFrame:
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
                base_values = correct = base_correct = None
                if baseline is not None and not is_baseline:
                    base = in_model[(in_model["condition"] == baseline) & (in_model["length"] == length)]
                    base_values = _seed_values(base, "value")
                    correct = _seed_correct(view, at_length, "transfer", length)
                    base_correct = _seed_correct(view, base, "transfer", length)
                train_lengths = sorted(set(at_length["train_length"].dropna()))
                rows.append({
                    "model": model, "condition": condition, "method_key": condition[0],
                    **{f: v for f, v in zip(view.factors, condition[1:])},
                    "length": int(length), "train_length": train_lengths[0] if len(train_lengths) == 1 else math.nan,
                    "delta_scale": float(pd.to_numeric(at_length["delta_scale"], errors="coerce").mean()),
                    **seed_summary(_seed_values(at_length, "value"), base_values, correct, base_correct),
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
