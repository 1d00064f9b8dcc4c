"""What the tuning stage chose and how the choice depends on it: the chosen-values table, the
learning-rate sensitivity figure and the sentence that says whether (and how) a study was tuned.

They read the lock file a run carried (its text is kept in results/<study>/study.json as
`tuning_lock`, so a report shows the choices its trials ran with, not a newer lock).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ..tuning import TuningLock, parse_lock_text
from ..methods import METHODS
from .figures import FigureFile, _save, _theme, method_style, readable_log, reference_style
from .study_view import StudyView, study_file
from .tables import Table, _num

SENSITIVITY_KEY = "train.lr"  # the figure's x axis
STAR_OVERLAP_POINTS = 3.0  # validation top-1 points within which a 14-pt star hides another at the same rate


def lock_of(view: StudyView) -> TuningLock | None:
    """The lock file the run applied, or None (untuned)."""
    return parse_lock_text(view.results.meta.get("tuning_lock"))




def budget_text(lock: TuningLock) -> str:
    """The tuning budget in words."""
    spec = lock.tune
    space = "; ".join(
        f"{key} " + (f"log-uniform on [{d.log_uniform[0]:g}, {d.log_uniform[1]:g}]" if d.log_uniform else
                     f"uniform on [{d.uniform[0]:g}, {d.uniform[1]:g}]" if d.uniform else
                     f"one of {', '.join(map(str, d.choice))}")
        for key, d in spec.space.items())
    search = {"stratified": f"{spec.samples} configurations from a Latin hypercube (each key's range cut into "
                            f"{spec.samples} equal strata, log-spaced for a log-uniform key, with one configuration "
                            f"in each; seed {spec.search_seed}; the same {spec.samples} for every arm)",
              "random": f"{spec.samples} configurations drawn at random (Ray Tune's random search, seed "
                        f"{spec.search_seed}; the same {spec.samples} for every arm)",
              "grid": f"every one of the {spec.candidates_per_arm()} combinations (grid search)"}[spec.search]
    asha = (f"ASHA stopped the weaker candidates of each arm at its rungs (grace period {spec.asha.grace_period} "
            f"epochs, reduction factor {spec.asha.reduction_factor:g}), within the arm only"
            if spec.asha else "every candidate trained every epoch (no early stopping)")
    spent = [a.epochs_spent for a in lock.arms.values()]
    return (f"Each arm (a method with the study's other factors) was tuned with the same budget: {search}, each "
            f"trained for up to {lock.epochs} epochs with training seed {spec.seed} (the report's trials use other "
            f"seeds); {asha}. The choice is the candidate with the best validation top-1 after all {lock.epochs} "
            f"epochs; the test split was never built. Search space: {space}. The arms trained "
            f"{min(spent)}–{max(spent)} epochs in all; tuning took {lock.tuning_seconds / 60:.1f} min on "
            f"{lock.device} at commit {lock.commit}.")


def tuning_sentence(view: StudyView) -> str:
    """Whether the trials ran at per-arm tuned values, and with what budget; or that they are untuned."""
    lock = lock_of(view)
    if lock is None:
        if study_file(view.results).get("tune") is not None:
            return ("Untuned: this study declares a tuning stage, but it ran without its lock file, so every method "
                    "ran at the study's own recipe (discbench tune writes the lock file).")
        return ("Untuned: every method ran at one shared recipe, chosen without a per-method search; a method whose "
                "best settings lie elsewhere is judged away from its optimum.")
    return " ".join(s for s in ("Tuned per method on the validation split. " + budget_text(lock),
                                edge_sentence(lock)) if s)


def edge_sentence(lock: TuningLock) -> str:
    """For each numeric key of the search space: the arms whose chosen value is the smallest or
    the largest candidate drawn, where the arm's optimum may lie beyond the candidates."""
    parts = []
    for key in lock.tune.space:
        low, high = [], []
        for arm_id, arm in lock.arms.items():
            drawn = sorted({c.values[key] for c in arm.candidates if isinstance(c.values.get(key), (int, float))})
            chosen = arm.chosen.get(key)
            if len(drawn) < 2 or not isinstance(chosen, (int, float)):
                continue
            (low if chosen == drawn[0] else high if chosen == drawn[-1] else []).append(arm_id)
        for side, arms, value in (("smallest", low, "below"), ("largest", high, "above")):
            if arms:
                parts.append(f"{key}: {len(arms)} of {len(lock.arms)} arms chose the {side} candidate "
                             f"({', '.join(arms)}), so their optimum may lie {value} the candidates")
    if not parts:
        return ""
    return "At the edge of the candidates: " + "; ".join(parts) + "."


def tuning_table(view: StudyView) -> Table | None:
    """One row per arm: its chosen values, their validation top-1, and how its candidates ended."""
    lock = lock_of(view)
    if lock is None:
        return None
    keys = list(lock.tune.space)
    rows, data = [], []
    for arm_id, arm in lock.arms.items():
        ended = pd.Series([c.status for c in arm.candidates]).value_counts()
        row = {"arm": arm_id, "method": arm.method}
        row.update({key: _value(arm.chosen.get(key)) for key in keys})
        row["val top-1 (%)"] = _num(arm.val_top1, 2)
        row["candidates: finished / stopped / diverged / failed"] = " / ".join(
            str(int(ended.get(s, 0))) for s in ("finished", "stopped", "diverged", "failed"))
        row["epochs spent"] = str(arm.epochs_spent)
        rows.append(row)
        for candidate in arm.candidates:
            data.append({"arm": arm_id, "method": arm.method, **candidate.values, "val_top1": candidate.val_top1,
                         "epochs": candidate.epochs, "status": candidate.status,
                         "chosen": candidate.values == arm.chosen})
    caption = (f"Chosen values per arm, from the lock file the trials ran with. val top-1: the chosen candidate's "
               f"validation top-1 after the last epoch (one training seed: noisy by about ±1 point on a few hundred "
               f"validation items). {budget_text(lock)} The CSV has every candidate.")
    return Table("tuning", "Tuned values per method", caption, pd.DataFrame(rows), pd.DataFrame(data))


