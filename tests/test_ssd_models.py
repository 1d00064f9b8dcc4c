"""The Mamba-2 (SSD) vision family: sizes, both directions, NC-SSD, the timm interface."""

from __future__ import annotations

import pytest
import timm
import torch

import discbench.models  # noqa: F401  (registers the families in timm)
from discbench import all_methods
from discbench.models import model_info
from discbench.models.ssd import BiSSDMixer, non_causal_ssd

ALL_KEYS = [m.key for m in all_methods()]


def expected_parameters(model, num_classes: int) -> int:
    """The parameter count of a VisionSSD from its sizes, counted by hand (Vim's shared parts,
    and per block: in_proj, two convs over (x, B, C), A_log/dt_bias/D per direction, the gated
    norm, out_proj, the block's RMSNorm)."""
    mixer = model.layers[0].mixer
    D, depth, n, p = model.embed_dim, len(model.layers), mixer.d_state, mixer.headdim
    E = 2 * D
    heads, conv_channels = E // p, E + 2 * n
    per_mixer = D * (E + conv_channels + heads) + 2 * conv_channels * (4 + 1) + 2 * 3 * heads + E + E * D
    (patch, _), patches = model.patch_embed.patch_size, model.patch_embed.num_patches
    shared = 3 * patch ** 2 * D + D + D + (patches + 1) * D + D + D * num_classes + num_classes
    return shared + depth * (per_mixer + D)


@pytest.mark.parametrize("name", timm.list_models("vssd_*"))
def test_parameter_counts(name):
    model = timm.create_model(name, num_classes=1000)
    count = sum(p.numel() for p in model.parameters())
    print(f"{name}: {count:,} parameters ({count / 1e6:.2f} M) with 1000 classes")
    assert count == expected_parameters(model, 1000)
    # studies pass it method=, variant=, scan_backend= and image data
    assert model_info(name) == model_info("vim_micro") == model_info("vim_tiny_patch16_224")
    assert (model_info(name).modality, model_info(name).discretized) == ("image", True)


@pytest.mark.parametrize("key", ALL_KEYS)
def test_every_method_trains_through_vssd_micro(key, one_torch_thread):
    name, variant = key.split("/")
    model = timm.create_model("vssd_micro", num_classes=5, method=name, variant=variant)
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
    mixer = BiSSDMixer(8, d_state=3, headdim=4, chunk_size=3, method=name, variant=variant, **kwargs).double()
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
    mixer = BiSSDMixer(8, d_state=3, headdim=4, chunk_size=3, bidirectional="none", method="highorder").double()
    hidden = torch.randn(1, 9, 8, dtype=torch.float64)
    changed = hidden.clone()
    changed[:, 6] += 1.0
    out, out_changed = mixer(hidden), mixer(changed)
    torch.testing.assert_close(out[:, :6], out_changed[:, :6])
    assert not torch.allclose(out[:, 6:], out_changed[:, 6:])


def test_scan_backends_agree_and_are_checked():
    model = timm.create_model("vssd_micro", num_classes=3, method="bilinear").double()
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
    refused = "no recurrence, so no discretization applies to it; got method='foh/canonical'"
    with pytest.raises(ValueError, match=refused):
        timm.create_model("vssd_micro", ssd_mode="non_causal", method="foh")
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
    mixer = BiSSDMixer(8, d_state=3, headdim=4, chunk_size=3, method=method.name, variant=method.variant)
    assert mixer.learns_lambda and mixer.in_proj.out_features == 2 * 16 + 2 * 3 + 2 * 4
    hidden = torch.randn(2, 5, 8)
    logits = mixer.in_proj(hidden)[..., -mixer.nheads:]
    torch.testing.assert_close(torch.sigmoid(logits), torch.full_like(logits, 0.5))
    mixer(hidden).sum().backward()
    assert mixer.in_proj.weight.grad[-mixer.nheads:].abs().sum() > 0  # λ's projection learns
    plain = BiSSDMixer(8, d_state=3, headdim=4, method="zoh")
    assert not plain.learns_lambda and plain.in_proj.out_features == 2 * 16 + 2 * 3 + 4


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
        "data": {"dataset": "digits", "image_size": 8, "train_limit": 64, "test_limit": 32, "batch_size": 32},
        "model": {"name": "vssd_micro", "patch_size": 4},
        "train": {"preset": "digits", "epochs": 1},
        "measure": {"throughput": False},
        "method": "foh",
    }
    result = fit(TrialConfig(**spec), tmp_path / "ok")
    assert result["status"] == "ok" and result["epochs_done"] == 1 and result["top1"] is not None
    spec["train"] = {**spec["train"], "lr": 1e30, "clip_grad": 0, "warmup_epochs": 0}
    assert fit(TrialConfig(**spec), tmp_path / "diverged")["status"] == "diverged"


