"""The Vim family: architecture and size as upstream, every method in both directions, backends agree."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F

import discbench.models  # noqa: F401  (registers the Vim models in timm)
from discbench.causal_conv1d import causal_conv1d_fn
from discbench.methods import all_methods
from discbench.models import VisionMamba
from discbench.methods import get_method
from discbench.scan import BACKENDS

METHOD_KEYS = [m.key for m in all_methods()]
# Parameter counts of the upstream Vim configurations with a 1000-class head (hustvl/Vim).
UPSTREAM_PARAMS = {"vim_tiny_patch16_224": 7.15e6, "vim_small_patch16_224": 25.8e6,
                   "vim_base_patch16_224": 97.6e6}


def micro(**kwargs) -> VisionMamba:
    """A tiny Vim on 16×16 images (16 patches + class token) for fast tests."""
    settings = dict(num_classes=5, img_size=16, patch_size=4, scan_backend="torch")
    settings.update(kwargs)
    return timm.create_model("vim_micro", **settings)


def images(batch: int = 2, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def upstream_vim_param_count(dim: int, depth: int, d_state: int = 16, patch: int = 16, img: int = 224,
                             classes: int = 1000) -> int:
    """Parameters of upstream Vim (bimamba v2, middle class token, RMSNorm), counted layer by layer."""
    inner, dt_rank = 2 * dim, math.ceil(dim / 16)
    direction = (inner * 4 + inner                      # conv1d weight + bias
                 + inner * (dt_rank + 2 * d_state)      # x_proj
                 + dt_rank * inner + inner              # dt_proj weight + bias
                 + inner * d_state + inner)             # A_log, D
    layer = dim * 2 * inner + 2 * direction + inner * dim + dim  # in_proj, 2 directions, out_proj, norm
    tokens = (img // patch) ** 2 + 1
    return (depth * layer + 3 * patch * patch * dim + dim + tokens * dim + dim + dim
            + dim * classes + classes)


def test_parameter_counts_match_upstream(capsys):
    counts = {name: count(timm.create_model(name)) for name in timm.list_models("vim_*")}
    with capsys.disabled():
        print("\nVim parameter counts (1000 classes, default image size):")
        for name, n in counts.items():
            print(f"  {name:24s} {n:>11,d}  ({n / 1e6:.2f} M)")
    for name, published in UPSTREAM_PARAMS.items():
        assert abs(counts[name] / published - 1) < 0.02, (name, counts[name])
    for name, dim in (("vim_tiny_patch16_224", 192), ("vim_small_patch16_224", 384),
                      ("vim_base_patch16_224", 768)):
        assert counts[name] == upstream_vim_param_count(dim, 24), name


@pytest.mark.parametrize("cls_token,pool", [("middle", "mean"), ("head", "mean"), ("double", "mean"),
                                            ("none", "mean"), ("none", "max")])
@pytest.mark.parametrize("bidirectional", ["ssm_conv", "ssm", "none"])
def test_forward_shapes(cls_token, pool, bidirectional):
    model = micro(cls_token=cls_token, pool=pool, bidirectional=bidirectional).eval()
    x = images(batch=3)
    prefix = {"none": 0, "double": 2}.get(cls_token, 1)
    with torch.no_grad():
        tokens = model.forward_features(x)
        logits = model.forward_head(tokens)
        pre = model.forward_head(tokens, pre_logits=True)
        assert torch.equal(model(x), logits)
    assert tokens.shape == (3, 16 + prefix, 48)
    assert logits.shape == (3, 5)
    assert pre.shape == ((3, 16 + prefix, 48) if (cls_token, pool) == ("none", "max") else (3, 48))
    assert torch.isfinite(logits).all()


def test_class_token_sits_in_the_middle():
    model = micro(cls_token="middle").eval()
    patches = model.patch_embed(images())
    placed = model._insert_class_tokens(patches)
    assert torch.equal(placed[:, 8], model.cls_token.expand(2, -1, -1)[:, 0])
    assert torch.equal(placed[:, :8], patches[:, :8]) and torch.equal(placed[:, 9:], patches[:, 8:])


def test_max_pool_takes_max_of_per_token_logits():
    model = micro(cls_token="none", pool="max").eval()
    with torch.no_grad():
        tokens = model.forward_features(images())
        assert torch.equal(model.forward_head(tokens), model.head(tokens).amax(dim=1))


@pytest.mark.parametrize("key", METHOD_KEYS)
def test_every_method_trains_both_directions(key):
    name, variant = key.split("/")
    model = micro(method=name, variant=variant)
    assert (model.method, model.variant) == (name, variant)
    assert all(block.mixer.method.key == key for block in model.layers)
    logits = model(images())
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([0, 3])).backward()
    mixer = model.layers[0].mixer
    for pname in ("A_log", "A_b_log", "D", "D_b", "conv1d.weight", "conv1d_b.weight",
                  "x_proj.weight", "x_proj_b.weight", "dt_proj.bias", "dt_proj_b.bias"):
        grad = mixer.get_parameter(pname).grad
        assert grad is not None and torch.isfinite(grad).all(), (key, pname)
        assert grad.abs().sum() > 0, (key, pname)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("bidirectional,owned", [
    ("ssm_conv", {"conv1d_b", "x_proj_b", "dt_proj_b", "A_b_log", "D_b"}),
    ("ssm", {"x_proj_b", "dt_proj_b", "A_b_log", "D_b"}),
    ("none", set()),
])
def test_bidirectional_strategies_own_their_parameters(bidirectional, owned):
    model = micro(bidirectional=bidirectional)
    mixer = model.layers[0].mixer
    modules = {n.split(".")[0] for n, _ in mixer.named_parameters()}
    backward = {m for m in modules if m.endswith("_b") or m == "A_b_log"}
    assert backward == owned
    F.cross_entropy(model(images()), torch.tensor([1, 2])).backward()
    for n, p in mixer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, (bidirectional, n)


def _mirror_backward_from_forward(mixer) -> None:
    """Give the backward direction exactly the forward direction's parameters."""
    with torch.no_grad():
        if mixer.bidirectional == "ssm_conv":
            mixer.conv1d_b.load_state_dict(mixer.conv1d.state_dict())
        mixer.x_proj_b.load_state_dict(mixer.x_proj.state_dict())
        mixer.dt_proj_b.load_state_dict(mixer.dt_proj.state_dict())
        # Poles spread off the S4D grid, so that a mix-up of A and A_b would show.
        mixer.A_log.copy_(mixer.A_log * (1 + 0.3 * torch.rand_like(mixer.A_log)))
        mixer.A_b_log.copy_(mixer.A_log)
        mixer.D_b.copy_(mixer.D)


