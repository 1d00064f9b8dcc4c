"""Figures: each builder draws one figure from a StudyView and saves it as PNG (150 dpi) and SVG.

Every method keeps one look across figures (its registry position picks colour, marker and
line style), and methods differ by marker and line style as well as colour, so the figures
read in grayscale.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402
import matplotlib.transforms as mtransforms  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ..methods import METHODS, parse_method  # noqa: E402
from .aggregate import (COST_COLUMNS, accuracy_frame, cost_frame, lambda_frame, memory_metric,  # noqa: E402
                        resolution_frame, transfer_frame)
from . import stats  # noqa: E402
from .convergence import convergence_frame, rule_text  # noqa: E402
from .families import analysis_of  # noqa: E402
from .study_view import StudyView  # noqa: E402
from .tables import by_condition, condition_at, row_keys_of, side_factor, side_values  # noqa: E402

DPI = 150
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p"]
_LINESTYLES = ["-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 1)), (0, (8, 2)),
               (0, (3, 1, 1, 1)), (0, (5, 2, 1, 2)), (0, (2, 2)), (0, (6, 1, 2, 1)), (0, (4, 1))]


@dataclass
class FigureFile:
    name: str
    title: str
    caption: str
    png: Path
    svg: Path


def _registry_positions() -> tuple[list[str], list[str]]:
    """Method names and variants in registry order (read at call time: the registry is the
    one place a method is added)."""
    return (list(dict.fromkeys(m.name for m in METHODS.values())),
            list(dict.fromkeys(m.variant for m in METHODS.values())))


def _palette(size: int) -> list:
    """Seaborn's colour-blind palette while it has enough colours, else evenly spaced hues."""
    return sns.color_palette("colorblind", 10) if size <= 10 else sns.color_palette("husl", size)


def method_style(key: str) -> dict:
    """Colour, marker and line style of a method key, fixed by its registry position: colour and
    marker by method name, line style by variant, so any number of methods stay apart (colours
    beyond ten come from evenly spaced hues; a key outside the registry gets a stable colour
    from a darker palette). Markers are hollow for every other name and variant, so that two methods whose
    lines coincide still show both markers."""
    names, variants = _registry_positions()
    name, variant = parse_method(key)
    v_index = variants.index(variant) if variant in variants else len(variants) + zlib.crc32(variant.encode()) % 3
    if name in names:
        index = names.index(name)
        color = _palette(len(names))[index]
    else:
        # Outside the registry (results from another discbench): a darker palette, so it
        # never takes a registered method's colour.
        index = len(names) + zlib.crc32(name.encode()) % 10
        color = sns.color_palette("dark", 10)[index % 10]
    return {"color": color, "marker": _MARKERS[index % len(_MARKERS)],
            "linestyle": _LINESTYLES[v_index % len(_LINESTYLES)],
            "markerfacecolor": "none" if (index + v_index) % 2 else color}


_REFERENCE_COLORS = ("#333333", "#8c564b", "#7f7f7f", "#bcbd22", "#17becf")
_REFERENCE_MARKERS = ("P", "X", "h", "8", "*")


def reference_style(index: int) -> dict:
    """The look of a study's index-th reference model: dark, muted colours and their own markers,
    dash-dotted, so that a reference is never mistaken for a method."""
    return {"color": _REFERENCE_COLORS[index % len(_REFERENCE_COLORS)],
            "marker": _REFERENCE_MARKERS[index % len(_REFERENCE_MARKERS)], "linestyle": "-.",
            "markerfacecolor": _REFERENCE_COLORS[index % len(_REFERENCE_COLORS)]}


def _series_style(index: int) -> dict:
    palette = sns.color_palette("colorblind", 10)
    return {"color": palette[index % 10], "marker": _MARKERS[index % len(_MARKERS)],
            "linestyle": _LINESTYLES[index % len(_LINESTYLES)]}


def _save(fig: plt.Figure, out_dir: Path, name: str, title: str, caption: str) -> FigureFile:
    png, svg = Path(out_dir) / f"{name}.png", Path(out_dir) / f"{name}.svg"
    fig.savefig(png, dpi=DPI, bbox_inches="tight")
    fig.savefig(svg, bbox_inches="tight")
    plt.close(fig)
    return FigureFile(name, title, caption, png, svg)