# --------------------------------------------------------------------------- the study-facing options

def _mixer(bidirectional: str = "ssm_conv", conv: str = "causal", key: str = "foh/canonical", **kwargs) -> BiSSDMixer:
    torch.manual_seed(1)
    name, variant = key.split("/")
    return BiSSDMixer(8, d_state=3, headdim=4, chunk_size=3, bidirectional=bidirectional, conv=conv,
                      method=name, variant=variant, scan_backend="chunked", **kwargs).double()


def _mixer_by_hand(mixer: BiSSDMixer, hidden: torch.Tensor, scale: float) -> torch.Tensor:
    """The mixer's output written out with the reference ssd_scan (or NC-SSD) on the step
    softplus(Δ + dt_bias)·scale, handed to the scan with no bias and no softplus."""
    import torch.nn.functional as F

    from discbench.scan.ssd import ssd_scan

    parts = torch.split(mixer.in_proj(hidden), mixer.split, dim=-1)
    z, xBC, dt = parts[:3]
    lam = torch.sigmoid(parts[3]) if mixer.learns_lambda else None
    E, gn = mixer.d_inner, mixer.ngroups * mixer.d_state

    def conv(seq, layer):
        if layer is None:
            return F.silu(seq)
        width = layer.weight.shape[-1]
        out = F.conv1d(F.pad(seq.transpose(1, 2), (width - 1, 0)), layer.weight, layer.bias, groups=seq.shape[-1])
        return F.silu(out).transpose(1, 2)

    def direction(xBC_d, dt_d, lam_d, A_log, dt_bias, D):
        x, B, C = torch.split(xBC_d, [E, gn, gn], dim=-1)
        b, l = x.shape[:2]
        x, B, C = x.unflatten(-1, (mixer.nheads, -1)), B.unflatten(-1, (mixer.ngroups, -1)), C.unflatten(-1, (mixer.ngroups, -1))
        step = F.softplus(dt_d + dt_bias) * scale
        if mixer.ssd_mode == "non_causal":
            y = non_causal_ssd(x, step, -torch.exp(A_log), B, C, D)
        else:
            y = ssd_scan(x, step, -torch.exp(A_log), B, C, D=D, method=mixer.method.name,
                         variant=mixer.method.variant, lam=lam_d, backend="reference")
        return y.reshape(b, l, E)

    fwd_in = conv(xBC, getattr(mixer, "conv1d", None))
    y = direction(fwd_in, dt, lam, mixer.A_log, mixer.dt_bias, mixer.D)
    if mixer.bidirectional != "none":
        bwd_in = conv(xBC.flip(1), mixer.conv1d_b) if hasattr(mixer, "conv1d_b") else fwd_in.flip(1)
        y_b = direction(bwd_in, dt.flip(1), None if lam is None else lam.flip(1), mixer.A_b_log, mixer.dt_bias_b,
                        mixer.D_b)
        y = (y + y_b.flip(1)) / 2
    return mixer.out_proj(mixer.norm(y, z))


