"""The Mamba-2 (SSD) families with a selectable discretization: images and 1-D sequences.

One file for the family: the mixer (BiSSDMixer), what an SSD model changes in its Mamba-1
parent (SSDStack), and the two model classes, VisionSSD (VisionMamba's parts) and
SequenceSSD (SequenceMamba's parts), so a study can swap Mamba-1 blocks for Mamba-2 blocks
with everything else equal (the `family` axis of the digits and mnist1d studies).

Vim's isotropic design (discbench/models/vim.py: patch embedding, position embedding, class
token, RMSNorm blocks with an fp32 residual stream, drop path, heads, pooling, the timm
interface) with Vim's Mamba-1 mixer replaced by a Mamba-2 mixer, run through
`discbench.ssd_scan` with the configured `method` and `variant` in both directions.
Everything but the mixer is VisionMamba's own, by subclassing.

Two SSD modes:
- "causal" (default): the multi-head SSD recurrence of METHODS.md with a per-head pole, run
  forward and on the reversed sequence as Vim's `bidirectional` says ("ssm_conv": each direction
  its own conv and SSM parameters; "ssm": the backward SSM reads the forward conv's output,
  reversed; "none": forward only), the two outputs averaged.
- "non_causal": VSSD's NC-SSD (Shi et al. 2024): every token reads one global state,
  y_k = C_k · Σ_t |a Δ_t| x_t ⊗ B_t + D x_k. There is no recurrence, so no discretization
  applies: the model refuses any method but the default one and says so (`discretization_applies`).

Registered in timm (importing `discbench.models` registers them), with Vim's arguments plus
headdim, ngroups, chunk_size, ssd_mode:

    timm.create_model("vssd_tiny", method="foh", variant="canonical")

Names: vssd_tiny, vssd_small (224 px, 16×16 patches, D = 192/384, depth 24, the inner width
2D split into heads of 64) and vssd_micro (32 px, 4×4 patches, D = 48, depth 4, heads of 16).

The sequence family takes seqmamba's arguments plus headdim, ngroups, chunk_size:

    timm.create_model("seqssd_micro", in_chans=1, seq_len=40, num_classes=10, conv="none")

Its sizes are seqmamba's ladder (seqssd_nano … seqssd_small, `SEQ_SSD_SIZES`), heads of 16 and
d_state 48, chosen so each rung's parameter count matches seqmamba's within 3%.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import generate_default_cfgs, register_model

from ..causal_conv1d import causal_conv1d_fn
from ..methods import get_method
from ..scan.ssd import SSD_BACKENDS, heads_of_groups, ssd_scan
from .registry import build_family_model, image_cfg, register_ladder, sequence_cfg
from .seq import SIZES as SEQ_SIZES, SequenceMamba
from .stack import (BIDIRECTIONAL_CHOICES, CONV_CHOICES, add_lambda_stats, at_least_fp32, check_choice,
                    check_dt_range, mixer_blocks)
from .vim import VisionMamba

Tensor = torch.Tensor

SSD_MODES = ("causal", "non_causal")


def check_ssd_backend(name: str) -> str:
    """`name` if it is "auto" or a backend of discbench.ssd_scan, else a clear error."""
    if name != "auto" and name not in SSD_BACKENDS:
        raise ValueError(f"scan_backend={name!r} is not valid for an SSD model; choose one of: auto, "
                         f"{', '.join(SSD_BACKENDS)}")
    return name


def non_causal_ssd(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor) -> Tensor:
    """VSSD's NC-SSD: y_k = C_k · Σ_t (−a Δ_t) x_t ⊗ B_t + D x_k over all tokens t.

    x: (b, l, h, p); dt: (b, l, h), activated; A: (h,), negative; B, C: (b, l, g, n); D: (h,).
    Returns (b, l, h, p). Each token's weight is its own −aΔ, not a product of decays.
    """
    heads = x.shape[2]
    weighted_B = heads_of_groups(B, heads) * (-(dt * A)).unsqueeze(-1)  # (b, l, h, n)
    state = torch.einsum("blhn,blhp->bhnp", weighted_B, x)
    return torch.einsum("blhn,bhnp->blhp", heads_of_groups(C, heads), state) + x * D[:, None]


class GatedRMSNorm(nn.Module):
    """RMSNorm(y · silu(z)) per group of channels, as Mamba-2's gated norm (norm after the gate)."""

    def __init__(self, dim: int, groups: int = 1, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.groups, self.eps = groups, eps

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        """y, z: (..., dim) -> (..., dim)."""
        gated = (y * F.silu(z)).unflatten(-1, (self.groups, -1))
        normed = gated * torch.rsqrt(gated.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.flatten(-2) * self.weight


class BiSSDMixer(nn.Module):
    """Bidirectional Mamba-2 mixer, (b, l, D) -> (b, l, D).

    in_proj (D -> z, x, B, C, Δ and, for a method whose weights read a per-token λ, λ's logits;
    E = expand·D inner channels in E/headdim heads, B and C with ngroups groups of d_state;
    no bias) -> causal depthwise conv1d of width d_conv over (x, B, C), SiLU -> multi-head SSD
    (A = −exp(A_log) per head, Δ = softplus(Δ + dt_bias), skip D per head) -> the directions
    averaged -> gated RMSNorm with z -> out_proj (E -> D, no bias). λ = sigmoid(logits), its
    projection starts at 0 output (λ = ½), as METHODS.md says for a model; both directions
    read the same λ (flipped with the tokens), so their λ records are equal.

    The study-facing options are BiMambaMixer's: conv "causal" or "none" (no conv parameters,
    each direction's SSD reads silu(x, B, C)); dt_min, dt_max, Mamba's Δ initialisation range
    (check_dt_range); delta_scale (attribute, default 1.0, set by MixerStack.set_delta_scale):
    every step Δ = softplus(Δ + dt_bias) of both directions, NC-SSD's too, is multiplied by it;
    at 1.0 the scan is called exactly as without it; learns_lambda and lam_stats for
    MixerStack.recording_lambda.
    """

    no_weight_decay_names = ("A_log", "A_b_log", "D", "D_b", "dt_bias", "dt_bias_b")  # A, D, Δ biases, as Mamba-2
    check_scan_backend = staticmethod(check_ssd_backend)

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 64,
        ngroups: int = 1,
        chunk_size: int = 64,
        A_init_range: tuple[float, float] = (1.0, 16.0),
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        bidirectional: str = "ssm_conv",
        conv: str = "causal",
        ssd_mode: str = "causal",
        method: str = "zoh",
        variant: str = "canonical",
        scan_backend: str = "auto",
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        check_choice("bidirectional", bidirectional, BIDIRECTIONAL_CHOICES)
        check_choice("ssd_mode", ssd_mode, SSD_MODES)
        check_choice("conv", conv, CONV_CHOICES)
        check_dt_range(dt_min, dt_max)
        self.d_inner = expand * d_model
        if self.d_inner % headdim:
            raise ValueError(f"headdim={headdim} must divide the inner width expand·d_model = {self.d_inner}")
        self.nheads = self.d_inner // headdim
        if self.nheads % ngroups:
            raise ValueError(f"ngroups={ngroups} must divide the {self.nheads} heads")
        self.method = get_method(method, variant)
        if ssd_mode == "non_causal" and bidirectional != "none":
            raise ValueError("ssd_mode='non_causal' reads every token at once; it has no scan directions "
                             f"(bidirectional must be 'none', got {bidirectional!r})")
        self.headdim, self.ngroups, self.d_state, self.chunk_size = headdim, ngroups, d_state, chunk_size
        self.bidirectional, self.ssd_mode, self.conv = bidirectional, ssd_mode, conv
        self.scan_backend = self.check_scan_backend(scan_backend)
        self.delta_scale = 1.0
        self.learns_lambda = ssd_mode == "causal" and self.method.takes_lam
        # {direction: tensor [Σλ, Σλ², count]} while MixerStack.recording_lambda() is active
        self.lam_stats: dict[str, Tensor] | None = None

        self.split = [self.d_inner, self.d_inner + 2 * ngroups * d_state, self.nheads]  # z, xBC, Δ
        if self.learns_lambda:
            self.split.append(self.nheads)
        self.in_proj = nn.Linear(d_model, sum(self.split), bias=False)
        if self.learns_lambda:  # λ's logits start at 0 (λ = ½) whatever the input
            with torch.no_grad():
                self.in_proj.weight[-self.nheads:].zero_()
        dt_range = (dt_min, dt_max, dt_init_floor)
        if conv == "causal":
            self.conv1d = self._make_conv(d_conv)
        self.A_log, self.dt_bias, self.D = self._make_ssm(A_init_range, dt_range)
        if bidirectional != "none":
            if bidirectional == "ssm_conv" and conv == "causal":
                self.conv1d_b = self._make_conv(d_conv)
            self.A_b_log, self.dt_bias_b, self.D_b = self._make_ssm(A_init_range, dt_range)
        self.norm = GatedRMSNorm(self.d_inner, groups=ngroups, eps=norm_eps)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def _make_conv(self, d_conv: int) -> nn.Conv1d:
        channels = self.split[1]
        return nn.Conv1d(channels, channels, d_conv, groups=channels, bias=True)

    def _make_ssm(self, A_init_range, dt_range) -> tuple[nn.Parameter, nn.Parameter, nn.Parameter]:
        """A_log, dt_bias, D of one direction, with Mamba-2's initialisation."""
        dt_min, dt_max, floor = dt_range
        A = torch.empty(self.nheads).uniform_(*A_init_range)
        dt = torch.exp(torch.rand(self.nheads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=floor)
        return (nn.Parameter(torch.log(A)), nn.Parameter(dt + torch.log(-torch.expm1(-dt))),
                nn.Parameter(torch.ones(self.nheads)))

    def _ssd(self, xBC: Tensor, dt: Tensor, lam: Tensor | None, A_log: Tensor, dt_bias: Tensor, D: Tensor) -> Tensor:
        """One direction in scan order: conv'd xBC (b, l, E + 2gn), Δ and λ (b, l, h) -> y (b, l, E)."""
        b, l, _ = xBC.shape
        x, B, C = torch.split(xBC, [self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        x = x.unflatten(-1, (self.nheads, self.headdim))
        B = B.unflatten(-1, (self.ngroups, self.d_state))
        C = C.unflatten(-1, (self.ngroups, self.d_state))
        A = -torch.exp(at_least_fp32(A_log))
        dt_bias, softplus = at_least_fp32(dt_bias), True
        if self.ssd_mode == "non_causal" or self.delta_scale != 1.0:
            # The step is computed here, softplus(Δ + bias) × delta_scale, and handed on as it is.
            dt = F.softplus(at_least_fp32(dt) + dt_bias) * self.delta_scale
            dt_bias, softplus = None, False
        if self.ssd_mode == "non_causal":
            y = non_causal_ssd(at_least_fp32(x), dt, A, at_least_fp32(B), at_least_fp32(C), at_least_fp32(D))
        else:
            y = ssd_scan(x, dt, A, B, C, self.chunk_size, D=at_least_fp32(D), dt_bias=dt_bias,
                         dt_softplus=softplus, method=self.method.name, variant=self.method.variant,
                         lam=lam, backend=self.scan_backend)
        return y.reshape(b, l, self.d_inner).to(xBC.dtype)

    def forward(self, hidden: Tensor) -> Tensor:
        """hidden: (b, l, D) -> (b, l, D)."""
        parts = torch.split(self.in_proj(hidden), self.split, dim=-1)
        z, xBC, dt = parts[:3]
        lam = torch.sigmoid(parts[3]) if self.learns_lambda else None

        def conv(seq: Tensor, layer: nn.Conv1d | None) -> Tensor:
            """silu(causal conv1d(seq)), or silu(seq) when conv="none"; (b, l, channels)."""
            if layer is None:
                return F.silu(seq)
            return causal_conv1d_fn(seq.transpose(1, 2), layer.weight.squeeze(1), layer.bias, activation="silu").transpose(1, 2)

        xBC_fwd = conv(xBC, getattr(self, "conv1d", None))
        if lam is not None:
            add_lambda_stats(self.lam_stats, "forward", lam)
        y = self._ssd(xBC_fwd, dt, lam, self.A_log, self.dt_bias, self.D)
        if self.bidirectional != "none":
            # The backward direction is the forward computation on the reversed sequence.
            if self.bidirectional == "ssm_conv" and self.conv == "causal":
                xBC_bwd = conv(xBC.flip(1), self.conv1d_b)
            else:  # the backward SSD reads the forward conv's output (or silu(xBC)), reversed
                xBC_bwd = xBC_fwd.flip(1)
            if lam is not None:
                add_lambda_stats(self.lam_stats, "backward", lam)
            y_bwd = self._ssd(xBC_bwd, dt.flip(1), None if lam is None else lam.flip(1),
                              self.A_b_log, self.dt_bias_b, self.D_b)
            y = (y + y_bwd.flip(1)) / 2
        return self.out_proj(self.norm(y, z))


class SSDStack:
    """What a model of BiSSDMixer blocks changes in its Mamba-1 parent (VisionMamba or
    SequenceMamba, which build the shared parts): the blocks themselves, and whether a
    discretization applies. Everything else (scan backend, Δ scale, learned λ, weight decay,
    heads, pooling) is MixerStack's, reading the mixers, and the parent's."""

    layers: nn.ModuleList

    def _use_ssd_blocks(self, embed_dim: int, depth: int, drop_path_rate: float, norm_eps: float,
                        residual_in_fp32: bool, **mixer_kwargs) -> None:
        """Replace the parent's Mamba-1 blocks by BiSSDMixer ones and redo the parent's init."""
        mixer = functools.partial(BiSSDMixer, norm_eps=norm_eps)  # its gated norm's ε is the blocks'
        self.layers = mixer_blocks(embed_dim, depth, drop_path_rate, norm_eps, residual_in_fp32, mixer,
                                   **mixer_kwargs)
        self._init_weights(depth)

    @property
    def discretization_applies(self) -> bool:
        """False for NC-SSD: without a recurrence there is nothing to discretize."""
        return self.layers[0].mixer.ssd_mode == "causal"


class VisionSSD(SSDStack, VisionMamba):
    """VisionMamba with BiSSDMixer blocks: images (b, in_chans, H, W) -> logits (b, num_classes).

    Takes VisionMamba's arguments (see there; conv, dt_min, dt_max reach every BiSSDMixer), with
    scan_backend one of ssd_scan's (auto, chunked, reference), plus headdim, ngroups, chunk_size
    and ssd_mode ("causal" or "non_causal"). bidirectional defaults to "ssm_conv" for causal and
    "none" for non_causal.
    """

    def __init__(self, *, d_state: int = 64, d_conv: int = 4, expand: int = 2, headdim: int = 64,
                 ngroups: int = 1, chunk_size: int = 64, ssd_mode: str = "causal",
                 bidirectional: str | None = None, conv: str = "causal", dt_min: float = 1e-3,
                 dt_max: float = 0.1, method: str = "zoh", variant: str = "canonical",
                 scan_backend: str = "auto", drop_path_rate: float = 0.0, norm_eps: float = 1e-5,
                 residual_in_fp32: bool = True, depth: int = 24, embed_dim: int = 192, **vim_kwargs):
        check_choice("ssd_mode", ssd_mode, SSD_MODES)
        resolved = get_method(method, variant)
        if ssd_mode == "non_causal" and resolved.key != get_method("zoh").key:
            raise ValueError(f"ssd_mode='non_causal' (VSSD's NC-SSD) has no recurrence, so no discretization "
                             f"applies to it; got method={resolved.key!r} (leave method and variant at "
                             "their defaults)")
        if bidirectional is None:
            bidirectional = "ssm_conv" if ssd_mode == "causal" else "none"
        check_ssd_backend(scan_backend)
        # VisionMamba builds the shared parts (and Mamba-1 blocks, replaced below).
        super().__init__(d_state=d_state, d_conv=d_conv, expand=expand, bidirectional=bidirectional, conv=conv,
                         dt_min=dt_min, dt_max=dt_max, method=resolved.name, variant=resolved.variant,
                         drop_path_rate=drop_path_rate, norm_eps=norm_eps, residual_in_fp32=residual_in_fp32,
                         depth=depth, embed_dim=embed_dim, **vim_kwargs)
        self.ssd_mode = ssd_mode
        self._use_ssd_blocks(embed_dim, depth, drop_path_rate, norm_eps, residual_in_fp32, d_state=d_state,
                             d_conv=d_conv, expand=expand, headdim=headdim, ngroups=ngroups, chunk_size=chunk_size,
                             bidirectional=bidirectional, conv=conv, dt_min=dt_min, dt_max=dt_max,
                             ssd_mode=ssd_mode, method=self.method, variant=self.variant,
                             scan_backend=scan_backend)


class SequenceSSD(SSDStack, SequenceMamba):
    """SequenceMamba with BiSSDMixer blocks: sequences (b, L, in_chans) -> logits (b, num_classes).

    Takes SequenceMamba's arguments (see there: seq_len, in_chans, conv, bidirectional, default
    "none" = causal, pool, dt_min, dt_max, method, variant, …), with scan_backend one of
    ssd_scan's (auto, chunked, reference), plus headdim, ngroups and chunk_size. The SSD is
    causal (no NC-SSD: a sequence model reads its signal in time order).
    """

    def __init__(self, *, d_state: int = 64, d_conv: int = 4, expand: int = 2, headdim: int = 64,
                 ngroups: int = 1, chunk_size: int = 64, bidirectional: str = "none", conv: str = "causal",
                 dt_min: float = 1e-3, dt_max: float = 0.1, method: str = "zoh",
                 variant: str = "canonical", scan_backend: str = "auto", drop_path_rate: float = 0.0,
                 norm_eps: float = 1e-5, residual_in_fp32: bool = True, depth: int = 4, embed_dim: int = 64,
                 **seq_kwargs):
        check_ssd_backend(scan_backend)
        # SequenceMamba builds and checks the shared parts (and Mamba-1 blocks, replaced below).
        super().__init__(d_state=d_state, d_conv=d_conv, expand=expand, bidirectional=bidirectional, conv=conv,
                         dt_min=dt_min, dt_max=dt_max, method=method, variant=variant,
                         drop_path_rate=drop_path_rate, norm_eps=norm_eps, residual_in_fp32=residual_in_fp32,
                         depth=depth, embed_dim=embed_dim, **seq_kwargs)
        self._use_ssd_blocks(embed_dim, depth, drop_path_rate, norm_eps, residual_in_fp32, d_state=d_state,
                             d_conv=d_conv, expand=expand, headdim=headdim, ngroups=ngroups, chunk_size=chunk_size,
                             bidirectional=bidirectional, conv=conv, dt_min=dt_min, dt_max=dt_max,
                             method=self.method, variant=self.variant, scan_backend=scan_backend)


# ----------------------------------------------------------------------------- registry

default_cfgs = generate_default_cfgs({
    "vssd_tiny": image_cfg(224),
    "vssd_small": image_cfg(224),
    "vssd_micro": image_cfg(32),
})


@register_model
def vssd_tiny(pretrained: bool = False, **kwargs) -> VisionSSD:
    """Vim-Ti's shape with Mamba-2 blocks: D = 192, depth 24, 6 heads of 64, d_state 64."""
    model_args = dict(img_size=224, patch_size=16, embed_dim=192, depth=24, d_state=64, headdim=64)
    return build_family_model(VisionSSD, "vssd_tiny", pretrained, **dict(model_args, **kwargs))


@register_model
def vssd_small(pretrained: bool = False, **kwargs) -> VisionSSD:
    """Vim-S's shape with Mamba-2 blocks: D = 384, depth 24, 12 heads of 64, d_state 64."""
    model_args = dict(img_size=224, patch_size=16, embed_dim=384, depth=24, d_state=64, headdim=64)
    return build_family_model(VisionSSD, "vssd_small", pretrained, **dict(model_args, **kwargs))


@register_model
def vssd_micro(pretrained: bool = False, **kwargs) -> VisionSSD:
    """CPU/test size: D = 48, depth 4, 6 heads of 16, d_state 16; 32×32 images, 4×4 patches."""
    model_args = dict(img_size=32, patch_size=4, embed_dim=48, depth=4, d_state=16, headdim=16)
    return build_family_model(VisionSSD, "vssd_micro", pretrained, **dict(model_args, **kwargs))


# The seqssd ladder: seqmamba's sizes (seq.SIZES) with Mamba-2 blocks, heads of 16 and d_state 48,
# which matches each rung in parameters (tests/test_ladder.py): without the conv, nano 6,534,
# micro 19,330, mini 57,280, tiny 126,634, small 265,210.
SEQ_SSD_SIZES = {size: dict(args, d_state=48, headdim=16) for size, args in SEQ_SIZES.items()}
register_ladder(SequenceSSD, "seqssd", SEQ_SSD_SIZES, sequence_cfg, __name__)