@pytest.mark.parametrize("key", ["polynomial/canonical", "highorder/canonical", "rk4/canonical",
                                 "foh/paper"])
def test_backward_direction_is_the_mirrored_scan(key):
    """With both directions given the same parameters, the mixer commutes with reversing the tokens.

    This holds only if the backward direction is flip -> conv -> scan (same method, stencil
    offsets relative to the scan direction) -> flip back, with the gate flipped alongside.
    """
    name, variant = key.split("/")
    mixer = micro(method=name, variant=variant).layers[0].mixer.double()
    _mirror_backward_from_forward(mixer)
    hidden = torch.randn(2, 17, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = mixer(hidden)
        mirrored = mixer(hidden.flip(1)).flip(1)
    torch.testing.assert_close(mirrored, out, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("key,reach", [("zoh/canonical", 0), ("polynomial/canonical", 1),
                                       ("rk4/canonical", 1), ("highorder/canonical", 0)])
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_each_direction_sees_the_tokens_its_stencil_names(key, reach, direction):
    """A stencil's offsets are relative to the scan direction.

    With the other direction silenced (its conv zeroed, so its scan input is exactly 0), a change
    of token j reaches the forward direction's outputs j - reach … L-1 and the backward
    direction's outputs 0 … j + reach, where reach is the stencil's largest forward offset.
    """
    name, variant = key.split("/")
    mixer = micro(method=name, variant=variant).layers[0].mixer.double()
    silenced = mixer.conv1d_b if direction == "forward" else mixer.conv1d
    with torch.no_grad():
        silenced.weight.zero_()
        silenced.bias.zero_()
    hidden = torch.randn(1, 17, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    j = 8
    changed = hidden.clone()
    changed[:, j] += 1.0
    with torch.no_grad():
        moved = (mixer(changed) - mixer(hidden)).abs().amax(dim=(0, 2)) > 0
    positions = torch.arange(17)
    expect = positions >= j - reach if direction == "forward" else positions <= j + reach
    assert torch.equal(moved, expect), (key, direction, moved.nonzero().flatten().tolist())


def test_zoh_paper_mixer_equals_upstream_bimamba_v2(selective_scan_ref):
    """zoh/paper is Mamba's discretization: the mixer equals upstream Vim's v2 forward, written
    the way upstream writes it (xz flipped as a whole, nn.Conv1d padded and cut, /2 before
    out_proj), with mamba_ssm's selective_scan_ref as the scan."""
    scan_ref = selective_scan_ref
    mixer = micro(method="zoh", variant="paper").layers[1].mixer
    hidden = torch.randn(2, 17, 48, generator=torch.Generator().manual_seed(3))
    seqlen = hidden.shape[1]

    def direction(xz, conv, x_proj, dt_proj, A_log, D):
        x, z = xz.chunk(2, dim=1)
        x = F.silu(F.conv1d(x, conv.weight, conv.bias, padding=3, groups=x.shape[1])[..., :seqlen])
        x_dbl = x_proj(x.transpose(1, 2).reshape(-1, x.shape[1]))
        dt, B, C = torch.split(x_dbl, [mixer.dt_rank, mixer.d_state, mixer.d_state], dim=-1)
        dt = (dt_proj.weight @ dt.t()).reshape(x.shape[1], -1, seqlen).transpose(0, 1)  # d (b l) -> b d l
        B = B.reshape(-1, seqlen, mixer.d_state).transpose(1, 2)
        C = C.reshape(-1, seqlen, mixer.d_state).transpose(1, 2)
        return scan_ref(x, dt, -torch.exp(A_log), B, C, D, z=z, delta_bias=dt_proj.bias,
                        delta_softplus=True)

    with torch.no_grad():
        xz = (mixer.in_proj.weight @ hidden.transpose(1, 2))
        out = direction(xz, mixer.conv1d, mixer.x_proj, mixer.dt_proj, mixer.A_log, mixer.D)
        out_b = direction(xz.flip([-1]), mixer.conv1d_b, mixer.x_proj_b, mixer.dt_proj_b,
                          mixer.A_b_log, mixer.D_b)
        upstream = F.linear((out + out_b.flip([-1])).transpose(1, 2) / 2, mixer.out_proj.weight)
        torch.testing.assert_close(mixer(hidden), upstream, rtol=1e-5, atol=1e-6)


def _backend_params():
    params = [pytest.param("torch", id="torch")]
    reason = BACKENDS["cpu"].unavailable_reason()
    params.append(pytest.param("cpu", id="cpu", marks=pytest.mark.skipif(
        reason is not None, reason=f"the compiled CPU scan backend is not available: {reason}")))
    return params


@pytest.mark.parametrize("backend", _backend_params())
@pytest.mark.parametrize("key", METHOD_KEYS)
def test_scan_backends_give_the_same_model(key, backend):
    """The same Vim, forward and gradients, on backend "reference" and on `backend`."""
    name, variant = key.split("/")
    torch.manual_seed(0)
    model = micro(method=name, variant=variant, scan_backend="reference")
    x, target = images(), torch.tensor([4, 1])
    results = []
    for chosen in ("reference", backend):
        model.set_scan_backend(chosen)
        assert model.scan_backend == chosen
        model.zero_grad()
        logits = model(x)
        F.cross_entropy(logits, target).backward()
        results.append((logits.detach(), model.layers[0].mixer.A_b_log.grad.clone(),
                        model.patch_embed.proj.weight.grad.clone()))
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_causal_conv_matches_upstream_padded_conv():
    conv = torch.nn.Conv1d(6, 6, 4, groups=6, padding=3)
    x = torch.randn(2, 6, 9)
    with torch.no_grad():
        torch.testing.assert_close(causal_conv1d_fn(x, conv.weight.squeeze(1), conv.bias, activation="silu"), F.silu(conv(x)[..., :9]))


def test_residual_stream_stays_fp32():
    model = micro().to(torch.bfloat16)
    block = model.layers[0]
    out = block(torch.randn(2, 17, 48, dtype=torch.bfloat16))
    assert out.dtype == torch.float32
    assert model(images().to(torch.bfloat16)).shape == (2, 5)


def test_drop_path_rises_linearly_to_the_rate():
    model = micro(drop_path_rate=0.3)
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in model.layers]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])
    model.train()
    x = images()
    assert not torch.equal(model(x), model(x))  # stochastic depth is active in training
    model.eval()
    assert torch.equal(model(x), model(x))


