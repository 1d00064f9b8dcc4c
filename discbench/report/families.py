"""Families of comparisons and their multiple-comparison correction.

Every difference to the baseline the report tests belongs to one family, and its p-value is
adjusted within that family only (stats.adjust: Holm, or Benjamini–Hochberg when the study
declares `analysis.error_rate: fdr`). The primary families are those the study declares
(`analysis.families`, discbench.analysis); without a declaration the one primary family is
every method against the baseline at the training length (the accuracy table). Every other
comparison is secondary, one family per table: the transfer table at the lengths other than
the training one (its training-length column is the accuracy table's comparison, so it takes
that verdict), and the divergence rates (Fisher's test) of the accuracy table.

Stars, verdicts and findings use the adjusted p; the raw interval and p are shown beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..analysis import AnalysisError, AnalysisSpec, from_study_source
from ..results import ResultsError
from . import stats
from .study_view import StudyView

DIVERGENCE_FAMILY = "divergence rate vs the baseline (Fisher's exact test)"


@dataclass(frozen=True)
class Family:
    """name, whether it is primary, the statsmodels correction and how many tests it holds."""

    name: str
    primary: bool
    correction: str
    size: int

    def describe(self) -> str:
        role = "primary" if self.primary else "secondary"
        return (f"“{self.name}” ({role}; {self.size} test{'s' if self.size != 1 else ''}, "
                f"{stats.CORRECTION_NAMES[self.correction]})")


def analysis_of(view: StudyView) -> AnalysisSpec:
    """The study's declared analysis, read from the study file kept in study.json."""
    try:
        return from_study_source(view.results.meta.get("study_source"))
    except AnalysisError as exc:
        raise ResultsError(f"{view.results.path}: the study file's analysis section is invalid: {exc}") from None


def default_primary(view: StudyView) -> str:
    return f"every method vs {view.baseline_key} at the training length"


def secondary_name(table: str) -> str:
    return {"accuracy": "accuracy, other comparisons",
            "transfer": "transfer: every method vs the baseline at the other evaluation lengths"}[table]


def family_of(spec: AnalysisSpec, view: StudyView, table: str, model: str, method_key: str,
              length: float) -> tuple[str, bool]:
    """(family name, primary?) of one comparison; table "accuracy" or "transfer"."""
    for family in spec.families:
        if (family.table == table and (family.methods is None or method_key in family.methods)
                and (family.models is None or model in family.models)
                and (family.lengths is None or (not math.isnan(length) and int(length) in family.lengths))):
            return family.name, True
    if not spec.families and table == "accuracy":
        return default_primary(view), True
    return secondary_name(table), False