def _plain(value: float) -> str:
    """1024 / 50000 / 0.00469: no scientific notation on tick labels."""
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.3g}"


def _label_log_ticks(axis, values: list[float]) -> None:
    """Ticks at the measured values, labelled plainly (matplotlib's minor log labels collide)."""
    if len(values) > 8:
        values = values[:: math.ceil(len(values) / 8)]
    axis.set_major_locator(mticker.FixedLocator(values))
    axis.set_major_formatter(mticker.FixedFormatter([_plain(v) for v in values]))
    axis.set_minor_locator(mticker.NullLocator())


def readable_log(axis) -> None:
    """Ticks of a log axis (ax.xaxis or ax.yaxis) at 1, 2, 5 × 10^k with plain labels, so short
    ranges still get labels and matplotlib's minor labels do not run into each other."""
    axis.set_major_locator(mticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(mticker.FuncFormatter(lambda v, _: _plain(v)))
    axis.set_minor_locator(mticker.NullLocator())


def _theme():
    return sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.1)


def _condition_name(view: StudyView, condition: tuple) -> str:
    extra = [f"{view.factor_label(f)}={v}" for f, v in zip(view.factors, condition[1:])]
    return condition[0] + (f" ({', '.join(extra)})" if extra else "")


# ----------------------------------------------------------------------------- accuracy

def _status_note(row: pd.Series) -> str:
    """'2 diverged', '1 failed': the trials of a condition that are not in its mean."""
    notes = []
    if row["diverged"]:
        notes.append(f"{int(row['diverged'])} diverged")
    if row["failed"]:
        notes.append(f"{int(row['failed'])} failed")
    if row["n"] == 0 and not notes:
        notes.append("no result")
    return ", ".join(notes)


