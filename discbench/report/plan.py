"""`discbench plan`: how many seeds each comparison of a finished (pilot) study needs.

    discbench plan STUDY --effect 2 [--power 0.8] [--results-dir DIR]

For every difference to the baseline the report tests, the pilot's seed-level spread (paired:
sd of the paired differences; unpaired: the pooled sd) gives the seeds for a two-sided t-test
to detect a true difference of --effect points with --power, at the per-test level its family's
correction asks of it: α/m for a family of m tests (Bonferroni's bound, which Holm's first step
and Benjamini–Hochberg's strictest step share, so the plan is safe for either). More seeds do
not shrink the test items' own sampling: a comparison whose item term alone exceeds the effect
needs a larger test set, and the plan says so.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd
from scipy.stats import norm

from ..results import ResultsError
from . import read_study, resolve_studies, stats
from .aggregate import accuracy_frame, transfer_frame
from .study_view import StudyView, build_view


def plan_frame(view: StudyView, effect: float, power: float = stats.MDE_POWER) -> pd.DataFrame:
    """One row per tested comparison: family, family_size, model, comparison (method, factors,
    evaluation length), design ("paired" or "unpaired"), seeds (now; per side when unpaired),
    sd (points), alpha (the per-test level α/m), seeds_needed (per side when unpaired),
    item_limited (the test items' sampling alone keeps the interval wider than the effect)."""
    rows = []
    accuracy = accuracy_frame(view, "top1")
    transfer = transfer_frame(view)
    if not transfer.empty:
        transfer = transfer[transfer["length"] != transfer["train_length"]]
    for frame, where in ((accuracy, None), (transfer, "length")):
        if frame.empty:
            continue
        for row in frame.to_dict("records"):
            diff = row.get("comparison")
            if not isinstance(diff, stats.Difference) or not diff.has_interval or not row.get("family"):
                continue
            size = int(row["family_size"]) if row["family_size"] == row["family_size"] else 1
            alpha = stats.ALPHA / max(size, 1)
            paired = diff.n_other is None
            label = view.condition_label(row["condition"]) + (f", L′={int(row[where])}" if where else "")
            item_half = math.sqrt(diff.item_var) * float(norm.ppf(1 - alpha / 2))
            rows.append({
                "family": row["family"], "family_size": size, "model": row["model"], "comparison": label,
                "design": "paired" if paired else "unpaired",
                "seeds": diff.n if paired else f"{diff.n} and {diff.n_other}",
                "sd": diff.sd, "alpha": alpha,
                "seeds_needed": stats.seeds_needed(effect, diff.sd, paired, alpha, power) if diff.sd == diff.sd else math.nan,
                "item_limited": bool(item_half >= effect),
            })
    return pd.DataFrame(rows)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", metavar="STUDY", help="a finished (pilot) study: a name under --results-dir or "
                                                       "a path to its results folder")
    parser.add_argument("--effect", type=float, required=True,
                        help="the true difference to detect, in points of top-1 (e.g. 2)")
    parser.add_argument("--power", type=float, default=stats.MDE_POWER, help="default: %(default)s")
    parser.add_argument("--results-dir", type=Path, default=Path("results"),
                        help="where studies' results live (default: ./results)")


def run_command(args: argparse.Namespace) -> int:
    if not args.effect > 0 or not 0 < args.power < 1:
        print(f"discbench plan: error: --effect must be > 0 (got {args.effect}) and --power in (0, 1) "
              f"(got {args.power})", file=sys.stderr)
        return 2
    try:
        (path,) = resolve_studies([args.study], args.results_dir)
        view = build_view(read_study(path))
        frame = plan_frame(view, args.effect, args.power)
    except ResultsError as exc:
        print(f"discbench plan: error: {exc}", file=sys.stderr)
        return 2
    if frame.empty:
        print(f"{view.name}: no comparison to the baseline with 2 or more seeds on each side: nothing to plan from")
        return 0
    print(f"{view.name}: seeds for {args.power:.0%} power to detect a true top-1 difference of {args.effect:g} points "
          f"to {view.baseline_key}, two-sided, at α/m within each family (m tests); sd: the pilot's seed-level "
          f"spread (paired: of the differences; unpaired: pooled, seeds per side).")
    for family, rows in frame.groupby("family", sort=False):
        size = int(rows["family_size"].iloc[0])
        plural = "s" if size != 1 else ""
        print(f"\nfamily “{family}” ({size} test{plural}, α/m = {rows['alpha'].iloc[0]:.4g})")
        for row in rows.to_dict("records"):
            model = f"{row['model']}: " if frame["model"].nunique() > 1 else ""
            note = ("; the test items' own sampling alone exceeds the effect: more seeds will not do, "
                    "a larger test set would") if row["item_limited"] else ""
            print(f"  {model}{row['comparison']}: {row['design']}, {row['seeds']} seeds now, sd {row['sd']:.2f} "
                  f"→ {row['seeds_needed']} seeds{' per side' if row['design'] == 'unpaired' else ''}{note}")
    return 0
