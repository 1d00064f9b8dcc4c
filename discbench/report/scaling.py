"""Model size as an axis: each method's difference to the baseline against parameter count.

A study has a size axis when the models it trains include at least two rungs of one declared
ladder (`FamilyCfg.ladder`, registered by `models.registry.register_ladder`): for example
`model.name: [seqmamba_nano, seqmamba_micro, seqmamba_tiny]`. Any such study gets these tables,
the figure and the finding; nothing here names a study.

Per ladder, factor setting, method and evaluation (the training length, and with sampling-rate
transfer every other evaluation length; the figure draws the one furthest from it), the difference to the baseline at each rung
comes from the accuracy and transfer frames (their intervals, seeds × test items). The trend is
an ordinary least-squares line through every seed's paired difference (method − baseline, same
seed and rung) against log10(parameters), with its slope's t-interval on n − 2 degrees of
freedom: points per tenfold growth in parameters. Every slope of a study is one family of tests:
its p is adjusted with the study's correction (Holm, or Benjamini–Hochberg under
`analysis.error_rate: fdr`), as the report's other families are. The gap grows with size when the
adjusted p is below α and the slope has the sign of the mean difference, shrinks when it has the
other sign, and shows no detected trend otherwise; the interval shown is the raw one. No trend
is not "the gap holds": beside the slope stands the gap pooled over the sizes (the mean of the
same seed pairs, the line's height at their mean log-size, its t-interval from the spread about
the line), its p adjusted over the study's pooled gaps as a second family.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import stats
from .families import analysis_of
from .aggregate import accuracy_frame, transfer_frame
from .figures import FigureFile, _save, _theme, method_style, reference_style
from .study_view import StudyView, ladder_of, median_parameters
from .tables import DASH, Table

TRAINED = "trained"  # the evaluation at the training length
SLOPE_COLUMNS = ["ladder", "setting", "condition", "method_key", "evaluation", "slope", "low", "high", "p",
                 "p_adj", "correction", "sizes", "points", "mean_delta", "mean_low", "mean_high", "mean_p",
                 "mean_p_adj", "trend"]
NO_TREND = "no trend detected"


def size_ladders(view: StudyView, models: list[str] | None = None,
                 trials: pd.DataFrame | None = None) -> dict[str, list[tuple[str, float]]]:
    """{ladder: [(model, parameters), …] in increasing parameters} for every ladder with at least
    two rungs among `models` (default: the study's methods' models), parameters as the trials
    recorded them (the median over a model's trials)."""
    models = view.models if models is None else models
    trials = view.trials if trials is None else trials
    ladders: dict[str, list[tuple[str, float]]] = {}
    for model in models:
        ladder, params = ladder_of(model), median_parameters(trials, model)
        if ladder is not None and math.isfinite(params):
            ladders.setdefault(ladder, []).append((model, params))
    return {name: sorted(rungs, key=lambda r: r[1]) for name, rungs in ladders.items() if len(rungs) >= 2}


def has_size_axis(view: StudyView) -> bool:
    return bool(size_ladders(view))


def _furthest_length(transfer: pd.DataFrame) -> int | None:
    """The evaluation length furthest from the training length (by the ratio of the two)."""
    if transfer.empty:
        return None
    away = transfer[transfer["length"] != transfer["train_length"]].dropna(subset=["train_length"])
    if away.empty:
        return None
    ratio = np.abs(np.log(away["length"].astype(float) / away["train_length"].astype(float)))
    return int(away.loc[ratio.idxmax(), "length"])


def _evaluations(view: StudyView) -> list[tuple[str, pd.DataFrame]]:
    """[(evaluation label, per (model, condition) frame)]: the training length, then every other
    evaluation length L′ in increasing order."""
    out = [(TRAINED, accuracy_frame(view, "top1"))]
    transfer = transfer_frame(view)
    if transfer.empty:
        return out
    away = transfer[transfer["length"] != transfer["train_length"]]
    return out + [(f"L′={int(n)}", away[away["length"] == n]) for n in sorted(away["length"].unique())]


def _figure_evaluations(view: StudyView) -> list[str]:
    """The evaluations the figure draws: the training length and the L′ furthest from it."""
    furthest = _furthest_length(transfer_frame(view))
    return [TRAINED] + ([f"L′={furthest}"] if furthest is not None else [])


def _settings(view: StudyView) -> list[tuple]:
    return list(dict.fromkeys(c[1:] for c in view.conditions))


def scaling_frame(view: StudyView) -> pd.DataFrame:
    """One row per (ladder, rung, condition, evaluation): parameters, mean top-1 ± sd over seeds
    (n), and the difference to the baseline with its 95% interval (empty for the baseline)."""
    ladders = size_ladders(view)
    rows = []
    for evaluation, frame in (_evaluations(view) if ladders else []):
        for ladder, rungs in ladders.items():
            for model, params in rungs:
                for _, row in frame[frame["model"] == model].iterrows():
                    rows.append({"ladder": ladder, "model": model, "params": params, "condition": row["condition"],
                                 "setting": row["condition"][1:], "method_key": row["method_key"],
                                 "evaluation": evaluation, "mean": row["mean"], "std": row["std"], "n": row["n"],
                                 "delta": row["delta"], "delta_low": row["delta_low"],
                                 "delta_high": row["delta_high"], "is_baseline": bool(row["is_baseline"])})
    return pd.DataFrame(rows)


def _seed_values(view: StudyView, model: str, condition: tuple, evaluation: str) -> dict[int, float]:
    """{seed: top-1} of a model and condition's finished trials at one evaluation."""
    trials = view.trials[(view.trials["model"] == model) & (view.trials["condition"] == condition)
                         & (view.trials["status"] == "ok")]
    if evaluation == TRAINED:
        values = pd.to_numeric(trials["top1"], errors="coerce")
        return {int(s): float(v) for s, v in zip(trials["seed"], values) if math.isfinite(v)}
    length = int(evaluation.removeprefix("L′="))
    m = view.results.measurements
    m = m[(m["quantity"] == "transfer") & (m["name"] == "top1") & m["trial_id"].isin(trials["trial_id"])
          & (pd.to_numeric(m["length"], errors="coerce") == length)]
    seeds = dict(zip(trials["trial_id"], trials["seed"]))
    values = pd.to_numeric(m["value"], errors="coerce")
    return {int(seeds[t]): float(v) for t, v in zip(m["trial_id"], values) if math.isfinite(v)}


def slope_frame(view: StudyView) -> pd.DataFrame:
    """One row per (ladder, setting, method other than the baseline, evaluation) (SLOPE_COLUMNS):
    the slope of the seeds' paired differences against log10(parameters), in points per tenfold
    parameters, its raw 95% interval, p and p adjusted over all the study's slopes (`trends`), the
    rungs and points it rests on, the mean difference over them (the gap pooled over the sizes: the
    line's height at the mean log-size) with its raw interval, p and p adjusted over all the study's
    pooled gaps, and the trend."""
    ladders = size_ladders(view)
    rows = []
    for evaluation, _ in (_evaluations(view) if ladders else []):
        for ladder, rungs in ladders.items():
            for setting in _settings(view):
                baseline = (view.baseline_key, *setting)
                for condition in view.conditions:
                    if condition[1:] != setting or condition == baseline:
                        continue
                    x, y, sizes = [], [], 0
                    for model, params in rungs:
                        mine = _seed_values(view, model, condition, evaluation)
                        base = _seed_values(view, model, baseline, evaluation)
                        shared = sorted(set(mine) & set(base))
                        sizes += bool(shared)
                        x += [math.log10(params)] * len(shared)
                        y += [mine[s] - base[s] for s in shared]
                    if not y:
                        continue
                    fit = stats.line_fit(np.array(x), np.array(y))
                    rows.append({"ladder": ladder, "setting": setting, "condition": condition,
                                 "method_key": condition[0], "evaluation": evaluation, "slope": fit.slope,
                                 "low": fit.low, "high": fit.high, "p": fit.p, "sizes": sizes, "points": len(y),
                                 "mean_delta": float(np.mean(y)), "mean_low": fit.mean_low,
                                 "mean_high": fit.mean_high, "mean_p": fit.mean_p})
    derived = ("p_adj", "correction", "mean_p_adj", "trend")
    frame = pd.DataFrame(rows, columns=[c for c in SLOPE_COLUMNS if c not in derived])
    correction = stats.CORRECTIONS[analysis_of(view).error_rate] if rows else "holm"
    return trends(frame, correction)[SLOPE_COLUMNS]


def trends(slopes: pd.DataFrame, correction: str) -> pd.DataFrame:
    """The slopes with p_adj (`correction` over all of them: one family) and mean_p_adj (the pooled
    gaps, their own family), and each trend: "grows" (adjusted p < α, slope of the mean
    difference's sign), "shrinks" (the other sign) or NO_TREND."""
    out = slopes.assign(p_adj=stats.adjust(slopes["p"].astype(float), correction), correction=correction,
                        mean_p_adj=stats.adjust(slopes["mean_p"].astype(float), correction))
    significant = (out["p_adj"] < stats.ALPHA) & (out["mean_delta"] != 0.0)
    same_sign = (out["slope"] > 0) == (out["mean_delta"] > 0)
    out["trend"] = np.where(significant, np.where(same_sign, "grows", "shrinks"), NO_TREND)
    return out


def _signed(value: float) -> str:
    return DASH if not math.isfinite(value) else f"{value:+.2f}".replace("-", "−")


def _p(value: float) -> str:
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


POOLED = "the gap over the sizes [95% CI]"


def _pooled(slope: pd.Series) -> str:
    """A slope row's pooled gap: mean Δ [raw interval]; p raw → adjusted."""
    if not math.isfinite(slope["mean_low"]):
        return _signed(slope["mean_delta"])
    return (f"{_signed(slope['mean_delta'])} [{_signed(slope['mean_low'])}, {_signed(slope['mean_high'])}]; "
            f"p {_p(slope['mean_p'])} → {_p(slope['mean_p_adj'])}")


def _setting_label(view: StudyView, setting: tuple) -> str:
    return ", ".join(f"{view.factor_label(f)}={v}" for f, v in zip(view.factors, setting))


def scaling_table(view: StudyView) -> Table | None:
    """Per ladder, setting, method and evaluation: top-1 (the baseline) or Δ to it [95% CI] at
    each rung, then the slope against log10(parameters) and the trend."""
    frame = scaling_frame(view)
    if frame.empty:
        return None
    slope_rows = slope_frame(view)  # the table's data as well: fitted once
    slopes = slope_rows.set_index(["ladder", "condition", "evaluation"])
    correction = stats.CORRECTION_NAMES[slopes["correction"].iloc[0]] if len(slopes) else "no slopes"
    rows = []
    for (ladder, evaluation), here in frame.groupby(["ladder", "evaluation"], sort=False):
        rungs = list(dict.fromkeys(zip(here["model"], here["params"])))
        for condition in view.conditions:
            cells = here[here["condition"] == condition]
            if cells.empty:
                continue
            row = {"ladder": ladder, "evaluation": "training length" if evaluation == TRAINED else evaluation,
                   "method": view.condition_label(condition)}
            for model, params in rungs:
                cell = cells[cells["model"] == model]
                column = f"{model} ({int(params):,})"
                if cell.empty:
                    row[column] = DASH
                elif cell["is_baseline"].iloc[0]:
                    c = cell.iloc[0]
                    row[column] = f"top-1 {c['mean']:.2f} ± {c['std']:.2f} (n={int(c['n'])})" \
                        if math.isfinite(c["std"]) else f"top-1 {c['mean']:.2f} (n={int(c['n'])})"
                else:
                    c = cell.iloc[0]
                    row[column] = (f"{_signed(c['delta'])} [{_signed(c['delta_low'])}, {_signed(c['delta_high'])}]"
                                   if math.isfinite(c["delta_low"]) else _signed(c["delta"]))
            key = (ladder, condition, evaluation)
            if key in slopes.index:
                s = slopes.loc[key]
                row["slope (points per 10× parameters) [95% CI]"] = (
                    f"{_signed(s['slope'])} [{_signed(s['low'])}, {_signed(s['high'])}]; p {_p(s['p'])} → "
                    f"{_p(s['p_adj'])}" if math.isfinite(s["low"]) else _signed(s["slope"]))
                row["the gap with size"] = f"{s['trend']} ({s['sizes']} sizes, {s['points']} seed pairs)"
                row[POOLED] = _pooled(s)
            else:
                for column in ("slope (points per 10× parameters) [95% CI]", "the gap with size", POOLED):
                    row[column] = "baseline"
            rows.append(row)
    caption = (f"Model size: at each rung of a size ladder (columns, parameters in parentheses), the baseline "
               f"{view.baseline_key}'s top-1 on the test split (mean ± sd over seeds) and each method's Δ to it with "
               f"its 95% interval (seeds × test items), at the training length and at every other evaluation length. "
               f"Slope: an ordinary least-squares line through every seed's paired Δ against log10(parameters), "
               f"in points per tenfold parameters, with its raw t-interval (n − 2 dof) and p → p adjusted over the "
               f"study's {len(slopes)} slopes ({correction}). The gap grows "
               f"when the adjusted p is below {stats.ALPHA:g} and the slope has the mean Δ's sign, shrinks when it has "
               f"the other; otherwise no trend is detected, which is not evidence that it holds. The gap over the sizes: "
               f"the mean of the same seed pairs (the line's height at their mean log-size), with its raw t-interval "
               f"from the spread about the line and p → p adjusted over the study's {len(slopes)} pooled gaps "
               f"({correction}); it weighs each rung by its seed pairs. {view.provenance()}.")
    data = slope_rows.assign(setting=lambda f: f["setting"].map(str), condition=lambda f: f["condition"].map(str))
    return Table("scaling", "Model size", caption, pd.DataFrame(rows).fillna(DASH), data)


def scaling_figure(view: StudyView, out_dir: Path) -> FigureFile | None:
    """Per ladder and setting, a row of panels: Δ to the baseline against parameters (log axis)
    at each evaluation, with 95% intervals, then the baseline's own top-1 against parameters with
    the references' (their own ladders) beside it."""
    frame = scaling_frame(view)
    if frame.empty:
        return None
    evaluations = _figure_evaluations(view)
    frame = frame[frame["evaluation"].isin(evaluations)]
    panels = [(ladder, setting) for ladder in dict.fromkeys(frame["ladder"])
              for setting in dict.fromkeys(frame.loc[frame["ladder"] == ladder, "setting"])]
    references = size_ladders(view, view.reference_names, view.references) if not view.references.empty else {}
    ref_frame = _reference_top1(view)
    style, context = _theme()
    with style, context:
        ncols = len(evaluations) + 1
        fig, axes = plt.subplots(len(panels), ncols, figsize=(4.4 * ncols, 3.4 * len(panels)), squeeze=False)
        fig.subplots_adjust(wspace=0.38, hspace=0.45)
        for r, (ladder, setting) in enumerate(panels):
            here = frame[(frame["ladder"] == ladder) & (frame["setting"] == setting)]
            where = f"{ladder}{', ' + _setting_label(view, setting) if setting else ''}"
            for c, evaluation in enumerate(evaluations):
                ax = axes[r][c]
                at = here[(here["evaluation"] == evaluation) & ~here["is_baseline"]]
                for condition, line in at.groupby("condition", sort=False):
                    look = method_style(condition[0])
                    line = line.sort_values("params")
                    lower = (line["delta"] - line["delta_low"]).to_numpy()
                    upper = (line["delta_high"] - line["delta"]).to_numpy()
                    ax.errorbar(line["params"], line["delta"], yerr=[lower, upper], color=look["color"],
                                marker=look["marker"], linestyle=look["linestyle"],
                                markerfacecolor=look["markerfacecolor"], capsize=3, linewidth=1.2,
                                label=condition[0])
                ax.axhline(0.0, color="black", linewidth=0.8)
                ax.set_xscale("log")
                ax.set_xlabel("parameters")
                ax.set_ylabel(f"Δ top-1 vs {view.baseline_key} (points)")
                ax.set_title(f"{where}: {'training length' if evaluation == TRAINED else evaluation}", fontsize=9)
            ax = axes[r][-1]
            base = here[(here["evaluation"] == TRAINED) & here["is_baseline"]].sort_values("params")
            look = method_style(view.baseline_key)
            ax.errorbar(base["params"], base["mean"], yerr=base["std"].fillna(0.0), color=look["color"],
                        marker=look["marker"], capsize=3, label=view.baseline_key)
            for i, (ref_ladder, rungs) in enumerate(references.items()):
                points = ref_frame[ref_frame["model"].isin([m for m, _ in rungs])].copy()
                points["params"] = points["model"].map(dict(rungs))
                points = points.sort_values("params")
                ref_look = reference_style(i)
                ax.errorbar(points["params"], points["mean"], yerr=points["std"].fillna(0.0),
                            color=ref_look["color"], marker=ref_look["marker"], linestyle=ref_look["linestyle"],
                            capsize=3, label=ref_ladder)
            ax.set_xscale("log")
            ax.set_xlabel("parameters")
            ax.set_ylabel("top-1 at the training length (%)")
            ax.set_title(f"{where}: the baseline's own top-1", fontsize=9)
            ax.legend(fontsize=7)
        handles, labels = axes[0][0].get_legend_handles_labels()
        if handles:
            axes[0][0].legend(handles, labels, fontsize=7, loc="best")
    caption = (f"Model size: each method's Δ top-1 to {view.baseline_key} against the parameter count (log axis), "
               f"at the training length and at the evaluation length furthest from it, with 95% intervals (seeds × "
               f"test items); last column: the baseline's own top-1 on the test split (mean ± sd over seeds) against "
               f"size, with the references' ladders beside it, so that the reader sees how close to its ceiling each "
               f"size is. The slopes are in the Model size table.")
    return _save(fig, out_dir, "fig_scaling", "Model size", caption)


def _reference_top1(view: StudyView) -> pd.DataFrame:
    """model, mean, std, n of each reference model's test top-1 (finished trials)."""
    if view.references.empty:
        return pd.DataFrame(columns=["model", "mean", "std", "n"])
    ok = view.references[view.references["status"] == "ok"]
    grouped = pd.to_numeric(ok["top1"], errors="coerce").groupby(ok["model"])
    return pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(), "n": grouped.count()}).reset_index()


