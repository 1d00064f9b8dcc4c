"""The report's findings in words: per model and factor combination, which methods differ from
the baseline (their 95% interval excludes 0) and, for the rest, how small a difference the
study could have seen (the minimum detectable effect, MDE, at stats.MDE_POWER).

Every number comes from aggregate.accuracy_frame / transfer_frame; nothing is computed here
that a table does not show.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import stats
from .aggregate import accuracy_frame, transfer_frame
from .study_view import StudyView


def _points(value: float) -> str:
    return f"{value:.2f}".replace("-", "−")


def _signed(value: float) -> str:
    return f"{value:+.2f}".replace("-", "−")


def _setting(view: StudyView, model: str, factor_values: tuple, extra: str = "") -> str:
    parts = [model] + [f"{view.factor_label(f)}={v}" for f, v in zip(view.factors, factor_values)]
    return ", ".join(parts) + extra


def comparison_sentence(view: StudyView, setting: str, rows: pd.DataFrame, what: str = "top-1") -> str:
    """One sentence on the non-baseline rows of one setting (columns as aggregate.seed_summary
    plus method_key): the differences that exclude 0, then the MDE of the others."""
    base = view.baseline_key
    compared = rows[rows["delta"].notna()]
    if compared.empty:
        return f"{setting}: no method has a {what} difference to {base} (the baseline or the method has no result here)."
    resolved = compared[compared["delta_excludes_zero"].astype(bool)]
    rest = compared[~compared["delta_excludes_zero"].astype(bool)]
    parts = []
    if len(resolved):
        listed = ", ".join(f"{r.method_key} {_signed(r.delta)} [{_signed(r.delta_low)}, {_signed(r.delta_high)}]"
                           for r in resolved.itertuples())
        verb = "differs" if len(resolved) == 1 else "differ"
        parts.append(f"{len(resolved)} of {len(compared)} methods {verb} from {base} in {what} "
                     f"(95% interval excludes 0): {listed}")
    else:
        parts.append(f"no {what} difference to {base} excludes 0 ({len(compared)} methods compared)")
    with_mde = rest[rest["delta_mde"].notna()]
    if len(with_mde):
        largest = with_mde.loc[with_mde["delta_mde"].idxmax()]
        others = "no other method" if len(resolved) else "no method"
        which = (f"{largest['method_key']}'s MDE" if len(with_mde) == 1 else
                 f"the largest MDE, {largest['method_key']}; median MDE "
                 f"{_points(float(np.median(with_mde['delta_mde'])))} over {len(with_mde)} methods")
        parts.append(f"{others} differs from {base} by more than {_points(largest['delta_mde'])} points at "
                     f"{stats.MDE_POWER:.0%} power ({which})")
    without = rest[rest["delta_mde"].isna()]
    if len(without):
        parts.append(f"{', '.join(without['method_key'])}: fewer than 2 seeds on a side, no interval or MDE")
    return f"{setting}: " + "; ".join(parts) + "."


def accuracy_findings(view: StudyView) -> list[str]:
    """One sentence per model and factor combination on top-1 at the training setting, then
    one per model, factor combination and evaluation length L′ other than the training length
    for sampling-rate transfer."""
    frame = accuracy_frame(view, "top1")
    has_accuracy = not frame.empty and bool((frame["n"] > 0).any())
    transfer = transfer_frame(view)
    if not has_accuracy and transfer.empty:
        return []
    if not view.has_baseline:
        return [f"The baseline {view.baseline_key} is absent from this study: no method is compared to it."]
    sentences = _per_setting(view, frame, "") if has_accuracy else []
    if not transfer.empty:
        # At the training length the transfer rows restate the accuracy above.
        away = transfer[transfer["length"] != transfer["train_length"]]
        for length, at_length in away.groupby("length", sort=True):
            sentences += _per_setting(view, at_length, f", evaluated at L′={int(length)}")
    return sentences


def _per_setting(view: StudyView, frame: pd.DataFrame, extra: str) -> list[str]:
    sentences = []
    for model in view.models:
        in_model = frame[frame["model"] == model]
        settings = list(dict.fromkeys(c[1:] for c in view.conditions))
        for values in settings:
            rows = in_model[[c[1:] == values for c in in_model["condition"]]]
            if rows.empty:
                continue
            has_baseline = any(c == (view.baseline_key, *values) for c in rows["condition"])
            rows = rows[~rows["is_baseline"].astype(bool)]
            if not has_baseline:
                sentences.append(f"{_setting(view, model, values, extra)}: {view.baseline_key} was not run "
                                 f"here, so nothing is compared.")
                continue
            if rows.empty:
                continue
            sentences.append(comparison_sentence(view, _setting(view, model, values, extra), rows))
    return sentences

