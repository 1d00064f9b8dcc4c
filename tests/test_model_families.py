"""A model family is one module: its cfg states what the harness needs, nothing else is edited.

This module registers a throwaway family (`toy_seqnet`) the way discbench's own do, and shows
that model_info, study validation and training take it with no edit anywhere else.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn
from timm.models import generate_default_cfgs, register_model

from discbench.models import (BiMambaMixer, FamilyCfg, MixerStack, build_family_model, family_names, mixer_blocks,
                              model_info, sequence_cfg)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ToySeqNet(MixerStack):
    """Sequences (b, L, in_chans) -> logits: a linear embedding, Mamba blocks of width 8, mean pool."""

    def __init__(self, seq_len: int = 8, in_chans: int = 1, num_classes: int = 2, embed_dim: int = 8,
                 depth: int = 1, method: str = "zoh", variant: str = "canonical", scan_backend: str = "auto",
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__(num_classes=num_classes, embed_dim=embed_dim, pool="mean", method=method, variant=variant,
                         drop_rate=drop_rate, drop_path_rate=drop_path_rate, seq_len=seq_len, in_chans=in_chans,
                         depth=depth)
        self.seq_len, self.in_chans = seq_len, in_chans
        self.in_proj = nn.Linear(in_chans, embed_dim)
        self.layers = mixer_blocks(embed_dim, depth, drop_path_rate, 1e-5, True, BiMambaMixer, d_state=4,
                                   bidirectional="none", method=self.method, variant=self.variant,
                                   scan_backend=scan_backend)
        self.norm_f = nn.RMSNorm(embed_dim)
        self.head = self.new_head()

    @property
    def input_size(self) -> tuple[int, int]:
        return (self.seq_len, self.in_chans)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_blocks(self.in_proj(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x.mean(dim=1) if pre_logits else self.head(x.mean(dim=1))


default_cfgs = generate_default_cfgs({"toy_seqnet": sequence_cfg(num_classes=2)})


@register_model
def toy_seqnet(pretrained: bool = False, **kwargs) -> ToySeqNet:
    return build_family_model(ToySeqNet, "toy_seqnet", pretrained, **kwargs)


def test_model_info_reads_the_family_cfg_and_timm_models_are_undiscretized_images():
    assert (model_info("toy_seqnet").modality, model_info("toy_seqnet").discretized) == ("sequence", True)
    assert "toy_seqnet" in family_names("sequence") and "toy_seqnet" not in family_names("image")
    assert (model_info("vim_micro").modality, model_info("vim_micro").discretized) == ("image", True)
    assert (model_info("seqssd_micro").modality, model_info("seqssd_micro").discretized) == ("sequence", True)
    assert (model_info("seqgru_micro").modality, model_info("seqgru_micro").discretized) == ("sequence", False)
    deit = model_info("deit_tiny_patch16_224")
    assert (deit.modality, deit.discretized) == ("image", False)
    assert "deit_tiny_patch16_224" not in family_names()
    with pytest.raises(ValueError, match="unknown model 'toy_nonet'; allowed: mnist1d_cnn, mnist1d_gru, mnist1d_logistic, mnist1d_mlp, seqcnn_micro"):
        model_info("toy_nonet")


def test_the_built_model_states_its_cfg_and_takes_the_method():
    model = timm.create_model("toy_seqnet", seq_len=12, in_chans=3, method="trapezoid", variant="paper")
    assert isinstance(model.pretrained_cfg, dict)
    assert {k: model.pretrained_cfg[k] for k in ("architecture", "modality", "discretized", "input_size",
                                                  "num_classes")} == {
        "architecture": "toy_seqnet", "modality": "sequence", "discretized": True, "input_size": (12, 3),
        "num_classes": 2}
    assert (model.method, model.variant) == ("trapezoid", "paper") and model.learns_lambda
    assert model.layers[0].mixer.method.key == "trapezoid/paper"
    assert model(torch.randn(2, 12, 3)).shape == (2, 2)
    assert model.no_weight_decay() == {"layers.0.mixer.A_log", "layers.0.mixer.D"}
    with pytest.raises(ValueError, match="no pretrained weights exist"):
        timm.create_model("toy_seqnet", pretrained=True)
    with pytest.raises(ValueError, match="depth must be a positive integer, got 0"):
        timm.create_model("toy_seqnet", depth=0)
    assert FamilyCfg().modality == "image" and not FamilyCfg().discretized  # what timm's own models are
    with pytest.raises(ValueError, match="modality='audio' is not valid; choose one of: image, sequence"):
        FamilyCfg(modality="audio")


def test_study_validation_and_training_take_the_new_family(tmp_path):
    """A study naming the family validates (and refuses it on image data); a trial of it trains,
    with the trial's method reaching the model (trapezoid/paper's λ is recorded per layer)."""
    from discbench.study import StudyError, load_study
    from discbench.train import fit

    study = tmp_path / "toy.yaml"
    study.write_text("""
name: toy
description: a throwaway model family
methods: [zoh, trapezoid/paper]
data: {dataset: mnist1d, seq_length: 16, train_limit: 64, test_limit: 32, batch_size: 16}
model: {name: toy_seqnet}
train: {preset: digits, epochs: 1, device: cpu}
""")
    trials = load_study(study).trials
    assert [(t.config.model.name, t.method_key) for t in trials] == [("toy_seqnet", "zoh/canonical"),
                                                                      ("toy_seqnet", "trapezoid/paper")]
    on_images = tmp_path / "toy_images.yaml"
    on_images.write_text(study.read_text().replace(
        "{dataset: mnist1d, seq_length: 16,", "{dataset: digits, image_size: 8,"))
    with pytest.raises(StudyError, match="model.name 'toy_seqnet' cannot read dataset 'digits', which is image data"):
        load_study(on_images)

    result = fit(trials[1].config, tmp_path / "trial")
    assert result["status"] == "ok" and result["epochs_done"] == 1
    assert result["params"] == sum(p.numel() for p in timm.create_model(
        "toy_seqnet", seq_len=16, in_chans=1, num_classes=10, method="trapezoid", variant="paper").parameters())
    assert [(r["layer"], r["direction"]) for r in result["lambda"]] == [(0, "forward")]
