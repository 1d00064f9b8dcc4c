"""discbench.trials without Ray: run_trial's bookkeeping in trial.json (ok, skip, failed and
retried, busy folder) on real numerics trials, what may change between a run and its resume,
what the kernels and resolution kinds record and report,
and that a trial kind is one registration (discbench.kinds) from study file to report."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from discbench import kinds, results, trials
from discbench.config import TrialConfig, result_neutral_fields
from discbench.runner import trial_dict
from discbench.study import load_study

NUMERICS = """
name: numerics_tiny
description: two numerics trials
kind: numerics
methods: [zoh, foh]
numerics: {steps: [40, 80, 160, 320], pole: -2.0, horizon: 3.0, backend: reference}
resources: {cpus: 1}
retries: 0
"""


def _trials(tmp_path) -> list[dict]:
    path = tmp_path / "numerics_tiny.yaml"
    path.write_text(NUMERICS)
    study = load_study(path)
    return [trial_dict(study, t, tmp_path / "results" / study.name) for t in study.trials]


def _measurements(trial: dict) -> list[dict]:
    folder = results.trial_dir(trial["study_path"], trial["trial_id"])
    return [json.loads(line) for line in (folder / "measurements.jsonl").read_text().splitlines()]


def test_a_numerics_trial_records_its_row_and_measurements_then_is_not_run_again(tmp_path):
    trial = _trials(tmp_path)[1]  # foh/canonical: order 2
    row = trials.run_trial(trial)
    assert row["status"] == "ok" and row["attempts"] == 1 and row["method_key"] == "foh/canonical"
    assert row["error"] is None and row["finished_at"] is not None
    stored = results.read_trial(results.trial_dir(trial["study_path"], trial["trial_id"]))
    assert stored["status"] == "ok" and json.loads(stored["config"]) == trial["resolved"]
    by_name = {m["name"]: m["value"] for m in _measurements(trial)}
    assert by_name["stated_order"] == 2.0 and abs(by_name["measured_order"] - 2.0) < 0.25
    assert [m["steps"] for m in _measurements(trial) if m["quantity"] == "convergence"] == [40, 80, 160, 320]

    trial_json = results.trial_dir(trial["study_path"], trial["trial_id"]) / "trial.json"
    before = trial_json.stat().st_mtime_ns
    # finished with the same configuration: returned as stored, not run again
    assert trials.run_trial(trial)["attempts"] == 1 and trial_json.stat().st_mtime_ns == before


def test_a_failing_trial_is_recorded_with_its_traceback_re_raised_and_counted_on_the_next_attempt(tmp_path):
    trial = _trials(tmp_path)[0]
    # the study file refuses such a backend; here it stands for any error inside a trial
    trial["params"]["backend"] = "no_such_backend"
    with pytest.raises(ValueError, match="unknown backend 'no_such_backend'"):
        trials.run_trial(trial)
    row = results.read_trial(results.trial_dir(trial["study_path"], trial["trial_id"]))
    assert row["status"] == "failed" and row["attempts"] == 1
    assert row["error"].startswith("ValueError: unknown backend 'no_such_backend'")
    assert row["traceback"].startswith("Traceback") and "numerics.py" in row["traceback"]
    with pytest.raises(ValueError):
        trials.run_trial(trial)  # Ray's retry: the same folder, one attempt more
    again = results.read_trial(results.trial_dir(trial["study_path"], trial["trial_id"]))
    assert again["attempts"] == 2 and again["started_at"] == row["started_at"]


def test_a_trial_folder_held_by_another_attempt_is_reported_busy(tmp_path, monkeypatch):
    trial = _trials(tmp_path)[0]
    folder = results.trial_dir(trial["study_path"], trial["trial_id"])
    holder = os.open(folder / trials.TRIAL_LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)  # an earlier attempt that is still alive
    os.write(holder, b"4242\n")
    monkeypatch.setattr(trials, "TRIAL_LOCK_WAIT_S", 0.2)
    try:
        with pytest.raises(trials.TrialFolderBusy, match="still used by process 4242"):
            trials.run_trial(trial)
    finally:
        os.close(holder)
    assert results.read_trial(folder) is None  # it wrote nothing
    assert trials.run_trial(trial)["status"] == "ok"  # once released, the trial runs


def test_only_the_result_neutral_fields_may_change_between_a_run_and_its_resume():
    assert set(result_neutral_fields()) == {"data.root", "data.workers", "model.scan_backend", "train.device"}
    base = TrialConfig().model_dump(mode="json")
    moved = TrialConfig(data={"root": "/elsewhere", "workers": 4}, model={"scan_backend": "torch"},
                        train={"device": "cpu"}).model_dump(mode="json")
    assert trials.comparable(base) == trials.comparable(moved)
    assert "root" not in trials.comparable(base)["data"] and base["data"]["root"] is None  # a copy
    changed = TrialConfig(train={"epochs": 2}).model_dump(mode="json")
    assert trials.comparable(base) != trials.comparable(changed)


def test_a_finished_trial_is_not_rerun_after_its_data_moved(tmp_path):
    trial = _trials(tmp_path)[0]
    trials.run_trial(trial)
    trial_json = results.trial_dir(trial["study_path"], trial["trial_id"]) / "trial.json"
    stored = trial_json.read_text()
    moved = {**trial, "resolved": {**trial["resolved"], "data": {**trial["resolved"]["data"], "root": "/moved"}}}
    assert trials.run_trial(moved)["attempts"] == 1 and trial_json.read_text() == stored
    retrained = {**trial, "resolved": {**trial["resolved"], "seed": 1}}  # a change that matters
    assert trials.run_trial(retrained)["attempts"] == 2


def test_a_kind_registered_in_one_place_is_validated_expanded_run_and_reported(tmp_path, monkeypatch):
    """A throwaway kind with its own parameters, its own measured quantity and its own report
    table, registered as one TrialKind: the study file takes its section, run_trial runs it,
    results keep its rows and the report shows its table with the values it wrote."""
    import pandas as pd
    from pydantic import Field

    from discbench.report import build_report
    from discbench.report.tables import Table
    from discbench.study import StudyError, trial_table

    class EchoParams(kinds.StrictParams):
        value: float = Field(1.0, gt=0)

    def run_echo(cfg, trial, record, events):
        record.reset_measurements()
        record.append_measurements([kinds.measurement("echo", "echoed", trial["params"]["value"] * (1 + cfg.seed),
                                                      "1", method_key=cfg.method_key, echo_slot=cfg.seed)])
        return {"status": "ok"}

    def echo_table(view):
        m = view.results.measurements
        m = m[m["quantity"] == "echo"]
        if m.empty:
            return None
        display = pd.DataFrame({"method": m["method_key"], "slot": m["echo_slot"].astype(int).astype(str),
                                "echoed": [f"{v:.2f}" for v in m["value"]]})
        return Table("echo", "Echo", "What the echo kind wrote.", display.reset_index(drop=True),
                     m.reset_index(drop=True))

    echo = kinds.TrialKind("echo", EchoParams, builds_model=False, trains=False, run=run_echo,
                           estimate=lambda ts: kinds.Estimate(0.0, []),
                           quantities={"echo": kinds.Quantity("name='echoed'", ("method_key", "echo_slot"))},
                           tables=(echo_table,))
    monkeypatch.setitem(kinds.TRIAL_KINDS, "echo", echo)
    path = tmp_path / "echo.yaml"
    path.write_text("name: echo\ndescription: a throwaway kind\nkind: echo\nmethods: [zoh, foh]\n"
                    "grid: {seed: [0, 1]}\necho: {value: 2.5}\n")
    study = load_study(path)
    assert [t.kind for t in study.trials] == ["echo"] * 4 and study.trials[0].params == {"value": 2.5}
    assert trial_table(study)[1].split()[2:5] == ["-", "-", "-"]  # no model, data or input
    study_path = tmp_path / "results" / study.name
    results.write_study_meta(study_path, study.name, path.read_text())
    for t in study.trials:
        row = trials.run_trial(trial_dict(study, t, study_path))
        assert row["status"] == "ok" and row["kind"] == "echo" and row["model"] is None
    stored = results.consolidate(study_path).measurements
    assert "echo_slot" in stored.columns  # the new quantity's own column

    report = build_report(study_path, tmp_path / "reports")
    echo_md = (report.out_dir / "echo.md").read_text()
    for line in ("| zoh/canonical | 0 | 2.50 |", "| zoh/canonical | 1 | 5.00 |",
                 "| foh/canonical | 0 | 2.50 |", "| foh/canonical | 1 | 5.00 |"):
        assert line in echo_md
    assert "echo" in (report.out_dir / "index.md").read_text()

    # a quantity the kind does not declare is refused, so its declaration is what it writes
    bad = trial_dict(study, study.trials[0], tmp_path / "other")
    monkeypatch.setitem(kinds.TRIAL_KINDS, "echo", dataclasses.replace(echo, quantities={}))
    with pytest.raises(ValueError, match="measured quantity echo not among"):
        trials.run_trial(bad)
    monkeypatch.setitem(kinds.TRIAL_KINDS, "echo", echo)

    path.write_text("name: echo\ndescription: a throwaway kind\nkind: echo\nmethods: [zoh]\necho: {valu: 2}\n")
    with pytest.raises(StudyError, match=r"echo\.valu: unknown key; valid keys here: value"):
        load_study(path)
    path.write_text("name: echo\ndescription: x\nkind: numerics\nmethods: [zoh]\necho: {value: 2}\n")
    with pytest.raises(StudyError, match="echo: only for kind 'echo'; this study's kind is 'numerics'"):
        load_study(path)
    monkeypatch.delitem(kinds.TRIAL_KINDS, "echo")
    with pytest.raises(StudyError, match="kind: got 'echo'; allowed: 'train', 'kernels', 'numerics' or 'resolution'"):
        path.write_text("name: echo\ndescription: x\nkind: echo\nmethods: [zoh]\n")
        load_study(path)


def test_every_kind_file_is_registered_with_report_builders_that_exist():
    from pathlib import Path

    from discbench.report.contents import resolve_builder

    files = sorted(p.stem for p in Path(kinds.__file__).parent.glob("[!_]*.py"))
    assert sorted(kinds.TRIAL_KINDS) == files
    for kind in kinds.TRIAL_KINDS.values():
        assert all(callable(resolve_builder(b)) for b in (*kind.tables, *kind.figures)), kind.name
    with pytest.raises(ValueError, match="report builder 'discbench.report.tables:no_such_table'"):
        resolve_builder("discbench.report.tables:no_such_table")


def _run_study(tmp_path, text: str) -> tuple[Path, list[dict]]:
    """Run every trial of a study file through run_trial (no Ray); its results folder and rows."""
    path = tmp_path / "study.yaml"
    path.write_text(text)
    study = load_study(path)
    study_path = tmp_path / "results" / study.name
    results.write_study_meta(study_path, study.name, text)
    rows = [trials.run_trial(trial_dict(study, t, study_path)) for t in study.trials]
    return study_path, rows


def test_a_kernels_trial_times_each_backend_length_and_pass_and_reports_them(tmp_path):
    from discbench.report import build_report

    study_path, rows = _run_study(tmp_path, """
