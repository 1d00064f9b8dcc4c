"""Study files: the malformed corpus, overrides, grid expansion, the shipped studies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from discbench.models import model_info
from discbench.cli import main
from discbench.study import StudyError, load_study, parse_override, study_files

ROOT = Path(__file__).resolve().parents[1]
BAD = sorted((ROOT / "tests" / "bad_studies").glob("*.yaml"))
STUDIES = study_files(ROOT / "studies")


def expected_message(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path} must start with '# expect: <message>'"
    return first[len("# expect: "):]


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_each_malformed_study_is_rejected_with_its_message(path):
    with pytest.raises(StudyError) as caught:
        load_study(path)
    text = str(caught.value)
    assert expected_message(path) in text
    # every line names the file
    assert all(line.startswith(str(path)) for line in caught.value.problems), text


def test_validate_exits_non_zero_and_names_every_bad_file(capsys):
    chosen = [p for p in BAD if p.stem in ("negative_epochs", "unknown_method", "nested_key_typo")]
    assert main(["validate", *map(str, chosen)]) == 1
    err = capsys.readouterr().err
    for path in chosen:
        assert expected_message(path) in err


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_every_shipped_study_validates(path):
    study = load_study(path)
    assert study.trials and study.spec.description
    ids = [t.trial_id for t in study.trials]
    assert len(set(ids)) == len(ids)


def test_validate_accepts_the_shipped_studies(capsys):
    assert main(["validate", *map(str, STUDIES[:3]), "--list"]) == 0
    out = capsys.readouterr().out
    assert out.count(": ok — study") == 3
    for path in STUDIES[:3]:
        study = load_study(path)
        assert f"study {study.name!r} ({len(study.trials)} trials)" in out or \
            f"study {study.name!r} ({study.spec.kind}, {len(study.trials)} trials)" in out
        listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
        assert all(t.trial_id in listed for t in study.trials), path.name


# The studies re-run under the protocol of #24: tuned per arm on validation, trained to convergence.
PROTOCOL_STUDIES = ["sampling_rate_noconv", "sampling_rate", "large_step", "mnist1d", "sequential_digits",
                    "digits", "digits_noconv", "sizes_cpu"]
# what each question needs: Mamba's baseline, the textbook ZOH it approximates and Mamba-3's method
CORE_METHODS = {"zoh/paper", "zoh/canonical", "trapezoid/paper"}


@pytest.mark.parametrize("name", PROTOCOL_STUDIES)
def test_protocol_studies_tune_lr_and_weight_decay_on_a_seed_they_never_report(name):
    study = load_study(ROOT / "studies" / f"{name}.yaml", apply_lock=False)
    tune = study.spec.tune
    assert tune is not None and set(tune.space) == {"train.lr", "train.weight_decay"}
    assert tune.asha is not None and tune.samples >= 8
    assert tune.seed not in {t.config.seed for t in study.trials}
    assert len({t.config.seed for t in study.trials}) >= 3
    assert CORE_METHODS <= {t.method_key for t in study.trials if not t.reference}
    assert study.spec.analysis.convergence.top1_tolerance >= 1.0  # at least one validation item
    assert min(t.config.train.resolved().epochs for t in study.trials) >= 24


@pytest.mark.parametrize("name", PROTOCOL_STUDIES)
def test_a_committed_lock_file_covers_every_arm_and_sets_its_values(name):
    if not (ROOT / "studies" / f"{name}.tuned.yaml").exists():
        pytest.skip(f"{name} has no lock file yet: discbench tune writes it")
    tuned = load_study(ROOT / "studies" / f"{name}.yaml")
    assert tuned.tuned is not None and set(tuned.tuned.arms) == {t.arm_id for t in tuned.trials}
    assert tuned.tuned.epochs == tuned.trials[0].config.train.resolved().epochs
    for trial in tuned.trials:
        chosen = tuned.tuned.arms[trial.arm_id].chosen
        assert (trial.config.train.lr, trial.config.train.weight_decay) == (
            chosen["train.lr"], chosen["train.weight_decay"])


def test_sizes_cpu_is_the_default_question_on_a_ladder_spanning_over_30x_with_matched_references():
    import timm

    from discbench.models.seq import SIZES

    study = load_study(ROOT / "studies" / "sizes_cpu.yaml", apply_lock=False)
    default = load_study(ROOT / "studies" / "sampling_rate_noconv.yaml", apply_lock=False)
    methods = [t for t in study.trials if not t.reference]
    rungs = sorted({t.config.model.name for t in methods}, key=lambda n: list(SIZES).index(n.split("_")[1]))
    assert {model_info(n).ladder for n in rungs} == {"seqmamba"} and len(rungs) >= 4
    smallest, largest = (sum(p.numel() for p in timm.create_model(n, in_chans=1, seq_len=40, num_classes=10,
                                                                    conv="none").parameters()) for n in (rungs[0], rungs[-1]))
    assert largest / smallest >= 30
    # every method at every rung on the same seeds, tuned per (method, size): one arm each
    assert sorted((t.method_key, t.config.model.name, t.config.seed) for t in methods) == sorted(
        (k, n, s) for k in {t.method_key for t in methods} for n in rungs for s in (0, 1, 2))
    assert len({t.arm_id for t in methods}) == len({(t.method_key, t.config.model.name) for t in methods})
    # each rung has a GRU and a CNN of its own size, on the same seeds
    references = {(t.config.model.name, t.config.seed) for t in study.trials if t.reference}
    assert references == {(f"{family}_{n.split('_')[1]}", s) for family in ("seqgru", "seqcnn") for n in rungs
                          for s in (0, 1, 2)}
    # the default study's task, data and eval lengths: only the size differs, and the epochs (sizes_cpu
    # trains 32, as the default did before its validation pilot chose 40; re-running the ladder at 40
    # costs about 2.5 h on 2 cores)
    same = lambda t: json.dumps([t.config.data.model_dump(mode="json"), t.config.measure.eval_lengths,
                                 t.config.model.kwargs], sort_keys=True)
    assert {same(t) for t in methods} == {same(t) for t in default.trials if not t.reference}


def test_digits_is_the_core_methods_on_both_families_with_three_seeds():
    study = load_study(ROOT / "studies" / "digits.yaml")
    keys = {t.method_key for t in study.trials}
    families = ("vim_micro", "vssd_micro")  # Mamba-1 (Vim) and Mamba-2 (SSD) blocks
    assert sorted((t.method_key, t.config.model.name, t.config.seed) for t in study.trials) == sorted(
        (key, model, seed) for key in keys for model in families for seed in (0, 1, 2))
    assert {t.config.data.dataset for t in study.trials} == {"digits"}
    assert {(t.config.data.image_size, t.config.model.patch_size) for t in study.trials} == {(16, 4)}


def test_mnist1d_runs_both_sequence_families_on_the_same_methods_and_seeds():
    study = load_study(ROOT / "studies" / "mnist1d.yaml")
    by_model = {}
    for t in study.trials:
        by_model.setdefault(t.config.model.name, set()).add((t.method_key, t.config.seed))
    assert set(by_model) == {"seqmamba_micro", "seqssd_micro"}
    assert by_model["seqmamba_micro"] == by_model["seqssd_micro"]
    assert {t.config.model.kwargs["conv"] for t in study.trials} == {"none"}


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


MINI = """
name: mini
description: grid test
methods: [zoh, foh/paper]
data: {dataset: digits, image_size: 8, batch_size: 16}
model: {name: vim_micro, patch_size: 4}
train: {preset: digits, epochs: 2}
"""


def test_grid_is_methods_times_axes_then_explicit_trials(tmp_path):
    path = write(tmp_path, MINI + """
