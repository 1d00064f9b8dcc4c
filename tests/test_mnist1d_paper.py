"""MNIST-1D's published table: the published dataset, the four published models, their recipe,
and the report's "published vs reproduced" table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
from pydantic import ValidationError

import discbench.models  # noqa: F401  (registers the families)
from discbench import results
from discbench.config import TrainConfig, TrialConfig
from discbench.data import DataConfig, load_splits
from discbench.models import model_info
from discbench.report import published
from discbench.report.study_view import build_view
from discbench.report.tables import mnist1d_published_table

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODELS = ("mnist1d_logistic", "mnist1d_mlp", "mnist1d_cnn", "mnist1d_gru")


def test_the_published_dataset_is_the_generators_own_40_samples():
    from mnist1d.data import get_dataset_args, make_dataset

    from discbench.data import carve_validation

    splits = load_splits(DataConfig(dataset="mnist1d_paper"))
    assert (len(splits.train) + len(splits.val), len(splits.test), splits.num_classes) == (4000, 1000, 10)
    state = np.random.get_state()
    generated = make_dataset(get_dataset_args())  # the package's defaults: 40 samples
    np.random.set_state(state)
    train_idx, val_idx = carve_validation(np.asarray(generated["y"]), 0.1)
    assert np.array_equal(splits.train.signals.numpy()[..., 0], generated["x"][train_idx].astype(np.float32))
    assert np.array_equal(splits.val.signals.numpy()[..., 0], generated["x"][val_idx].astype(np.float32))
    assert np.array_equal(splits.test.signals.numpy()[..., 0], generated["x_test"].astype(np.float32))
    assert splits.train.labels == [int(y) for y in generated["y"][train_idx]]
    resampled = load_splits(DataConfig(dataset="mnist1d", seq_length=40)).train.signals.numpy()
    assert not np.array_equal(resampled, splits.train.signals.numpy())  # another variant of the same signals
    with pytest.raises(ValidationError, match="fixed length of 40"):
        DataConfig(dataset="mnist1d_paper", seq_length=72)


@pytest.mark.parametrize("name", MODELS)
def test_each_published_model_has_the_published_architecture(name):
    model = timm.create_model(name, seq_len=40, in_chans=1, num_classes=10)
    params = sum(p.numel() for p in model.parameters())
    # LinearBase 40·10 + 10; MLPBase 40·100 + 100 + 100·100 + 100 + 100·10 + 10; the notebook prints the others
    expected = {"mnist1d_logistic": 410, "mnist1d_mlp": 15_210}
    expected.update({row["ours"]: row["params"] for row in published.mnist1d()["test_top1"] if "params" in row})
    assert params == expected[name]
    assert model(torch.randn(3, 40, 1)).shape == (3, 10)
    assert (model_info(name).modality, model_info(name).discretized) == ("sequence", False)
    with pytest.raises(ValueError, match=r"expected sequences \(batch, 40, 1\)"):
        model(torch.randn(3, 41, 1))


def test_the_published_models_refuse_what_they_cannot_be():
    with pytest.raises(ValueError, match="too short"):
        timm.create_model("mnist1d_cnn", seq_len=2)
    with pytest.raises(ValueError, match="drop_path_rate must be 0"):
        timm.create_model("mnist1d_mlp", drop_path_rate=0.1)


def test_the_published_recipe_and_timms_constant_schedule():
    recipe = TrainConfig(preset="mnist1d_paper").resolved()
    assert (recipe.opt, recipe.lr, recipe.weight_decay, recipe.sched, recipe.epochs) == ("adam", 1e-2, 0.0,
                                                                                        "constant", 150)
    assert (recipe.smoothing, recipe.clip_grad, recipe.warmup_epochs, recipe.model_ema) == (0.0, 0.0, 0, False)
    with pytest.raises(ValidationError, match="sched"):
        TrainConfig(sched="const")


def test_a_published_model_trains_with_the_published_recipe(tmp_path):
    from discbench.train import fit

    cfg = TrialConfig(data={"dataset": "mnist1d_paper", "train_limit": 200, "test_limit": 100, "batch_size": 100},
                      model={"name": "mnist1d_cnn"}, train={"preset": "mnist1d_paper", "epochs": 2, "device": "cpu"},
                      measure={"throughput": False})
    seen = []
    result = fit(cfg, tmp_path, on_epoch=seen.append)
    assert result["status"] == "ok" and result["params"] == 5210
    assert [r["lr"] for r in seen] == [pytest.approx(1e-2)] * 2  # constant


def _fake_study(root):
    study = root / "anchors"
    results.write_study_meta(study, "anchors", "name: anchors\n")
    rows = [("mnist1d_cnn", "mnist1d_paper", s, top1) for s, top1 in enumerate((93.0, 95.0, 94.0))]
    rows += [("mnist1d_cnn", "mnist1d", 0, 90.0), ("seqmamba_micro", "mnist1d", 0, 64.0),
             ("seqmamba_micro", "mnist1d", 1, 66.0)]
    for model, dataset, seed, top1 in rows:
        trial_id = f"{model}-{dataset}-s{seed}"
        row = {"study": "anchors", "trial_id": trial_id, "method": "zoh", "variant": "paper",
               "method_key": "zoh/paper", "seed": seed, "model": model, "dataset": dataset, "status": "ok",
               "top1": top1, "num_classes": 10, "git_commit": "0123456789ab", "device": "cpu:test",
               "config": {"method": "zoh", "variant": "paper", "seed": seed,
                          "data": {"dataset": dataset}, "model": {"name": model}}}
        results.write_trial(results.trial_dir(study, trial_id), row)
    results.consolidate(study)
    return study


def test_the_report_sets_the_published_table_beside_ours(tmp_path):
    view = build_view(results.load_study(_fake_study(tmp_path)))
    table = mnist1d_published_table(view)
    data = table.data
    cnn = data[(data["model"] == "mnist1d_cnn") & (data["dataset"] == "mnist1d_paper")].iloc[0]
    assert (cnn["published_model"], cnn["published_top1"], cnn["top1_mean"], cnn["top1_n"]) == ("CNN", 94.0, 94.0, 3)
    assert cnn["gap"] == pytest.approx(0.0) and cnn["top1_std"] == pytest.approx(1.0)
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # Student t(0.975, 2) · sd / √n
    assert (cnn["ci_low"], cnn["ci_high"]) == (pytest.approx(94.0 - half), pytest.approx(94.0 + half))
    shown = table.display
    assert list(shown["model"][:3]) == ["Logistic regression", "MLP", "CNN"]
    assert list(shown.loc[shown["model"] == "CNN", "data"]) == ["mnist1d_paper", "mnist1d"]  # the published first
    assert shown.loc[shown["model"] == "GRU", "ours top-1 (%)"].item() == "not run here"
    ssm = shown[shown["model"].str.startswith("seqmamba_micro")].iloc[0]
    assert (ssm["ours top-1 (%)"], ssm["published top-1 (%)"]) == ("65.00 ± 1.41 (n=2)", "—")
    assert "greydanus/mnist1d README (commit 7878d96)" in table.caption


def test_no_published_mnist1d_table_for_other_data(tmp_path):
    study = tmp_path / "other"
    results.write_study_meta(study, "other", "name: other\n")
    row = {"study": "other", "trial_id": "t", "method": "zoh", "variant": "paper", "method_key": "zoh/paper",
           "seed": 0, "model": "vim_micro", "dataset": "digits", "status": "ok", "top1": 90.0,
           "config": {"data": {"dataset": "digits"}}}
    results.write_trial(results.trial_dir(study, "t"), row)
    results.consolidate(study)
    assert mnist1d_published_table(build_view(results.load_study(study))) is None
