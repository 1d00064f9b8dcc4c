"""Training recipe, fit's contract, checkpoint resume, divergence, measurement."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from discbench.config import PRESETS, TrainConfig, TrialConfig
from discbench.measure import inference_throughput, training_throughput
from discbench import scan as scan_module
from discbench.methods import METHOD_NAMES, VARIANTS
from discbench.train import CHECKPOINT_NAME, CheckpointMismatch, effective_lr, fit

EPOCH_KEYS = {"epoch", "train_loss", "val_loss", "top1", "top5", "lr", "images_per_s", "epoch_time_s",
              "peak_mem_mb"}
RESULT_KEYS = {"status", "top1", "top5", "train_loss", "epochs_done", "train_time_s", "train_images_per_s",
               "peak_mem_mb", "params", "num_classes", "diverged_at", "transfer", "correct", "lambda"}
# Logged values that must repeat exactly on resume (timings and memory naturally differ).
DETERMINISTIC_KEYS = ("epoch", "train_loss", "val_loss", "top1", "top5", "lr")


pytestmark = pytest.mark.usefixtures("one_torch_thread")



def tiny_trial(**overrides) -> TrialConfig:
    """vim_micro on 8×8 digits (4 tokens), 128 training images: seconds per epoch."""
    spec = {
        "data": {"dataset": "digits", "image_size": 8, "train_limit": 128, "test_limit": 64, "batch_size": 32},
        "model": {"name": "vim_micro", "patch_size": 4},
        "train": {"preset": "digits", "epochs": 3},
        "measure": {"throughput": False},
    }
    for section, values in overrides.items():
        if isinstance(values, dict):
            spec[section] = {**spec.get(section, {}), **values}
        else:
            spec[section] = values
    return TrialConfig(**spec)


# ----------------------------------------------------------------------------------- recipe

@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_fills_every_recipe_field(preset):
    resolved = TrainConfig(preset=preset).resolved()
    recipe_fields = [name for name in TrainConfig.model_fields if name != "preset"]
    assert [f for f in recipe_fields if getattr(resolved, f) is None] == []


def test_deit_preset_has_the_papers_values():
    deit = TrainConfig(preset="deit").resolved()
    assert effective_lr(deit, global_batch=1024) == pytest.approx(1e-3)  # Vim: lr 1e-3 at batch 1024
    assert (deit.opt, deit.weight_decay, deit.epochs, deit.sched) == ("adamw", 0.05, 300, "cosine")
    assert (deit.warmup_epochs, deit.min_lr, deit.smoothing) == (5, 1e-5, 0.1)
    assert (deit.mixup, deit.cutmix, deit.auto_augment) == (0.8, 1.0, "rand-m9-mstd0.5-inc1")
    assert (deit.reprob, deit.repeated_aug, deit.model_ema) == (0.25, True, True)
    vim_tiny = TrainConfig(preset="vim_tiny").resolved()
    assert (vim_tiny.weight_decay, vim_tiny.drop_path) == (0.1, 0.0)


def test_explicit_fields_override_the_preset_and_bad_values_are_named():
    resolved = TrainConfig(preset="deit", lr=2e-3, mixup=0.0, epochs=7).resolved()
    assert (resolved.lr, resolved.mixup, resolved.epochs, resolved.weight_decay) == (2e-3, 0.0, 7, 0.05)
    with pytest.raises(ValidationError, match="unknown training preset 'diet'"):
        TrainConfig(preset="diet")
    with pytest.raises(ValidationError, match="reprob"):
        TrainConfig(reprob=1.5)
    with pytest.raises(ValidationError, match="auto_augment 'randaug'"):
        TrainConfig(auto_augment="randaug")
    with pytest.raises(ValidationError, match="lrr"):
        TrainConfig(lrr=1e-3)


# -------------------------------------------------------------------------------------- fit

@pytest.mark.slow
def test_fit_logs_every_epoch_checkpoints_and_resumes(tmp_path):
    """An uninterrupted run vs. one that crashes after epoch 1 (in the epoch-2 callback, before
    that epoch's checkpoint) and is resumed: identical logged metrics for every epoch."""
    cfg = tiny_trial(measure={"throughput": True, "batch_sizes": [16], "repeats": 2})
    full_log, starts = [], []
    result = fit(cfg, tmp_path / "full", on_epoch=full_log.append, on_start=starts.append)
    assert starts == [0]
    assert [r["epoch"] for r in full_log] == [1, 2, 3]
    assert all(set(r) == EPOCH_KEYS for r in full_log)
    assert set(result) == RESULT_KEYS
    assert result["status"] == "ok" and result["diverged_at"] is None and result["epochs_done"] == 3
    assert result["train_loss"] == full_log[-1]["train_loss"]
    assert result["params"] > 0 and result["train_images_per_s"] > 0
    assert result["peak_mem_mb"] == max(r["peak_mem_mb"] for r in full_log) > 0
    assert (tmp_path / "full" / CHECKPOINT_NAME).is_file()

    class Crash(RuntimeError):
        pass

    def crash_at_epoch_2(record):
        if record["epoch"] == 2:
            raise Crash
        first_log.append(record)

    first_log, resumed_log, resumed_starts = [], [], []
    with pytest.raises(Crash):
        fit(cfg, tmp_path / "resumed", on_epoch=crash_at_epoch_2)
    fit(cfg, tmp_path / "resumed", on_epoch=resumed_log.append, on_start=resumed_starts.append)
    assert resumed_starts == [1]
    assert [r["epoch"] for r in first_log + resumed_log] == [1, 2, 3]
    for ours, theirs in zip(first_log + resumed_log, full_log):
        assert {k: ours[k] for k in DETERMINISTIC_KEYS} == {k: theirs[k] for k in DETERMINISTIC_KEYS}

    # A finished trial: nothing left to train, the summary comes from the checkpoint.
    again_log, again_starts = [], []
    again = fit(cfg, tmp_path / "full", on_epoch=again_log.append, on_start=again_starts.append)
    assert again_starts == [3] and again_log == []
    assert (again["top1"], again["epochs_done"]) == (result["top1"], 3)
    # The final numbers are the test split's (64 items; the epochs evaluate the val split), with
    # per-example correctness, also when the summary comes from the checkpoint.
    ((test,), (test_again,)) = ([c for c in r["correct"] if c["evaluation"] == "test"] for r in (result, again))
    assert test["length"] is None and len(test["correct"]) == 64
    assert 100.0 * test["correct"].mean() == pytest.approx(result["top1"])
    assert (test_again["correct"] == test["correct"]).all()


def test_checkpoint_of_another_configuration_is_refused(tmp_path):
    fit(tiny_trial(train={"epochs": 1}), tmp_path)
    with pytest.raises(CheckpointMismatch, match=r"train\.lr: 0\.003 → 0\.01"):
        fit(tiny_trial(train={"epochs": 1, "lr": 0.01}), tmp_path)
    # Where the data lives, how many loader processes read it and what is measured afterwards may
    # change between runs: the finished checkpoint is accepted and nothing is trained again.
    starts, log = [], []
    fit(tiny_trial(data={"root": str(tmp_path / "elsewhere"), "workers": 1}, train={"epochs": 1},
                   measure={"throughput": False, "repeats": 1}),
        tmp_path, on_epoch=log.append, on_start=starts.append)
    assert starts == [1] and log == []


@pytest.mark.parametrize("model, delta_checked", [
    ({"name": "vim_micro", "patch_size": 4}, True),  # overflow makes the scan refuse a non-finite Δ
    # as on a GPU, where the scan does not check Δ (it would sync): the NaN reaches the loss
    ({"name": "vim_micro", "patch_size": 4}, False),
    ({"name": "deit_tiny_patch16_224", "patch_size": 4, "kwargs": {"depth": 1}}, True),  # NaN loss
], ids=["vim-delta-checked", "vim-delta-unchecked", "deit"])
def test_absurd_learning_rate_is_reported_as_divergence(tmp_path, model, delta_checked, monkeypatch):
    if not delta_checked:
        monkeypatch.setattr(scan_module, "FINITE_DELTA_CHECK_DEVICES", ())
    log = []
    cfg = tiny_trial(model=model, train={"lr": 1e30, "clip_grad": 0, "warmup_epochs": 0})
    result = fit(cfg, tmp_path, on_epoch=log.append)
    assert result["status"] == "diverged"
    assert result["diverged_at"] == "epoch 1, step 2"  # step 1 is finite; its update overflows
    assert result["epochs_done"] == 0 and log == [] and result["top1"] is None
    assert not (tmp_path / CHECKPOINT_NAME).exists()


def test_fp16_on_cpu_is_refused(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("the refusal concerns CPU-only machines")
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        fit(tiny_trial(train={"amp": "fp16", "device": "cpu"}), tmp_path)


@pytest.mark.slow
def test_full_deit_recipe_runs_with_every_augmentation(tmp_path):
    """Mixup/CutMix, RandAugment, random erasing, repeated augmentation, EMA, bf16 autocast."""
    cfg = tiny_trial(data={"image_size": 16, "train_limit": 96, "batch_size": 16},
                     train={"preset": "deit", "epochs": 2, "warmup_epochs": 1, "eval_ema": True,
                            "amp": "bf16", "clip_grad": 5.0, "device": "cpu"})
    log = []
    result = fit(cfg, tmp_path, on_epoch=log.append)
    assert result["status"] == "ok" and len(log) == 2
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in log)
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    assert state["ema"] is not None and state["epochs_done"] == 2
    # repeated augmentation on one worker: len(dataset) = 87 images (96 less the 9 held out for
    # validation) per epoch, 5 full batches of 16
    for record in state["history"]:
        assert record["images_per_s"] * record["train_seconds"] == pytest.approx(80)


# Measured with this recipe (2 threads, CPU kernel): every method reaches ≥ 80 % top-1 after
# 4 epochs on 8×8 digits; chance is 10 %.
DIGITS_LEARNING_THRESHOLD = 50.0


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("method", METHOD_NAMES)
def test_vim_micro_learns_digits_with_every_method(tmp_path, method, variant):
    cfg = tiny_trial(method=method, variant=variant,
                     data={"train_limit": None, "test_limit": None, "batch_size": 64},
                     train={"epochs": 4})
    result = fit(cfg, tmp_path)
    if result["status"] == "diverged":
        # rk4 is only conditionally stable (|Ā| ≤ 1 for z ≥ -2.785): divergence is a result.
        assert method == "rk4" and variant == "canonical", result["diverged_at"]
        return
    assert result["top1"] >= DIGITS_LEARNING_THRESHOLD, result


# -------------------------------------------------------------------------------- measure

def test_inference_and_training_throughput_report_images_per_second():
    import timm

    import discbench.models  # noqa: F401  (registers vim_micro)

    model = timm.create_model("vim_micro", num_classes=10, img_size=8, patch_size=4)
    infer = inference_throughput(model, batch_size=4, warmup=1, repeats=2)
    assert infer["status"] == "ok" and infer["images_per_s"] > 0 and infer["peak_mem_mb"] > 0
    assert (infer["batch_size"], infer["input_size"]) == (4, (3, 8, 8))  # the model's pretrained_cfg
    train = training_throughput(model, batch_size=4, num_classes=10, warmup=1, repeats=1)
    assert train["status"] == "ok" and train["images_per_s"] > 0


class _Greedy(torch.nn.Module):
    """Asks the allocator for far more memory than any machine has (2^50 floats = 4 PiB)."""

    def forward(self, x):
        return torch.empty(2 ** 50, device=x.device) + x.sum()


def test_out_of_memory_is_a_status_not_an_exception():
    result = inference_throughput(_Greedy(), batch_size=2, input_size=(3, 8, 8), warmup=0, repeats=1)
    assert result["status"] == "oom" and result["images_per_s"] is None


class _Broken(torch.nn.Module):
    def forward(self, x):
        raise RuntimeError("shape mismatch in a layer")


def test_other_errors_still_raise_from_measurement():
    with pytest.raises(RuntimeError, match="shape mismatch"):
        inference_throughput(_Broken(), batch_size=2, input_size=(3, 8, 8), warmup=0, repeats=1)


# ------------------------------------------------------------------------------- transfer

@pytest.mark.parametrize("model", ["seqmamba_micro", "seqssd_micro"])  # both families
def test_a_train_trial_writes_sampling_rate_transfer_rows(tmp_path, model):
    """A tiny mnist1d trial: one transfer row per eval length with the report's contract, its
    top-1 that of the trained model on the resampled val signals with Δ × L/L′."""
    import json

    from discbench import results
    from discbench.data import load_splits
    from discbench.kinds import measurement_columns
    from discbench.study import load_study
    from discbench.trials import run_trial
    from discbench.runner import trial_dict

    path = tmp_path / "transfer.yaml"
    path.write_text("""
name: transfer
description: tiny transfer trial
methods: [foh/paper]
data: {dataset: mnist1d, seq_length: 16, train_limit: 64, test_limit: 32, batch_size: 16}
model: {name: MODEL, kwargs: {depth: 1, conv: none}}
train: {preset: digits, epochs: 1, device: cpu}
measure: {throughput: true, batch_sizes: [8], warmup: 0, repeats: 1, eval_lengths: [8, 16, 40]}
""".replace("MODEL", model))
    study = load_study(path)
    (trial,) = study.trials
    results.write_study_meta(tmp_path / "results", study.name, study.source)
    row = run_trial(trial_dict(study, trial, tmp_path / "results"))
    assert row["status"] == "ok" and "transfer" not in row
    folder = tmp_path / "results" / "trials" / trial.trial_id
    rows = [json.loads(line) for line in (folder / "measurements.jsonl").read_text().splitlines()]
    transfer = [r for r in rows if r["quantity"] == "transfer"]
    assert [(r["length"], r["delta_scale"]) for r in transfer] == [(8, 2.0), (16, 1.0), (40, 0.4)]
    for r in transfer:
        assert {k: r[k] for k in ("name", "unit", "model", "method_key", "status")} == {
            "name": "top1", "unit": "%", "model": model, "method_key": "foh/paper", "status": "ok"}
        assert 0.0 <= r["value"] <= 100.0
        assert set(r) <= set(measurement_columns())
    # at the trained length (scale 1) it is the trial's own top-1
    assert transfer[1]["value"] == row["top1"]
    # after training: one throughput and one memory row per (batch, length), at the trained length
    throughput = [r for r in rows if r["quantity"] == "throughput"]
    memory = [r for r in rows if r["name"] == "peak_mem_mb"]
    for measured in (throughput, memory):
        assert [(r["batch_size"], r["length"], r["status"]) for r in measured] == [(8, 16, "ok")]
        assert measured[0]["value"] > 0 and measured[0].get("resolution") is None
    # on the CPU also the peak RSS above the measurement window's start
    above_start = [r for r in rows if r["name"] == "peak_mem_delta_mb"]
    assert [(r["quantity"], r["batch_size"], r["length"]) for r in above_start] == [("memory", 8, 16)]
    assert above_start[0]["value"] >= 0
    # a sequence model's throughput counts sequences
    assert [(r["name"], r["unit"]) for r in throughput] == [("infer_sequences_per_s", "sequences/s")]
    assert row["infer_sequences_per_s"] == throughput[0]["value"] and "infer_images_per_s" not in row
    assert row["image_size"] is None
    gathered = results.consolidate(tmp_path / "results")
    table = gathered.measurements
    assert list(table.columns[:len(measurement_columns())]) == measurement_columns()
    assert len(load_splits(trial.config.data).test) == 32
    # per-example correctness of every evaluation: 32 test signals each, their mean the top-1
    correct = gathered.correctness
    assert list(correct.columns) == results.CORRECTNESS_COLUMNS and row["num_classes"] == 10
    assert [(e, int(n)) for e, n in zip(correct["evaluation"], correct["length"])] == [
        ("test", 16), ("transfer", 8), ("transfer", 16), ("transfer", 40)]
    for evaluation, length, record in zip(correct["evaluation"], correct["length"], correct.to_dict("records")):
        items = results.unpack_correctness(record)
        assert items.dtype == bool and items.shape == (32,)
        expected = row["top1"] if evaluation == "test" else next(r["value"] for r in transfer if r["length"] == length)
        assert 100.0 * items.mean() == pytest.approx(expected)
    assert results.load_study(tmp_path / "results").correctness.equals(correct)


def test_a_quantity_no_trial_kind_declares_is_refused(tmp_path):
    from discbench import results

    with pytest.raises(ValueError, match="measured quantity lambdas not among"):
        results.append_measurements(tmp_path, [{"quantity": "lambdas", "name": "x", "value": 1.0}])
    results.append_measurements(tmp_path, [{"quantity": "lambda", "name": "mean", "value": 1.0}])
    assert not (tmp_path / "measurements.jsonl").read_text().count("lambdas")


# ------------------------------------------------------------------------------- learned λ

def test_a_trapezoid_paper_trial_writes_its_learned_lambda_per_layer_and_direction(tmp_path):
    """Mamba-3's gate after training: mean and spread of λ per layer and scan direction, as
    measurement rows with the report's contract; a method without λ writes none."""
    import json

    from discbench import results
    from discbench.runner import trial_dict
    from discbench.study import load_study
    from discbench.trials import run_trial

    path = tmp_path / "lam.yaml"
    path.write_text("""
name: lam
description: tiny learned-lambda trial
methods: [trapezoid/paper, trapezoid/canonical]
data: {dataset: digits, image_size: 8, train_limit: 64, test_limit: 32, batch_size: 16}
model: {name: vim_micro, patch_size: 4, kwargs: {depth: 2}}
train: {preset: digits, epochs: 1, lr: 0.01, device: cpu}
measure: {throughput: false}
""")
    study = load_study(path)
    results.write_study_meta(tmp_path / "results", study.name, study.source)
    rows = {}
    for trial in study.trials:
        row = run_trial(trial_dict(study, trial, tmp_path / "results"))
        assert row["status"] == "ok" and "lambda" not in row
        folder = tmp_path / "results" / "trials" / trial.trial_id
        rows[trial.method_key] = [r for r in map(json.loads, (folder / "measurements.jsonl").read_text().splitlines())
                                  if r["quantity"] == "lambda"]
    assert rows["trapezoid/canonical"] == []
    lam = rows["trapezoid/paper"]
    assert sorted((r["layer"], r["direction"], r["name"]) for r in lam) == sorted(
        (layer, direction, stat) for layer in (0, 1) for direction in ("forward", "backward")
        for stat in ("mean", "std"))
    means = [r["value"] for r in lam if r["name"] == "mean"]
    assert all(0.0 < m < 1.0 for m in means)
    # λ starts at ½ everywhere; a training epoch at lr 0.01 moves it
    assert max(abs(m - 0.5) for m in means) > 1e-4
    assert all(r["value"] >= 0.0 for r in lam if r["name"] == "std")
    assert {(r["model"], r["method_key"], r["unit"]) for r in lam} == {("vim_micro", "trapezoid/paper", "1")}