grid:
  seed: [0, 1]
  train.lr: [0.001, 0.003]
trials:
  - {method: rk4, train.epochs: 1}
""")
    study = load_study(path)
    assert len(study.trials) == 2 * 2 * 2 + 1
    first = study.trials[0]
    assert first.trial_id == "zoh-canonical__seed=0__lr=0.001"
    assert (first.config.seed, first.config.train.lr) == (0, 0.001)
    assert [t.trial_id for t in study.trials[:4]] == [
        "zoh-canonical__seed=0__lr=0.001", "zoh-canonical__seed=0__lr=0.003",
        "zoh-canonical__seed=1__lr=0.001", "zoh-canonical__seed=1__lr=0.003"]
    assert study.trials[4].method_key == "foh/paper"
    last = study.trials[-1]
    assert last.method_key == "rk4/canonical" and last.config.train.epochs == 1 and last.config.seed == 0
    # the resolved config fills the recipe from the preset
    resolved = first.resolved()
    assert resolved["train"]["opt"] == "adamw" and resolved["kind"] == "train"


def test_mapping_axes_merge_into_their_key_and_named_axes_set_several_keys(tmp_path):
    path = write(tmp_path, MINI + """
grid:
  model.kwargs: [{cls_token: none, pool: max}, {cls_token: head}]
  size:
    - {model.name: vim_micro, data.batch_size: 16}
    - {model.name: vim_nano, data.batch_size: 32}