def test_no_weight_decay_names_exist():
    for cls_token, tokens in (("middle", {"cls_token"}), ("double", {"cls_token_head", "cls_token_tail"}),
                              ("none", set())):
        model = micro(cls_token=cls_token)
        names = model.no_weight_decay()
        params = dict(model.named_parameters())
        assert names <= params.keys()
        assert {"pos_embed", *tokens} <= names
        for i in range(len(model.layers)):
            assert {f"layers.{i}.mixer.{p}" for p in ("A_log", "A_b_log", "D", "D_b")} <= names
        assert not any(n.endswith("weight") for n in names)


@pytest.mark.parametrize("kwargs,message", [
    (dict(method="euler"), "unknown method 'euler'; valid methods: zoh, foh"),
    (dict(variant="textbook"), "unknown variant 'textbook'; valid variants: canonical, paper"),
    (dict(cls_token="tail"), "cls_token='tail' is not valid; choose one of: middle, head, double, none"),
    (dict(pool="sum"), "pool='sum' is not valid"),
    (dict(bidirectional="block"), "bidirectional='block' is not valid; choose one of: ssm_conv, ssm, none"),
    (dict(scan_backend="gpu"), "scan_backend='gpu' is not valid; choose one of: auto, reference, torch"),
    (dict(img_size=30, patch_size=4), "must be a multiple of patch_size"),
    (dict(pretrained=True), "no pretrained weights exist"),
])
def test_bad_configuration_is_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        timm.create_model("vim_micro", **kwargs)