def accuracy_figure(view: StudyView, out_dir: Path) -> FigureFile | None:
    """Top-1 per method and model. With one varying factor (tables.side_factor) each method row
    shows one point per factor value, one colour per value; otherwise one row per condition."""
    frame = accuracy_frame(view, "top1")
    if frame.empty or not (frame["n"] > 0).any():
        return None
    present = set(frame["condition"])
    values = side_values(view)
    keys = [k for k in row_keys_of(view) if any(condition_at(view, k, v) in present for v in values)]
    offsets = [0.0] if len(values) == 1 else list(np.linspace(-0.24, 0.24, len(values)))
    side = side_factor(view)
    style, context = _theme()
    with style, context:
        fig, axes = plt.subplots(1, len(view.models), sharey=True, squeeze=False,
                                 figsize=(4.2 * len(view.models) + 1.5,
                                          (0.42 + 0.2 * (len(values) - 1)) * len(keys) + 1.4))
        ok = view.trials[view.trials["status"] == "ok"]
        for ax, model in zip(axes[0], view.models):
            here = by_condition(frame[frame["model"] == model])
            for y, key in enumerate(keys):
                notes = []
                for j, value in enumerate(values):
                    condition = condition_at(view, key, value)
                    if condition not in here:
                        continue
                    row = here[condition]
                    look = method_style(condition[0]) if side is None else _series_style(j)
                    at = y + offsets[j]
                    seeds = ok[(ok["model"] == model) & (ok["condition"] == condition)]["top1"].astype(float)
                    ax.plot(seeds, np.full(len(seeds), at + (0.18 if side is None else 0.0)), linestyle="none",
                            marker=look["marker"], markersize=4, markerfacecolor="none", color="0.45", zorder=2)
                    if row["n"] > 0:
                        err = None
                        if not math.isnan(row["ci_low"]):
                            err = [[row["mean"] - row["ci_low"]], [row["ci_high"] - row["mean"]]]
                        ax.errorbar([row["mean"]], [at], xerr=err, marker=look["marker"], color=look["color"],
                                    ecolor="0.2" if side is None else look["color"], markeredgecolor="black",
                                    markersize=7, capsize=3, linestyle="none", zorder=3)
                        if row.get("delta_significant", False):
                            right = row["ci_high"] if not math.isnan(row["ci_high"]) else row["mean"]
                            ax.text(right, at, " *", ha="left", va="center", fontsize=11, fontweight="bold")
                    status = _status_note(row)
                    if status:
                        notes.append(status if side is None else f"{view.factor_label(side)}={value}: {status}")
                if notes:
                    # In the panel (not the shared tick label): statuses differ between models.
                    ax.text(0.01, y - 0.36, "; ".join(notes), transform=mtransforms.blended_transform_factory(
                        ax.transAxes, ax.transData), ha="left", va="center", fontsize=8, style="italic")
            baselines = [row for row in here.values() if row["is_baseline"] and row["n"] > 0]
            if len(baselines) == 1:  # with several (one per factor value) one line would mislead
                ax.axvline(baselines[0]["mean"], color="0.3", linestyle="--", linewidth=1,
                           label=f"{view.baseline_key} mean")
            ax.set_title(model)
            ax.set_xlabel("top-1 accuracy (%)")
            ax.set_yticks(range(len(keys)))
            ax.set_yticklabels([_condition_name(view, k) if side is None else k[0] for k in keys])
            ax.set_ylim(len(keys) - 0.5, -0.5)
            ax.margins(x=0.08)
        handles, labels = axes[0][0].get_legend_handles_labels()
        if side is not None:  # one entry per factor value, whichever panels show it
            handles += [Line2D([], [], linestyle="none", marker=_series_style(j)["marker"], markersize=7,
                               color=_series_style(j)["color"], markeredgecolor="black") for j in range(len(values))]
            labels += [f"{view.factor_label(side)}={value}" for value in values]
        if handles:  # below the panels: above them it would collide with the title
            fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize=8, frameon=False,
                       ncol=min(len(handles), 4))
        fig.suptitle(f"{view.name}: top-1 per method (mean, 95% t-CI over seeds; open markers: seeds)",
                     fontsize=10, x=0.02, ha="left")
        fig.tight_layout()
    by_value = (f" The values of {view.factor_label(side)} side by side in each method's row, one colour and "
                f"marker each (legend)." if side else "")
    caption = (f"Top-1 accuracy (%) per method and model: filled marker = mean over seeds that finished, bar = "
               f"95% t-interval of the mean (none with one seed), open markers = single seeds; * = the difference "
               f"to {view.baseline_key} (same model and factors) survives its family's correction (adjusted p < "
               f"{stats.ALPHA:g}, as in the accuracy table); dashed line = "
               f"the {view.baseline_key} mean (when the panel has one baseline); trials not in a mean are counted "
               f"in italics above their row (such as '1 diverged'); an empty row: no trial of that model."
               f"{by_value} {view.provenance()}.")
    return _save(fig, out_dir, "fig_accuracy", "Accuracy per method", caption)


def tradeoff_figure(view: StudyView, out_dir: Path) -> FigureFile | None:
    acc = accuracy_frame(view, "top1")
    cost = cost_frame(view)
    if acc.empty or cost.empty or cost["train_images_per_s"].isna().all():
        return None
    merged = acc.merge(cost[["model", "condition", "train_images_per_s"]], on=["model", "condition"])
    merged = merged[(merged["n"] > 0) & merged["train_images_per_s"].notna()]
    if merged.empty:
        return None
    style, context = _theme()
    with style, context:
        fig, axes = plt.subplots(1, len(view.models), squeeze=False, figsize=(5.2 * len(view.models) + 2.2, 4.2))
        for ax, model in zip(axes[0], view.models):
            here = merged[merged["model"] == model]
            for _, row in here.iterrows():
                look = method_style(row["method_key"])
                yerr = None if math.isnan(row["std"]) else row["std"]
                ax.errorbar(row["train_images_per_s"], row["mean"], yerr=yerr, marker=look["marker"],
                            color=look["color"], ecolor="0.2", markeredgecolor="black", markersize=8, capsize=3,
                            linestyle="none", label=_condition_name(view, row["condition"]))
            ax.set_title(model)
            ax.set_xlabel("training throughput (images/s)")
            ax.set_ylabel("top-1 accuracy (%)")
            ax.margins(x=0.15, y=0.15)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, title="method")
        fig.suptitle(f"{view.name}: accuracy against training throughput (up and right is better)", fontsize=10)
        fig.tight_layout()
    caption = ("Accuracy–cost trade-off: one point per method, mean top-1 (%) over seeds that finished "
               "(bar: ± one sample std) against mean training throughput (images/s). "
               f"{view.provenance()}.")
    return _save(fig, out_dir, "fig_tradeoff", "Accuracy against training throughput", caption)


