"""The tuning stage (discbench/tuning.py): the `tune:` section, the lock file and how `discbench
run` applies it, the choice rule, that tuning never reads the test split, and `discbench tune`
end to end on Ray Tune with ASHA."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from discbench import data as data_module
from discbench import train as train_module
from discbench.study import StudyError, load_study
from discbench.tuner import candidate_config, choose, train_candidate
from discbench.tuning import ArmChoice, Candidate, TuneSpec, TuningLock, lock_path, read_lock

STUDY = """
name: {name}
description: two tiny arms for the tuning tests
methods: [zoh/paper, foh/paper]
data: {{dataset: mnist1d, seq_length: 16, train_limit: 96, test_limit: 32, batch_size: 16}}
model: {{name: seqmamba_micro}}
train: {{preset: digits, epochs: {epochs}, device: cpu}}
measure: {{throughput: false}}
grid: {{seed: [0, 1]}}
max_concurrent: 2
tune:
  space:
    train.lr: {{log_uniform: [1.0e-3, 1.0e-2]}}
    train.weight_decay: {{choice: [0.0, 0.05]}}
  samples: {samples}
  seed: 1000
  asha: {{grace_period: 1, reduction_factor: 2}}
"""


def write_study(folder: Path, name: str = "tiny_tuned", epochs: int = 2, samples: int = 3, extra: str = "") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(STUDY.format(name=name, epochs=epochs, samples=samples) + extra)
    return path


def write_lock(study: Path, arms: dict[str, float], keys=("train.lr", "train.weight_decay"), seed: int = 1000) -> Path:
    spec = yaml.safe_load(study.read_text())["tune"]
    spec["seed"] = seed
    lock = TuningLock(study=study.stem, created="now", commit="abc", device="cpu", tune=TuneSpec.model_validate(spec),
                      epochs=2, tuning_seconds=1.0, arms={
                          arm: ArmChoice(method=arm.replace("-", "/", 1), chosen={"train.lr": lr, "train.weight_decay": 0.05},
                                         val_top1=50.0, epochs_spent=4,
                                         candidates=[Candidate(values={"train.lr": lr, "train.weight_decay": 0.05},
                                                               val_top1=50.0, epochs=2, status="finished")])
                          for arm, lr in arms.items()})
    path = lock_path(study)
    path.write_text(yaml.safe_dump(lock.model_dump(mode="json")))
    return path


# ----------------------------------------------------------------------------- the section

@pytest.mark.parametrize("space,message", [
    ("{foo.lr: {log_uniform: [1.0e-3, 1.0e-2]}}", "space.foo.lr: not a tunable trial config key"),
    ("{seed: {choice: [1, 2]}}", "space.seed: not a tunable trial config key"),
    ("{train.lr: {log_uniform: [1.0e-2, 1.0e-3]}}", "need lo < hi"),
    ("{train.lr: {log_uniform: [0, 1.0e-3]}}", "log_uniform needs positive bounds"),
    ("{train.lr: {uniform: [0, 1], choice: [1]}}", "give exactly one of"),
])
def test_a_bad_search_space_is_refused_with_the_field(tmp_path, space, message):
    path = write_study(tmp_path)
    text = path.read_text().replace(
        "    train.lr: {log_uniform: [1.0e-3, 1.0e-2]}\n    train.weight_decay: {choice: [0.0, 0.05]}\n",
        f"    {space[1:-1]}\n")
    path.write_text(text)
    with pytest.raises(StudyError, match=message) as error:
        load_study(path)
    assert str(path) in str(error.value) and "tune" in str(error.value)


def test_grid_search_takes_choices_only():
    with pytest.raises(ValueError, match="search grid: space.train.lr needs choice"):
        TuneSpec.model_validate({"space": {"train.lr": {"log_uniform": [1e-3, 1e-2]}}, "search": "grid"})
    grid = TuneSpec.model_validate({"space": {"train.lr": {"choice": [1e-3, 1e-2]},
                                              "train.weight_decay": {"choice": [0, 0.1, 0.2]}}, "search": "grid"})
    assert grid.candidates_per_arm() == 6


def test_stratified_search_puts_one_candidate_in_each_stratum_of_every_key():
    spec = TuneSpec.model_validate({"space": {"train.lr": {"log_uniform": [1e-3, 1e-1]},
                                              "train.weight_decay": {"uniform": [0.0, 0.8]},
                                              "train.warmup_epochs": {"choice": [0, 1, 2]}},
                                    "samples": 8, "search_seed": 3})
    points = spec.stratified_points()
    assert spec.search == "stratified" and len(points) == 8
    lr_strata = [int((np.log10(p["train.lr"]) + 3) / 2 * 8) for p in points]  # eighths of [1e-3, 1e-1] in log
    assert lr_strata == list(range(8))  # one per stratum, sorted by the first key
    assert sorted(int(p["train.weight_decay"] / 0.1) for p in points) == list(range(8))
    warmups = [p["train.warmup_epochs"] for p in points]
    assert sorted(warmups.count(v) for v in (0, 1, 2)) == [2, 3, 3]  # every choice, balanced
    assert spec.stratified_points() == points  # the same candidates for every arm
    other = spec.model_copy(update={"search_seed": 4}).stratified_points()
    assert other != points and [int((np.log10(p["train.lr"]) + 3) / 2 * 8) for p in other] == list(range(8))
    # what random search gave every study with seed 0: 7 of 8 rates in the top half of the log range
    # can never happen here, whatever the seed
    for seed in range(20):
        rates = [p["train.lr"] for p in spec.model_copy(update={"search_seed": seed}).stratified_points()]
        assert sum(r > 1e-2 for r in rates) == 4


# ----------------------------------------------------------------------------- the lock file

def test_the_lock_sets_each_arms_values_and_overrides_win(tmp_path):
    study = write_study(tmp_path)
    untuned = load_study(study)
    assert untuned.tuned is None and {t.config.train.lr for t in untuned.trials} == {None}
    assert [t.arm_id for t in untuned.trials] == ["zoh-paper"] * 2 + ["foh-paper"] * 2
    write_lock(study, {"zoh-paper": 0.004, "foh-paper": 0.002})
    tuned = load_study(study)
    assert tuned.tuned is not None and tuned.lock_text == lock_path(study).read_text()
    assert [(t.trial_id, t.config.train.lr, t.config.train.weight_decay, t.config.seed) for t in tuned.trials] == [
        ("zoh-paper__seed=0", 0.004, 0.05, 0), ("zoh-paper__seed=1", 0.004, 0.05, 1),
        ("foh-paper__seed=0", 0.002, 0.05, 0), ("foh-paper__seed=1", 0.002, 0.05, 1)]
    assert {t.config.train.lr for t in load_study(study, ["train.lr=0.009"]).trials} == {0.009}
    assert {t.config.train.lr for t in load_study(study, apply_lock=False).trials} == {None}


def test_a_lock_that_does_not_fit_the_study_is_refused(tmp_path):
    study = write_study(tmp_path)
    write_lock(study, {"zoh-paper": 0.004})
    with pytest.raises(StudyError, match=r"arm 'foh-paper' .* was not tuned .*run discbench tune"):
        load_study(study)
    write_lock(study, {"zoh-paper": 0.004, "foh-paper": 0.002}, seed=1)
    text = study.read_text().replace("seed: 1000", "seed: 1")
    study.write_text(text)
    with pytest.raises(StudyError, match=r"seed 1 .* is the tuning seed .* fresh seeds"):
        load_study(study)
    study.write_text(text.replace("    train.weight_decay: {choice: [0.0, 0.05]}\n", ""))
    with pytest.raises(StudyError, match=r"tuned train.lr, train.weight_decay, but the study's tune.space is train.lr"):
        load_study(study)
    study.write_text(text)
    write_lock(study, {"zoh-paper": 0.004, "foh-paper": 0.002}, seed=1000)
    study.write_text(text.replace("seed: 1\n", "seed: 1000\n").replace("  samples: 3", "  search: random\n  samples: 3"))
    with pytest.raises(StudyError, match=r"tuned under tune.search = 'stratified', but the study now says 'random'"):
        load_study(study)
    lock_path(study).write_text("study: x\n")
    with pytest.raises(StudyError, match=r"not a valid tuning lock file"):
        load_study(study)
    with pytest.raises(StudyError, match=r"a tuning lock file .*not a study"):
        load_study(lock_path(study))


def test_the_choice_is_the_best_finished_candidate():
    def c(score, status="finished", lr=1e-3):
        return Candidate(values={"train.lr": lr}, val_top1=score, epochs=2 if status == "finished" else 1,
                         status=status)

    # a candidate ASHA stopped early may have scored higher at its rung: it is not eligible
    assert choose([c(60, lr=1), c(90, "stopped", lr=2), c(70, lr=3), c(70, lr=4)]).values == {"train.lr": 3}
    with pytest.raises(ValueError, match="no candidate trained every epoch"):
        choose([c(90, "stopped"), c(None, "diverged")])


# ----------------------------------------------------------------------------- the test split

class Untouchable:
    """A split that fails the test the moment anything reads it."""

    def __init__(self, split):
        self.split = split

    def __len__(self):
        raise AssertionError("the test split was read")

    def __getitem__(self, index):
        raise AssertionError("the test split was read")


@pytest.fixture
def poisoned_test_split(monkeypatch):
    real = data_module.load_splits

    def poisoned(cfg):
        splits = real(cfg)
        return data_module.Splits(splits.train, splits.val, Untouchable(splits.test), splits.num_classes,
                                  splits.classes)

    monkeypatch.setattr(train_module, "load_splits", poisoned)
    monkeypatch.setattr(data_module, "load_splits", poisoned)


@pytest.mark.slow
def test_tuning_never_reads_the_test_split(tmp_path, poisoned_test_split):
    study = load_study(write_study(tmp_path), apply_lock=False)
    arm = study.trials[0].config.model_dump(mode="json")
    reports = []
    outcome = train_candidate(candidate_config(arm, {"train.lr": 3e-3}, 1000), tmp_path / "c", reports.append)
    assert [r["epoch"] for r in reports] == [1, 2] and all(0 <= r["val_top1"] <= 100 for r in reports)
    assert outcome["status"] == "ok" and outcome["top1"] is None and outcome["correct"] == []
    # the same poison stops a confirmation trial, which does score the test split
    from discbench.train import fit

    with pytest.raises(AssertionError, match="the test split was read"):
        fit(study.trials[0].config, tmp_path / "confirm")


# ----------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_discbench_tune_writes_the_lock_and_run_and_report_use_it(tmp_path, capsys):
    from discbench.cli import main

    study = write_study(tmp_path, samples=3)
    results_dir = tmp_path / "results"
    assert main(["tune", str(study), "--results-dir", str(results_dir)]) == 0
    out = capsys.readouterr().out
    assert "tuning 'tiny_tuned': 2 arms × 3 candidates, up to 2 epochs each, ASHA" in out
    lock = read_lock(lock_path(study))
    assert list(lock.arms) == ["zoh-paper", "foh-paper"] and lock.epochs == 2 and lock.tune.seed == 1000
    values = [[c.values for c in arm.candidates] for arm in lock.arms.values()]
    assert values[0] == values[1] and len(values[0]) == 3  # the same candidates for every arm
    # the default search is stratified: Ray tried exactly the Latin hypercube's points, in its order
    assert values[0] == lock.tune.stratified_points() and lock.tune.search == "stratified"
    for arm in lock.arms.values():
        finished = [c for c in arm.candidates if c.status == "finished"]
        assert finished and arm.val_top1 == max(c.val_top1 for c in finished)
        assert arm.chosen == next(c.values for c in finished if c.val_top1 == arm.val_top1)
        assert arm.epochs_spent == sum(c.epochs for c in arm.candidates)
    # a second tune keeps the finished arms, and its lock counts their tuning time
    assert main(["tune", str(study), "--results-dir", str(results_dir)]) == 0
    assert capsys.readouterr().out.count("already tuned") == 2
    arm_seconds = [json.loads(f.read_text())["seconds"] for f in (results_dir / "tiny_tuned" / "tuning").glob("*.json")]
    assert len(arm_seconds) == 2 and min(arm_seconds) > 0
    assert read_lock(lock_path(study)).tuning_seconds >= sum(arm_seconds)
    # an arm tuned at another commit is tuned again: the lock names the commit every arm was tuned at
    saved = results_dir / "tiny_tuned" / "tuning" / "foh-paper.json"
    stored = json.loads(saved.read_text())
    saved.write_text(json.dumps({**stored, "commit": "0123abc-dirty"}))
    assert main(["tune", str(study), "--results-dir", str(results_dir)]) == 0
    out = capsys.readouterr().out
    assert out.count("already tuned") == 1 and "foh-paper: tuned at commit 0123abc-dirty" in out
    assert json.loads(saved.read_text())["commit"] == read_lock(lock_path(study)).commit
    lock = read_lock(lock_path(study))

    assert main(["run", str(study), "--results-dir", str(results_dir)]) == 0
    assert "tuned: each arm at its values from" in capsys.readouterr().out
    trials = json.loads((results_dir / "tiny_tuned" / "study.json").read_text())
    assert trials["tuning_lock"] == lock_path(study).read_text()
    from discbench import results

    table = results.load_study(results_dir / "tiny_tuned").trials
    for _, row in table.iterrows():
        config = json.loads(row["config"])
        assert config["train"]["lr"] == lock.arms[row["trial_id"].split("__")[0]].chosen["train.lr"]
    assert main(["report", "tiny_tuned", "--results-dir", str(results_dir), "--out", str(tmp_path / "reports")]) == 0
    report = tmp_path / "reports" / "tiny_tuned"
    index = (report / "index.md").read_text()
    assert "Tuned per method on the validation split." in index and "Tuned values per method" in index
    assert (report / "fig_sensitivity.png").is_file()
    chosen = np.genfromtxt(report / "tuning.csv", delimiter=",", names=True, dtype=None, encoding=None)
    assert len(chosen) == 6


def test_tuning_needs_a_validation_split(tmp_path, capsys):
    from discbench.cli import main

    study = write_study(tmp_path)
    assert main(["tune", str(study), "-o", "data.val_fraction=0", "--results-dir", str(tmp_path / "r")]) == 1
    assert "data.val_fraction is 0 for zoh-paper, foh-paper" in capsys.readouterr().err
    assert not lock_path(study).exists()


def test_the_sensitivity_figure_has_a_panel_per_setting_and_one_for_the_references():
    from discbench.report.tuning import _panel_of

    # a study with a family axis: one line per method in each family's panel
    assert _panel_of("zoh-paper__name=seqssd_micro", False, 2) == "name=seqssd_micro"
    assert _panel_of("zoh-paper__name=seqmamba_micro", False, 2) == "name=seqmamba_micro"
    assert _panel_of("seqgru_micro", True, 2) == "references"
    # no other factor: one panel for every arm, references included
    assert {_panel_of("zoh-paper", False, 1), _panel_of("seqgru_micro", True, 1)} == {""}


def test_stars_of_arms_that_chose_the_same_rate_at_nearly_the_same_score_shrink_so_none_hides():
    from discbench.report.tuning import star_size

    drawn = [(0.0105, 96.24)]
    assert star_size([], 0.0105, 96.24) == 14
    assert star_size(drawn, 0.0105, 96.49) == 10  # the default study's zoh/paper and trapezoid/paper
    assert star_size(drawn + [(0.0105, 96.49)], 0.0105, 95.0) == 6
    assert star_size(drawn, 0.0105, 80.0) == 14  # same rate, far apart in score: both visible
    assert star_size(drawn, 0.018, 96.24) == 14  # another rate


def test_an_arm_that_chose_the_smallest_or_largest_candidate_is_named():
    from discbench.report.tuning import edge_sentence

    def arm(chosen_lr: float) -> ArmChoice:
        candidates = [Candidate(values={"train.lr": lr, "train.weight_decay": wd}, val_top1=50.0, epochs=2,
                                status="finished") for lr, wd in ((1e-3, 0.01), (1e-2, 0.1), (3e-2, 0.05))]
        chosen = next(c.values for c in candidates if c.values["train.lr"] == chosen_lr)
        return ArmChoice(method="zoh/paper", chosen=chosen, val_top1=50.0, epochs_spent=6, candidates=candidates)

    spec = TuneSpec.model_validate({"space": {"train.lr": {"log_uniform": [1e-4, 1e-1]},
                                              "train.weight_decay": {"log_uniform": [1e-3, 0.2]}}, "samples": 3})
    lock = TuningLock(study="s", created="now", commit="abc", device="cpu", tune=spec, epochs=2, tuning_seconds=1.0,
                      arms={"low": arm(1e-3), "inside": arm(1e-2), "high": arm(3e-2)})
    sentence = edge_sentence(lock)
    assert "train.lr: 1 of 3 arms chose the smallest candidate (low), so their optimum may lie below" in sentence
    assert "train.lr: 1 of 3 arms chose the largest candidate (high)" in sentence
    # weight decay: "low" chose 0.01 (smallest), "inside" 0.1 (largest), "high" 0.05 (inside)
    assert "train.weight_decay: 1 of 3 arms chose the smallest candidate (low)" in sentence
    assert "train.weight_decay: 1 of 3 arms chose the largest candidate (inside)" in sentence
    interior = TuningLock(study="s", created="now", commit="abc", device="cpu", tune=spec, epochs=2,
                          tuning_seconds=1.0, arms={"inside": arm(1e-2)})
    assert "train.lr" not in edge_sentence(interior)
