"""Table builders: each takes a StudyView and returns a `Table` (or None when the study has
nothing for it). A Table holds the formatted cells a reader sees (`display`) and the numbers
behind them in tidy form (`data`, what the CSV gets). Rendering is in render.py.

Units: accuracy in % (as trials.top1/top5 record it), throughput in images/s, memory in MiB,
scan time in ms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..methods import METHODS
from . import families, published, stats
from .aggregate import (COST_COLUMNS, accuracy_frame, cost_frame, lambda_frame, memory_metric, resolution_frame,
                        transfer_frame)
from .convergence import convergence_frame, rule_text
from .study_view import StudyView, divergence_text

DASH = "—"


@dataclass
class Table:
    """name: file stem; display: strings, one row per table row; data: numbers (CSV);
    bold: (row position, column) cells to emphasise (best per column)."""

    name: str
    title: str
    caption: str
    display: pd.DataFrame
    data: pd.DataFrame
    bold: set[tuple[int, str]] = field(default_factory=set)


# ----------------------------------------------------------------------------- formatting

def _num(value: float, digits: int = 2, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return text.replace("-", "−")


def _mean_std(mean: float, std: float, n: int, digits: int = 2) -> str:
    if n == 0:
        return DASH
    if n == 1:
        return f"{_num(mean, digits)} (n=1)"
    return f"{_num(mean, digits)} ± {_num(std, digits)} (n={n})"


def _ratio(value: float) -> str:
    return DASH if value is None or math.isnan(value) else f"×{value:.2f}"


def _magnitude(value: float) -> str:
    """Throughput-like numbers with 3 significant digits (no scientific notation)."""
    if value is None or math.isnan(value):
        return DASH
    if value == 0:
        return "0"
    digits = max(0, 2 - int(math.floor(math.log10(abs(value)))))
    return f"{value:,.{digits}f}"


def by_condition(frame: pd.DataFrame) -> dict[tuple, pd.Series]:
    """Rows keyed by their condition tuple (pandas would read a tuple label as a multi-level key)."""
    return {row["condition"]: row for _, row in frame.iterrows()}


def _prefix(view: StudyView, model: str, column: str) -> str:
    return f"{model}: {column}" if len(view.models) > 1 else column


def _dataset(view: StudyView) -> str:
    found = sorted({str(v) for v in view.trials["dataset"].dropna()})
    if not found and "config.data.dataset" in view.trials:
        found = sorted({str(v) for v in view.trials["config.data.dataset"].dropna()})
    return ", ".join(found) or "unknown dataset"


def _baseline_sentence(view: StudyView) -> str:
    if view.has_baseline:
        return ""
    return (f" The baseline {view.baseline_key} is absent from this study, so no differences to it "
            f"are shown.")


# ----------------------------------------------------------------------------- accuracy

EXCLUDES_ZERO_MARK = "*"
DELTA_NOTE = (f"{EXCLUDES_ZERO_MARK} after a Δ: the difference survives its family's correction (adjusted "
              f"p < {stats.ALPHA:g}); the interval beside it is the unadjusted 95% interval and 'p' gives the raw "
              f"→ adjusted p-value. MDE: the minimum detectable effect of the design, the smallest true "
              f"difference these seeds would detect with {stats.MDE_POWER:.0%} power in a two-sided t-test at the "
              f"family's α/m (m tests), given the measured spread (paired seeds: sd of the paired differences; "
              f"otherwise the pooled sd); it describes the design's power, not the size of any difference. "
              f"One seed on a side gives no interval, test or MDE.")
INTERVAL_NOTE = ("a paired t-interval over the seeds both sides share (at least 2), else Welch's; when every seed's "
                 "per-example correctness is recorded ('seeds × items') it also covers the test items' own "
                 "sampling (seed and item terms added in quadrature, see stats.crossed_difference)")


def side_factor(view: StudyView) -> str | None:
    """The factor shown side by side (a column group per value) when the study varies exactly
    one factor besides method, model and seed; None otherwise."""
    return view.factors[0] if len(view.factors) == 1 else None


def side_values(view: StudyView) -> list:
    """The side factor's values in the order the study's conditions have them ([None] without)."""
    if side_factor(view) is None:
        return [None]
    return list(dict.fromkeys(c[1] for c in view.conditions))


def _group_prefix(view: StudyView, model: str, value) -> str:
    """'' / 'model: ' / 'conv=causal: ' / 'model, conv=causal: ' before a column group's names."""
    parts = [model] if len(view.models) > 1 else []
    if value is not None:
        parts.append(f"{view.factor_label(side_factor(view))}={value}")
    return ", ".join(parts) + ": " if parts else ""


def row_keys_of(view: StudyView) -> list[tuple]:
    """Table rows: (method_key,) per method with a side factor, else every condition."""
    if side_factor(view) is None:
        return list(view.conditions)
    return [(k,) for k in dict.fromkeys(c[0] for c in view.conditions)]


def condition_at(view: StudyView, row_key: tuple, value) -> tuple:
    return row_key if value is None else (row_key[0], value)


def _row_label_columns(view: StudyView, row_keys: list[tuple]) -> pd.DataFrame:
    """The method column, and a column per factor that the row keys carry (full conditions)."""
    display = pd.DataFrame({"method": [k[0] for k in row_keys]})
    carried = view.factors if row_keys and len(row_keys[0]) > 1 else []
    for i, factor in enumerate(carried):
        display[view.factor_label(factor)] = [str(k[i + 1]) for k in row_keys]
    return display


def delta_text(row: pd.Series, view: StudyView) -> str:
    """'+3.00* [+0.52, +5.48] (paired t)': Δ to the baseline with its raw interval, marked when it
    survives its family's correction."""
    if row["is_baseline"]:
        return "baseline"
    if math.isnan(row["delta"]):
        return DASH if view.baseline_of(row["condition"]) else "no baseline"
    mark = EXCLUDES_ZERO_MARK if row.get("delta_significant", False) else ""
    if row["delta_how"] == "n=1":
        return f"{_num(row['delta'], signed=True)} (n=1, no CI)"
    return (f"{_num(row['delta'], signed=True)}{mark} [{_num(row['delta_low'], signed=True)}, "
            f"{_num(row['delta_high'], signed=True)}] ({row['delta_how']})")


