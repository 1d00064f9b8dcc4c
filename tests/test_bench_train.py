"""`discbench bench train` and the non-SSM reference it times against (the GRU).

No timing assertions: times are only meaningful at benchmark shapes on a quiet machine.
"""

from __future__ import annotations

import json

import pytest
import timm
import torch

import discbench.models  # noqa: F401  (registers the families)
from discbench.bench_train import matched_reference, parameter_count, reference_names, trial_config
from discbench.cli import main
from discbench.models import model_info

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# A study small enough for tests: the default study's setting on a few signals.
STUDY = """
name: bench_tiny
description: the default study's setting, small
methods: [zoh/paper]
data: {dataset: mnist1d, seq_length: 40, batch_size: 8, train_limit: 64, test_limit: 16}
model: {name: seqmamba_micro, kwargs: {conv: none}}
train: {preset: digits, epochs: 1, lr: 0.005, device: cpu}
measure: {throughput: false}
"""


@pytest.fixture
def tiny_study(tmp_path):
    path = tmp_path / "bench_tiny.yaml"
    path.write_text(STUDY)
    return path


def _params(name: str, **kwargs) -> int:
    model = timm.create_model(name, in_chans=1, seq_len=40, num_classes=10, **kwargs)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("size", ["micro", "tiny"])
def test_each_gru_size_is_the_closest_width_to_seqmamba_without_its_conv(size):
    target = _params(f"seqmamba_{size}", conv="none")
    gru = timm.create_model(f"seqgru_{size}", in_chans=1, seq_len=40, num_classes=10)
    width = gru.num_features
    counts = {w: _params(f"seqgru_{size}", hidden_size=w) for w in (width - 1, width, width + 1)}
    assert counts[width] == _params(f"seqgru_{size}")
    assert abs(counts[width] - target) < min(abs(counts[w] - target) for w in (width - 1, width + 1))
    assert abs(counts[width] - target) / target < 0.01
    assert model_info(f"seqgru_{size}").modality == "sequence" and not model_info(f"seqgru_{size}").discretized


def test_the_gru_classifies_sequences_of_any_length_and_refuses_bad_input():
    gru = timm.create_model("seqgru_micro", in_chans=2, seq_len=12, num_classes=3)
    assert gru(torch.randn(4, 12, 2)).shape == (4, 3)
    assert gru(torch.randn(4, 30, 2)).shape == (4, 3)
    assert gru.forward_head(gru.forward_features(torch.randn(4, 12, 2)), pre_logits=True).shape == (4, 78)
    with pytest.raises(ValueError, match="expected sequences"):
        gru(torch.randn(4, 12, 3))
    with pytest.raises(ValueError, match="pool"):
        timm.create_model("seqgru_micro", pool="max")
    with pytest.raises(ValueError, match="drop_path_rate"):
        timm.create_model("seqgru_micro", drop_path_rate=0.1)


def test_the_references_are_one_name_per_non_ssm_model_class():
    assert reference_names() == ["seqcnn_micro", "seqgru_micro", "seqtransformer_micro"]


def test_the_matched_width_is_the_closest_in_parameters(tiny_study):
    from discbench.study import load_study

    base = load_study(tiny_study).trials[0].config
    target = parameter_count(trial_config(base, model="seqmamba_micro", kwargs={"conv": "none"}, method="zoh/paper",
                                          length=40, batch=8))
    width, params = matched_reference(base, "seqgru_micro", target, 40, 8)
    assert width == {"hidden_size": 78} and params == 19_744
    # at a target between widths, the nearer one
    width, params = matched_reference(base, "seqgru_micro", 19_744 + 10, 40, 8)
    assert width == {"hidden_size": 78}


def test_bench_train_json_times_the_trial_step_against_the_matched_gru(tiny_study, capsys):
    path = tiny_study
    argv = ["bench", "train", "--study", str(path), "--lengths", "12,20", "--batch", "4", "--repeats", "1",
            "--profile-rows", "3", "--flip-path", "--json", "--references", "seqgru_micro"]
    assert main(argv) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["length"], r["batch"], r["method"], r["params"]) for r in records] == [
        (12, 4, "zoh/paper", 19_690), (20, 4, "zoh/paper", 19_690)]
    for r in records:
        (ref,) = r["references"]
        assert (ref["name"], ref["width"], ref["params"]) == ("seqgru_micro", {"hidden_size": 78}, 19_744)
        assert ref["ratio"] == pytest.approx(r["model_ms_median"] / ref["ms_median"])
        assert r["fast_speedup"] == pytest.approx(r["model_flip_ms_median"] / r["model_ms_median"])
        assert 1 <= len(r["profile"]) <= 3
        assert {"load_before", "load_after", "threads", "kwargs"} <= set(r) and r["kwargs"] == {"conv": "none"}