def test_set_scan_backend_rejects_unknown_names():
    model = micro()
    with pytest.raises(ValueError, match="scan_backend='fast' is not valid"):
        model.set_scan_backend("fast")
    assert model.scan_backend == "torch"


def test_any_image_patch_and_channel_count():
    model = timm.create_model("vim_nano", num_classes=7, img_size=24, patch_size=6, in_chans=1,
                              scan_backend="torch", depth=2, embed_dim=32)
    assert model(torch.randn(2, 1, 24, 24)).shape == (2, 7)
    assert model.pretrained_cfg["input_size"] == (1, 24, 24)
    assert model.pretrained_cfg["num_classes"] == 7
    assert timm.data.resolve_data_config({}, model=model)["input_size"] == (1, 24, 24)


@pytest.mark.parametrize("name", ["deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224"])
def test_deit_baselines_share_the_interface(name):
    kwargs = dict(num_classes=5, img_size=16, patch_size=4, in_chans=3, drop_path_rate=0.1)
    deit = timm.create_model(name, pretrained=False, **kwargs)
    vim = micro(**kwargs)
    x = images()
    assert deit(x).shape == vim(x).shape == (2, 5)
    assert deit.forward_head(deit.forward_features(x), pre_logits=True).shape[0] == 2


# ------------------------------------------------------------------ conv "none", Δ scale, Δ init