def _p(value: float) -> str:
    if value is None or value != value:
        return DASH
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def p_text(row: pd.Series) -> str:
    """'0.012 → 0.048': the raw and the family-adjusted p of the Δ."""
    if row["is_baseline"]:
        return "baseline"
    if row.get("delta_p") != row.get("delta_p"):
        return DASH
    return f"{_p(row['delta_p'])} → {_p(row.get('delta_p_adj'))}"


def mde_text(row: pd.Series) -> str:
    if row["is_baseline"]:
        return "baseline"
    if math.isnan(row["delta"]):
        return DASH
    mde = row.get("delta_mde", math.nan)
    return "none (n<2)" if mde != mde else _num(mde)


def divergence_cell(row: pd.Series) -> str:
    """'2/3 = 67% [9%, 99%]; Fisher p 0.400 → 1.000' (the p against the baseline's rate)."""
    if not row["finished"]:
        return DASH
    text = (f"{int(row['diverged'])}/{int(row['finished'])} = {row['diverged_rate']:.0%} "
            f"[{row['diverged_low']:.0%}, {row['diverged_high']:.0%}]")
    if not row["is_baseline"] and row["diverged_p"] == row["diverged_p"]:
        text += f"; Fisher p {_p(row['diverged_p'])} → {_p(row['diverged_p_adj'])}"
    return text


def fallback_text(row: pd.Series) -> str:
    if row["is_baseline"]:
        return "baseline"
    if row["delta_fallback"] != row["delta_fallback"]:
        return DASH
    return (f"{_num(row['delta_fallback'], signed=True)} [{_num(row['delta_fallback_low'], signed=True)}, "
            f"{_num(row['delta_fallback_high'], signed=True)}] ({row['delta_fallback_how']})")


def families_caption(view: StudyView, frames: list[pd.DataFrame]) -> str:
    """The families the frames' comparisons belong to and their corrections, as a sentence."""
    found = families.families_in(view, frames)
    return (" " + families.families_text(found)) if found else ""


def accuracy_table(view: StudyView) -> Table:
    """Method rows; a column group per model (and per value of the one varying factor, side by
    side): top-1 and top-5 mean ± sd, Δ top-1 to the baseline with its interval and MDE."""
    metrics = [m for m in ("top1", "top5") if m in view.trials and view.trials[m].notna().any()]
    frames = {m: accuracy_frame(view, m) for m in metrics or ["top1"]}
    row_keys = row_keys_of(view)
    display = _row_label_columns(view, row_keys)
    bold: set[tuple[int, str]] = set()
    for model in view.models:
        for value in side_values(view):
            prefix = _group_prefix(view, model, value)
            conditions = [condition_at(view, k, value) for k in row_keys]
            for metric, frame in frames.items():
                name = {"top1": "top-1 (%)", "top5": "top-5 (%)"}[metric]
                here = by_condition(frame[frame["model"] == model])
                cells, deltas, mdes, ps, rates, fallbacks = [], [], [], [], [], []
                for condition in conditions:
                    if condition not in here:
                        for column in (cells, deltas, mdes, ps, rates, fallbacks):
                            column.append(DASH)
                        continue
                    row = here[condition]
                    cell = _mean_std(row["mean"], row["std"], int(row["n"]))
                    if row["diverged"]:
                        cell = row["diverged_text"] if row["n"] == 0 else f"{cell}; {row['diverged_text']}"
                    elif row["n"] == 0:
                        cell = "failed" if row["failed"] else "no result"
                    cells.append(cell)
                    deltas.append(delta_text(row, view))
                    mdes.append(mde_text(row))
                    if metric == "top1":
                        ps.append(p_text(row))
                        rates.append(divergence_cell(row))
                        fallbacks.append(fallback_text(row))
                column = prefix + name
                display[column] = cells
                means = [here[c]["mean"] if c in here else math.nan for c in conditions]
                if np.isfinite(means).any():
                    best = float(np.nanmax(means))
                    bold |= {(i, column) for i, m in enumerate(means) if m == best}
                if metric == "top1" and view.has_baseline:
                    display[prefix + f"Δ top-1 vs {view.baseline_key} [95% CI]"] = deltas
                    display[prefix + "p (raw → adjusted)"] = ps
                    display[prefix + "MDE (points)"] = mdes
                    model_rows = frame[frame["model"] == model]
                    if (model_rows["diverged"] > 0).any():
                        display[prefix + "diverged [95% CI]"] = rates
                        fallback = model_rows["fallback"].iloc[0]
                        display[prefix + f"Δ top-1, a diverged seed = {fallback}"] = fallbacks
    data = _accuracy_data(view, frames)
    excluded = int((view.trials["status"] == "diverged").sum())
    side = side_factor(view)
    caption = (
        f"Accuracy on {_dataset(view)} (test split, %): mean ± sample standard deviation over seeds, "
        f"n = seeds that finished."
        + (f" The values of {view.factor_label(side)} side by side, one column group each." if side else "")
        + f" Δ is the difference to {view.baseline_key} with the same model"
        f"{' and factors' if view.factors else ''}, with a 95% confidence interval: {INTERVAL_NOTE}. "
        + (DELTA_NOTE + families_caption(view, [frames.get("top1", pd.DataFrame())]) + " " if view.has_baseline else "")
        + f"Best mean per column in bold; — : no trial of that combination.{_baseline_sentence(view)}"
        + (f" {excluded} diverged trial(s) are shown as diverged and excluded from the means and the per-protocol "
           f"Δ; 'diverged' gives the rate with its exact (Clopper–Pearson) interval and Fisher's exact test "
           f"against {view.baseline_key}'s rate, adjusted within the family “{families.DIVERGENCE_FAMILY}”; the "
           f"last column is the Δ when every diverged seed scores the named fallback instead (sensitivity)."
           if excluded else "")
        + f" Measured on {view.provenance()}.")
    return Table("accuracy", "Accuracy", caption, display, data, bold)