def training_curves_figure(view: StudyView, out_dir: Path) -> FigureFile | None:
    epochs = view.results.epochs
    if epochs.empty:
        return None
    info = view.trials[["trial_id", "model", "condition", "status"]]
    data = epochs.merge(info, on="trial_id")
    panels = [(c, label) for c, label in (("train_loss", "training loss"), ("val_loss", "validation loss"),
                                          ("top1", "validation top-1 (%)")) if data[c].notna().any()]
    if data.empty or not panels:
        return None
    judged = convergence_frame(view)
    unconverged = set(judged.loc[judged["converged"].eq(False), "trial_id"])
    style, context = _theme()
    with style, context:
        fig, axes = plt.subplots(len(view.models), len(panels), squeeze=False,
                                 figsize=(4.4 * len(panels) + 2.4, 3.4 * len(view.models)))
        for r, model in enumerate(view.models):
            here = data[data["model"] == model]
            for c, (column, label) in enumerate(panels):
                ax = axes[r][c]
                for condition in view.conditions:
                    rows = here[here["condition"] == condition]
                    if rows.empty or rows[column].isna().all():
                        continue
                    curve = rows.groupby("epoch")[column].agg(["mean", "min", "max", "count"])
                    look = method_style(condition[0])
                    ax.plot(curve.index, curve["mean"], color=look["color"], marker=look["marker"],
                            markerfacecolor=look["markerfacecolor"], linestyle=look["linestyle"],
                            markersize=4.5, linewidth=1.3,
                            label=_condition_name(view, condition))
                    if (curve["count"] > 1).any():
                        ax.fill_between(curve.index, curve["min"], curve["max"], color=look["color"],
                                        alpha=0.10, linewidth=0)
                    for _, trial in rows[rows["status"] == "diverged"].groupby("trial_id"):
                        last = trial.dropna(subset=[column]).sort_values("epoch").tail(1)
                        ax.plot(last["epoch"], last[column], marker="x", color="black", markersize=9,
                                markeredgewidth=2, linestyle="none", zorder=4)
                    for _, trial in rows[rows["trial_id"].isin(unconverged)].groupby("trial_id"):
                        last = trial.dropna(subset=[column]).sort_values("epoch").tail(1)
                        ax.plot(last["epoch"], last[column], marker="o", markerfacecolor="none",
                                markeredgecolor=look["color"], markersize=8, markeredgewidth=1.2,
                                linestyle="none", zorder=4)
                ax.set_xlabel("epoch")
                ax.set_ylabel(label)
                if column.endswith("loss"):
                    positive = here[column].dropna()
                    if len(positive) and (positive > 0).all() and positive.max() / positive.min() > 20:
                        ax.set_yscale("log")
                ax.set_title(f"{model}: {label}" if len(view.models) > 1 else label)
                ax.xaxis.get_major_locator().set_params(integer=True)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, title="method")
        fig.suptitle(f"{view.name}: training curves (mean over seeds, band: min–max over seeds; ✕ = a trial's last "
                     f"epoch before it diverged; ○ = the last epoch of a trial that did not converge)", fontsize=10)
        fig.tight_layout()
    caption = ("Training curves per method: per-epoch " + ", ".join(label for _, label in panels)
               + ", mean over seeds with the min–max band across seeds; a black ✕ marks a diverged trial's last "
                 f"recorded epoch, an open circle the last epoch of each finished trial that did not converge "
                 f"({len(unconverged)} of {len(judged)}; the rule: {rule_text(analysis_of(view).convergence)}). "
                 f"{view.provenance()}.")
    return _save(fig, out_dir, "fig_training_curves", "Training curves", caption)