def test_vim_tiny_parameter_count_is_unchanged():
    assert count(timm.create_model("vim_tiny_patch16_224")) == 7_148_008


def test_trapezoid_paper_adds_one_lambda_projection_per_direction_starting_at_one_half():
    """Mamba-3's λ: D + 1 parameters per layer and direction (Vim-Ti: 24 × 2 × 193 = 9,264), only
    for the method that takes λ; at initialisation λ = ½, so the model computes exactly what
    trapezoid/canonical computes with the same other weights, and λ's projection gets a gradient."""
    for key in METHOD_KEYS:
        name, variant = key.split("/")
        extra = count(timm.create_model("vim_tiny_patch16_224", method=name, variant=variant)) - 7_148_008
        assert extra == (24 * 2 * 193 if get_method(key).takes_lam else 0), key
    for bidirectional in ("ssm_conv", "ssm", "none"):
        paper = timm.create_model("vim_micro", method="trapezoid", variant="paper", num_classes=3,
                                  img_size=8, bidirectional=bidirectional, scan_backend="reference")
        canonical = timm.create_model("vim_micro", method="trapezoid", variant="canonical",
                                      num_classes=3, img_size=8, bidirectional=bidirectional,
                                      scan_backend="reference")
        missing, unexpected = paper.load_state_dict(canonical.state_dict(), strict=False)
        assert not unexpected and missing and all(".lam_proj" in k for k in missing)
        images = torch.randn(2, 3, 8, 8)
        out = paper(images)
        torch.testing.assert_close(out, canonical(images))
        out.square().sum().backward()
        assert paper.layers[0].mixer.lam_proj.weight.grad.abs().sum() > 0
        if bidirectional != "none":
            assert paper.layers[0].mixer.lam_proj_b.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("bidirectional", ["ssm_conv", "ssm", "none"])
def test_conv_none_has_no_conv_parameters_and_trains_every_direction(bidirectional):
    with_conv = micro(bidirectional=bidirectional)
    model = micro(bidirectional=bidirectional, conv="none")
    names = [n for n, _ in model.named_parameters()]
    assert not any("conv1d" in n for n in names)
    conv_params = sum(p.numel() for n, p in with_conv.named_parameters() if "conv1d" in n)
    assert conv_params > 0 and count(model) == count(with_conv) - conv_params
    logits = model(images())
    F.cross_entropy(logits, torch.tensor([0, 3])).backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, n


