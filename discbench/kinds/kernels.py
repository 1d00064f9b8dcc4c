"""Trial kind `kernels`: selective-scan timings (discbench.bench.time_scan) of the trial's
method per backend × length × pass; its report table of every size (the cost table, which
this kind also declares, shows the largest).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any, Literal

import pandas as pd
from pydantic import Field

from ._base import Estimate, Events, Recorder, Quantity, StrictParams, TrialKind, measurement

if TYPE_CHECKING:
    from ..config import TrialConfig
    from ..report.study_view import StudyView
    from ..report.tables import Table


class KernelsParams(StrictParams):
    """Scan timings (discbench.bench.time_scan) per backend × length × pass."""

    backends: list[Literal["cpu", "torch", "reference", "mamba_ref"]] = Field(
        default_factory=lambda: ["cpu", "torch"], min_length=1)
    lengths: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [197], min_length=1)
    batch: int = Field(8, gt=0)
    dim: int = Field(384, gt=0)
    state: int = Field(16, gt=0)
    passes: list[Literal["fwd", "fwd+bwd"]] = Field(default_factory=lambda: ["fwd", "fwd+bwd"], min_length=1)
    repeats: int = Field(5, gt=0)
    dtype: Literal["float32", "bfloat16"] = "float32"


def _backend_unavailable(backend: str) -> str | None:
    if backend == "mamba_ref":
        from ..bench import mamba_selective_scan_ref

        return None if mamba_selective_scan_ref() is not None else "mamba_ssm is not installed"
    from ..scan import BACKENDS

    return BACKENDS[backend].unavailable_reason()


def run_kernels(cfg: TrialConfig, trial: dict, record: Recorder, events: Events) -> dict[str, Any]:
    from ..bench import time_scan

    params = trial["params"]
    record.reset_measurements()
    for backend in params["backends"]:
        if backend == "mamba_ref" and cfg.method_key != "zoh/paper":
            continue  # mamba_ssm's reference computes Mamba's ZOH only
        why = _backend_unavailable(backend)
        for length in params["lengths"]:
            for pass_ in params["passes"]:
                context = dict(method_key=cfg.method_key, backend=backend, batch_size=params["batch"],
                               length=length, **{"pass": pass_})
                if why is not None:
                    rows = [measurement("scan_time", "ms_median", None, "ms", status="unavailable",
                                        note=why, **context)]
                else:
                    row = time_scan(cfg.method, cfg.variant, backend,
                                    (params["batch"], params["dim"], length, params["state"]),
                                    pass_, params["repeats"], dtype=params["dtype"])
                    note = f"dim {params['dim']}, state {params['state']}, {params['dtype']}, {row['threads']} threads"
                    rows = [measurement("scan_time", name, row[name], "ms", status="ok", note=note, **context)
                            for name in ("ms_median", "ms_min")]
                record.append_measurements(rows)
    return {"status": "ok"}


def estimate_kernels(trials: list) -> Estimate:
    from ..bench import time_scan

    params = trials[0].params
    shortest = min(params["lengths"])
    per_call: dict[str, float] = {}
    how = []
    for backend in params["backends"]:
        if _backend_unavailable(backend) is not None:
            continue
        row = time_scan(trials[0].config.method, trials[0].config.variant, backend,
                        (params["batch"], params["dim"], shortest, params["state"]), "fwd", 1, params["dtype"])
        per_call[backend] = row["ms_median"] / 1e3
        how.append(f"{backend}: {row['ms_median']:.2f} ms per fwd scan at length {shortest}")
    passes = sum(1 if p == "fwd" else 3 for p in params["passes"])  # fwd+bwd ≈ 3 fwd
    calls = params["repeats"] + 1
    per_trial = sum(s * calls * passes * sum(length / shortest for length in params["lengths"])
                    for s in per_call.values())
    how.append("extrapolated linearly in length; fwd+bwd counted as 3 forward passes")
    return Estimate(per_trial * len(trials), how)


# ----------------------------------------------------------------------------- report

def scan_time_table(view: StudyView) -> Table | None:
    from ..report.tables import DASH, Table, _int, _num, _ratio, _registry_order, _scan_times

    scans = _scan_times(view)
    if scans.empty or len(scans.drop_duplicates(["backend", "pass", "batch_size", "length"])) == \
            len(scans.drop_duplicates(["backend", "pass"])):
        return None  # one size per backend and pass: the cost table already shows it all
    scans = scans.assign(setting=[f"{b} {p}, b={_int(bs)}, L={_int(length)}" for b, p, bs, length in
                                  zip(scans["backend"], scans["pass"], scans["batch_size"], scans["length"])])
    keys = _registry_order(scans["method_key"].unique(), view.baseline_key)
    display = pd.DataFrame({"method": keys})
    for setting, group in scans.groupby("setting", sort=False):
        times = dict(zip(group["method_key"], group["value"]))
        base = times.get(view.baseline_key, math.nan)
        display[f"{setting} (ms)"] = [
            DASH if k not in times else _num(times[k], 3)
            + ("" if k == view.baseline_key else f" ({_ratio(times[k] / base)})") for k in keys]
    ids = view.results.measurements.loc[view.results.measurements["quantity"] == "scan_time", "trial_id"]
    caption = ("Selective-scan time: median ms per call for each backend, pass (fwd or fwd+bwd), batch b "
               f"and sequence length L; in parentheses the ratio to {view.baseline_key}. "
               f"Measured on {view.provenance(ids)}.")
    return Table("scan_time", "Scan time", caption, display, scans.drop(columns=["setting"]))


KIND = TrialKind(
    "kernels", KernelsParams, builds_model=False, trains=False, run=run_kernels, estimate=estimate_kernels,
    quantities={"scan_time": Quantity("name='ms_median' / 'ms_min': ms per scan call; pass 'fwd' or 'fwd+bwd'",
                                      ("method_key", "backend", "pass", "batch_size", "length"))},
    tables=("discbench.report.tables:cost_table", scan_time_table))
