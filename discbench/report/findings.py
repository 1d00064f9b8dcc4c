"""The report's findings in words: the families and their corrections; per model and factor
combination, which methods differ from the baseline after their family's correction, which
are equivalent to it within a declared margin (TOST), and the design's power (the minimum
detectable effect, MDE, at stats.MDE_POWER; a statement about the design, not the effect);
every method that diverged, its rate against the baseline's, and the Δ with its diverged seeds
scored as the study's fallback; and whether the seeds met a declared target MDE.

Every number comes from aggregate.accuracy_frame / transfer_frame; nothing is computed here
that a table does not show.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import families, stats
from .aggregate import accuracy_frame, transfer_frame
from .convergence import convergence_sentence
from .scaling import scaling_findings
from .tables import references_table
from .tuning import tuning_sentence
from .study_view import StudyView
from .validation import separation_sentence


TOP1_RANGE_POINTS = 100.0  # the widest possible difference between two top-1 accuracies (%)


def _points(value: float) -> str:
    return f"{value:.2f}".replace("-", "−")


def _signed(value: float) -> str:
    return f"{value:+.2f}".replace("-", "−")


def _setting(view: StudyView, model: str, factor_values: tuple, extra: str = "") -> str:
    parts = [model] + [f"{view.factor_label(f)}={v}" for f, v in zip(view.factors, factor_values)]
    return ", ".join(parts) + extra


def comparison_sentence(view: StudyView, setting: str, rows: pd.DataFrame, what: str = "top-1") -> str:
    """One sentence on the non-baseline rows of one setting (columns as aggregate.seed_summary
    plus the family columns and method_key): the differences that survive their family's
    correction, the equivalences (only with a declared margin), then the design's MDE."""
    base = view.baseline_key
    compared = rows[rows["delta"].notna()]
    if compared.empty:
        return f"{setting}: no method has a {what} difference to {base} (the baseline or the method has no result here)."
    significant = compared["delta_significant"].fillna(False).astype(bool)
    resolved, rest = compared[significant], compared[~significant]
    parts = []
    correction = stats.CORRECTION_NAMES.get(str(compared["correction"].iloc[0]), "its family's correction")
    named = sorted({f for f in compared["family"] if f})
    family = f"family “{named[0]}”" if len(named) == 1 else "their families"
    if len(resolved):
        listed = ", ".join(f"{r.method_key} {_signed(r.delta)} [{_signed(r.delta_low)}, {_signed(r.delta_high)}], "
                           f"adjusted p {_p(r.delta_p_adj)}" for r in resolved.itertuples())
        verb = "differs" if len(resolved) == 1 else "differ"
        parts.append(f"{len(resolved)} of {len(compared)} methods {verb} from {base} in {what} after "
                     f"{correction} within {family} (raw 95% interval): {listed}")
    else:
        parts.append(f"no {what} difference to {base} survives {correction} within {family} "
                     f"({len(compared)} methods compared)")
    raw_only = rest[rest["delta_excludes_zero"].astype(bool)]
    if len(raw_only):
        parts.append(f"{', '.join(raw_only['method_key'])}: the raw interval excludes 0 but not after the correction")
    equivalent = compared[compared["equivalent"].fillna(False).astype(bool)] if "equivalent" in compared else compared.iloc[:0]
    margin = families.analysis_of(view).equivalence_margin
    if margin is not None:
        parts.append(f"equivalent to {base} within ±{_points(margin)} points (TOST, adjusted p < {stats.ALPHA:g}): "
                     f"{', '.join(equivalent['method_key']) or 'none'}")
    with_mde = rest[rest["delta_mde"].notna()]
    # top-1 differences lie within ±100 points: an MDE beyond that says the seeds cannot detect
    # any difference, and printing "a true difference of 900 points" would read as a number.
    beyond = with_mde[with_mde["delta_mde"] > TOP1_RANGE_POINTS]
    with_mde = with_mde[with_mde["delta_mde"] <= TOP1_RANGE_POINTS]
    if len(beyond):
        parts.append(f"design: for {', '.join(beyond['method_key'])} the seeds' spread is so wide that no "
                     f"difference within the {TOP1_RANGE_POINTS:g}-point range of top-1 would be detected with "
                     f"{stats.MDE_POWER:.0%} power (MDE above {TOP1_RANGE_POINTS:g} points)")
    if len(with_mde):
        largest = with_mde.loc[with_mde["delta_mde"].idxmax()]
        which = (f"{largest['method_key']}" if len(with_mde) == 1 else
                 f"the largest, {largest['method_key']}; median {_points(float(np.median(with_mde['delta_mde'])))} "
                 f"over {len(with_mde)} methods")
        parts.append(f"design: with these seeds and their measured spread, a true difference of "
                     f"{_points(largest['delta_mde'])} points ({which}) would be detected with {stats.MDE_POWER:.0%} "
                     f"power at the family's α/m (the MDE, about the design's power, not a bound on any difference)")
    without = rest[rest["delta_p"].isna()]
    if len(without):
        parts.append(f"{', '.join(without['method_key'])}: fewer than 2 seeds on a side, no interval, test or MDE")
    return f"{setting}: " + "; ".join(parts) + "."