name: kernels_tiny
description: two methods, two backends, two lengths
kind: kernels
methods: [zoh/paper, foh]
kernels: {backends: [torch, reference], lengths: [8, 16], batch: 1, dim: 4, state: 2, passes: [fwd], repeats: 1}
""")
    assert [r["status"] for r in rows] == ["ok", "ok"] and rows[0]["model"] is None
    m = results.consolidate(study_path).measurements
    assert set(m["quantity"]) == {"scan_time"} and set(m["name"]) == {"ms_median", "ms_min"}
    median = m[m["name"] == "ms_median"]
    assert sorted(zip(median["method_key"], median["backend"], median["length"])) == sorted(
        (k, b, n) for k in ("zoh/paper", "foh/canonical") for b in ("torch", "reference") for n in (8, 16))
    assert (median["value"] > 0).all() and (median["pass"] == "fwd").all()
    report = build_report(study_path, tmp_path / "reports")
    scan_time = pd.read_csv(report.out_dir / "scan_time.csv")
    mean = median.groupby(["method_key", "backend", "length"])["value"].mean()
    for row in scan_time.itertuples():
        assert row.value == pytest.approx(mean[(row.method_key, row.backend, row.length)])
    assert {p.name for p in report.files} >= {"cost.md", "scan_time.md"}


def test_a_resolution_trial_measures_each_batch_and_resolution_and_reports_them(tmp_path):
    from discbench.report import build_report

    study_path, rows = _run_study(tmp_path, """
name: resolution_tiny
description: an untrained micro model at two resolutions
kind: resolution
methods: [zoh/paper]
model: {name: vim_micro, patch_size: 4}
train: {device: cpu}
measure: {batch_sizes: [1, 2], resolutions: [8, 16], warmup: 0, repeats: 1}
""")
    assert rows[0]["status"] == "ok" and rows[0]["model"] == "vim_micro" and rows[0]["dataset"] is None
    m = results.consolidate(study_path).measurements
    throughput = m[m["quantity"] == "throughput"]
    assert set(throughput["name"]) == {"infer_images_per_s"} and set(throughput["unit"]) == {"images/s"}
    assert sorted(zip(throughput["batch_size"], throughput["resolution"])) == [(1, 8), (1, 16), (2, 8), (2, 16)]
    assert (throughput["status"] == "ok").all() and (throughput["value"] > 0).all()
    assert set(m.loc[m["quantity"] == "memory", "name"]) == {"peak_mem_mb", "peak_mem_delta_mb"}
    report = build_report(study_path, tmp_path / "reports")
    assert "fig_resolution.png" in {p.name for p in report.files}
