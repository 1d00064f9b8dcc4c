"""Trial kind `numerics`: convergence order and stability bound of the trial's method on the
scalar test equation h' = a h + v(t) (discbench.numerics), beside the values the method
registry states; its report table and convergence figure.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import pandas as pd
from pydantic import Field

from ._base import Estimate, Events, Recorder, Quantity, StrictParams, TrialKind, measurement

if TYPE_CHECKING:
    from ..config import TrialConfig
    from ..report.figures import FigureFile
    from ..report.study_view import StudyView
    from ..report.tables import Table

REFERENCE_OFFSET = 3.0  # convergence figure: how far below the data the stated-order line runs


class NumericsParams(StrictParams):
    """Convergence on h' = a h + v(t) (discbench.numerics) at these step counts."""

    steps: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [40, 80, 160, 320, 640],
                                                     min_length=2)
    pole: float = Field(-2.0, lt=0)  # a
    horizon: float = Field(3.0, gt=0)  # T
    backend: Literal["reference", "torch", "cpu"] = "reference"


def _measure(cfg: TrialConfig, params: dict) -> list[dict]:
    """The trial's measurement rows: convergence at each step count, order and stability."""
    from .. import numerics
    from ..methods import get_method

    method = get_method(cfg.method, cfg.variant)
    frame = numerics.convergence(method.key, params["steps"], a=params["pole"], T=params["horizon"],
                                 backend=params["backend"])
    rows = [measurement("convergence", "error", float(r.error), "abs", method_key=method.key,
                        steps=int(r.steps), dt=float(r.dt), backend=params["backend"])
            for r in frame.itertuples()]
    try:
        order = numerics.fitted_order(frame)
    except ValueError as exc:  # every error at rounding level: no order to fit
        order, note = math.nan, str(exc)
    else:
        note = None
    bound = numerics.stability_bound(method)
    rows += [
        measurement("order", "measured_order", order, "1", method_key=method.key, note=note),
        measurement("order", "stated_order", float(method.order), "1", method_key=method.key),
        measurement("stability", "bound", bound, "z", method_key=method.key),
        measurement("stability", "stated_bound", float(method.stability_bound), "z", method_key=method.key),
    ]
    return rows


def run_numerics(cfg: TrialConfig, trial: dict, record: Recorder, events: Events) -> dict[str, Any]:
    rows = _measure(cfg, trial["params"])
    record.reset_measurements()
    record.append_measurements(rows)
    return {"status": "ok"}


def estimate_numerics(trials: list) -> Estimate:
    first = trials[0]
    start = time.perf_counter()
    _measure(first.config, first.params)
    seconds = time.perf_counter() - start
    return Estimate(seconds * len(trials), [f"{first.method_key}: one whole numerics trial took {seconds:.1f} s"])


# ----------------------------------------------------------------------------- report

def _bound(value: float) -> str:
    from ..report.tables import DASH, _num

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    return "A-stable (−∞)" if math.isinf(value) and value < 0 else _num(value, 3)


def numerics_table(view: StudyView) -> Table | None:
    from ..methods import METHODS
    from ..report.tables import DASH, Table, _int, _num, _registry_order

    m = view.results.measurements
    order = m[(m["quantity"] == "order") & (m["name"] == "measured_order")]
    bound = m[(m["quantity"] == "stability") & (m["name"] == "bound")]
    if order.empty and bound.empty:
        return None
    keys = _registry_order(list(order["method_key"]) + list(bound["method_key"]), view.baseline_key)
    keys = [k for k in METHODS if k in keys] + [k for k in keys if k not in METHODS]
    rows = []
    for key in keys:
        method = METHODS.get(key)
        mine = order[order["method_key"] == key]
        measured_order = pd.to_numeric(mine["value"], errors="coerce")
        measured_bound = bound.loc[bound["method_key"] == key, "value"].astype(float)
        # A trial records NaN with a note when no order could be fitted (run_numerics).
        why = [str(n) for n in mine["note"].dropna() if str(n)] if measured_order.isna().all() else []
        rows.append({
            "method_key": key,
            "stated_order": method.order if method else math.nan,
            "measured_order": measured_order.mean() if measured_order.notna().any() else math.nan,
            "order_note": why[0] if why else "",
            "stated_stability_bound": method.stability_bound if method else math.nan,
            "measured_stability_bound": measured_bound.mean() if len(measured_bound) else math.nan,
        })
    data = pd.DataFrame(rows)
    display = pd.DataFrame({
        "method": data["method_key"],
        "stated order (METHODS.md)": [_int(v) if not math.isnan(v) else DASH for v in data["stated_order"]],
        "measured order": [f"no fit ({note})" if note else _num(v, 2)
                           for v, note in zip(data["measured_order"], data["order_note"])],
        "stated stability bound": [_bound(v) for v in data["stated_stability_bound"]],
        "measured stability bound": [_bound(v) for v in data["measured_stability_bound"]],
    })
    ids = m.loc[m["quantity"].isin(["order", "stability"]), "trial_id"]
    caption = ("Numerics on h' = a h + v(t): global convergence order fitted to the error at t = T "
               "against the step size (order 0: does not converge), and the stability bound, the most "
               "negative z = aΔ with |Ā(z)| ≤ 1 on all of [z, 0] (A-stable: for every z ≤ 0), each "
               "beside the value docs/METHODS.md states (the method registry); 'no fit': the trial recorded "
               "no order, with its reason. "
               f"Measured on {view.provenance(ids)}.")
    return Table("numerics", "Numerics: order and stability", caption, display, data)