def _p(value: float) -> str:
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def families_sentence(view: StudyView, frames: list[pd.DataFrame]) -> str:
    found = families.families_in(view, frames)
    accuracy = frames[0] if frames else pd.DataFrame()
    divergence = families.divergence_family(view, accuracy)
    found += [divergence] if divergence else []
    return families.families_text(found)


def divergence_findings(view: StudyView, frame: pd.DataFrame) -> list[str]:
    """One sentence per method (and model, factor combination) that diverged on any seed."""
    sentences = []
    if frame.empty or "diverged_rate" not in frame:
        return sentences
    rates = {(r["model"], r["condition"]): r for r in frame.to_dict("records")}
    for row in frame[frame["diverged"] > 0].to_dict("records"):
        setting = _setting(view, row["model"], row["condition"][1:])
        rate = (f"{row['method_key']} diverged on {row['diverged']} of {row['finished']} finished seeds"
                + (" (every seed: it has no accuracy here)" if row["diverged"] == row["finished"] else "")
                + f", {row['diverged_rate']:.0%} [exact 95% interval {row['diverged_low']:.0%}, "
                  f"{row['diverged_high']:.0%}]")
        base = rates.get((row["model"], view.baseline_of(row["condition"])))
        if row["is_baseline"] or base is None:
            sentences.append(f"{setting}: {rate}.")
            continue
        rate += (f", against {base['diverged']} of {base['finished']} for {view.baseline_key} (Fisher's exact "
                 f"p {_p(row['diverged_p'])}, adjusted {_p(row['diverged_p_adj'])})")
        if row["delta_fallback"] == row["delta_fallback"]:
            rate += (f"; scoring each diverged seed as {row['fallback']}, Δ top-1 = {_signed(row['delta_fallback'])}"
                     + (f" [{_signed(row['delta_fallback_low'])}, {_signed(row['delta_fallback_high'])}]"
                        if row["delta_fallback_low"] == row["delta_fallback_low"] else " (no interval)")
                     + (f", beside the per-protocol Δ {_signed(row['delta'])} over the seeds that finished"
                        if row["delta"] == row["delta"] else ""))
        else:
            rate += f"; no sensitivity Δ: the fallback ({row['fallback']}) was not recorded for every diverged seed"
        sentences.append(f"{setting}: {rate}.")
    return sentences


def target_sentence(view: StudyView, frames: list[pd.DataFrame]) -> str:
    """Whether the primary comparisons' MDE met the study's declared target (empty without one)."""
    target = families.analysis_of(view).target_mde
    if target is None:
        return ""
    primary = pd.concat([f[f["family_primary"].fillna(False).astype(bool)] for f in frames
                         if not f.empty and "family_primary" in f])
    mdes = primary["delta_mde"].dropna() if not primary.empty else pd.Series(dtype=float)
    if mdes.empty:
        return f"Target MDE {_points(target)} points (declared): no primary comparison has an MDE (fewer than 2 seeds)."
    met = int((mdes <= target).sum())
    verdict = "met" if met == len(mdes) else "not met"
    return (f"Target MDE {_points(target)} points (declared): {verdict}; {met} of {len(mdes)} primary comparisons "
            f"reach it with these seeds (largest MDE {_points(float(mdes.max()))} points at the family's α/m; "
            f"`discbench plan` gives the seeds each comparison needs).")


def accuracy_findings(view: StudyView) -> list[str]:
    """Whether the trials converged; the families and their corrections; one sentence per model and factor combination on
    top-1 at the training setting, then one per model, factor combination and evaluation length
    L′ other than the training length for sampling-rate transfer; one per diverged method; and
    the target MDE's verdict when the study declares one."""
    frame = accuracy_frame(view, "top1")
    has_accuracy = not frame.empty and bool((frame["n"] > 0).any())
    transfer = transfer_frame(view)
    if not has_accuracy and transfer.empty:
        return []
    if not view.has_baseline:
        return [f"The baseline {view.baseline_key} is absent from this study: no method is compared to it."]
    head = families_sentence(view, [frame, transfer])
    converged = convergence_sentence(view)  # first: a verdict on models still learning is about speed of learning
    tuned = tuning_sentence(view)  # then whether each method ran at its own optimum
    separation = separation_sentence(view)  # what the design shows on validation, for choosing designs
    sentences = [s for s in (converged, tuned, separation, head) if s]
    sentences += _per_setting(view, frame, "") if has_accuracy else []
    if not transfer.empty:
        # At the training length the transfer rows restate the accuracy above.
        away = transfer[transfer["length"] != transfer["train_length"]]
        for length, at_length in away.groupby("length", sort=True):
            sentences += _per_setting(view, at_length, f", evaluated at L′={int(length)}")
    sentences += scaling_findings(view)
    sentences += divergence_findings(view, frame)
    references = references_sentence(view)
    sentences += [references] if references else []
    target = target_sentence(view, [frame, transfer])
    return sentences + ([target] if target else [])


def references_sentence(view: StudyView) -> str:
    """The references' test top-1 beside each model's baseline, in one sentence (empty without references)."""
    table = references_table(view)
    if table is None:
        return ""
    parts = [f"{row['model']} {row['top-1 (%)']}" for _, row in table.display.iterrows()]
    alike = ", tuned with the same budget" if view.results.meta.get("tuning_lock") else ""
    return (f"References without a discretization (the methods' data, splits and recipe{alike}), top-1 on the "
            f"test split: " + "; ".join(parts) + ".")


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