_DATA_COLUMNS = ("mean", "std", "n", "ci_low", "ci_high", "delta", "delta_low", "delta_high", "delta_how",
                 "delta_p", "delta_excludes_zero", "family", "family_primary", "correction", "family_size",
                 "delta_p_adj", "delta_significant", "delta_mde", "equivalence_p", "equivalence_p_adj", "equivalent")
_DIVERGENCE_COLUMNS = ("diverged", "failed", "finished", "diverged_rate", "diverged_low", "diverged_high",
                       "diverged_p", "diverged_p_adj", "fallback", "delta_fallback", "delta_fallback_low",
                       "delta_fallback_high", "delta_fallback_how")


def _accuracy_data(view: StudyView, frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    keys = ["model", "method_key", *view.factors]
    merged = None
    for metric, frame in frames.items():
        columns = [c for c in _DATA_COLUMNS if c in frame]
        part = frame[keys + columns].rename(columns={c: f"{metric}_{c}" for c in columns})
        merged = part if merged is None else merged.merge(part, on=keys)
    first = frames.get("top1", next(iter(frames.values())))
    merged = merged.merge(first[keys + [c for c in _DIVERGENCE_COLUMNS if c in first]], on=keys)
    return merged.rename(columns={f: view.factor_label(f) for f in view.factors})


# ----------------------------------------------------------------------------- transfer

def transfer_table(view: StudyView) -> Table | None:
    """Top-1 against evaluation length L′ (sampling-rate transfer): method rows (factor columns
    as in the accuracy table); per model and L′ the mean ± sd, Δ to the baseline and its MDE."""
    frame = transfer_frame(view)
    if frame.empty:
        return None
    conditions = [c for c in view.conditions if c in set(frame["condition"])]
    display = _row_label_columns(view, conditions)
    for model in view.models:
        in_model = frame[frame["model"] == model]
        trained = sorted(set(in_model["train_length"].dropna()))
        for length in sorted(set(in_model["length"])):
            here = by_condition(in_model[in_model["length"] == length])
            tag = " (training)" if trained == [length] else ""
            prefix = (f"{model}: " if len(view.models) > 1 else "") + f"L′={length}{tag}: "
            display[prefix + "top-1 (%)"] = [
                _mean_std(here[c]["mean"], here[c]["std"], int(here[c]["n"])) if c in here else DASH
                for c in conditions]
            if view.has_baseline:
                display[prefix + f"Δ vs {view.baseline_key} [95% CI]"] = [
                    delta_text(here[c], view) if c in here else DASH for c in conditions]
                display[prefix + "p (raw → adjusted)"] = [p_text(here[c]) if c in here else DASH for c in conditions]
                display[prefix + "MDE"] = [mde_text(here[c]) if c in here else DASH for c in conditions]
    data = frame.drop(columns=["condition", "comparison"]).rename(
        columns={f: view.factor_label(f) for f in view.factors})
    trained = sorted({int(v) for v in frame["train_length"].dropna()})
    ids = view.results.measurements.loc[view.results.measurements["quantity"] == "transfer", "trial_id"]
    caption = (
        f"Sampling-rate transfer: top-1 (%) of each trained model evaluated at sequence length L′ "
        f"(training length L = {', '.join(map(str, trained)) or 'unknown'}; the step Δ scaled by L/L′), "
        f"mean ± sample std over seeds. Δ: the difference to {view.baseline_key} at the same L′, model"
        f"{' and factors' if view.factors else ''}, with a 95% interval: {INTERVAL_NOTE}. At the training "
        f"length the comparison is the accuracy table's and takes its family's verdict. "
        + (DELTA_NOTE + families_caption(view, [frame]) if view.has_baseline else "")
        + f"{_baseline_sentence(view)} Measured on {view.provenance(ids)}.")
    return Table("transfer", "Accuracy against evaluation length", caption, display, data)


# ----------------------------------------------------------------------------- learned λ

def lambda_table(view: StudyView) -> Table | None:
    """Learned λ per layer and direction: mean ± sd over seeds of each trial's per-layer mean,
    and the within-layer spread."""
    frame = lambda_frame(view)
    if frame.empty:
        return None
    directions = sorted(set(frame["direction"]), key=lambda d: (d != "forward", d))
    order = {c: i for i, c in enumerate(view.conditions)}
    frame = frame.assign(_c=frame["condition"].map(order), _d=frame["direction"].map(directions.index),
                         _m=frame["model"].map(view.models.index))
    frame = frame.sort_values(["_m", "_c", "_d", "layer"]).drop(columns=["_c", "_d", "_m"])
    display = pd.DataFrame({"model": frame["model"]}) if len(view.models) > 1 else pd.DataFrame(index=frame.index)
    display["method"] = frame["method_key"]
    for factor in view.factors:
        display[view.factor_label(factor)] = frame[factor].astype(str)
    display["direction"] = frame["direction"]
    display["layer"] = frame["layer"].astype(int).astype(str)
    display["λ: mean ± sd over seeds"] = [_mean_std(m, s, int(n), 3)
                                          for m, s, n in zip(frame["mean"], frame["std"], frame["n"])]
    display["within-layer sd of λ"] = [_num(v, 3) for v in frame["spread"]]
    ids = view.results.measurements.loc[view.results.measurements["quantity"] == "lambda", "trial_id"]
    caption = ("Learned λ per layer and scan direction (dimensionless): the mean over seeds of each trial's "
               "per-layer mean λ ± the sample sd of those means over seeds (n = seeds), and the within-layer "
               "sd of λ (over every token of the test split, as each trial recorded it; λ is one value per "
               "token, shared by the channels), averaged over seeds. "
               f"Measured on {view.provenance(ids)}.")
    data = frame.drop(columns=["condition"]).rename(columns={f: view.factor_label(f) for f in view.factors})
    return Table("lambda", "Learned λ per layer", caption, display.reset_index(drop=True),
                 data.reset_index(drop=True))


# ----------------------------------------------------------------------------- convergence

def convergence_table(view: StudyView) -> Table | None:
    """Per model, method and factors: how many finished trials converged by the study's rule,
    and the window's top-1 rise and loss drop (mean, then the range over seeds). The CSV holds
    one row per trial."""
    frame = convergence_frame(view)
    if frame.empty:
        return None
    spec = families.analysis_of(view).convergence
    # the references after the methods, each its own row
    order = {c: i for i, c in enumerate(view.all_conditions)}
    frame = frame.assign(_m=frame["model"].map(view.all_models.index), _c=frame["condition"].map(order))
    rows = []
    for (_, _, model, condition), trials in frame.groupby(["_m", "_c", "model", "condition"], sort=True):
        judged = trials[trials["converged"].notna()]
        row = {"model": model} if len(view.models) > 1 else {}
        row["method"] = condition[0]
        row.update({view.factor_label(f): str(v) for f, v in zip(view.factors, condition[1:])})
        row["converged"] = f"{int(judged['converged'].astype(bool).sum())} of {len(trials)}"
        row["epochs"] = "/".join(str(e) for e in sorted(set(trials["epochs"])))
        final = trials["final_loss"].mean()
        row["final training loss"] = "—" if not math.isfinite(final) else (f"{final:.1e}" if final < 1e-3
                                                                          else _num(final, 4))
        for column, label, scale, digits in (("top1_rise", "top-1 rise over the window (points)", 1.0, 2),
                                             ("loss_drop", "training-loss drop over the window (%)", 100.0, 1)):
            values = trials[column].dropna() * scale
            row[label] = ("—" if values.empty else f"{_num(values.mean(), digits, signed=column == 'top1_rise')} "
                          f"[{_num(values.min(), digits)}, {_num(values.max(), digits)}]")
        rows.append(row)
    caption = (f"Convergence of every finished trial by the study's rule (analysis.convergence): a trial converged "
               f"when, {rule_text(spec)}. converged: trials that pass, of those that finished (diverged trials are "
               f"in the divergence columns); final training loss: mean over seeds; rise and drop: mean over seeds "
               f"[min, max] (negative: a fall, a rise). A trial with fewer "
               f"epochs than the window is not judged. The CSV has one row per trial. {view.provenance()}.")
    data = frame.drop(columns=["_m", "_c"]).assign(condition=[", ".join(map(str, c)) for c in frame["condition"]])
    return Table("convergence", "Convergence", caption, pd.DataFrame(rows).fillna(DASH), data.reset_index(drop=True))


# ----------------------------------------------------------------------------- references

def _reference_rows(view: StudyView) -> pd.DataFrame:
    """The trials a references table shows: every reference's, and each model's baseline ones."""
    baseline = view.trials[view.trials["method_key"] == view.baseline_key].assign(
        label=lambda t: [f"{view.baseline_key} ({m})" for m in t["model"]], kind="method")
    references = view.references.assign(label=view.references["model"], kind="reference")
    return pd.concat([references, baseline], ignore_index=True)


def references_table(view: StudyView) -> Table | None:
    """The study's references (models without a discretization: same data, splits, recipe and
    tuning) beside the baseline: parameters, top-1 on the test split and, with transfer, at each L′."""
    if view.references.empty:
        return None
    rows_in = _reference_rows(view)
    m = view.results.measurements
    transfer = m[(m["quantity"] == "transfer") & (m["name"] == "top1")] if not m.empty else m
    lengths = sorted({int(x) for x in pd.to_numeric(transfer.get("length", pd.Series(dtype=float)),
                                                      errors="coerce").dropna()})
    rows, data = [], []
    for label, trials in rows_in.groupby("label", sort=False):
        ok = trials[trials["status"] == "ok"]
        top1 = pd.to_numeric(ok["top1"], errors="coerce").dropna()
        params = pd.to_numeric(trials.get("params", pd.Series(dtype=float)), errors="coerce").dropna()
        row = {"model": label, "parameters": f"{int(params.iloc[0]):,}" if not params.empty else DASH,
               "diverged": f"{int((trials['status'] == 'diverged').sum())} of {len(trials)}",
               "top-1 (%)": _mean_std(top1.mean(), top1.std(), len(top1))}
        record = {"model": label, "kind": trials["kind"].iloc[0], "top1_mean": top1.mean(), "top1_sd": top1.std(),
                  "n": len(top1)}
        for length in lengths:
            here = transfer[transfer["trial_id"].isin(ok["trial_id"]) &
                            (pd.to_numeric(transfer["length"], errors="coerce") == length)]
            values = pd.to_numeric(here["value"], errors="coerce").dropna()
            row[f"top-1 at L′={length} (%)"] = _mean_std(values.mean(), values.std(), len(values))
            record[f"top1_at_{length}"] = values.mean()
        rows.append(row)
        data.append(record)
    caption = (f"References: models without a discretization, trained on the same data and splits with the same "
               f"recipe{' and the same tuning budget' if view.results.meta.get('tuning_lock') else ''}, beside the "
               f"baseline {view.baseline_key}; top-1 on the test split, mean ± sample sd over seeds (n = seeds that "
               f"finished)" + (", and at each evaluation length L′ (a reference has no step Δ: it runs as trained)"
                               if lengths else "") + f". {view.provenance()}.")
    return Table("references", "References without a discretization", caption, pd.DataFrame(rows), pd.DataFrame(data))


# ----------------------------------------------------------------------------- cost

def _scan_times(view: StudyView) -> pd.DataFrame:
    """Mean ms_median per (method_key, backend, pass, batch_size, length)."""
    m = view.results.measurements
    m = m[(m["quantity"] == "scan_time") & (m["name"] == "ms_median")]
    if m.empty:
        return m
    keys = ["method_key", "backend", "pass", "batch_size", "length"]
    m = m.assign(**{k: m[k].fillna(DASH) for k in ("backend", "pass")})
    return m.groupby(keys, as_index=False, dropna=False)["value"].mean()


def cost_table(view: StudyView) -> Table | None:
    frame = cost_frame(view)
    scans = _scan_times(view)
    measured = [c for c in COST_COLUMNS if frame[c].notna().any()] if not frame.empty else []
    if not measured and scans.empty:
        return None
    display = pd.DataFrame({"method": [c[0] for c in view.conditions]})
    for i, factor in enumerate(view.factors):
        display[view.factor_label(factor)] = [str(c[i + 1]) for c in view.conditions]
    data = frame.drop(columns=["condition"]).rename(columns={f: view.factor_label(f) for f in view.factors})
    for model in view.models:
        here = by_condition(frame[frame["model"] == model])
        for column in measured:
            cells = []
            for condition in view.conditions:
                if condition not in here or math.isnan(here[condition][column]):
                    cells.append(DASH)
                    continue
                row = here[condition]
                rel = "" if condition[0] == view.baseline_key else f" ({_ratio(row[column + '_rel'])})"
                cells.append(_magnitude(row[column]) + rel)
            display[_prefix(view, model, COST_COLUMNS[column])] = cells
    scan_note = ""
    if not scans.empty:
        # The cost table shows the largest problem measured per backend and pass; the full
        # sweep is the scan_time table.
        for (backend, pass_), group in scans.groupby(["backend", "pass"], sort=True):
            size = group["batch_size"].fillna(1) * group["length"].fillna(1)
            largest = group[size == size.max()].iloc[0]
            chosen = group[(group["batch_size"] == largest["batch_size"]) & (group["length"] == largest["length"])]
            times = dict(zip(chosen["method_key"], chosen["value"]))
            base = times.get(view.baseline_key, math.nan)
            label = f"scan {pass_} ms ({backend}, b={_int(largest['batch_size'])}, L={_int(largest['length'])})"
            display[label] = [
                DASH if c[0] not in times else _num(times[c[0]], 3)
                + ("" if c[0] == view.baseline_key else f" ({_ratio(times[c[0]] / base)})")
                for c in view.conditions]
            data = data.merge(pd.DataFrame({"method_key": list(times), label: list(times.values())}),
                              on="method_key", how="left")
        scan_note = (" Scan time: median ms of one selective scan (measurements kind scan_time) at the "
                     "largest batch × length measured; see the scan-time table for every size.")
    caption = (
        "Cost per method: training and inference throughput (images/s) and peak memory (MiB) as the "
        "trials measured them, mean over the trials that measured them (diverged trials included: "
        f"their cost is still their cost); in parentheses the ratio to {view.baseline_key}."
        f"{scan_note}{_baseline_sentence(view)} Measured on {view.provenance()}.")
    return Table("cost", "Cost", caption, display, data)


def _int(value) -> str:
    try:
        return str(int(value))
    except (TypeError, ValueError):
        return DASH


def _registry_order(keys, baseline: str) -> list[str]:
    order = {k: i for i, k in enumerate(METHODS)}
    return sorted(set(keys), key=lambda k: (k != baseline, order.get(k, len(order)), k))


# ----------------------------------------------------------------------------- ablations

def _resolved(view: StudyView, argument: str) -> pd.Series:
    """A Vim model argument per trial, with the model's default where the study did not set it."""
    column = f"config.model.kwargs.{argument}"
    default = published.vim_defaults()[argument]
    if column not in view.trials:
        return pd.Series(default, index=view.trials.index)
    return view.trials[column].map(lambda v: default if v in (None, "default") or
                                   (isinstance(v, float) and math.isnan(v)) else v)


def _comparable_to_paper(view: StudyView) -> tuple[bool, str]:
    datasets = {str(v) for v in view.trials["dataset"].dropna()} or \
        {str(v) for v in view.trials.get("config.data.dataset", pd.Series(dtype=object)).dropna()}
    if datasets == {published.PUBLISHED_DATASET}:
        return True, ""
    return False, (f"No gap column: this study's dataset is {', '.join(sorted(datasets)) or 'unknown'}, "
                   f"the paper's is ImageNet-1K, so the published numbers are context, not a target.")


def _ablation_table(view: StudyView, name: str, title: str, paper_table: str, where: str,
                    strategy_of: pd.Series, keep: pd.Series, keep_note: str,
                    extra_published: dict[str, str]) -> Table:
    trials = view.trials.assign(_strategy=strategy_of)[keep & view.trials["model"].map(published.is_vim_model)]
    ablation_factors = {f"config.model.kwargs.{a}" for a in ("cls_token", "pool", "bidirectional")}
    other = [f for f in view.factors if f not in ablation_factors]
    trials = trials.assign(_group=[
        ", ".join([m, k] + [f"{view.factor_label(f)}={v}" for f, v in zip(other, vals)])
        for m, k, *vals in trials[["model", "method_key", *other]].itertuples(index=False)])
    rows = published.ablation_rows(paper_table)
    strategies = [r["strategy"] for r in rows] + sorted(set(trials["_strategy"]) - {r["strategy"] for r in rows})
    by_strategy = {r["strategy"]: r for r in rows}
    comparable, gap_note = _comparable_to_paper(view)
    display = pd.DataFrame({"strategy": strategies})
    data_rows = []
    for group_name, group in trials.groupby("_group", sort=False):
        cells, gaps = [], []
        for strategy in strategies:
            ok = group[(group["_strategy"] == strategy) & (group["status"] == "ok")]
            summary = stats.summarize(list(ok["top1"]))
            diverged = group[(group["_strategy"] == strategy) & (group["status"] == "diverged")]
            cell = _mean_std(summary.mean, summary.std, summary.n)
            if len(diverged):
                text = "; ".join(divergence_text(v) for v in diverged["diverged_at"])
                cell = text if summary.n == 0 else f"{cell}; {text}"
            elif summary.n == 0:
                cell = "not run"
            cells.append(cell)
            reference = by_strategy.get(strategy, {}).get("top1")
            gap = summary.mean - reference if reference is not None and summary.n else math.nan
            gaps.append(_num(gap, signed=True))
            data_rows.append({"group": group_name, "strategy": strategy, "top1_mean": summary.mean,
                              "top1_std": summary.std, "top1_n": summary.n, "diverged": len(diverged),
                              "published_top1": reference, "gap": gap if comparable else math.nan})
        display[f"ours: {group_name} top-1 (%)"] = cells
        if comparable:
            display[f"gap ({group_name})"] = gaps
    display[f"{published.label(where)} top-1 (%)"] = [
        _num(by_strategy[s]["top1"], 1) if s in by_strategy else DASH for s in strategies]
    for key, column in extra_published.items():
        display[f"{published.label(where)} {column}"] = [
            _num(by_strategy[s][key], 1) if s in by_strategy and key in by_strategy[s] else DASH
            for s in strategies]
    notes = [by_strategy[s].get("note", "") for s in strategies]
    if any(notes):
        display["note (paper)"] = notes
    caption = (f"{title} in the layout of the Vim paper's {where}: our top-1 (%) on {_dataset(view)}, mean ± "
               f"sample std over seeds, beside the published ImageNet-1K numbers ({published.PAPER_ID}, {where}), "
               f"labelled as published. {keep_note} {gap_note if not comparable else 'Gap = ours − published.'}"
               f" Measured on {view.provenance(trials['trial_id'])}.")
    return Table(name, title, caption, display, pd.DataFrame(data_rows))


def ablation_bidirectional_table(view: StudyView) -> Table | None:
    if "config.model.kwargs.bidirectional" not in view.factors:
        return None
    strategy = _resolved(view, "bidirectional").map(lambda v: published.BIDIRECTIONAL_STRATEGIES.get(v, v))
    no_token = _resolved(view, "cls_token") == "none"
    if no_token.any():
        keep, note = no_token, "As in the paper, only trials without a class token (cls_token=none) are shown."
    else:
        keep = pd.Series(True, index=view.trials.index)
        note = ("The paper ran this ablation without a class token; these trials used cls_token="
                f"{', '.join(sorted(set(_resolved(view, 'cls_token'))))}.")
    note += " The paper's 'bidirectional block' row is not a discbench option (published only)."
    return _ablation_table(view, "ablation_bidirectional", "Bidirectional strategy",
                           "ablation_bidirectional", "Table 4", strategy, keep, note,
                           {"miou": "ADE20K mIoU"})


def ablation_classification_table(view: StudyView) -> Table | None:
    if not {"config.model.kwargs.cls_token", "config.model.kwargs.pool"} & set(view.factors):
        return None
    cls_token, pool = _resolved(view, "cls_token"), _resolved(view, "pool")
    strategy = pd.Series([published.classification_strategy(c, p) for c, p in zip(cls_token, pool)],
                         index=view.trials.index)
    default = published.vim_defaults()["bidirectional"]
    keep = _resolved(view, "bidirectional") == default
    note = f"Only trials with Vim's default bidirectional={default} are shown, as in the paper."
    if not keep.any():
        keep = pd.Series(True, index=view.trials.index)
        note = f"The paper used bidirectional={default}; these trials did not."
    return _ablation_table(view, "ablation_classification", "Classification design",
                           "ablation_classification", "Table 5", strategy, keep, note, {})


# ----------------------------------------------------------------------------- published

def published_accuracy_table(view: StudyView) -> tuple[Table | None, str]:
    """Our top-1 beside Table 1's for trials that ran what the paper ran; else (None, why not)."""
    comparable, _ = _comparable_to_paper(view)
    if not comparable:
        return None, (f"Published vs reproduced accuracy: not shown, this study's dataset is {_dataset(view)} "
                      f"and the paper's Table 1 is ImageNet-1K at {published.PUBLISHED_IMAGE_SIZE} px.")
    trials = view.trials
    size = pd.to_numeric(trials.get("image_size", trials.get("config.data.image_size")), errors="coerce")
    defaults = published.vim_defaults()
    is_vim_default = ((_resolved(view, "cls_token") == defaults["cls_token"])
                      & (_resolved(view, "bidirectional") == defaults["bidirectional"]))
    rows, display_rows = [], []
    for model in view.models:
        name = published.PUBLISHED_MODEL_NAMES.get(model)
        reference = published.imagenet_top1(name) if name else None
        if reference is None:
            continue
        match = (trials["model"] == model) & (size == published.PUBLISHED_IMAGE_SIZE)
        if name.startswith("Vim"):
            match &= (trials["method_key"] == published.VIM_METHOD_KEY) & is_vim_default
        for key, group in trials[match].groupby("method_key", sort=False):
            ok = group[group["status"] == "ok"]
            summary = stats.summarize(list(ok["top1"]))
            gap = summary.mean - reference if summary.n else math.nan
            rows.append({"published_model": name, "model": model, "method_key": key,
                         "published_top1": reference, "top1_mean": summary.mean,
                         "top1_std": summary.std, "top1_n": summary.n, "gap": gap})
            shown = f"{name} ({model}, {key})" if name.startswith("Vim") else f"{name} ({model})"
            display_rows.append({"model": shown,
                                 f"{published.label('Table 1')} top-1 (%)": _num(reference, 1),
                                 "ours top-1 (%)": _mean_std(summary.mean, summary.std, summary.n),
                                 "gap (ours − published)": _num(gap, signed=True)})
    if not rows:
        return None, ("Published vs reproduced accuracy: no trial ran a model of the paper's Table 1 "
                      f"({', '.join(published.PUBLISHED_MODEL_NAMES)}) at {published.PUBLISHED_IMAGE_SIZE} px "
                      f"with Vim's own setup ({published.VIM_METHOD_KEY}, default class token and "
                      f"bidirectional scan).")
    caption = (f"Published vs reproduced ImageNet-1K top-1 (%): Table 1 of {published.PAPER_ID} (Vim) "
               "beside ours (mean ± sample std over seeds) and the gap. Vim rows use Vim's own setup "
               f"({published.VIM_METHOD_KEY}, middle class token, bidirectional SSM + conv1d). "
               f"Measured on {view.provenance()}.")
    return Table("published", "Published vs reproduced", caption, pd.DataFrame(display_rows),
                 pd.DataFrame(rows)), ""


def _dataset_of(trials: pd.DataFrame) -> pd.Series:
    """Each trial's dataset: its row's, else its config's."""
    return trials["dataset"].fillna(trials.get("config.data.dataset", pd.Series(index=trials.index)))


def _on_published_mnist1d(view: StudyView) -> pd.Series:
    """Per trial: whether it trained on MNIST-1D at the published table's length (the published
    dataset itself, or discbench's resampled mnist1d at that length)."""
    table = published.mnist1d()
    trials = view.every_trial
    dataset = _dataset_of(trials)
    length = pd.to_numeric(trials.get("config.data.seq_length", pd.Series(index=trials.index)), errors="coerce")
    resampled_at = (dataset == "mnist1d") & length.fillna(table["length"]).eq(table["length"])
    return (dataset == table["dataset"]) | resampled_at


def mnist1d_published_table(view: StudyView) -> Table | None:
    """MNIST-1D's published test accuracies beside this study's: the published architectures'
    rows with ours (mean ± sd over seeds, 95% t-interval, gap), then every other model and method
    this study trained on MNIST-1D at 40 samples, as anchors for its numbers."""
    on_data = _on_published_mnist1d(view)
    if not on_data.any():
        return None
    table = published.mnist1d()
    every = view.every_trial
    trials = every[on_data & (every["status"] == "ok")]
    dataset_of = _dataset_of(trials)

    def ours(rows: pd.DataFrame) -> dict:
        summary = stats.summarize(list(rows["top1"]))
        low, high = stats.mean_interval(list(rows["top1"]))
        return {"top1_mean": summary.mean, "top1_std": summary.std, "top1_n": summary.n, "ci_low": low,
                "ci_high": high}

    data, shown, published_models = [], [], set()
    for entry in table["test_top1"]:
        published_models.add(entry.get("ours"))
        matches = trials[trials["model"] == entry.get("ours")] if entry.get("ours") else trials.iloc[:0]
        groups = sorted(matches.groupby(dataset_of[matches.index]), key=lambda g: g[0] != table["dataset"]) \
            or [(None, matches)]  # the published dataset first
        for dataset, rows in groups:
            row = {"published_model": entry["model"], "published_top1": float(entry["top1"]),
                   "model": entry.get("ours"), "method_key": None, "dataset": dataset, **ours(rows)}
            row["gap"] = row["top1_mean"] - row["published_top1"] if row["top1_n"] else math.nan
            data.append(row)
    # the methods, then the references (a reference's condition is its model's name)
    order = {c: i for i, c in enumerate(view.all_conditions)}
    others = trials[~trials["model"].isin(published_models)]
    others = others.assign(_m=others["model"].map(view.all_models.index), _c=others["condition"].map(order))
    for (_, _, model, condition), rows in others.groupby(["_m", "_c", "model", "condition"], sort=True):
        label = "reference" if model in view.reference_names else view.condition_label(condition)
        for dataset, group in rows.groupby(dataset_of[rows.index], sort=True):
            data.append({"published_model": None, "published_top1": math.nan, "model": model,
                         "method_key": label, "dataset": dataset, **ours(group), "gap": math.nan})
    for row in data:
        name = row["published_model"] or f"{row['model']} ({row['method_key']})"
        interval = (f"[{_num(row['ci_low'])}, {_num(row['ci_high'])}]" if row["top1_n"] >= 2 else "—")
        shown.append({"model": name, "ours": row["model"] or "—", "data": row["dataset"] or "—",
                      "published top-1 (%)": _num(row["published_top1"], 0),
                      "ours top-1 (%)": (_mean_std(row["top1_mean"], row["top1_std"], row["top1_n"])
                                         if row["top1_n"] else "not run here"),
                      "ours 95% CI": interval, "gap (ours − published)": _num(row["gap"], signed=True)})
    caption = (f"MNIST-1D test accuracy (%), published ({table['source']}) beside this study's: mean ± sample "
               f"sd over seeds (n = seeds that finished), the 95% Student-t interval of that mean, and the gap. "
               f"The published architectures are trained with the harness under their own names; every other "
               f"model and method this study ran on MNIST-1D at {table['length']} samples follows, without a "
               f"published counterpart. data: {table['dataset']} is the generator's own dataset, as published; "
               f"mnist1d is discbench's resampling of the same signals at cell centres (the transfer studies' "
               f"variant). Measured on {view.provenance(trials['trial_id'])}.")
    return Table("published_mnist1d", "Published vs reproduced: MNIST-1D", caption, pd.DataFrame(shown),
                 pd.DataFrame(data))


def _vim_deit_pair(models: list[str]) -> tuple[str, str] | None:
    names = {published.PUBLISHED_MODEL_NAMES.get(m): m for m in models}
    if "Vim-Ti" in names and "DeiT-Ti" in names:
        return names["Vim-Ti"], names["DeiT-Ti"]
    vims = [m for m in models if m.startswith("vim")]
    deits = [m for m in models if m.startswith("deit")]
    return (vims[0], deits[0]) if len(vims) == 1 and len(deits) == 1 else None


def _why_no_ratio(values: dict, name: str) -> str:
    """'— (deit OOM)' style note for a ratio that has no value."""
    reasons = [f"{label} {'OOM' if values[label, name][1] == 'oom' else 'not measured'}"
               for label in ("vim", "deit") if math.isnan(values[label, name][0])]
    return f"{DASH} ({', '.join(reasons)})" if reasons else DASH


def efficiency_table(view: StudyView) -> Table | None:
    frame = resolution_frame(view)
    if frame.empty:
        return None
    pair = _vim_deit_pair(sorted(set(frame["model"])))
    if pair is None:
        return None
    vim, deit = pair
    claim = published.efficiency_claim()
    vim_rows = frame[frame["model"] == vim]
    keys = sorted(set(vim_rows["method_key"].dropna()))
    if keys:
        # The paper's claim is about Vim's own discretization; another method only if it is absent.
        vim_key = published.VIM_METHOD_KEY if published.VIM_METHOD_KEY in keys else keys[0]
        vim_rows = vim_rows[vim_rows["method_key"] == vim_key]
    deit_rows = frame[frame["model"] == deit]

    def pick(rows: pd.DataFrame, name: str, batch, resolution) -> tuple[float, str]:
        hit = rows[(rows["name"] == name) & (rows["batch_size"] == batch) & (rows["resolution"] == resolution)]
        if hit.empty:
            return math.nan, "not measured"
        return float(hit["value"].iloc[0]), hit["status"].iloc[0]

    memory = memory_metric(frame)
    settings = sorted({(b, r) for b, r in zip(frame["batch_size"], frame["resolution"])})
    settings_with_claim = settings + ([] if any(r == claim["resolution"] for _, r in settings)
                                      else [(None, claim["resolution"])])
    display_rows, data_rows = [], []
    for batch, resolution in settings_with_claim:
        values = {}
        for label, rows in (("vim", vim_rows), ("deit", deit_rows)):
            for name in ("infer_images_per_s", memory):
                values[label, name] = pick(rows, name, batch, resolution) if batch is not None else (math.nan, "not measured")
        speed = values["vim", "infer_images_per_s"][0] / values["deit", "infer_images_per_s"][0]
        saved = 100.0 * (1.0 - values["vim", memory][0] / values["deit", memory][0])
        is_claim = resolution == claim["resolution"]

        def show(key, fmt):
            value, status = values[key]
            return "OOM" if status == "oom" else ("not measured" if status == "not measured" else fmt(value))

        display_rows.append({
            "resolution (px)": _int(resolution), "batch": _int(batch) if batch is not None else DASH,
            f"{vim} images/s": show(("vim", "infer_images_per_s"), _magnitude),
            f"{deit} images/s": show(("deit", "infer_images_per_s"), _magnitude),
            "speed ratio (ours)": _ratio(speed) if not math.isnan(speed) else _why_no_ratio(values, "infer_images_per_s"),
            f"{published.label('Figure 1')} speed ratio": f"×{claim['speedup_vs_deit']}" if is_claim else DASH,
            f"{vim} MiB": show(("vim", memory), _magnitude),
            f"{deit} MiB": show(("deit", memory), _magnitude),
            "memory saved (ours, %)": _num(saved, 1) if not math.isnan(saved) else _why_no_ratio(values, memory),
            f"{published.label('Figure 1')} memory saved (%)": _num(claim["memory_saved_pct"], 1) if is_claim else DASH,
        })
        data_rows.append({"resolution": resolution, "batch_size": batch, "vim_model": vim, "deit_model": deit,
                          **{f"{label}_{name}": values[label, name][0] for label, name in values},
                          **{f"{label}_{name}_status": values[label, name][1] for label, name in values},
                          "speed_ratio": speed, "memory_saved_pct": saved,
                          "published_speed_ratio": claim["speedup_vs_deit"] if is_claim else math.nan,
                          "published_memory_saved_pct": claim["memory_saved_pct"] if is_claim else math.nan})
    ids = view.results.measurements.loc[view.results.measurements["quantity"].isin(["throughput", "memory"]), "trial_id"]
    what_memory = ("peak memory above the idle process (MiB; the CPU's RSS, whose ~0.9 GiB of Python and torch "
                   "would swamp the model's)" if memory == "peak_mem_delta_mb" else "peak memory (MiB)")
    caption = (f"Efficiency, {vim} against {deit}: batch inference images/s and {what_memory} per "
               f"resolution, the speed ratio ({vim} ÷ {deit}) and the memory saved (1 − {vim} ÷ {deit}), "
               f"beside the paper's claim at {claim['resolution']} px (Figure 1 of {published.PAPER_ID}: Vim-Ti "
               f"{claim['speedup_vs_deit']}× faster than DeiT-Ti with {claim['memory_saved_pct']}% less memory), "
               f"labelled as published. OOM: out of memory. Measured on {view.provenance(ids)}.")
    return Table("efficiency", "Efficiency vs published", caption, pd.DataFrame(display_rows),
                 pd.DataFrame(data_rows))


# ----------------------------------------------------------------------------- missing

def missing_table(view: StudyView) -> Table | None:
    """Trials that are not a finished result (failed, running, diverged) and the (model,
    condition, seed) combinations of the study's grid that have no trial at all."""
    trials = view.trials
    rows = []
    for _, t in trials[trials["status"] != "ok"].iterrows():
        status = t["status"]
        if status == "failed":
            detail = str(t.get("error") or "no error recorded").strip().splitlines()[0][:200]
        elif status == "diverged":
            detail = divergence_text(t["diverged_at"]) + " — excluded from means"
        else:
            detail = f"unfinished: {_int(t.get('epochs_done'))} epoch(s) done"
        rows.append({"status": status, "trial": t["trial_id"], "model": t["model"],
                     "condition": view.condition_label(t["condition"]), "seed": _int(t["seed"]),
                     "detail": detail})
    seeds = sorted({int(s) for s in trials["seed"].dropna()})
    present = {(m, c, int(s)) for m, c, s in zip(trials["model"], trials["condition"], trials["seed"].fillna(-1))}
    for model in view.models:
        # The grid is per model: a factor that only some models have (a Vim option) does not
        # make the other models' combinations missing.
        ran = set(trials.loc[trials["model"] == model, "condition"])
        for condition in [c for c in view.conditions if c in ran]:
            for seed in seeds:
                if (model, condition, seed) not in present:
                    rows.append({"status": "not run", "trial": DASH, "model": model,
                                 "condition": view.condition_label(condition), "seed": str(seed),
                                 "detail": "no trial for this seed (other seeds of this model and "
                                           "condition ran)"})
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    caption = ("What this report is missing: failed trials (with their error), unfinished trials, "
               "diverged trials (a result, but excluded from means), and seeds that a model and condition "
               "did not run although the study ran them elsewhere.")
    return Table("missing", "Missing, failed and diverged trials", caption, frame, frame)