def scaling_findings(view: StudyView) -> list[str]:
    """One sentence per ladder, setting and evaluation: for each method, whether its gap to the
    baseline grows, shrinks or shows no trend with size, with the slope and its interval."""
    slopes = slope_frame(view)
    if slopes.empty:
        return []
    frame = scaling_frame(view)
    sentences = []
    for (ladder, setting, evaluation), here in slopes.groupby(["ladder", "setting", "evaluation"], sort=False):
        rungs = frame[frame["ladder"] == ladder]
        low, high = int(rungs["params"].min()), int(rungs["params"].max())
        parts = [f"{row.method_key}, {row.trend} (slope {_signed(row.slope)} [{_signed(row.low)}, "
                 f"{_signed(row.high)}] points per 10× parameters, adjusted p {_p(row.p_adj)}; over the sizes "
                 f"Δ {_signed(row.mean_delta)} [{_signed(row.mean_low)}, {_signed(row.mean_high)}], adjusted p "
                 f"{_p(row.mean_p_adj)})" for row in here.itertuples()]
        where = f"{ladder}{', ' + _setting_label(view, setting) if setting else ''}"
        at = "the training length" if evaluation == TRAINED else evaluation
        sentences.append(f"Model size, {where}, at {at}: the gap to {view.baseline_key}: " + "; ".join(parts)
                         + f". Fitted over {low:,}–{high:,} parameters on this task; it says nothing measured about "
                           f"sizes or data outside that range.")
    return sentences