def annotate(view: StudyView, accuracy: pd.DataFrame, transfer: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The accuracy (top-1) and transfer frames with their families' columns added:
    family, family_primary, correction, family_size, delta_p_adj, delta_significant (adjusted
    p < ALPHA), delta_mde (at the family's ALPHA / family_size, see stats.Difference.mde),
    equivalence_p, equivalence_p_adj, equivalent (only with a declared margin; else nan/False),
    and for the accuracy frame diverged_p_adj (Fisher's p adjusted within DIVERGENCE_FAMILY).
    Rows without a comparison get empty family columns."""
    spec = analysis_of(view)
    correction = stats.CORRECTIONS[spec.error_rate]
    accuracy, transfer = accuracy.copy(), transfer.copy()
    parts = []
    if not accuracy.empty:
        accuracy["_table"] = "accuracy"
        accuracy["_length"] = math.nan
        parts.append(accuracy)
    at_training = pd.Series(False, index=transfer.index)
    if not transfer.empty:
        at_training = transfer["length"] == transfer["train_length"]
        transfer["_table"] = "transfer"
        transfer["_length"] = transfer["length"].astype(float)
        parts.append(transfer[~at_training])
    for frame in parts:
        names = [family_of(spec, view, t, m, k, length) if isinstance(d, stats.Difference) else ("", False)
                 for t, m, k, length, d in zip(frame["_table"], frame["model"], frame["method_key"],
                                               frame["_length"], frame["comparison"])]
        frame["family"] = [n for n, _ in names]
        frame["family_primary"] = [p for _, p in names]
    every = pd.concat([f[["family", "family_primary", "comparison"]] for f in parts], keys=range(len(parts))) \
        if parts else pd.DataFrame(columns=["family", "family_primary", "comparison"])
    adjusted = _adjust(every, correction, spec.equivalence_margin)
    for i, frame in enumerate(parts):
        mine = adjusted.xs(i, level=0) if i in adjusted.index.get_level_values(0) else adjusted.iloc[:0]
        for column in adjusted.columns:
            frame[column] = mine[column].reindex(frame.index).to_numpy()
    if not accuracy.empty:
        accuracy = parts[0].drop(columns=["_table", "_length"])
        accuracy["diverged_p_adj"] = stats.adjust(accuracy["diverged_p"], correction)
    if not transfer.empty:
        away = parts[-1]
        verdicts = ({(m, c): row for m, c, row in zip(accuracy["model"], accuracy["condition"],
                                                     accuracy.to_dict("records"))} if not accuracy.empty else {})
        columns = ["family", "family_primary", *adjusted.columns]
        values: dict[str, list] = {column: [] for column in columns}
        for index, training in zip(transfer.index, at_training):
            # At the training length the comparison is the accuracy table's: its verdict.
            source = (verdicts.get((transfer.at[index, "model"], transfer.at[index, "condition"]))
                      if training else away.loc[index].to_dict())
            for column in columns:
                values[column].append(source.get(column, np.nan) if source else np.nan)
        transfer = transfer.drop(columns=["_table", "_length"])
        for column in columns:
            transfer[column] = values[column]
        for column in ("family", "correction"):
            transfer[column] = [v if isinstance(v, str) else "" for v in transfer[column]]
        for column in ("family_primary", "delta_significant", "equivalent"):
            transfer[column] = [bool(v) if v == v else False for v in transfer[column]]
        for column in ("family_size", "delta_p_adj", "delta_mde", "equivalence_p", "equivalence_p_adj"):
            transfer[column] = pd.to_numeric(transfer[column], errors="coerce")
    return accuracy, transfer


def _adjust(every: pd.DataFrame, correction: str, margin: float | None) -> pd.DataFrame:
    out = pd.DataFrame(index=every.index, columns=["correction", "family_size", "delta_p_adj", "delta_significant",
                                                   "delta_mde", "equivalence_p", "equivalence_p_adj", "equivalent"])
    out["correction"] = ""
    out["delta_significant"] = False
    out["equivalent"] = False
    for name, members in every.groupby("family", sort=False):
        if not name:
            continue
        diffs = list(members["comparison"])
        p = np.array([d.p for d in diffs])
        size = int(np.isfinite(p).sum())
        out.loc[members.index, "correction"] = correction
        out.loc[members.index, "family_size"] = size
        adjusted = stats.adjust(p, correction)
        out.loc[members.index, "delta_p_adj"] = adjusted
        out.loc[members.index, "delta_significant"] = adjusted < stats.ALPHA
        # The MDE at the family's strictest per-test level (Holm's first step, Bonferroni's α/m).
        out.loc[members.index, "delta_mde"] = [d.mde(stats.ALPHA / max(size, 1)) for d in diffs]
        if margin is not None:
            tost = np.array([stats.equivalence_p(d, margin) for d in diffs])
            tost_adjusted = stats.adjust(tost, correction)
            out.loc[members.index, "equivalence_p"] = tost
            out.loc[members.index, "equivalence_p_adj"] = tost_adjusted
            out.loc[members.index, "equivalent"] = tost_adjusted < stats.ALPHA
    for column in ("family_size", "delta_p_adj", "delta_mde", "equivalence_p", "equivalence_p_adj"):
        out[column] = pd.to_numeric(out[column], errors="coerce")
    out["delta_significant"] = out["delta_significant"].astype(bool)
    out["equivalent"] = out["equivalent"].astype(bool)
    return out


def families_in(view: StudyView, frames: list[pd.DataFrame]) -> list[Family]:
    """The families the given annotated frames hold, primary first, each once."""
    seen: dict[str, Family] = {}
    for frame in frames:
        if frame.empty or "family" not in frame:
            continue
        for name, primary, correction, size in zip(frame["family"], frame["family_primary"],
                                                   frame["correction"], frame["family_size"]):
            if name and name not in seen and isinstance(correction, str) and correction:
                seen[name] = Family(name, bool(primary), correction, int(size) if size == size else 0)
    return sorted(seen.values(), key=lambda f: not f.primary)


def divergence_family(view: StudyView, accuracy: pd.DataFrame) -> Family | None:
    if accuracy.empty or "diverged_p" not in accuracy:
        return None
    size = int(np.isfinite(accuracy["diverged_p"].astype(float)).sum())
    if not size or not (accuracy["diverged"] > 0).any():
        return None
    return Family(DIVERGENCE_FAMILY, False, stats.CORRECTIONS[analysis_of(view).error_rate], size)


def families_text(families: list[Family]) -> str:
    """'Families: “…” (primary; 18 tests, Holm …); “…” (secondary; …).'"""
    if not families:
        return ""
    return "Families and corrections: " + "; ".join(f.describe() for f in families) + "."