def convergence_figure(view: StudyView, out_dir: Path) -> FigureFile | None:
    import matplotlib.pyplot as plt
    import numpy as np

    from ..methods import METHODS, parse_method
    from ..report.figures import _label_log_ticks, _save, _theme, method_style

    m = view.results.measurements
    m = m[(m["quantity"] == "convergence") & (m["name"] == "error")].copy()
    if m.empty:
        return None
    m["dt"] = pd.to_numeric(m["dt"], errors="coerce")
    m["value"] = pd.to_numeric(m["value"], errors="coerce")
    m = m[(m["dt"] > 0) & (m["value"] > 0)]
    if m.empty:
        return None
    keys = [k for k in METHODS if k in set(m["method_key"])] + sorted(set(m["method_key"]) - set(METHODS))
    variants = list(dict.fromkeys(parse_method(k)[1] for k in keys))
    style, context = _theme()
    with style, context:
        fig, axes = plt.subplots(1, len(variants), squeeze=False, sharey=True,
                                 figsize=(5.0 * len(variants) + 0.5, 5.4))
        for ax, variant in zip(axes[0], variants):
            for key in [k for k in keys if parse_method(k)[1] == variant]:
                curve = m[m["method_key"] == key].groupby("dt")["value"].mean().sort_index()
                look = method_style(key)
                method = METHODS.get(key)
                ax.plot(curve.index, curve.to_numpy(), color=look["color"], marker=look["marker"],
                        markerfacecolor=look["markerfacecolor"], linestyle="-", linewidth=1.4, markersize=6,
                        label=f"{key} (stated order {method.order})" if method else key)
                if method is not None:
                    # The stated order as a reference slope, REFERENCE_OFFSET below the finest
                    # measured point so that it does not hide a line that has exactly that slope.
                    dt0, e0 = curve.index[0], curve.iloc[0] / REFERENCE_OFFSET
                    dts = np.array([curve.index.min(), curve.index.max()])
                    ax.plot(dts, e0 * (dts / dt0) ** method.order, color=look["color"], linestyle="--",
                            linewidth=1.1, dashes=(4, 3))
            ax.set_xscale("log")
            ax.set_yscale("log")
            _label_log_ticks(ax.xaxis, sorted(set(m["dt"])))
            ax.set_xlabel("step size Δt")
            if ax is axes[0][0]:
                ax.set_ylabel("global error |h(T) − exact|")
            ax.set_title(f"variant: {variant}")
            ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
        fig.suptitle("Convergence on h' = a h + v(t): measured error (solid) and stated order (dashed)", fontsize=10)
        fig.tight_layout()
    ids = view.results.measurements.loc[view.results.measurements["quantity"] == "convergence", "trial_id"]
    caption = ("Convergence: global error at t = T against the step size Δt, log-log, one solid line per "
               "method; the dashed line of the same colour has the slope of the order METHODS.md states, "
               f"drawn {REFERENCE_OFFSET:g}× below the finest measured point (a method converges at its stated "
               f"order where the two are parallel). Methods with equal errors draw on top of each other; "
               f"hollow markers show the one beneath. {view.provenance(ids)}.")
    return _save(fig, out_dir, "fig_convergence", "Convergence order", caption)


KIND = TrialKind(
    "numerics", NumericsParams, builds_model=False, trains=False, run=run_numerics, estimate=estimate_numerics,
    quantities={
        "convergence": Quantity("name='error': |h(T) - exact| on h' = a h + v(t)", ("method_key", "steps", "dt", "backend")),
        "order": Quantity("name='measured_order' (value) beside name='stated_order'", ("method_key",)),
        "stability": Quantity("name='bound': most negative z with |Ā(z)| <= 1 (-inf: A-stable)", ("method_key",)),
    },
    tables=(numerics_table,), figures=(convergence_figure,))