# ----------------------------------------------------------------------------- resolution

def resolution_figure(view: StudyView, out_dir: Path) -> FigureFile | None:
    frame = resolution_frame(view)
    if frame.empty or frame["resolution"].nunique() < 2:  # a scaling plot needs two resolutions
        return None
    panels = [(name, label) for name, label in (("infer_images_per_s", "inference images/s"),
                                                ("train_images_per_s", "training images/s"),
                                                (memory_metric(frame), COST_COLUMNS[memory_metric(frame)]))
              if (frame["name"] == name).any()]
    series = list(dict.fromkeys(zip(frame["model"], frame["method_key"].fillna(""), frame["batch_size"])))
    single_method = len({s[1] for s in series}) == 1
    single_batch = len({s[2] for s in series}) == 1
    style, context = _theme()
    with style, context:
        fig, axes = plt.subplots(1, len(panels), squeeze=False, figsize=(4.8 * len(panels) + 2.0, 4.2))
        for ax, (name, label) in zip(axes[0], panels):
            oom_marked = False
            for index, (model, key, batch) in enumerate(series):
                rows = frame[(frame["model"] == model) & (frame["method_key"].fillna("") == key)
                             & (frame["batch_size"] == batch) & (frame["name"] == name)].sort_values("resolution")
                if rows.empty:
                    continue
                look = _series_style(index)
                tag = model + ("" if single_method or not key else f" {key}") + \
                    ("" if single_batch else f" b={int(batch)}")
                ok = rows[rows["status"] == "ok"]
                # The line stops at the first out-of-memory resolution.
                first_oom = rows.loc[rows["status"] == "oom", "resolution"].min()
                if not math.isnan(first_oom):
                    ok = ok[ok["resolution"] < first_oom]
                ax.plot(ok["resolution"], ok["value"], color=look["color"], marker=look["marker"],
                        linestyle=look["linestyle"], linewidth=1.5, markersize=6, label=tag)
                top = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
                for resolution in rows.loc[rows["status"] == "oom", "resolution"]:
                    ax.plot([resolution], [0.96], marker="X", markersize=10, color=look["color"],
                            markeredgecolor="black", transform=top, clip_on=False, linestyle="none")
                    ax.text(resolution, 0.90, "OOM", transform=top, ha="center", va="top", fontsize=7)
                    oom_marked = True
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            readable_log(ax.yaxis)
            if oom_marked:
                # Headroom (a factor 4 on the log axis) so the OOM marks sit above every data point.
                low, high = ax.get_ylim()
                ax.set_ylim(low, high * 4)
            resolutions = sorted(set(frame["resolution"].dropna()))
            _label_log_ticks(ax.xaxis, resolutions)
            ax.tick_params(axis="x", labelrotation=35)
            ax.set_xlabel("resolution (px)")
            ax.set_ylabel(label)
            ax.set_title(label + ("  (✕ = out of memory)" if oom_marked else ""))
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
        fig.suptitle(f"{view.name}: throughput and memory against resolution (log scales)", fontsize=10)
        fig.tight_layout()
    ids = view.results.measurements.loc[view.results.measurements["quantity"].isin(["throughput", "memory"]), "trial_id"]
    caption = ("Resolution scaling (as the Vim paper's Figure 1): throughput and peak memory against input "
               "resolution, both axes logarithmic, one line per model; a ✕ at the top marks a resolution "
               f"that ran out of memory, where the line stops. {view.provenance(ids)}.")
    return _save(fig, out_dir, "fig_resolution", "Resolution scaling", caption)


# ----------------------------------------------------------------------------- transfer, λ

def _settings(view: StudyView, frame: pd.DataFrame) -> list[tuple]:
    """(model, factor values) panels that have rows, in the study's order."""
    combos = list(dict.fromkeys(c[1:] for c in view.conditions))
    return [(m, v) for m in view.models for v in combos
            if _has_factors(frame[frame["model"] == m], v).any()]