@pytest.mark.parametrize("bidirectional", ["ssm_conv", "ssm", "none"])
@pytest.mark.parametrize("conv", ["causal", "none"])
def test_delta_scale_multiplies_every_step_after_softplus_in_every_direction(bidirectional, conv):
    mixer = _mixer(bidirectional, conv, key="trapezoid/paper")
    hidden = torch.randn(2, 7, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        plain = mixer(hidden)
        torch.testing.assert_close(plain, _mixer_by_hand(mixer, hidden, 1.0))
        mixer.delta_scale = 0.3
        scaled = mixer(hidden)
        torch.testing.assert_close(scaled, _mixer_by_hand(mixer, hidden, 0.3))
        assert not torch.allclose(scaled, plain)
        mixer.delta_scale = 1.0
        assert torch.equal(mixer(hidden), plain)  # 1.0: the scan is called exactly as without a scale


def test_delta_scale_reaches_the_non_causal_ssd():
    mixer = _mixer("none", key="zoh/canonical", ssd_mode="non_causal")
    hidden = torch.randn(2, 6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        mixer.delta_scale = 2.5
        torch.testing.assert_close(mixer(hidden), _mixer_by_hand(mixer, hidden, 2.5))


@pytest.mark.parametrize("name", ["vssd_micro", "seqssd_micro"])
def test_set_delta_scale_reaches_every_ssd_block_and_delta_scaled_restores_it(name):
    inputs = torch.randn(2, 3, 16, 16) if name.startswith("vssd") else torch.randn(2, 12, 1)
    size = dict(img_size=16) if name.startswith("vssd") else dict(in_chans=1, seq_len=12)
    model = timm.create_model(name, num_classes=3, **size).eval()
    with torch.no_grad():
        plain = model(inputs)
        with model.delta_scaled(4.0):
            assert all(block.mixer.delta_scale == 4.0 for block in model.layers)
            assert not torch.allclose(model(inputs), plain)
        assert model.delta_scale == 1.0 and torch.equal(model(inputs), plain)


@pytest.mark.parametrize("bidirectional", ["ssm_conv", "ssm", "none"])
def test_conv_none_has_no_conv_parameters_and_stays_causal(bidirectional):
    mixer = _mixer(bidirectional, "none")
    assert not any("conv" in name for name, _ in mixer.named_parameters())
    with_conv = _mixer(bidirectional, "causal")
    assert any("conv1d" in name for name, _ in with_conv.named_parameters())
    if bidirectional == "none":
        hidden = torch.randn(1, 9, 8, dtype=torch.float64)
        changed = hidden.clone()
        changed[:, 4] += 1.0
        with torch.no_grad():
            moved = (mixer(changed) - mixer(hidden)).abs().amax(dim=(0, 2)) > 0
        assert torch.equal(moved, torch.arange(9) >= 4)
    with pytest.raises(ValueError, match="conv='same' is not valid; choose one of: causal, none"):
        _mixer(conv="same")


@pytest.mark.parametrize("name", ["vssd_micro", "seqssd_micro"])
def test_dt_range_and_conv_reach_the_ssd_blocks(name):
    size = dict(img_size=16) if name.startswith("vssd") else dict(in_chans=1, seq_len=12)
    model = timm.create_model(name, num_classes=3, dt_min=0.5, dt_max=2.0, conv="none", **size)
    for block in model.layers:
        assert isinstance(block.mixer, BiSSDMixer) and block.mixer.conv == "none"
        steps = torch.nn.functional.softplus(torch.cat([block.mixer.dt_bias, getattr(block.mixer, "dt_bias_b",
                                                                                     block.mixer.dt_bias)]))
        assert steps.min() >= 0.5 - 1e-6 and steps.max() <= 2.0 + 1e-6
    with pytest.raises(ValueError, match="needs 0 < dt_min ≤ dt_max"):
        timm.create_model(name, dt_min=0.2, dt_max=0.1, **size)


@pytest.mark.parametrize("name", ["vssd_micro", "seqssd_micro"])
def test_learned_lambda_is_recorded_per_layer_and_direction(name):
    """MixerStack.recording_lambda reads the SSD mixer's λ (per head and token, from in_proj):
    its mean, sd and count over every token, head and input; both directions read the one λ."""
    size = dict(img_size=16) if name.startswith("vssd") else dict(in_chans=1, seq_len=12)
    inputs = torch.randn(2, 3, 16, 16) if name.startswith("vssd") else torch.randn(2, 12, 1)
    model = timm.create_model(name, num_classes=3, method="trapezoid", variant="paper", **size).eval()
    assert model.learns_lambda and not timm.create_model(name, num_classes=3, **size).learns_lambda
    seen = []
    for block in model.layers:
        with torch.no_grad():
            block.mixer.in_proj.weight[-block.mixer.nheads:].normal_()  # λ no longer ½ everywhere
        block.mixer.register_forward_hook(lambda mod, args, out: seen.append(
            torch.sigmoid(mod.in_proj(args[0])[..., -mod.nheads:]).double()))
    with torch.no_grad(), model.recording_lambda() as summary:
        model(inputs)
    directions = ["forward"] if model.layers[0].mixer.bidirectional == "none" else ["forward", "backward"]
    assert [(r["layer"], r["direction"]) for r in summary] == [(i, d) for i in range(len(model.layers))
                                                                for d in directions]
    for record in summary:
        lam = seen[record["layer"]]
        assert record["count"] == lam.numel()
        assert record["mean"] == pytest.approx(lam.mean().item())
        assert record["std"] == pytest.approx(lam.std(unbiased=False).item())
    assert all(block.mixer.lam_stats is None for block in model.layers)


# --------------------------------------------------------------------------- the 1-D SSD family

def test_sequence_ssd_sizes_match_the_mamba_sequence_family():
    """seqssd_* are sized to seqmamba_* in parameters (d_state 48, heads of 16); both printed."""
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    for size in ("micro", "tiny"):
        for conv in ("causal", "none"):
            mamba = count(timm.create_model(f"seqmamba_{size}", conv=conv))
            ssd = count(timm.create_model(f"seqssd_{size}", conv=conv))
            print(f"conv={conv}: seqmamba_{size} {mamba:,} parameters, seqssd_{size} {ssd:,} (10 classes)")
            assert abs(ssd - mamba) / mamba < 0.05
    for name in timm.list_models("seqssd_*"):  # studies give them sequences and a method
        assert (model_info(name).modality, model_info(name).discretized) == ("sequence", True)


@pytest.mark.parametrize("bidirectional", ["ssm_conv", "ssm", "none"])
@pytest.mark.parametrize("conv", ["causal", "none"])
@pytest.mark.parametrize("pool", ["mean", "last"])
def test_sequence_ssd_options(bidirectional, conv, pool):
    model = timm.create_model("seqssd_micro", num_classes=5, in_chans=2, seq_len=12, bidirectional=bidirectional,
                              conv=conv, pool=pool).eval()
    x = torch.randn(2, 12, 2, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        tokens = model.forward_features(x)
        pre = model.forward_head(tokens, pre_logits=True)
        assert model(x).shape == (2, 5) and model(torch.randn(2, 30, 2)).shape == (2, 5)  # any length
    assert tokens.shape == (2, 12, 32)
    assert torch.equal(pre, tokens.mean(1) if pool == "mean" else tokens[:, -1])
    assert all(block.mixer.bidirectional == bidirectional and block.mixer.conv == conv for block in model.layers)


def test_sequence_ssd_is_causal_and_states_its_interface():
    model = timm.create_model("seqssd_micro", num_classes=4, in_chans=2, seq_len=12, conv="none",
                              pool="last", method="highorder").eval().double()
    # highorder/canonical: a causal stencil (polynomial/ and rk4/canonical read the next token, METHODS.md)
    assert model.layers[0].mixer.bidirectional == "none" and model.layers[0].mixer.method.key == "highorder/canonical"
    x = torch.randn(2, 12, 2, dtype=torch.float64)
    changed = x.clone()
    changed[:, 3] += 1.0
    with torch.no_grad():
        differs = (model.forward_features(x) - model.forward_features(changed)).abs().amax(dim=(0, 2)) > 0
    assert torch.equal(differs, torch.arange(12) >= 3)
    assert not any("pos" in n for n, _ in model.named_parameters())
    assert model.pretrained_cfg["input_size"] == (12, 2) and model.pretrained_cfg["architecture"] == "seqssd_micro"
    assert model.no_weight_decay() == {n for n, _ in model.named_parameters()
                                       if n.rsplit(".", 1)[-1] in ("A_log", "D", "dt_bias")}
    model.set_scan_backend("reference")
    assert model.scan_backend == "reference"
    with pytest.raises(ValueError, match="scan_backend='cpu' is not valid for an SSD model"):
        timm.create_model("seqssd_micro", scan_backend="cpu")
    with pytest.raises(ValueError, match="no pretrained weights exist"):
        timm.create_model("seqssd_micro", pretrained=True)


@pytest.mark.parametrize("key", ALL_KEYS)
def test_every_method_trains_through_seqssd_micro(key, one_torch_thread):
    name, variant = key.split("/")
    model = timm.create_model("seqssd_micro", num_classes=5, in_chans=1, seq_len=10, conv="none",
                              method=name, variant=variant)
    logits = model(torch.randn(2, 10, 1, generator=torch.Generator().manual_seed(0)))
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.layers[0].mixer.A_log.grad.abs().sum() > 0