""")
    study = load_study(path)
    assert len(study.trials) == 2 * 2 * 2
    kwargs = [t.config.model.kwargs for t in study.trials[:4]]
    assert kwargs[0] == {"cls_token": "none", "pool": "max"} and kwargs[2] == {"cls_token": "head"}
    assert [(t.config.model.name, t.config.data.batch_size) for t in study.trials[:2]] == [
        ("vim_micro", 16), ("vim_nano", 32)]


def test_errors_inside_a_grid_point_at_the_grid_value(tmp_path):
    path = write(tmp_path, MINI + "grid:\n  size:\n    - {data.image_size: 8}\n    - {data.image_size: 0}\n")
    with pytest.raises(StudyError) as caught:
        load_study(path)
    assert "grid.size[1].data.image_size: got 0; must be > 0" in str(caught.value)


def test_overrides_set_values_replace_grid_axes_and_are_named_in_errors(tmp_path):
    path = write(tmp_path, MINI + "grid: {train.epochs: [1, 2]}\n")
    study = load_study(path, ["train.epochs=3", "data.root=/somewhere", "retries=4"])
    assert len(study.trials) == 2  # the override fixed the epochs axis
    assert {t.config.train.epochs for t in study.trials} == {3}
    assert study.trials[0].config.data.root == "/somewhere" and study.spec.retries == 4
    with pytest.raises(StudyError) as caught:
        load_study(path, ["train.epochs=-1"])
    assert "-o train.epochs: got -1; must be > 0" in str(caught.value)
    # --data-root is the same as -o data.root
    assert load_study(path, data_root="/d").trials[0].config.data.root == "/d"


def test_override_values_are_yaml():
    assert parse_override("train.lr=1e-3") == ("train.lr", 1e-3)
    assert parse_override("grid.seed=[0, 1]") == ("grid.seed", [0, 1])
    assert parse_override("model.kwargs={pool: max}") == ("model.kwargs", {"pool": "max"})
    assert parse_override("data.root=/data/imagenet") == ("data.root", "/data/imagenet")
    with pytest.raises(StudyError, match="expected key=value"):
        parse_override("train.epochs")


def test_overriding_the_study_with_a_bad_method_names_the_override(tmp_path):
    path = write(tmp_path, MINI)
    with pytest.raises(StudyError) as caught:
        load_study(path, ["methods=[zoh, euler]"])
    assert "methods[1]: unknown method 'euler'" in str(caught.value)


def test_a_trial_key_override_wins_over_named_axes_and_explicit_trials(tmp_path):
    study = load_study(ROOT / "studies" / "imagenet_sizes.yaml", ["model.name=vim_micro", "data.root=/x"])
    assert {t.config.model.name for t in study.trials} == {"vim_micro"}
    assert {t.config.train.preset for t in study.trials} == {"vim_tiny", "vim_small", "deit"}
    explicit = load_study(write(tmp_path, MINI + "trials: [{method: rk4, train.epochs: 1}]\n"), ["train.epochs=3"])
    assert {t.config.train.epochs for t in explicit.trials} == {3}
    # overriding the DeiT trial's model into Vim's makes it a duplicate, and that is said
    with pytest.raises(StudyError, match="trials\\[0\\]: duplicate trial"):
        load_study(ROOT / "studies" / "resolution.yaml", ["model.name=vim_micro"])
    seeds = load_study(ROOT / "studies" / "cifar100.yaml", ["seed=7"])
    assert {t.config.seed for t in seeds.trials} == {7} and len(seeds.trials) == 9
    assert seeds.notes == ["override seed: replaces grid axis seed"]


def test_ssd_sizes_is_every_discretization_and_nc_ssd_on_both_sizes_with_vssds_recipe():
    from discbench.train import effective_lr

    study = load_study(ROOT / "studies" / "ssd_sizes.yaml")
    methods = ["zoh/canonical", "foh/canonical", "bilinear/canonical", "polynomial/canonical",
               "highorder/canonical", "rk4/canonical", "trapezoid/canonical", "zoh/paper", "trapezoid/paper"]
    rows = sorted((t.config.model.name, t.method_key, t.config.model.kwargs.get("ssd_mode", "causal"))
                  for t in study.trials)
    assert rows == sorted([(size, key, "causal") for size in ("vssd_tiny", "vssd_small") for key in methods]
                          + [("vssd_tiny", "zoh/canonical", "non_causal"),
                             ("vssd_small", "zoh/canonical", "non_causal")])
    assert {t.config.train.preset for t in study.trials} == {"vssd"}
    for t in study.trials:
        data, recipe = t.config.data, t.config.train.resolved()
        assert (data.dataset, data.image_size, recipe.device, t.resources.gpus) == ("imagenet", 224, "cuda", 1)
        # VSSD's launch command: 8 GPUs × 128 images; lr 5e-4 per 512 images -> 1e-3
        assert data.batch_size * t.resources.workers == 1024
        assert effective_lr(recipe, 1024) == pytest.approx(1e-3)
        assert (recipe.epochs, recipe.warmup_epochs, recipe.sched, recipe.sched_on_updates) == (300, 20, "cosine", True)
        assert (recipe.warmup_lr, recipe.min_lr) == (1e-6, 1e-5)  # VSSD's 5e-7, 5e-6 per 512, at 1024
        assert (recipe.weight_decay, recipe.clip_grad, recipe.drop_path) == (0.05, 5.0, 0.2)
        assert (recipe.model_ema, recipe.model_ema_decay, recipe.repeated_aug, recipe.amp) == (True, 0.9999, False, "fp16")


def test_a_shipped_study_is_found_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_study("digits").path == ROOT / "studies" / "digits.yaml"
    with pytest.raises(StudyError, match="no such study file .* shipped studies: .*digits"):
        load_study("digit")


SEQUENCE_STUDIES = ["mnist1d", "sampling_rate", "sequential_digits", "large_step"]


@pytest.mark.parametrize("name", SEQUENCE_STUDIES)
def test_sequence_studies_have_seeds_enough_for_paired_intervals(name):
    study = load_study(ROOT / "studies" / f"{name}.yaml")
    assert len({t.config.seed for t in study.trials}) >= 3
    assert {model_info(t.config.model.name).modality for t in study.trials} == {"sequence"}
    # the SSM alone carries the sequence, except in sampling_rate: the default study's conv-on twin
    assert {t.config.model.kwargs.get("conv") for t in study.trials} == (
        {"causal"} if name == "sampling_rate" else {"none"})


def test_all_with_a_variant_is_every_registered_method_in_that_variant(tmp_path):
    from discbench.methods import METHOD_NAMES

    study = load_study(write(tmp_path, MINI.replace("[zoh, foh/paper]", "[all/canonical, zoh/paper]")))
    assert [t.method_key for t in study.trials] == [f"{m}/canonical" for m in METHOD_NAMES] + ["zoh/paper"]
    with pytest.raises(StudyError, match=r"methods\[0\]: unknown method 'all/exact'"):
        load_study(write(tmp_path, MINI.replace("[zoh, foh/paper]", "[all/exact]"), "t.yaml"))
    with pytest.raises(StudyError, match="zoh/paper listed twice"):
        load_study(write(tmp_path, MINI.replace("[zoh, foh/paper]", "[all/paper, zoh/paper]"), "u.yaml"))


def test_sampling_rate_is_the_default_study_with_the_conv_on_and_without_references():
    from discbench.study import DEFAULT_STUDY

    default = load_study(DEFAULT_STUDY, apply_lock=False)
    assert default.spec.name == "sampling_rate_noconv"
    conv_on = load_study(ROOT / "studies" / "sampling_rate.yaml", apply_lock=False)

    def setting(t, conv):  # the trial's whole configuration with the conv set
        values = t.config.model_dump()
        values["model"]["kwargs"]["conv"] = conv
        return t.method_key + json.dumps(values, sort_keys=True)

    methods = [t for t in default.trials if not t.reference]
    assert {setting(t, "causal") for t in methods} == {setting(t, "causal") for t in conv_on.trials}
    assert {t.method_key for t in methods} == CORE_METHODS | {"foh/paper"}  # foh/paper: the control
    assert {t.reference for t in default.trials if t.reference} == {"seqgru_micro", "seqcnn_micro"}
    assert default.spec.tune == conv_on.spec.tune
    for t in conv_on.trials:
        assert (t.config.data.dataset, t.config.data.seq_length) == ("mnist1d", 40)
        assert t.config.measure.eval_lengths == [20, 40, 72, 144]


def test_large_step_reaches_steps_far_beyond_mamba_s_range_which_the_default_study_covers():
    from discbench.study import DEFAULT_STUDY

    study = load_study(ROOT / "studies" / "large_step.yaml")
    ranges = {(t.config.model.kwargs["dt_min"], t.config.model.kwargs["dt_max"]) for t in study.trials}
    assert min(low for low, _ in ranges) >= 0.1 and max(high for _, high in ranges) * 16 > 100  # |aΔ| ≤ 16·dt_max
    default = load_study(DEFAULT_STUDY, apply_lock=False).trials[0].config.model
    assert "dt_min" not in default.kwargs and "dt_max" not in default.kwargs  # Mamba's [0.001, 0.1]


def test_digits_noconv_is_digits_without_the_conv_with_five_seeds():
    digits = load_study(ROOT / "studies" / "digits.yaml")
    noconv = load_study(ROOT / "studies" / "digits_noconv.yaml")
    assert {t.method_key for t in noconv.trials} == {t.method_key for t in digits.trials}
    assert {t.config.seed for t in noconv.trials} == {0, 1, 2, 3, 4}
    assert {t.config.model.kwargs["conv"] for t in noconv.trials} == {"none"}
    assert {t.config.model.name for t in noconv.trials} == {"vim_micro"}


def test_sequential_digits_plain_and_permuted():
    study = load_study(ROOT / "studies" / "sequential_digits.yaml")
    assert {t.config.data.permute for t in study.trials} == {False, True}
    assert {t.config.data.dataset for t in study.trials} == {"sequential_digits"}


def test_ablation_bidirectional_has_conv_free_rows():
    study = load_study(ROOT / "studies" / "ablation_bidirectional.yaml")
    rows = {(t.config.model.kwargs["bidirectional"], t.config.model.kwargs["conv"]) for t in study.trials}
    assert {("none", "none"), ("ssm", "none"), ("ssm_conv", "causal")} <= rows


def test_a_sequence_option_error_names_the_study_field(tmp_path):
    path = write(tmp_path, MINI.replace("dataset: digits, image_size: 8", "dataset: digits, seq_length: 8"))
    with pytest.raises(StudyError, match=r"data: data.seq_length is for sequence data"):
        load_study(path)
    path = write(tmp_path, MINI + "measure: {eval_lengths: [8]}\n", "t.yaml")
    with pytest.raises(StudyError, match=r"trial config: measure.eval_lengths \[8\]: dataset 'digits' cannot"):
        load_study(path)
    path = write(tmp_path, MINI.replace("vim_micro, patch_size: 4", "seqmamba_micro"), "u.yaml")
    with pytest.raises(StudyError, match=r"model.name: model.name 'seqmamba_micro' cannot read dataset 'digits'"):
        load_study(path)
