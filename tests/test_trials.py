"""discbench.trials without Ray: run_trial's bookkeeping in trial.json (ok, skip, failed and
retried, busy folder) on real numerics trials, and what may change between a run and its resume."""

from __future__ import annotations

import fcntl
import json
import os

import pytest

from discbench import results, trials
from discbench.config import TrialConfig, result_neutral_fields
from discbench.runner import trial_spec
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


def _specs(tmp_path) -> list[dict]:
    path = tmp_path / "numerics_tiny.yaml"
    path.write_text(NUMERICS)
    study = load_study(path)
    return [trial_spec(study, t, tmp_path / "results" / study.name) for t in study.trials]


def _measurements(spec: dict) -> list[dict]:
    folder = results.trial_dir(spec["study_path"], spec["trial_id"])
    return [json.loads(line) for line in (folder / "measurements.jsonl").read_text().splitlines()]


def test_a_numerics_trial_records_its_row_and_measurements_then_is_not_run_again(tmp_path):
    spec = _specs(tmp_path)[1]  # foh/canonical: order 2
    row = trials.run_trial(spec)
    assert row["status"] == "ok" and row["attempts"] == 1 and row["method_key"] == "foh/canonical"
    assert row["error"] is None and row["finished_at"] is not None
    stored = results.read_trial(results.trial_dir(spec["study_path"], spec["trial_id"]))
    assert stored["status"] == "ok" and json.loads(stored["config"]) == spec["resolved"]
    by_name = {m["name"]: m["value"] for m in _measurements(spec)}
    assert by_name["stated_order"] == 2.0 and abs(by_name["measured_order"] - 2.0) < 0.25
    assert [m["steps"] for m in _measurements(spec) if m["kind"] == "convergence"] == [40, 80, 160, 320]

    trial_json = results.trial_dir(spec["study_path"], spec["trial_id"]) / "trial.json"
    before = trial_json.stat().st_mtime_ns
    # finished with the same configuration: returned as stored, not run again
    assert trials.run_trial(spec)["attempts"] == 1 and trial_json.stat().st_mtime_ns == before


def test_a_failing_trial_is_recorded_with_its_traceback_re_raised_and_counted_on_the_next_attempt(tmp_path):
    spec = _specs(tmp_path)[0]
    # the study file refuses such a backend; here it stands for any error inside a trial
    spec["params"]["backend"] = "no_such_backend"
    with pytest.raises(ValueError, match="unknown backend 'no_such_backend'"):
        trials.run_trial(spec)
    row = results.read_trial(results.trial_dir(spec["study_path"], spec["trial_id"]))
    assert row["status"] == "failed" and row["attempts"] == 1
    assert row["error"].startswith("ValueError: unknown backend 'no_such_backend'")
    assert row["traceback"].startswith("Traceback") and "numerics.py" in row["traceback"]
    with pytest.raises(ValueError):
        trials.run_trial(spec)  # Ray's retry: the same folder, one attempt more
    again = results.read_trial(results.trial_dir(spec["study_path"], spec["trial_id"]))
    assert again["attempts"] == 2 and again["started_at"] == row["started_at"]


def test_a_trial_folder_held_by_another_attempt_is_reported_busy(tmp_path, monkeypatch):
    spec = _specs(tmp_path)[0]
    folder = results.trial_dir(spec["study_path"], spec["trial_id"])
    holder = os.open(folder / trials.TRIAL_LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)  # an earlier attempt that is still alive
    os.write(holder, b"4242\n")
    monkeypatch.setattr(trials, "TRIAL_LOCK_WAIT_S", 0.2)
    try:
        with pytest.raises(trials.TrialFolderBusy, match="still used by process 4242"):
            trials.run_trial(spec)
    finally:
        os.close(holder)
    assert results.read_trial(folder) is None  # it wrote nothing
    assert trials.run_trial(spec)["status"] == "ok"  # once released, the trial runs


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
    spec = _specs(tmp_path)[0]
    trials.run_trial(spec)
    trial_json = results.trial_dir(spec["study_path"], spec["trial_id"]) / "trial.json"
    stored = trial_json.read_text()
    moved = {**spec, "resolved": {**spec["resolved"], "data": {**spec["resolved"]["data"], "root": "/moved"}}}
    assert trials.run_trial(moved)["attempts"] == 1 and trial_json.read_text() == stored
    retrained = {**spec, "resolved": {**spec["resolved"], "seed": 1}}  # a change that matters
    assert trials.run_trial(retrained)["attempts"] == 2


def test_a_kind_registered_in_one_place_is_validated_expanded_and_run(tmp_path, monkeypatch):
    from pydantic import BaseModel, ConfigDict

    from discbench.study import StudyError, trial_table

    class EchoParams(BaseModel):
        model_config = ConfigDict(extra="forbid")
        value: float = 1.0

    def run_echo(cfg, spec, folder, events):
        results.reset_measurements(folder)
        results.append_measurements(folder, [{"kind": "order", "name": "echo", "value": spec["params"]["value"],
                                              "unit": "1", "method_key": cfg.method_key}])
        return {"status": "ok"}

    echo = trials.TrialKind("echo", EchoParams, builds_model=False, trains=False, run=run_echo,
                            estimate=lambda ts: trials.Estimate(0.0, []), measurements=("order",))
    monkeypatch.setitem(trials.TRIAL_KINDS, "echo", echo)
    path = tmp_path / "echo.yaml"
    path.write_text("name: echo\ndescription: a throwaway kind\nkind: echo\nmethods: [zoh, foh]\n"
                    "echo: {value: 2.5}\n")
    study = load_study(path)
    assert [t.kind for t in study.trials] == ["echo", "echo"] and study.trials[0].params == {"value": 2.5}
    assert trial_table(study)[1].split()[2:5] == ["-", "-", "-"]  # no model, data or input
    spec = trial_spec(study, study.trials[1], tmp_path / "results" / study.name)
    row = trials.run_trial(spec)
    assert row["status"] == "ok" and row["kind"] == "echo" and row["model"] is None
    assert [(m["name"], m["value"], m["method_key"]) for m in _measurements(spec)] == [("echo", 2.5, "foh/canonical")]

    path.write_text("name: echo\ndescription: a throwaway kind\nkind: echo\nmethods: [zoh]\necho: {valu: 2}\n")
    with pytest.raises(StudyError, match=r"echo\.valu: unknown key; valid keys here: value"):
        load_study(path)
    path.write_text("name: echo\ndescription: x\nkind: numerics\nmethods: [zoh]\necho: {value: 2}\n")
    with pytest.raises(StudyError, match="echo: only for kind 'echo'; this study's kind is 'numerics'"):
        load_study(path)
    monkeypatch.delitem(trials.TRIAL_KINDS, "echo")
    with pytest.raises(StudyError, match="kind: got 'echo'; allowed: 'train', 'numerics'"):
        path.write_text("name: echo\ndescription: x\nkind: echo\nmethods: [zoh]\n")
        load_study(path)


def test_every_kind_writes_only_documented_measurement_kinds():
    for kind in trials.TRIAL_KINDS.values():
        assert kind.measurements and set(kind.measurements) <= set(results.MEASUREMENT_KINDS), kind.name
