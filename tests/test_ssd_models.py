"""The Mamba-2 (SSD) vision family: sizes, both directions, NC-SSD, the timm interface."""

from __future__ import annotations

import pytest
import timm
import torch

import discbench.models  # noqa: F401  (registers the families in timm)
from discbench import all_methods
from discbench.models import VIM_MODEL_NAMES, VSSD_CONFIGS
from discbench.models.ssd import BiSSDMixer, non_causal_ssd

ALL_KEYS = [m.key for m in all_methods()]


def expected_parameters(name: str, num_classes: int) -> int:
    """The parameter count of `name` from its configuration, counted by hand (Vim's shared
    parts, and per block: in_proj, two convs over (x, B, C), A_log/dt_bias/D per direction, the
    gated norm, out_proj, the block's RMSNorm)."""
    cfg = dict(VSSD_CONFIGS[name])
    D, depth, n, p = cfg["embed_dim"], cfg["depth"], cfg["d_state"], cfg["headdim"]
    E = 2 * D
    heads, conv_channels = E // p, E + 2 * n
    mixer = D * (E + conv_channels + heads) + 2 * conv_channels * (4 + 1) + 2 * 3 * heads + E + E * D
    patches = (cfg["img_size"] // cfg["patch_size"]) ** 2
    shared = 3 * cfg["patch_size"] ** 2 * D + D + D + (patches + 1) * D + D + D * num_classes + num_classes
    return shared + depth * (mixer + D)


@pytest.mark.parametrize("name", list(VSSD_CONFIGS))
def test_parameter_counts(name):
    model = timm.create_model(name, num_classes=1000)
    count = sum(p.numel() for p in model.parameters())
    print(f"{name}: {count:,} parameters ({count / 1e6:.2f} M) with 1000 classes")
    assert count == expected_parameters(name, 1000)
    assert name in VIM_MODEL_NAMES  # studies pass it discretization=, variant=, scan_backend=


@pytest.mark.parametrize("key", ALL_KEYS)
def test_every_method_trains_through_vssd_micro(key, one_torch_thread):
    name, variant = key.split("/")
    model = timm.create_model("vssd_micro", num_classes=5, discretization=name, variant=variant)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    logits = model(images)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    logits.sum().backward()
    mixer = model.layers[0].mixer
    for param in (mixer.A_log, mixer.A_b_log, mixer.dt_bias_b, mixer.conv1d_b.weight, mixer.in_proj.weight):
        assert param.grad is not None and param.grad.abs().sum() > 0


def _mirrored_mixer(key: str, seed: int = 0, **kwargs) -> BiSSDMixer:
    """A mixer whose backward direction has the forward direction's parameters."""
    torch.manual_seed(seed)
    name, variant = key.split("/")
    mixer = BiSSDMixer(8, d_state=3, headdim=4, chunk_size=3, discretization=name, variant=variant, **kwargs).double()
    with torch.no_grad():
        mixer.conv1d_b.weight.copy_(mixer.conv1d.weight)
        mixer.conv1d_b.bias.copy_(mixer.conv1d.bias)
        for fwd, bwd in (("A_log", "A_b_log"), ("dt_bias", "dt_bias_b"), ("D", "D_b")):
            getattr(mixer, bwd).copy_(getattr(mixer, fwd))
    return mixer


@pytest.mark.parametrize("key", ["zoh/paper", "foh/canonical", "polynomial/canonical", "rk4/canonical"])
def test_both_directions_scan_the_reversed_sequence_alike(key):
    """With mirrored parameters the mixer commutes with reversing the tokens: the backward
    direction is the forward computation on the reversed sequence, stencils included."""
    mixer = _mirrored_mixer(key)
    hidden = torch.randn(2, 7, 8, dtype=torch.float64)
    torch.testing.assert_close(mixer(hidden.flip(1)), mixer(hidden).flip(1))
    forward_only = _mirrored_mixer(key)
    forward_only.bidirectional = "none"
    assert not torch.allclose(forward_only(hidden.flip(1)), forward_only(hidden).flip(1))


def test_forward_only_causal_mixer_does_not_read_later_tokens():
    mixer = BiSSDMixer(8, d_state=3, headdim=4, chunk_size=3, bidirectional="none", discretization="highorder").double()
    hidden = torch.randn(1, 9, 8, dtype=torch.float64)
    changed = hidden.clone()
    changed[:, 6] += 1.0
    out, out_changed = mixer(hidden), mixer(changed)
    torch.testing.assert_close(out[:, :6], out_changed[:, :6])
    assert not torch.allclose(out[:, 6:], out_changed[:, 6:])


def test_scan_backends_agree_and_are_checked():
    model = timm.create_model("vssd_micro", num_classes=3, discretization="bilinear").double()
    images = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    chunked = model(images)
    model.set_scan_backend("reference")
    assert model.scan_backend == "reference"
    torch.testing.assert_close(model(images), chunked)
    with pytest.raises(ValueError, match="scan_backend='cpu' is not valid for an SSD model; choose one of: auto"):
        model.set_scan_backend("cpu")
    with pytest.raises(ValueError, match="scan_backend='cpu' is not valid for an SSD model"):
        timm.create_model("vssd_micro", scan_backend="cpu")


def test_non_causal_ssd_is_one_global_state():
    gen = torch.Generator().manual_seed(0)
    b, l, h, p, g, n = 2, 6, 4, 3, 2, 5
    x, dt = torch.randn(b, l, h, p, generator=gen), torch.rand(b, l, h, generator=gen)
    A, D = -torch.rand(h, generator=gen) - 0.5, torch.randn(h, generator=gen)
    B, C = torch.randn(b, l, g, n, generator=gen), torch.randn(b, l, g, n, generator=gen)
    y = non_causal_ssd(x, dt, A, B, C, D)
    for k in (0, l - 1):
        for head in range(h):
            group = head // (h // g)
            state = sum(-A[head] * dt[:, t, head, None, None] * B[:, t, group, :, None] * x[:, t, head, None, :]
                        for t in range(l))  # (b, n, p)
            expected = torch.einsum("bn,bnp->bp", C[:, k, group], state) + D[head] * x[:, k, head]
            torch.testing.assert_close(y[:, k, head], expected, rtol=1e-5, atol=1e-5)
    order = torch.randperm(l, generator=gen)
    torch.testing.assert_close(non_causal_ssd(x[:, order], dt[:, order], A, B[:, order], C[:, order], D), y[:, order])


def test_non_causal_mode_refuses_a_discretization():
    model = timm.create_model("vssd_micro", num_classes=3, ssd_mode="non_causal")
    assert not model.discretization_applies and model.layers[0].mixer.bidirectional == "none"
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    assert timm.create_model("vssd_micro", num_classes=3).discretization_applies
    refused = "no recurrence, so no discretization applies to it; got discretization='foh/canonical'"
    with pytest.raises(ValueError, match=refused):
        timm.create_model("vssd_micro", ssd_mode="non_causal", discretization="foh")
    with pytest.raises(ValueError, match="it has no scan directions"):
        timm.create_model("vssd_micro", ssd_mode="non_causal", bidirectional="ssm_conv")
    with pytest.raises(ValueError, match="ssd_mode='sideways' is not valid; choose one of: causal, non_causal"):
        timm.create_model("vssd_micro", ssd_mode="sideways")


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="headdim=5 must divide the inner width expand·d_model = 96"):
        timm.create_model("vssd_micro", headdim=5)
    with pytest.raises(ValueError, match="ngroups=4 must divide the 6 heads"):
        timm.create_model("vssd_micro", ngroups=4)


