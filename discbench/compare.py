"""`discbench compare A B`: whether two runs of a study recorded the same numbers, bit for bit.

    discbench compare results/sampling_rate_noconv /tmp/rerun/sampling_rate_noconv

Every table the runs recorded is compared exactly: the trials, the per-epoch records, the
measurements and the per-example correctness, row for row by trial (and epoch, quantity,
length …). Left out is only what measures the run rather than the model: times, throughputs,
memory, timestamps, the commit, host and device, and the measurement rows of cost quantities
(throughput, memory, scan times). Exit status 0 when identical, 1 with the differences listed,
2 for a folder that is not a study's results.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from . import results

# Columns that measure the run (time, speed, memory) or say where it ran: they differ by nature.
RUN_COLUMNS = frozenset({
    "train_time_s", "train_images_per_s", "infer_images_per_s", "infer_sequences_per_s", "peak_mem_mb",
    "images_per_s", "epoch_time_s", "started_at", "finished_at", "git_commit", "host", "device",
    "discbench_version", "torch_version", "attempts", "resumed_from_epoch"})
COST_QUANTITIES = ("throughput", "memory", "scan_time")
TABLES = ("trials", "epochs", "measurements", "correctness")
_KEYS = ("trial_id", "epoch", "quantity", "name", "length", "evaluation", "layer", "direction", "batch_size",
         "resolution", "backend", "pass")


def recorded(study: results.StudyResults) -> dict[str, pd.DataFrame]:
    """Each table without the run's own columns and cost rows, sorted by its keys."""
    out = {}
    for name in TABLES:
        table = getattr(study, name)
        if name == "measurements" and "quantity" in table:
            table = table[~table["quantity"].isin(COST_QUANTITIES)]
        table = table.drop(columns=[c for c in table.columns if c in RUN_COLUMNS])
        keys = [k for k in _KEYS if k in table.columns]
        out[name] = table.sort_values(keys, na_position="first").reset_index(drop=True) if keys else table
    return out


def _missing(value) -> bool:
    """None, NaN, pandas' NA or NaT (a scalar); anything else, arrays included, is a value."""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # an array's isna has no single truth value
        return False


def _same(u, v) -> bool:
    """Exactly equal, missing on both sides counting as equal (bytes, strings and numbers alike)."""
    if _missing(u) or _missing(v):
        return _missing(u) and _missing(v)
    return type(u) is type(v) and u == v if isinstance(u, (bytes, str)) else bool(u == v)


def differences(first: Path, second: Path, limit: int = 20) -> list[str]:
    """What differs between two results folders (at most `limit` lines per table); [] when identical."""
    a, b = recorded(results.load_study(first)), recorded(results.load_study(second))
    found = []
    for name in TABLES:
        x, y = a[name], b[name]
        if list(x.columns) != list(y.columns):
            only = sorted(set(x.columns) ^ set(y.columns))
            found.append(f"{name}: the columns differ ({', '.join(only) or 'their order'})")
            continue
        if len(x) != len(y):
            found.append(f"{name}: {len(x)} rows against {len(y)}")
            continue
        lines = []
        for column in x.columns:
            left, right = x[column].tolist(), y[column].tolist()
            for index in [i for i, (u, v) in enumerate(zip(left, right)) if not _same(u, v)][:limit - len(lines)]:
                trial = x["trial_id"].iat[index] if "trial_id" in x else index
                lines.append(f"{name}: {trial}, {column}: {left[index]!r} against {right[index]!r}")
        found += lines
    return found


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("first", type=Path, help="a study's results folder, e.g. results/sampling_rate_noconv")
    parser.add_argument("second", type=Path, help="the other run's results folder")


def run_command(args: argparse.Namespace) -> int:
    try:
        found = differences(args.first, args.second)
    except results.ResultsError as exc:
        print(f"discbench compare: {exc}", file=sys.stderr)
        return 2
    if found:
        print(f"{args.first} and {args.second} differ:")
        for line in found:
            print(f"  {line}")
        return 1
    tables = recorded(results.load_study(args.first))
    counts = ", ".join(f"{len(t)} {name}" for name, t in tables.items())
    print(f"identical: {counts} (times, memory, cost measurements and provenance left out)")
    return 0
