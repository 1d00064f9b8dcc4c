"""The trial kinds: one file per kind in this folder, each defining `KIND` (a TrialKind with
its parameters, run, cost estimate, measured quantities and report tables and figures).

    train       train a model, then measure its throughput, memory, sampling-rate transfer and λ
    numerics    convergence order and stability bound of a method on a scalar test equation
    kernels     scan timings per backend × length × pass
    resolution  inference throughput and memory of an untrained model per batch × resolution

Adding a kind is adding a file here: `TRIAL_KINDS` collects every module of this package
(except those whose name starts with "_"), the default kind first, then by name. study.py
(the study file's `kind` and parameter sections), trials.py (dispatch), runner.py, results.py
(the measurement quantities and columns) and the report (tables and figures) read it.
"""

from __future__ import annotations

import importlib
import pkgutil

from ._base import MEASUREMENT_BASE_COLUMNS, Estimate, Events, Quantity, StrictParams, TrialKind, measurement

DEFAULT_KIND = "train"


def _discover() -> dict[str, TrialKind]:
    modules = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    kinds = [importlib.import_module(f"{__name__}.{name}").KIND for name in modules]
    kinds.sort(key=lambda k: (k.name != DEFAULT_KIND, k.name))
    return {kind.name: kind for kind in kinds}


TRIAL_KINDS: dict[str, TrialKind] = _discover()


def quantities() -> dict[str, Quantity]:
    """Every measured quantity of the kinds registered now (read at call time, so that a kind
    registered later counts). A quantity two kinds share must mean the same in both."""
    out: dict[str, Quantity] = {}
    for kind in TRIAL_KINDS.values():
        for name, quantity in kind.quantities.items():
            if name in out and out[name] != quantity:
                raise ValueError(f"quantity {name!r} of trial kind {kind.name!r} differs from another "
                                 f"kind's {name!r}; give it another name or the same meaning")
            out[name] = quantity
    return out


def measurement_columns() -> list[str]:
    """The measurements table's columns: the base columns, then each quantity's context
    columns in registry order."""
    columns = list(MEASUREMENT_BASE_COLUMNS)
    for quantity in quantities().values():
        columns += [c for c in quantity.columns if c not in columns]
    return columns


__all__ = ["TRIAL_KINDS", "DEFAULT_KIND", "TrialKind", "Quantity", "Events", "Estimate", "StrictParams",
           "measurement", "quantities", "measurement_columns"]