def test_bench_train_table_names_the_model_the_reference_and_the_ratio(tiny_study, capsys):
    path = tiny_study
    argv = ["bench", "train", "--study", str(path), "--lengths", "12", "--batch", "4", "--repeats", "1",
            "--profile-rows", "2", "--method", "foh/paper", "--references", "seqgru_micro"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "training step of seqmamba_micro" in out and "(foh/paper, 19,690 parameters)" in out
    assert "load average" in out and "torch CPU path" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("12 "))
    assert "seqgru_micro" in row and "hidden_size=78" in row and "19,744" in row
    assert "step profile, L=12" in out


@pytest.mark.parametrize("bad, message", [
    (["--lengths", "0"], "--lengths"), (["--references", "seqlstm"], "--references"),
    (["--model", "vim_micro"], "not a sequence model"), (["--method", "euler"], "euler"),
    (["--threads", "0"], "--threads"), (["--model", "seqgru_micro", "--flip-path"], "--flip-path"),
    (["--model-kwargs", "[1, 2]"], "--model-kwargs"), (["--study", "nonexistent_study"], "nonexistent_study")])
def test_bench_train_rejects_bad_arguments(bad, message, capsys):
    assert main(["bench", "train", *bad]) == 2
    err = capsys.readouterr().err
    assert "discbench bench train:" in err and message in err


def test_the_trials_foreach_adamw_gives_the_per_parameter_loops_bits():
    """train._optimizer asks for foreach AdamW (one call for all parameters); its comment says
    the numbers are the per-parameter loop's, bit for bit."""
    from discbench.config import TrainConfig
    from discbench.train import _optimizer

    torch.manual_seed(0)
    models = [timm.create_model("seqmamba_micro", conv="none", method="zoh", variant="paper", in_chans=1,
                                seq_len=16, num_classes=10) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    recipe = TrainConfig(preset="digits", lr=0.005).resolved()
    trial = _optimizer(models[0], recipe, recipe.lr)
    assert all(group["foreach"] for group in trial.param_groups)
    loop = _optimizer(models[1], recipe, recipe.lr)
    for group in loop.param_groups:
        group["foreach"] = False
    x, y = torch.randn(8, 16, 1), torch.randint(0, 10, (8,))
    for _ in range(3):
        for model, optimizer in zip(models, (trial, loop)):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(models[0].parameters(), models[1].parameters()))


def test_a_gru_trial_trains_and_is_evaluated_at_other_lengths_as_it_is(tmp_path):
    """A reference has no Δ to rescale: its transfer rows are the model run as trained."""
    from discbench.config import TrialConfig
    from discbench.train import fit

    cfg = TrialConfig(data={"dataset": "mnist1d", "seq_length": 16, "train_limit": 64, "test_limit": 32,
                            "batch_size": 16},
                      model={"name": "seqgru_micro"}, train={"preset": "digits", "epochs": 1, "device": "cpu"},
                      measure={"throughput": False, "eval_lengths": [8, 16]})
    result = fit(cfg, tmp_path)
    assert result["status"] == "ok" and result["params"] == 3 * (78 + 78 * 78 + 2 * 78) + 78 * 10 + 10
    assert [(t["length"], t["delta_scale"]) for t in result["transfer"]] == [(8, 2.0), (16, 1.0)]
    assert result["transfer"][1]["top1"] == result["top1"] and result["lambda"] == []


def test_bench_train_flush_denormal_is_stated_and_undone(tiny_study, capsys):
    path = tiny_study
    argv = ["bench", "train", "--study", str(path), "--lengths", "12", "--batch", "4", "--repeats", "1",
            "--profile-rows", "0", "--flush-denormal", "--json"]
    assert main(argv) == 0
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert record["flush_denormal"] is True
    tiny = torch.tensor([1e-40])  # a subnormal float32: kept once the bench has undone its setting
    assert (tiny * 1.0).item() != 0.0