def _has_factors(frame: pd.DataFrame, values: tuple) -> np.ndarray:
    """Rows whose condition has these factor values (conditions are tuples: pandas cannot
    compare a column of them with one)."""
    return np.array([c[1:] == values for c in frame["condition"]], dtype=bool)


def _is_condition(frame: pd.DataFrame, condition: tuple) -> np.ndarray:
    return np.array([c == condition for c in frame["condition"]], dtype=bool)


def _setting_title(view: StudyView, model: str, values: tuple) -> str:
    extra = ", ".join(f"{view.factor_label(f)}={v}" for f, v in zip(view.factors, values))
    return model + (f"\n{extra}" if extra else "")


def transfer_figure(view: StudyView, out_dir: Path) -> FigureFile | None:
    """Top-1 against evaluation length L′, one line per method, one column per model and factor
    combination; the training length marked. When the study ran the baseline, a second row
    shows each method's difference to it at every L′ with its 95% interval, so that where the
    methods part is seen at a glance (a filled marker: the difference survives its family's correction)."""
    frame = transfer_frame(view)
    if frame.empty:
        return None
    panels = _settings(view, frame)
    with_delta = bool(frame["delta"].notna().any())
    lengths = sorted(set(frame["length"]))
    log_x = lengths[-1] / lengths[0] >= 4
    style, context = _theme()
    with style, context:
        fig, axes = plt.subplots(2 if with_delta else 1, len(panels), squeeze=False, sharey="row",
                                 figsize=(4.6 * len(panels) + 2.4, 3.8 * (2 if with_delta else 1)))
        for column, (model, values) in enumerate(panels):
            here = frame[(frame["model"] == model).to_numpy() & _has_factors(frame, values)]
            top = axes[0][column]
            in_panel = [c for c in view.conditions if c[1:] == values]
            for slot, condition in enumerate(in_panel):
                curve = here[_is_condition(here, condition)].sort_values("length")
                if curve.empty:
                    continue
                look = method_style(condition[0])
                top.plot(curve["length"], curve["mean"], color=look["color"], marker=look["marker"],
                         markerfacecolor=look["markerfacecolor"], linestyle=look["linestyle"], linewidth=1.4,
                         markersize=5.5, label=condition[0])
                band = curve[curve["ci_low"].notna()]
                if len(band):  # an accuracy's interval beyond 0 or 100 % says nothing more
                    top.fill_between(band["length"], band["ci_low"].clip(0, 100), band["ci_high"].clip(0, 100),
                                     color=look["color"], alpha=0.12, linewidth=0)
                if with_delta:
                    _transfer_deltas(axes[1][column], curve, look, slot - (len(in_panel) - 1) / 2)
            for ax in axes[:, column]:
                for trained in sorted(set(here["train_length"].dropna())):
                    ax.axvline(trained, color="black", linestyle=":", linewidth=1.2)
                    ax.text(trained, 0.02, f" trained at L={int(trained)}",
                            transform=mtransforms.blended_transform_factory(ax.transData, ax.transAxes),
                            ha="left", va="bottom", fontsize=7.5)
                if log_x:
                    ax.set_xscale("log", base=2)
                _label_log_ticks(ax.xaxis, lengths)
                ax.set_xlabel("evaluation length L′ (tokens)")
            top.set_ylabel("top-1 accuracy (%)")
            top.set_title(_setting_title(view, model, values), fontsize=9)
            if with_delta:
                axes[1][column].axhline(0, color="black", linewidth=0.8)
                axes[1][column].set_ylabel(f"Δ top-1 vs {view.baseline_key} (points)")
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, title="method")
        fig.suptitle(f"{view.name}: top-1 against evaluation length (Δ scaled by L/L′)", fontsize=10)
        fig.tight_layout()
    ids = view.results.measurements.loc[view.results.measurements["quantity"] == "transfer", "trial_id"]
    caption = ("Sampling-rate transfer: top-1 (%) of each trained model evaluated at sequence length L′ with its "
               "step Δ scaled by L/L′ (L: training length, dotted line), one line per method (mean over seeds; "
               "band: 95% t-interval of the mean, clipped to 0–100 %, none with one seed)"
               + (f"; below, each method's difference to {view.baseline_key} at the same L′ with its 95% interval "
                  "as in the transfer table, methods side by side at each L′, a filled marker where the difference "
                  "survives its family's correction (adjusted p < 0.05, as in the transfer table)" if with_delta else "")
               + f"; x axis {'log₂' if log_x else 'linear'}. {view.provenance(ids)}.")
    return _save(fig, out_dir, "fig_transfer", "Accuracy against evaluation length", caption)


