"""Non-SSM references: the 1-D CNN and Transformer families (parameter-matched to seqmamba), a
study's `references:` section, how the tuning stage treats them, and their rows in the report."""

from __future__ import annotations

import json

import pytest
import timm
import torch

from discbench.models import model_info
from discbench.models.seq import SIZES as SEQ_SIZES
from discbench.study import StudyError, load_study

STUDY = """
name: refs
description: two methods and three references
methods: [zoh/paper, foh/paper]
data: {dataset: mnist1d, seq_length: 16, train_limit: 96, test_limit: 32, batch_size: 16}
model: {name: seqmamba_micro, kwargs: {conv: none}}
train: {preset: digits, epochs: 2, device: cpu}
measure: {throughput: false, eval_lengths: [8, 16]}
grid: {seed: [0, 1], model.kwargs.dt_max: [0.1]}
references: [seqgru_micro, {name: seqcnn_micro, kwargs: {depth: 2}}, seqtransformer_micro]
"""


def _params(name: str, **kwargs) -> int:
    model = timm.create_model(name, in_chans=1, seq_len=40, num_classes=10, **kwargs)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("family,width_arg", [("seqgru", "hidden_size"), ("seqcnn", "width"),
                                              ("seqtransformer", "embed_dim")])
@pytest.mark.parametrize("size", list(SEQ_SIZES))
def test_references_match_seqmamba_in_parameters(family, width_arg, size):
    """Each size's width is the one whose count is closest to the conv-free seqmamba's."""
    target = _params(f"seqmamba_{size}", conv="none")
    model = timm.create_model(f"{family}_{size}", in_chans=1, seq_len=40, num_classes=10)
    width = getattr(model, "num_features")
    heads = {"num_heads": model.encoder.layers[0].self_attn.num_heads} if family == "seqtransformer" else {}
    mine = _params(f"{family}_{size}")
    for other in (width - 1, width + 1):
        if family == "seqtransformer" and other % heads["num_heads"]:
            continue
        assert abs(mine - target) <= abs(_params(f"{family}_{size}", **{width_arg: other}, **heads) - target)
    assert abs(mine - target) / target < 0.03  # one step of width moves a CNN by ~4%, a nano CNN by ~9%
    info = model_info(f"{family}_{size}")
    assert (info.modality, info.discretized) == ("sequence", False)


@pytest.mark.parametrize("name", ["seqcnn_micro", "seqtransformer_micro"])
def test_references_run_at_any_length_and_check_their_input(name):
    model = timm.create_model(name, in_chans=1, seq_len=40, num_classes=10).eval()
    x = torch.randn(3, 40, 1)
    assert model(x).shape == (3, 10) and model(torch.randn(3, 144, 1)).shape == (3, 10)
    # the pooled features are a mean over tokens: the same signal repeated gives the same logits
    # for the CNN away from the edges, and the Transformer sees every token
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (3, model.num_features)
    with pytest.raises(ValueError, match="expected sequences"):
        model(torch.randn(3, 40, 2))
    with pytest.raises(ValueError, match="drop_path_rate"):
        timm.create_model(name, drop_path_rate=0.1)


def test_the_transformer_sees_the_order_of_its_tokens():
    torch.manual_seed(0)
    model = timm.create_model("seqtransformer_micro", in_chans=1, seq_len=40, num_classes=10).eval()
    x = torch.randn(2, 40, 1)
    assert not torch.allclose(model(x), model(x.flip(1)))  # positions: not a bag of samples
    with pytest.raises(ValueError, match="multiple of num_heads"):
        timm.create_model("seqtransformer_micro", embed_dim=33, num_heads=2)
    assert _params("seqtransformer_micro", num_heads=2) == _params("seqtransformer_micro")  # heads cost nothing


def test_references_expand_beside_the_methods(tmp_path):
    path = tmp_path / "refs.yaml"
    path.write_text(STUDY)
    study = load_study(path)
    refs = [t for t in study.trials if t.reference]
    assert [t.trial_id for t in refs] == ["ref-seqgru_micro__seed=0", "ref-seqgru_micro__seed=1",
                                          "ref-seqcnn_micro__seed=0", "ref-seqcnn_micro__seed=1",
                                          "ref-seqtransformer_micro__seed=0", "ref-seqtransformer_micro__seed=1"]
    # a reference is its own model: the study's model section and its grid axes do not reach it
    assert {(t.config.model.name, json.dumps(t.config.model.kwargs)) for t in refs} == {
        ("seqgru_micro", "{}"), ("seqcnn_micro", '{"depth": 2}'), ("seqtransformer_micro", "{}")}
    assert {t.arm_id for t in refs} == {"ref-seqgru_micro", "ref-seqcnn_micro", "ref-seqtransformer_micro"}
    assert {t.label for t in refs} == {"seqgru_micro", "seqcnn_micro", "seqtransformer_micro"}
    # the rest of the configuration is the methods' (data, recipe, measurements, seeds)
    method = next(t for t in study.trials if not t.reference)
    assert all(t.config.data == method.config.data and t.config.train == method.config.train for t in refs)


@pytest.mark.parametrize("reference,message", [
    ("seqmamba_tiny", r"references\[0\]: seqmamba_tiny is discretized"),
    ("seqmamba_micro", r"references\[0\]: seqmamba_micro is discretized"),
    ("nonet", r"references\[0\]: unknown model 'nonet'"),
])
def test_a_reference_must_be_a_model_without_a_discretization(tmp_path, reference, message):
    path = tmp_path / "refs.yaml"
    path.write_text(STUDY.replace("references: [seqgru_micro,", f"references: [{reference},"))
    with pytest.raises(StudyError, match=message):
        load_study(path)


@pytest.mark.slow
def test_references_are_rows_of_their_own_in_the_report(tmp_path):
    from discbench import results
    from discbench.cli import main
    from discbench.report.study_view import build_view

    path = tmp_path / "refs.yaml"
    path.write_text(STUDY)
    assert main(["run", str(path), "--results-dir", str(tmp_path / "results")]) == 0
    assert main(["report", "refs", "--results-dir", str(tmp_path / "results"), "--out", str(tmp_path / "out")]) == 0
    view = build_view(results.load_study(tmp_path / "results" / "refs"))
    # the methods' comparisons never see a reference (whose method fields are a placeholder)
    assert view.models == ["seqmamba_micro"] and {c[0] for c in view.conditions} == {"zoh/paper", "foh/paper"}
    assert view.reference_names == ["seqgru_micro", "seqcnn_micro", "seqtransformer_micro"]
    index = (tmp_path / "out" / "refs" / "index.md").read_text()
    table = (tmp_path / "out" / "refs" / "references.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in table[1:]] == ["seqgru_micro", "seqcnn_micro", "seqtransformer_micro",
                                                          "zoh/paper (seqmamba_micro)"]
    assert "top1_at_8" in table[0] and "References without a discretization" in index
    finding = next(line for line in index.splitlines() if line.startswith("- References without a discretization"))
    gru = results.load_study(tmp_path / "results" / "refs").trials.set_index("trial_id")
    mean = gru.loc[["ref-seqgru_micro__seed=0", "ref-seqgru_micro__seed=1"], "top1"].mean()
    assert f"seqgru_micro {mean:.2f} ±" in finding
    # every reference trial is judged for convergence, in its own row
    convergence = (tmp_path / "out" / "refs" / "convergence.csv").read_text()
    assert convergence.count("ref-seq") == 6