@pytest.mark.parametrize("method", [m for m in all_methods() if m.takes_lam], ids=lambda m: m.key)
def test_a_method_with_lam_projects_it_per_head_starting_at_one_half(method):
    mixer = BiSSDMixer(8, d_state=3, headdim=4, chunk_size=3, discretization=method.name, variant=method.variant)
    assert mixer.reads_lam and mixer.in_proj.out_features == 2 * 16 + 2 * 3 + 2 * 4
    hidden = torch.randn(2, 5, 8)
    logits = mixer.in_proj(hidden)[..., -mixer.nheads:]
    torch.testing.assert_close(torch.sigmoid(logits), torch.full_like(logits, 0.5))
    mixer(hidden).sum().backward()
    assert mixer.in_proj.weight.grad[-mixer.nheads:].abs().sum() > 0  # λ's projection learns
    plain = BiSSDMixer(8, d_state=3, headdim=4, discretization="zoh")
    assert not plain.reads_lam and plain.in_proj.out_features == 2 * 16 + 2 * 3 + 4


def test_timm_interface():
    model = timm.create_model("vssd_micro", num_classes=4, cls_token="none", pool="mean")
    features = model.forward_features(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, 64, 48)
    assert model.forward_head(features, pre_logits=True).shape == (2, 48)
    model.reset_classifier(7)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    assert {"pos_embed", "layers.0.mixer.dt_bias", "layers.0.mixer.dt_bias_b", "layers.0.mixer.A_log"} <= \
        model.no_weight_decay()
    assert model.pretrained_cfg["architecture"] == "vssd_micro"
    with pytest.raises(ValueError, match="no pretrained weights exist"):
        timm.create_model("vssd_micro", pretrained=True)


def test_a_study_trial_trains_vssd_micro(tmp_path, one_torch_thread):
    """The training loop builds an SSD model from a trial configuration like a Vim one, and a
    diverging run is reported as such (ssd_scan refuses a non-finite Δ like selective_scan)."""
    from discbench.config import TrialConfig
    from discbench.train import fit

    spec = {
        "data": {"dataset": "digits", "image_size": 8, "train_limit": 64, "val_limit": 32, "batch_size": 32},
        "model": {"name": "vssd_micro", "patch_size": 4},
        "train": {"preset": "digits", "epochs": 1},
        "measure": {"throughput": False},
        "method": "foh",
    }
    result = fit(TrialConfig(**spec), tmp_path / "ok")
    assert result["status"] == "ok" and result["epochs_done"] == 1 and result["top1"] is not None
    spec["train"] = {**spec["train"], "lr": 1e30, "clip_grad": 0, "warmup_epochs": 0}
    assert fit(TrialConfig(**spec), tmp_path / "diverged")["status"] == "diverged"