def test_conv_none_feeds_silu_of_the_input_to_the_scan():
    """Without the conv, token j reaches the forward scan's outputs j … L-1 only (no conv
    window), and each direction reads silu(x) itself."""
    mixer = micro(conv="none", bidirectional="none").layers[0].mixer.double()
    hidden = torch.randn(1, 17, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    changed = hidden.clone()
    changed[:, 8] += 1.0
    with torch.no_grad():
        moved = (mixer(changed) - mixer(hidden)).abs().amax(dim=(0, 2)) > 0
        xz = mixer.in_proj.weight @ hidden.transpose(1, 2)
        x, gate = xz.chunk(2, dim=1)
        direct = mixer._scan(F.silu(x), gate, mixer.x_proj, mixer.dt_proj, mixer.A_log, mixer.D)
        torch.testing.assert_close(mixer.forward_directions(hidden)[0], direct)
    assert torch.equal(moved, torch.arange(17) >= 8)


@pytest.mark.parametrize("bidirectional", ["ssm_conv", "none"])
def test_delta_scale_one_is_the_model_and_other_scales_change_both_directions(bidirectional):
    model = micro(bidirectional=bidirectional).eval()
    x = images()
    with torch.no_grad():
        plain = model(x)
        model.set_delta_scale(1.0)
        assert torch.equal(model(x), plain)
        hidden = torch.randn(2, 17, 48, generator=torch.Generator().manual_seed(5))
        mixer = model.layers[0].mixer
        before = mixer.forward_directions(hidden)
        with model.delta_scaled(3.0):
            assert all(b.mixer.delta_scale == 3.0 for b in model.layers)
            assert not torch.allclose(model(x), plain)
            after = mixer.forward_directions(hidden)
        assert model.delta_scale == 1.0 and torch.equal(model(x), plain)
    for old, new in zip(before, after):
        if old is not None:
            assert not torch.allclose(old, new)
    with pytest.raises(ValueError, match="delta_scale must be a finite number > 0"):
        model.set_delta_scale(0.0)


def test_delta_scale_multiplies_the_step_after_softplus():
    """Scaling Δ by s equals running the scan on softplus(Δ + bias)·s with no bias/softplus."""
    from discbench.scan import selective_scan

    mixer = micro(conv="none", bidirectional="none", scan_backend="reference").layers[0].mixer.double()
    hidden = torch.randn(2, 9, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    x, gate = (mixer.in_proj.weight @ hidden.transpose(1, 2)).chunk(2, dim=1)
    u = F.silu(x)
    dt_low, B, C = torch.split(u.transpose(1, 2) @ mixer.x_proj.weight.t(),
                               [mixer.dt_rank, mixer.d_state, mixer.d_state], dim=-1)
    raw = mixer.dt_proj.weight @ dt_low.transpose(1, 2)
    with torch.no_grad():
        mixer.delta_scale = 0.25
        ours = mixer._scan(u, gate, mixer.x_proj, mixer.dt_proj, mixer.A_log, mixer.D)
        want = selective_scan(u, F.softplus(raw + mixer.dt_proj.bias[:, None]) * 0.25, -torch.exp(mixer.A_log),
                              B.transpose(1, 2), C.transpose(1, 2), mixer.D, z=gate, method="zoh",
                              backend="reference")
    torch.testing.assert_close(ours, want)


def test_delta_scale_carries_a_model_to_another_sampling_rate():
    """A causal conv-free mixer run on a smooth signal sampled at 2L points with Δ × ½ gives
    (nearly) its outputs at L points; without the scale it does not (the state would see
    twice the time)."""
    mixer = timm.create_model("seqmamba_micro", conv="none", dt_min=0.05, dt_max=0.2,
                              scan_backend="reference").layers[0].mixer.double()
    with torch.no_grad():
        mixer.D.zero_()  # the output is the state's alone (the skip term knows no time)
    weights = torch.randn(3, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(7))

    def signal(length: int) -> torch.Tensor:  # 3 smooth waves at cell centres, mixed to 32 features
        t = (torch.arange(length, dtype=torch.float64) + 0.5) / length
        waves = torch.stack([torch.sin(2 * torch.pi * t), torch.cos(3 * t), t ** 2], dim=-1)
        return (waves @ weights)[None]

    with torch.no_grad():
        coarse = mixer.forward_directions(signal(32))[0][0].T
        fine = mixer.forward_directions(signal(64))[0][0].T
        mixer.delta_scale = 0.5
        scaled = mixer.forward_directions(signal(64))[0][0].T
    pairs = lambda y: (y[0::2] + y[1::2]) / 2  # noqa: E731  (the fine grid at the coarse centres)
    err_scaled = (pairs(scaled) - coarse).abs().mean()
    err_unscaled = (pairs(fine) - coarse).abs().mean()
    assert err_scaled < 0.25 * err_unscaled, (err_scaled, err_unscaled)


def test_dt_range_sets_the_initial_steps():
    model = micro(dt_min=0.5, dt_max=2.0)
    for block in model.layers:
        steps = F.softplus(block.mixer.dt_proj.bias)
        assert steps.min() >= 0.5 - 1e-6 and steps.max() <= 2.0 + 1e-6
    with pytest.raises(ValueError, match="needs 0 < dt_min ≤ dt_max"):
        micro(dt_min=0.2, dt_max=0.1)
    with pytest.raises(ValueError, match="conv='same' is not valid; choose one of: causal, none"):
        micro(conv="same")


# --------------------------------------------------------------------------- sequence family

def seq_model(**kwargs):
    settings = dict(num_classes=5, in_chans=2, seq_len=12, scan_backend="torch")
    settings.update(kwargs)
    return timm.create_model("seqmamba_micro", **settings)


def sequences(batch: int = 2, length: int = 12, channels: int = 2) -> torch.Tensor:
    return torch.randn(batch, length, channels, generator=torch.Generator().manual_seed(8))


@pytest.mark.parametrize("key", METHOD_KEYS)
def test_sequence_model_trains_with_every_method(key):
    name, variant = key.split("/")
    model = seq_model(method=name, variant=variant, conv="none", bidirectional="ssm")
    assert all(block.mixer.method.key == key for block in model.layers)
    logits = model(sequences())
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([0, 3])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.layers[0].mixer.A_b_log.grad.abs().sum() > 0


@pytest.mark.parametrize("bidirectional", ["ssm_conv", "ssm", "none"])
@pytest.mark.parametrize("conv", ["causal", "none"])
@pytest.mark.parametrize("pool", ["mean", "last"])
def test_sequence_model_options(bidirectional, conv, pool):
    model = seq_model(bidirectional=bidirectional, conv=conv, pool=pool).eval()
    x = sequences()
    with torch.no_grad():
        tokens = model.forward_features(x)
        pre = model.forward_head(tokens, pre_logits=True)
        assert model(x).shape == (2, 5) and model(sequences(length=30)).shape == (2, 5)  # any length
    assert tokens.shape == (2, 12, 32)
    assert torch.equal(pre, tokens.mean(1) if pool == "mean" else tokens[:, -1])


def test_causal_sequence_model_with_last_pool_ignores_nothing_before_and_sees_no_future():
    model = seq_model(conv="none", pool="last", bidirectional="none").eval().double()
    x = sequences().double()
    changed = x.clone()
    changed[:, 3] += 1.0
    with torch.no_grad():
        tokens, moved = model.forward_features(x), model.forward_features(changed)
    differs = (tokens - moved).abs().amax(dim=(0, 2)) > 0
    assert torch.equal(differs, torch.arange(12) >= 3)


def test_sequence_model_has_no_position_embedding_and_states_its_input_size():
    model = seq_model()
    assert not any("pos" in n for n, _ in model.named_parameters())
    assert model.pretrained_cfg["input_size"] == (12, 2)
    from discbench.measure import inference_throughput

    measured = inference_throughput(model, batch_size=2, warmup=0, repeats=1)
    assert measured["status"] == "ok" and measured["input_size"] == (12, 2)
    assert model.no_weight_decay() == {n for n, _ in model.named_parameters()
                                       if n.rsplit(".", 1)[-1] in ("A_log", "D")}
    with pytest.raises(ValueError, match=r"expected sequences \(batch, length, 2\), got \(2, 12, 3\)"):
        model(sequences(channels=3))


def test_sequence_sizes_are_small():
    counts = {name: count(timm.create_model(name, conv="none")) for name in ("seqmamba_micro", "seqmamba_tiny")}
    assert counts["seqmamba_micro"] < counts["seqmamba_tiny"] < 200_000
