"""`discbench compare`: two runs' recorded numbers, bit for bit, without what measures the run."""

from __future__ import annotations

import shutil

from discbench import results
from discbench.cli import main
from discbench.compare import differences


def _study(root, top1=70.0, train_time=12.0, commit="aaaa"):
    study = root / "s"
    results.write_study_meta(study, "s", "name: s\n")
    row = {"study": "s", "trial_id": "t0", "method": "zoh", "variant": "paper", "method_key": "zoh/paper",
           "seed": 0, "status": "ok", "top1": top1, "train_time_s": train_time, "git_commit": commit,
           "config": {"seed": 0}}
    path = results.trial_dir(study, "t0")
    results.write_trial(path, row)
    results.append_epoch(path, {"epoch": 1, "train_loss": 1.5, "top1": top1, "epoch_time_s": train_time})
    results.append_measurements(path, [
        {"quantity": "transfer", "name": "top1", "value": top1, "length": 20},
        {"quantity": "throughput", "name": "infer_sequences_per_s", "value": 1000.0 / train_time, "batch_size": 8}])
    results.consolidate(study)
    return study


def test_runs_that_differ_only_in_time_and_provenance_are_identical(tmp_path, capsys):
    first = _study(tmp_path / "a")
    second = _study(tmp_path / "b", train_time=30.0, commit="bbbb")
    assert differences(first, second) == []
    assert main(["compare", str(first), str(second)]) == 0
    assert capsys.readouterr().out.startswith("identical: 1 trials, 1 epochs, 1 measurements")


def test_a_different_number_is_named_with_its_table_trial_and_column(tmp_path, capsys):
    first = _study(tmp_path / "a")
    second = _study(tmp_path / "b", top1=70.1)
    found = differences(first, second)
    assert "trials: t0, top1: 70.0 against 70.1" in found
    assert "epochs: t0, top1: 70.0 against 70.1" in found
    assert "measurements: t0, value: 70.0 against 70.1" in found
    assert main(["compare", str(first), str(second)]) == 1
    assert "differ:" in capsys.readouterr().out


def test_a_missing_row_and_a_folder_that_is_no_study_are_said(tmp_path, capsys):
    first = _study(tmp_path / "a")
    second = tmp_path / "b" / "s"
    shutil.copytree(first, second)
    results.append_epoch(second / "trials" / "t0", {"epoch": 2, "train_loss": 1.2, "top1": 71.0})
    results.consolidate(second)
    assert differences(first, second) == ["epochs: 1 rows against 2"]
    assert main(["compare", str(first), str(tmp_path / "nothing")]) == 2
    assert "discbench compare:" in capsys.readouterr().err


def test_missing_values_of_every_kind_are_equal_only_to_missing_values():
    import math

    import pandas as pd

    from discbench.compare import _same

    for missing in (None, math.nan, pd.NA, pd.NaT):
        assert _same(missing, None) and _same(None, missing)
        assert not _same(missing, 0.0) and not _same(1, missing)
    assert _same(b"\x80\x01", b"\x80\x01") and not _same(b"\x80", b"\x81") and not _same("1", 1)
