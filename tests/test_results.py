"""discbench.results without Ray: trial rows, atomic writes, the crash-recovery helpers and
consolidation over the partial files a crashed run leaves behind."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from discbench import results


def _study(tmp_path, name="s"):
    path = tmp_path / name
    results.write_study_meta(path, name, "name: s\n")
    return path


def _epoch(epoch: int) -> dict:
    return {"epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 1.0, "top1": 10.0 * epoch, "top5": 50.0,
            "lr": 1e-3, "images_per_s": 100.0, "epoch_time_s": 1.0, "peak_mem_mb": 10.0}


def test_a_trial_row_round_trips_with_its_config_as_sorted_json(tmp_path):
    folder = results.trial_dir(tmp_path / "s", "zoh-canonical")
    assert results.read_trial(folder) is None
    results.write_trial(folder, {"trial_id": "zoh-canonical", "status": "running",
                                 "config": {"train": {"lr": 0.1}, "data": {"root": None}}})
    row = results.read_trial(folder)
    assert row["status"] == "running" and row["schema_version"] == results.SCHEMA_VERSION
    assert row["config"] == json.dumps({"data": {"root": None}, "train": {"lr": 0.1}})


def test_a_write_that_fails_before_its_rename_leaves_the_previous_row(tmp_path, monkeypatch):
    folder = results.trial_dir(tmp_path / "s", "t")
    results.write_trial(folder, {"trial_id": "t", "status": "running"})

    def crash(src, dst):
        raise OSError("killed mid-write")

    monkeypatch.setattr(results.os, "replace", crash)
    with pytest.raises(OSError):
        results.write_trial(folder, {"trial_id": "t", "status": "ok"})
    monkeypatch.undo()
    # the half-done write is only in trial.json.tmp; trial.json still holds the whole old row
    assert results.read_trial(folder)["status"] == "running"
    assert (folder / "trial.json.tmp").exists()
    results.write_trial(folder, {"trial_id": "t", "status": "ok"})  # the next write replaces both
    assert results.read_trial(folder)["status"] == "ok" and not (folder / "trial.json.tmp").exists()


def test_reset_epochs_keeps_the_epochs_a_checkpoint_has_and_skips_a_line_cut_by_a_crash(tmp_path):
    folder = results.trial_dir(tmp_path / "s", "t")
    results.reset_epochs(folder, 0)  # no log yet: nothing to do
    assert not (folder / "epochs.jsonl").exists()
    for epoch in (1, 2, 3):
        results.append_epoch(folder, _epoch(epoch))
    with open(folder / "epochs.jsonl", "a") as f:
        f.write('{"epoch": 4, "train_lo')  # the runner was killed while appending epoch 4
    results.reset_epochs(folder, 2)  # the checkpoint holds 2 epochs: 3 and 4 are redone
    lines = (folder / "epochs.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    results.append_epoch(folder, _epoch(3))
    assert [json.loads(line)["epoch"] for line in (folder / "epochs.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_reset_measurements_starts_a_trial_s_measurements_over(tmp_path):
    folder = results.trial_dir(tmp_path / "s", "t")
    results.reset_measurements(folder)  # none yet
    results.append_measurements(folder, [{"quantity": "throughput", "name": "infer_images_per_s", "value": 1.0}])
    results.reset_measurements(folder)
    results.append_measurements(folder, [{"quantity": "throughput", "name": "infer_images_per_s", "value": 2.0}])
    rows = [json.loads(line) for line in (folder / "measurements.jsonl").read_text().splitlines()]
    assert [r["value"] for r in rows] == [2.0]


def test_consolidate_gathers_finished_running_and_empty_trial_folders(tmp_path):
    study = _study(tmp_path)
    done = results.trial_dir(study, "a-done")
    results.write_trial(done, {"trial_id": "a-done", "status": "ok", "top1": 90.0,
                               "config": {"train": {"epochs": 2}, "measure": {"batch_sizes": [8, 16]}}})
    for epoch in (1, 2):
        results.append_epoch(done, _epoch(epoch))
    results.append_measurements(done, [{"quantity": "throughput", "name": "infer_images_per_s", "value": 5.0,
                                        "unit": "images/s", "batch_size": 8}])
    running = results.trial_dir(study, "b-running")  # killed during its second epoch
    results.write_trial(running, {"trial_id": "b-running", "status": "running", "config": {"train": {"epochs": 2}}})
    results.append_epoch(running, _epoch(1))
    with open(running / "epochs.jsonl", "a") as f:
        f.write('{"epoch": 2, "tr')
    results.trial_dir(study, "c-never-started")  # folder made, no trial.json yet

    tables = results.consolidate(study)
    trials = tables.trials.set_index("trial_id")
    assert list(trials.index) == ["a-done", "b-running"]
    assert list(trials["status"]) == ["ok", "running"]
    assert trials.loc["a-done", "config.train.epochs"] == 2
    assert trials.loc["a-done", "config.measure.batch_sizes"] == "[8, 16]"  # lists as JSON text
    assert set(results.TRIAL_COLUMNS) <= set(tables.trials.columns)
    assert list(zip(tables.epochs["trial_id"], tables.epochs["epoch"])) == [("a-done", 1), ("a-done", 2),
                                                                            ("b-running", 1)]
    assert list(tables.measurements["value"]) == [5.0] and tables.measurements["trial_id"][0] == "a-done"
    # the Parquet files hold the same tables, and no temporary file is left
    loaded = results.load_study(study)
    pd.testing.assert_frame_equal(loaded.trials, tables.trials, check_dtype=False)
    pd.testing.assert_frame_equal(loaded.epochs, tables.epochs, check_dtype=False)
    assert not [p for p in os.listdir(study) if p.endswith(".tmp")]


def test_a_folder_without_study_json_or_of_another_schema_is_refused(tmp_path):
    with pytest.raises(results.ResultsError, match="not a discbench results folder: no study.json"):
        results.consolidate(tmp_path / "nothing")
    study = _study(tmp_path)
    with pytest.raises(results.ResultsError, match="has no trials.parquet"):
        results.load_study(study)
    meta = json.loads((study / results.STUDY_FILE).read_text())
    (study / results.STUDY_FILE).write_text(json.dumps({**meta, "schema_version": results.SCHEMA_VERSION + 1}))
    with pytest.raises(results.ResultsError, match=f"schema version {results.SCHEMA_VERSION + 1}"):
        results.consolidate(study)


def test_per_example_correctness_round_trips_packed_through_consolidation(tmp_path):
    import numpy as np

    study = _study(tmp_path)
    rng = np.random.default_rng(0)
    val, short = rng.random(1000) < 0.65, rng.random(13) < 0.5  # 13: not a whole number of bytes
    folder = results.trial_dir(study, "t")
    results.write_trial(folder, {"trial_id": "t", "status": "ok"})
    results.write_correctness(folder, [{"evaluation": "test", "length": None, "correct": val},
                                       {"evaluation": "transfer", "length": 32, "correct": short}])
    results.write_correctness(results.trial_dir(study, "u"), [])  # nothing to write: no file
    results.write_trial(results.trial_dir(study, "u"), {"trial_id": "u", "status": "diverged"})
    gathered = results.consolidate(study)
    table = results.load_study(study).correctness
    assert list(table.columns) == results.CORRECTNESS_COLUMNS and table.equals(gathered.correctness)
    assert list(table["trial_id"]) == ["t", "t"] and pd.isna(table["length"].iloc[0])
    records = table.to_dict("records")
    assert (results.unpack_correctness(records[0]) == val).all()
    assert (results.unpack_correctness(records[1]) == short).all() and records[1]["length"] == 32
    assert len(records[0]["bits"]) == 125  # 1000 answers in 125 bytes


def test_a_commit_is_dirty_when_its_code_differs_not_when_its_reports_do(tmp_path):
    import subprocess

    from discbench.results import _git_commit

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "discbench").mkdir()
    (tmp_path / "reports").mkdir()
    (tmp_path / "discbench" / "code.py").write_text("x = 1\n")
    (tmp_path / "reports" / "table.md").write_text("old\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert _git_commit(tmp_path / "discbench") == commit
    (tmp_path / "reports" / "table.md").write_text("regenerated while the next study runs\n")
    assert _git_commit(tmp_path / "discbench") == commit
    (tmp_path / "discbench" / "code.py").write_text("x = 2\n")
    assert _git_commit(tmp_path / "discbench") == commit + "-dirty"
