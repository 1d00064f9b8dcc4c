"""What a study varies, read from its trials table: the method keys, the models, the other
configuration factors, the seeds, and where each result came from.

A factor is a flattened config column (e.g. `config.model.kwargs.cls_token`) that takes more
than one value and is not determined by the model alone. The method (method_key), the model
(`model`) and the seed have their own axes and are never factors; nor are the keys a study tunes
(its `tune.space`): they vary by arm because each arm runs at its own optimum, which is the
protocol, not a design factor.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import yaml

from ..config import result_neutral_fields
from ..methods import METHODS
from ..models import model_info
from ..results import StudyResults

BASELINE_KEY = "zoh/paper"
MISSING = "default"  # how an unset config value is shown

# Config columns that restate an axis (method, seed, model) or that do not change a result.
_NOT_FACTORS = {
    "config.method", "config.variant", "config.seed", "config.model.name",
    *(f"config.{path}" for path in result_neutral_fields()),
}


@dataclass
class StudyView:
    """A study's trials with the axes a report groups by.

    trials: the trials table plus `condition` (a tuple: method_key then factor values) and
    `model` filled, without the references; factors: factor column names; models: model names in
    the order they first appear; conditions: every condition, the baseline first then registry
    order. references: the trials of the study's `references:` models (no discretization), with
    method_key and condition set to the model's name; empty when it lists none.
    """

    results: StudyResults
    trials: pd.DataFrame
    factors: list[str]
    models: list[str]
    conditions: list[tuple]
    baseline_key: str = BASELINE_KEY
    _labels: dict[str, str] = field(default_factory=dict)
    references: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def name(self) -> str:
        return self.results.name

    @property
    def every_trial(self) -> pd.DataFrame:
        """The methods' trials and then the references' (whose condition is their model's name)."""
        return pd.concat([self.trials, self.references], ignore_index=True) if not self.references.empty else self.trials

    @property
    def reference_names(self) -> list[str]:
        return list(dict.fromkeys(self.references["model"])) if not self.references.empty else []

    @property
    def all_models(self) -> list[str]:
        """The methods' models, then the references, in report order."""
        return self.models + self.reference_names

    @property
    def all_conditions(self) -> list[tuple]:
        """The conditions, then each reference's (its model's name), in report order."""
        return self.conditions + [(m,) for m in self.reference_names]

    @property
    def has_baseline(self) -> bool:
        return any(c[0] == self.baseline_key for c in self.conditions)

    def factor_label(self, column: str) -> str:
        return self._labels[column]

    def condition_label(self, condition: tuple) -> str:
        """'foh/paper' or 'foh/paper, cls_token=head, bidirectional=none'."""
        parts = [condition[0]] + [f"{self.factor_label(f)}={v}" for f, v in zip(self.factors, condition[1:])]
        return ", ".join(parts)

    def baseline_of(self, condition: tuple) -> tuple | None:
        """The baseline condition with the same factor values, if the study ran it."""
        candidate = (self.baseline_key, *condition[1:])
        return candidate if candidate in self.conditions else None

    def provenance(self, trial_ids: pd.Series | list | None = None) -> str:
        """'device …; discbench …, torch …; commit …' for the given trials (default: all)."""
        rows = self.trials
        if trial_ids is not None:
            rows = rows[rows["trial_id"].isin(list(trial_ids))]
        if rows.empty:
            rows = self.trials

        def values(column: str) -> str:
            found = sorted({str(v) for v in rows[column].dropna()}) if column in rows else []
            return " / ".join(found) if found else "unknown"

        commits = sorted({str(v)[:12] + ("-dirty" if str(v).endswith("-dirty") else "")
                          for v in rows["git_commit"].dropna()}) if "git_commit" in rows else []
        return (f"device {values('device')}; discbench {values('discbench_version')}, "
                f"torch {values('torch_version')}; commit {' / '.join(commits) or 'unknown'}")


def study_file(results: StudyResults) -> dict:
    """The study file the run was made from (kept in study.json), as its YAML mapping ({} if none)."""
    source = results.meta.get("study_source")
    raw = yaml.safe_load(source) if source else None
    return raw if isinstance(raw, dict) else {}


def tuned_columns(results: StudyResults) -> set[str]:
    """The config columns of the keys the study's tuning stage searched (`tune.space`)."""
    space = (study_file(results).get("tune") or {}).get("space") or {}
    return {f"config.{key}" for key in space}


def ladder_of(model: str) -> str | None:
    """The size ladder `model` is a rung of; None for no ladder or a model this discbench does not
    register (results from elsewhere)."""
    try:
        return model_info(model).ladder
    except ValueError:
        return None


def median_parameters(trials: pd.DataFrame, model: str) -> float:
    """The parameters `model`'s trials recorded (their median); nan when none did."""
    values = pd.to_numeric(trials.loc[trials["model"] == model, "params"], errors="coerce").dropna() \
        if "params" in trials else pd.Series(dtype=float)
    return float(values.median()) if not values.empty else math.nan


def _report_order(trials: pd.DataFrame) -> list[str]:
    """The trials' model names in the order they appear, except that the rungs of one size ladder
    stand together where its first rung appears, smallest first (by the parameters the trials
    recorded), so that nano comes before micro in every table and finding."""
    models = list(dict.fromkeys(trials["model"]))
    ladders = {m: ladder_of(m) for m in models}
    sizes = {m: median_parameters(trials, m) for m in models}  # read once: the loop compares them pairwise
    ordered: list[str] = []
    for model in models:
        rungs = [m for m in models if ladders[model] is not None and ladders[m] == ladders[model]] or [model]
        by_size = sorted(rungs, key=lambda m: (math.isnan(sizes[m]), sizes[m]))
        ordered += [m for m in by_size if m not in ordered]
    return ordered


def reference_models(results: StudyResults) -> list[str]:
    """The model names the study lists under `references:`, in its order."""
    return [r if isinstance(r, str) else r.get("name") for r in study_file(results).get("references") or []]


def build_view(results: StudyResults) -> StudyView:
    trials = results.trials.copy()
    if trials.empty:
        raise ValueError(f"study {results.name!r} at {results.path} has no trials yet")
    trials["method_key"] = [
        key if isinstance(key, str) and key else f"{m}/{v}"
        for key, m, v in zip(trials["method_key"], trials["method"], trials["variant"])]
    if trials["model"].isna().all() and "config.model.name" in trials:
        trials["model"] = trials["config.model.name"]
    trials["model"] = trials["model"].fillna("unknown model").astype(str)
    listed = reference_models(results)
    is_reference = trials["model"].isin(listed)
    references = trials[is_reference].sort_values("model", key=lambda m: m.map(listed.index), kind="stable")
    references["method_key"] = references["model"]  # its method fields are a placeholder
    references["condition"] = [(m,) for m in references["model"]]
    trials = trials[~is_reference].copy()
    if trials.empty:
        raise ValueError(f"study {results.name!r} at {results.path} has only reference trials")
    models = _report_order(trials)

    not_factors = _NOT_FACTORS | tuned_columns(results)
    factors = [c for c in trials.columns if c.startswith("config.") and c not in not_factors
               and _varies(trials[c]) and not _determined_by(trials, c, "model")
               and not _determined_by(trials, c, "method_key")]
    for column in factors:
        trials[column] = [_display_value(v) for v in trials[column]]
    trials["condition"] = [tuple(row) for row in trials[["method_key", *factors]].itertuples(index=False)]

    order = {key: i for i, key in enumerate(METHODS)}
    conditions = sorted(set(trials["condition"]), key=lambda c: (
        c[0] != BASELINE_KEY, order.get(c[0], len(order)), c[0], tuple(str(v) for v in c[1:])))
    return StudyView(results, trials, factors, models, conditions, _labels=_short_labels(factors),
                     references=references.reset_index(drop=True))


_DIVERGED_AT = re.compile(r"^\s*epoch\s+(\d+)\s*,\s*step\s+(\d+)\s*$")


def parse_divergence(value: Any) -> dict[str, Any]:
    """The trial's `diverged_at` as {'epoch': …, 'step': …} (keys present when known).

    Reads what training writes, the text "epoch E, step S" (train.py, both 1-based); also a
    dict (or its JSON text) with epoch/step keys, or a bare number (the step). Anything else
    is kept as {'where': text}."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return {}
    if isinstance(value, str):
        written = _DIVERGED_AT.match(value)
        if written:
            return {"epoch": int(written.group(1)), "step": int(written.group(2))}
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return {"where": value}
    if isinstance(value, dict):
        # Parquet stores a struct column with nulls as floats: 2.0 is epoch 2.
        return {k: int(value[k]) if isinstance(value[k], float) and value[k].is_integer() else value[k]
                for k in ("epoch", "step")
                if value.get(k) is not None and not (isinstance(value[k], float) and math.isnan(value[k]))}
    if isinstance(value, (int, float)):
        return {"step": int(value)}
    return {"where": str(value)}


def divergence_text(value: Any) -> str:
    where = parse_divergence(value)
    if "where" in where:
        return f"diverged ({where['where']})"
    parts = [f"{k} {where[k]}" for k in ("epoch", "step") if k in where]
    return f"diverged ({', '.join(parts)})" if parts else "diverged"


def _hashable(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _varies(column: pd.Series) -> bool:
    return len({_hashable(v) for v in column}) > 1


def _determined_by(trials: pd.DataFrame, column: str, axis: str) -> bool:
    """True when the column is constant within every value of `axis` (so it restates it)."""
    return all(not _varies(group[column]) for _, group in trials.groupby(axis, sort=False))


def _display_value(value: Any) -> Any:
    value = _hashable(value)
    return MISSING if value is None else value


def _short_labels(factors: list[str]) -> dict[str, str]:
    """The last dotted component of each factor, or more of it where two would clash."""
    labels = {}
    for column in factors:
        parts = column.split(".")
        depth = 1
        while depth < len(parts) and sum(c.split(".")[-depth:] == parts[-depth:] for c in factors) > 1:
            depth += 1
        labels[column] = ".".join(parts[-depth:])
    return labels