def _transfer_deltas(ax, curve: pd.DataFrame, look: dict, slot: float) -> None:
    """One method's Δ against the baseline at each L′: marker and 95% interval, nudged sideways
    by `slot` (its place among the panel's methods, centred on 0) so that methods at one L′ do
    not hide each other."""
    rows = curve[curve["delta"].notna()]
    if rows.empty:
        return
    nudge = 2 ** (slot * 0.025)  # multiplicative, as the x axis may be log₂
    x = rows["length"].to_numpy(float) * nudge
    low = (rows["delta"] - rows["delta_low"]).fillna(0).to_numpy(float)
    high = (rows["delta_high"] - rows["delta"]).fillna(0).to_numpy(float)
    ax.errorbar(x, rows["delta"], yerr=[low, high], color=look["color"], linestyle="none", marker=look["marker"],
                markersize=5, markerfacecolor="none", elinewidth=1.0, capsize=2)
    excluded = rows["delta_significant"].to_numpy(bool)
    if excluded.any():
        ax.plot(x[excluded], rows["delta"].to_numpy(float)[excluded], linestyle="none", marker=look["marker"],
                markersize=5, color=look["color"])


def lambda_figure(view: StudyView, out_dir: Path) -> FigureFile | None:
    """Learned λ against layer, one line per method, one panel per model × factor combination
    (rows) and scan direction (columns)."""
    frame = lambda_frame(view)
    if frame.empty:
        return None
    panels = _settings(view, frame)
    directions = sorted(set(frame["direction"]), key=lambda d: (d != "forward", d))
    style, context = _theme()
    with style, context:
        fig, axes = plt.subplots(len(panels), len(directions), squeeze=False, sharey=True,
                                 figsize=(4.6 * len(directions) + 2.4, 3.4 * len(panels)))
        for r, (model, values) in enumerate(panels):
            for c, direction in enumerate(directions):
                ax = axes[r][c]
                here = frame[((frame["model"] == model) & (frame["direction"] == direction)).to_numpy()
                             & _has_factors(frame, values)]
                for condition in [k for k in view.conditions if k[1:] == values]:
                    curve = here[_is_condition(here, condition)].sort_values("layer")
                    if curve.empty:
                        continue
                    look = method_style(condition[0])
                    ax.errorbar(curve["layer"], curve["mean"], yerr=curve["std"].fillna(0.0), color=look["color"],
                                marker=look["marker"], markerfacecolor=look["markerfacecolor"],
                                linestyle=look["linestyle"], linewidth=1.3, markersize=5, capsize=2,
                                label=condition[0])
                    spread = curve[curve["spread"].notna()]
                    if len(spread):
                        ax.fill_between(spread["layer"], spread["mean"] - spread["spread"],
                                        spread["mean"] + spread["spread"], color=look["color"], alpha=0.10,
                                        linewidth=0)
                ax.set_xlabel("layer")
                ax.set_ylabel("learned λ")
                ax.set_title(f"{_setting_title(view, model, values)}: {direction}".replace("\n", ", "), fontsize=9)
                ax.xaxis.get_major_locator().set_params(integer=True)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, title="method")
        fig.suptitle(f"{view.name}: learned λ per layer", fontsize=10)
        fig.tight_layout()
    ids = view.results.measurements.loc[view.results.measurements["quantity"] == "lambda", "trial_id"]
    caption = ("Learned λ per layer (dimensionless), one panel per scan direction: line = mean over seeds of each "
               "trial's per-layer mean λ, bar = sd of those means over seeds, band = ± the within-layer sd of λ "
               f"averaged over seeds. {view.provenance(ids)}.")
    return _save(fig, out_dir, "fig_lambda", "Learned λ per layer", caption)