def _value(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "—" if value is None else str(value)


def _panel_of(arm_id: str, is_reference: bool, settings: int) -> str:
    """The panel an arm is drawn in: its setting (the arm id after the method, e.g.
    `name=seqssd_micro`) when arms differ by more than the method, so that each panel holds one
    line per method; references, whose arms have no setting, then share a panel of their own."""
    if settings <= 1:
        return ""
    return "references" if is_reference else arm_id.partition("__")[2]


def star_size(drawn: list[tuple[float, float]], rate: float, top1: float) -> int:
    """Marker size (points) of a chosen-candidate star at (rate, top1), given the stars already
    drawn in its panel. Arms often choose the same candidate (stratified search gives every arm the
    same rates) at nearly the same score: each star that would hide earlier ones is drawn smaller
    (and, by the caller, on top), so coinciding choices show as concentric stars."""
    under = sum(1 for x, y in drawn if x == rate and abs(y - top1) < STAR_OVERLAP_POINTS)
    return max(5, 14 - 4 * under)


def sensitivity_figure(view: StudyView, out_dir: Path) -> FigureFile | None:
    """Validation top-1 against the learning rate, one line per method (every candidate that
    trained every epoch; a candidate ASHA stopped is a small mark at its last score); one panel
    per setting of the study's other factors when it has any."""
    lock = lock_of(view)
    if lock is None or SENSITIVITY_KEY not in lock.tune.space:
        return None
    references = [arm.method for arm in lock.arms.values() if arm.method not in METHODS]
    settings = len({arm_id.partition("__")[2] for arm_id, arm in lock.arms.items() if arm.method in METHODS})
    panels = list(dict.fromkeys(_panel_of(a, arm.method in references, settings) for a, arm in lock.arms.items()))
    style, context = _theme()
    with style, context:
        fig, axes = plt.subplots(1, len(panels), figsize=(8.4 if len(panels) == 1 else 5.0 * len(panels), 4.4),
                                 squeeze=False, sharey=True)
        stars: dict[int, list[tuple[float, float]]] = {}  # per panel: the chosen (rate, score) drawn so far
        for arm_id, arm in lock.arms.items():
            ax = axes[0][panels.index(_panel_of(arm_id, arm.method in references, settings))]
            look = (reference_style(references.index(arm.method)) if arm.method in references
                    else method_style(arm.method))
            points = sorted((c.values[SENSITIVITY_KEY], c.val_top1, c.status) for c in arm.candidates
                            if c.val_top1 is not None and math.isfinite(c.val_top1))
            full = [(x, y) for x, y, s in points if s == "finished"]
            if full:
                ax.plot(*zip(*full), color=look["color"], marker=look["marker"], linestyle=look["linestyle"],
                        markerfacecolor=look["markerfacecolor"], markersize=5, linewidth=1.2,
                        label=arm.method if len(panels) > 1 else arm_id)
            stopped = [(x, y) for x, y, s in points if s != "finished"]
            if stopped:
                ax.plot(*zip(*stopped), color=look["color"], marker=".", linestyle="none", alpha=0.6)
            chosen = arm.chosen.get(SENSITIVITY_KEY)
            drawn = stars.setdefault(id(ax), [])
            size = star_size(drawn, chosen, arm.val_top1)
            drawn.append((chosen, arm.val_top1))
            ax.plot([chosen], [arm.val_top1], marker="*", color=look["color"], markersize=size, linestyle="none",
                    markeredgecolor="black", markeredgewidth=0.6, zorder=20 - size)
        for ax, panel in zip(axes[0], panels):
            ax.set_xscale("log")
            readable_log(ax.xaxis)
            ax.set_xlabel("learning rate (train.lr)")
            if panel:
                ax.set_title(panel, fontsize=9)
        axes[0][0].set_ylabel("validation top-1 (%)")
        axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                           title="arm" if len(panels) == 1 else "method", title_fontsize=8)
    others = [k for k in lock.tune.space if k != SENSITIVITY_KEY]
    caption = (f"Sensitivity to the learning rate: validation top-1 of every candidate of the tuning stage against "
               f"its learning rate, one line per method (one panel per setting of the other factors) through the "
               f"candidates that trained all {lock.epochs} epochs; "
               f"dots: candidates ASHA stopped early (their score at that epoch); star: the chosen candidate (concentric "
               f"stars: arms that chose the same rate at nearly the same score)."
               + (f" The candidates also differ in {', '.join(others)} (drawn together with the rate), so a line is "
                  f"not a one-factor sweep." if others else "")
               + " A verdict that holds across the flat top of every line does not depend on the chosen rate.")
    return _save(fig, out_dir, "fig_sensitivity", "Validation top-1 against learning rate", caption)
