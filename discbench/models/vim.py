"""Vision Mamba (Vim, Zhu et al. 2024, bimamba v2) with a selectable SSM discretization.

The architecture follows the upstream Vim configuration used for the paper's Vim-Ti/S/B
(patch embedding, absolute position embedding, class token in the middle of the sequence,
RMSNorm, residual stream in fp32, drop path, and a bidirectional mixer whose two scan
directions have their own conv1d and SSM parameters; the two outputs are averaged). Parameter
names match upstream, so an upstream checkpoint's state dict loads as is.

What discbench adds: every scan goes through `discbench.selective_scan` with the configured
`discretization` (method) and `variant`, in BOTH directions. The backward direction is the
forward computation on the reversed sequence (flip, conv + scan, flip back; on the CPU kernel
the same run in reverse inside the kernels, see BiMambaMixer.fast_path), so a stencil's
"previous" tokens are those to the right, as METHODS.md requires.

Registered in timm (importing `discbench.models` registers them):

    timm.create_model("vim_tiny_patch16_224", discretization="foh", variant="canonical")

Names: vim_tiny_patch16_224, vim_small_patch16_224, vim_base_patch16_224 (D = 192/384/768,
depth 24), and for CPU studies vim_nano (D = 96, depth 6) and vim_micro (D = 48, depth 4),
which default to 32×32 images with 4×4 patches. All accept img_size, patch_size, in_chans.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, PatchEmbed, lecun_normal_, to_2tuple, trunc_normal_
from timm.models import register_model

from ..causal_conv1d import causal_conv1d_fn
from ..methods import get_method
from ..scan import BACKENDS, resolve_backend, selective_scan
from ..scan.cpu import selective_scan_block

Tensor = torch.Tensor

CLS_TOKEN_CHOICES = ("middle", "head", "double", "none")
POOL_CHOICES = ("mean", "max")
BIDIRECTIONAL_CHOICES = ("ssm_conv", "ssm", "none")
CONV_CHOICES = ("causal", "none")


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not valid; choose one of: {', '.join(allowed)}")


def check_dt_range(dt_min: float, dt_max: float) -> None:
    """Mamba's Δ initialisation range: 0 < dt_min ≤ dt_max, else a clear error."""
    if not (isinstance(dt_min, (int, float)) and isinstance(dt_max, (int, float)) and 0 < dt_min <= dt_max):
        raise ValueError(f"dt_min={dt_min!r}, dt_max={dt_max!r}: the Δ initialisation range needs "
                         f"0 < dt_min ≤ dt_max (Mamba's default 0.001, 0.1)")


def check_scan_backend(name: str) -> str:
    """`name` if it is "auto" or a registered backend usable on this machine, else a clear error."""
    if name == "auto":
        return name
    if name not in BACKENDS:
        raise ValueError(f"scan_backend={name!r} is not valid; choose one of: auto, {', '.join(BACKENDS)}")
    why = BACKENDS[name].unavailable_reason()
    if why is not None:
        raise RuntimeError(f"scan_backend={name!r} is not available here: {why}")
    return name


# ----------------------------------------------------------------------------- mixer


def add_lambda_stats(stats: dict[str, Tensor] | None, direction: str, lam: Tensor) -> None:
    """Add λ's running sums [Σλ, Σλ², count] (any shape) to stats[direction]; nothing when
    stats is None (λ is not being recorded). Every mixer that learns λ records it this way."""
    if stats is None:
        return
    values = lam.detach().double()
    sums = torch.stack([values.sum(), values.square().sum(), values.new_tensor(values.numel())])
    stats[direction] = stats.get(direction, 0) + sums.cpu()


def _at_least_fp32(t: Tensor) -> Tensor:
    """The SSM's own parameters (A, D, Δ bias) go to the scan in fp32 even in a bf16 model, as upstream."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


class BiMambaMixer(nn.Module):
    """Vim's bidirectional Mamba mixer (bimamba v2), (b, l, D) -> (b, l, D).

    in_proj: D -> 2E (x and the gate z, E = expand·D, no bias). Per direction: causal
    depthwise conv1d (width d_conv, with bias) -> SiLU -> x_proj (E -> dt_rank + 2N) ->
    dt_proj (dt_rank -> E; its bias is the scan's delta_bias, softplus applied in the scan) ->
    selective scan with A = -exp(A_log), skip D and gate silu(z). The backward direction runs on
    the reversed sequence (x and z both flipped, as upstream flips xz) and is flipped back;
    the two directions are averaged (upstream's if_divide_out) -> out_proj (E -> D, no bias).

    bidirectional: "ssm_conv" (Vim's default) each direction has its own conv1d and SSM
    parameters; "ssm" the backward SSM (x_proj_b, dt_proj_b, A_b_log, D_b) reads the reversed
    output of the single forward conv1d; "none" forward direction only.

    conv: "causal" (Mamba's) the depthwise causal conv1d before the SiLU; "none" no conv at all
    (no conv parameters): each direction's scan reads silu(x), so all mixing along the sequence
    is the SSM's own (with "ssm_conv" and "ssm" alike the backward scan then reads silu(x) reversed).

    A method whose weights read a per-token λ (`takes_lam`: Mamba-3's trapezoid/paper) gets one
    learned projection per direction, lam_proj (D -> 1, with bias) of the mixer's input:
    λ_k = sigmoid(lam_proj(hidden_k)), one λ per token shared by the channels, flipped with the
    tokens for the backward scan. Weight and bias start at 0, so λ starts at ½ everywhere (the
    classical trapezoid, trapezoid/canonical); every other method has no such parameters.

    delta_scale (attribute, default 1.0; set it with `set_delta_scale` on the model): every
    step Δ = softplus(dt_proj(x) + bias) of both directions is multiplied by it, the change of
    step a change of sampling rate implies (trained at L samples, run at L′: L/L′). At 1.0 the
    scan is called exactly as without it.

    fast_path (attribute, default True): where the scan lands on the fused CPU kernel, every
    product writes the channel-major (b, ·, l) layout the kernels read (no transposing copies),
    and the backward direction's conv and scan run in reverse inside the kernels (no flips). The
    numbers are the flip path's (False; every other backend) up to fp32 rounding
    (tests/test_vim_fast_path.py).
    """

    fast_path = True

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        bidirectional: str = "ssm_conv",
        conv: str = "causal",
        discretization: str = "zoh",
        variant: str = "canonical",
        scan_backend: str = "auto",
    ):
        super().__init__()
        _check_choice("bidirectional", bidirectional, BIDIRECTIONAL_CHOICES)
        _check_choice("conv", conv, CONV_CHOICES)
        check_dt_range(dt_min, dt_max)
        self.method = get_method(discretization, variant)
        self.scan_backend = check_scan_backend(scan_backend)
        self.bidirectional = bidirectional
        self.conv = conv
        self.delta_scale = 1.0
        self.d_model = d_model
        self.d_state = d_state
        self.d_inner = expand * d_model
        self.dt_rank = dt_rank if dt_rank is not None else math.ceil(d_model / 16)
        self.dt_range = (dt_min, dt_max, dt_init_floor)

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        if conv == "causal":
            self.conv1d = self._make_conv(d_conv)
        self.x_proj, self.dt_proj, self.A_log, self.D = self._make_ssm()
        if bidirectional != "none":
            if bidirectional == "ssm_conv" and conv == "causal":
                self.conv1d_b = self._make_conv(d_conv)
            self.x_proj_b, self.dt_proj_b, self.A_b_log, self.D_b = self._make_ssm()
        self.learns_lambda = self.method.takes_lam
        if self.learns_lambda:
            self.lam_proj = self._make_lam_proj()
            if bidirectional != "none":
                self.lam_proj_b = self._make_lam_proj()
        # {direction: tensor [Σλ, Σλ², count]} while MixerStack.recording_lambda() is active
        self.lam_stats: dict[str, Tensor] | None = None
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def _make_conv(self, d_conv: int) -> nn.Conv1d:
        # Padding is applied by causal_conv1d_fn, so the layer holds weights only.
        return nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, bias=True)

    def _make_lam_proj(self) -> nn.Linear:
        """One direction's λ projection, D -> 1, zero-initialised (λ = sigmoid(0) = ½)."""
        proj = nn.Linear(self.d_model, 1, bias=True)
        nn.init.zeros_(proj.weight)
        nn.init.zeros_(proj.bias)
        return proj

    def _lam(self, hidden: Tensor, proj: nn.Linear | None, direction: str) -> Tensor | None:
        """λ_k = sigmoid(proj(hidden_k)) in token order, (b, 1, l); None for a method without λ.

        hidden: (b, l, D). While λ is recorded, its running sums are added to lam_stats.
        """
        if proj is None:
            return None
        lam = torch.sigmoid(F.linear(hidden, proj.weight, proj.bias)).transpose(1, 2)
        add_lambda_stats(self.lam_stats, direction, lam)
        return lam

    def _make_ssm(self) -> tuple[nn.Linear, nn.Linear, nn.Parameter, nn.Parameter]:
        """x_proj, dt_proj, A_log, D of one direction, with Mamba's initialisation."""
        x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * self.d_state, bias=False)
        dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.init_dt_proj(dt_proj)
        # S4D-real: poles -1, -2, …, -N in every channel; kept in fp32 like upstream.
        poles = torch.arange(1, self.d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        A_log = nn.Parameter(torch.log(poles))
        D = nn.Parameter(torch.ones(self.d_inner))
        return x_proj, dt_proj, A_log, D

    def init_dt_proj(self, dt_proj: nn.Linear) -> None:
        """Mamba's Δ init: weight U(±dt_rank^-½); bias = softplus⁻¹(Δ0), Δ0 log-uniform in [dt_min, dt_max]."""
        dt_min, dt_max, floor = self.dt_range
        bound = self.dt_rank ** -0.5
        with torch.no_grad():
            dt_proj.weight.uniform_(-bound, bound)
            dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=floor)
            dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def _on_fast_path(self, hidden: Tensor) -> bool:
        """Whether this call takes the fast path: asked for, and the scan lands on the CPU kernel."""
        if not self.fast_path or hidden.device.type != "cpu":
            return False
        return resolve_backend(self.scan_backend, hidden.device, hidden.dtype, self.method.key).name == "cpu"

    def _scan(self, x: Tensor, gate: Tensor, x_proj: nn.Linear, dt_proj: nn.Linear, A_log: Tensor, D: Tensor,
              lam: Tensor | None = None, reverse: bool = False, fast: bool = False) -> Tensor:
        """One direction's SSM: x, gate (b, E, l) in token order -> gated output (b, E, l) in token order.

        lam: (b, 1, l) in token order for a method that takes λ (expanded over the channels
        without a copy), else None. reverse: the backward direction (the recurrence runs from the
        last token to the first); on the fast path inside the kernel, else by flipping the inputs
        and the output.

        The one place the scan is called. With delta_scale ≠ 1 the step is computed here,
        softplus(delta + bias) × delta_scale, and handed to the scan as it is.
        """
        A = -torch.exp(_at_least_fp32(A_log))
        kwargs = dict(D=_at_least_fp32(D), z=gate, method=self.method.name, variant=self.method.variant,
                      lam=None if lam is None else lam.expand_as(x))
        delta_bias = _at_least_fp32(dt_proj.bias)
        if fast:  # channel-major products straight from x: dt_low, B, C are (b, ·, l) views of x_dbl
            x_dbl = torch.bmm(x_proj.weight.expand(x.shape[0], -1, -1), x)  # (b, dt_rank + 2N, l)
            dt_low, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=1)
            if self.delta_scale == 1.0:  # dt_proj inside the kernel
                return selective_scan_block(x, dt_low, A, B, C, delta_bias=delta_bias, delta_softplus=True,
                                            delta_proj=dt_proj.weight, reverse=reverse, **kwargs)
            delta = F.softplus(torch.bmm(dt_proj.weight.expand(x.shape[0], -1, -1), dt_low) + delta_bias[:, None])
            return selective_scan_block(x, delta * self.delta_scale, A, B, C, reverse=reverse, **kwargs)
        x_dbl = F.linear(x.transpose(1, 2), x_proj.weight)  # (b, l, dt_rank + 2N)
        dt_low, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = torch.matmul(dt_proj.weight, dt_low.transpose(1, 2))  # (b, E, l)
        B, C = B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()
        softplus = True
        if self.delta_scale != 1.0:
            delta = F.softplus(delta + delta_bias[:, None]) * self.delta_scale
            delta_bias, softplus = None, False
        if reverse:
            x, delta, B, C, kwargs["z"] = (t.flip(-1) for t in (x, delta, B, C, gate))
            kwargs["lam"] = None if lam is None else kwargs["lam"].flip(-1)
        out = selective_scan(x, delta, A, B, C, delta_bias=delta_bias, delta_softplus=softplus,
                             backend=self.scan_backend, **kwargs)
        return out.flip(-1) if reverse else out

    def _conv_silu(self, x: Tensor, conv: nn.Conv1d | None, reverse: bool, fast: bool) -> Tensor:
        """silu(causal conv1d(x)), or silu(x) when conv="none"; x (b, E, l) in token order -> (b, E, l).

        reverse: the backward direction's conv (token t sees t … t + w − 1); on the fast path the
        fused kernel runs it in reverse, else x is flipped in and out. PyTorch's conv1d outside
        the fast path on the CPU, the fused kernels elsewhere (see discbench.causal_conv1d).
        """
        if conv is None:
            return F.silu(x)
        path = "auto" if fast or x.device.type != "cpu" else "torch"
        return causal_conv1d_fn(x, conv.weight.squeeze(1), conv.bias, activation="silu", reverse=reverse, path=path)

    def forward_directions(self, hidden: Tensor, fast: bool | None = None) -> tuple[Tensor, Tensor | None]:
        """The two directions' gated scan outputs in original token order, (b, E, l) each.

        hidden: (b, l, D). The second is None when bidirectional="none". fast: take the fast path
        (default: wherever `_on_fast_path` allows).
        """
        fast = self._on_fast_path(hidden) if fast is None else fast
        if fast:  # (b, 2E, l) written by the product itself (matmul would transpose a copy), its
            # rows padded to whole cache lines without autograd: with Vim's odd token counts (197,
            # 4097) the product ran up to 1.35× slower (Vim-Ti at 1024 px: 9.4 against 6.9 ms per
            # layer, this CPU); in training the slice's backward zero-fills the padded gradient,
            # which cost more (19 ms per Vim-Ti step at 224 px, batch 8). The kernels read the
            # (b, 2E, l) view with its strides. (One product for the whole batch, viewed as
            # (b, 2E, l), is faster itself but leaves channel rows b·l apart, which made the conv
            # and scan reading them 1.4× slower.)
            b, l = hidden.shape[:2]
            pad = -l % 16 if not torch.is_grad_enabled() else 0
            tokens = F.pad(hidden, (0, 0, 0, pad)) if pad else hidden
            xz = torch.bmm(self.in_proj.weight.expand(b, -1, -1), tokens.transpose(1, 2))[..., :l]
        else:
            xz = torch.matmul(self.in_proj.weight, hidden.transpose(1, 2))  # (b, 2E, l)
        x, gate = xz.chunk(2, dim=1)
        x_fwd = self._conv_silu(x, getattr(self, "conv1d", None), False, fast)
        lam_fwd = self._lam(hidden, getattr(self, "lam_proj", None), "forward")
        out_fwd = self._scan(x_fwd, gate, self.x_proj, self.dt_proj, self.A_log, self.D, lam_fwd, False, fast)
        if self.bidirectional == "none":
            return out_fwd, None
        if self.bidirectional == "ssm_conv" and self.conv == "causal":
            x_bwd = self._conv_silu(x, self.conv1d_b, True, fast)
        else:  # the backward SSM reads the forward conv's output (or silu(x)), reversed
            x_bwd = x_fwd
        lam_bwd = self._lam(hidden, getattr(self, "lam_proj_b", None), "backward")
        out_bwd = self._scan(x_bwd, gate, self.x_proj_b, self.dt_proj_b, self.A_b_log, self.D_b, lam_bwd, True,
                             fast)
        return out_fwd, out_bwd

    def forward(self, hidden: Tensor) -> Tensor:
        """hidden: (b, l, D) -> (b, l, D)."""
        fast = self._on_fast_path(hidden)
        out_fwd, out_bwd = self.forward_directions(hidden, fast)
        if fast:  # (b, E, l) read as it is (no transposing copy); the average's ½ goes into the
            # weight, which is exact (a power of two) and saves a pass over the activations
            weight = self.out_proj.weight.t()
            mixed = out_fwd if out_bwd is None else out_fwd + out_bwd
            if out_bwd is not None:
                weight = weight * 0.5
            return torch.bmm(mixed.transpose(1, 2), weight.expand(hidden.shape[0], -1, -1))
        mixed = out_fwd if out_bwd is None else (out_fwd + out_bwd) / 2
        return self.out_proj(mixed.transpose(1, 2))


# ----------------------------------------------------------------------------- block


class VimBlock(nn.Module):
    """x + drop_path(mixer(RMSNorm(x))), with the residual stream x kept in fp32.

    Upstream writes the same computation as "add, then norm, then mixer" to fuse the add into
    the norm kernel; block i's mixer output there is dropped with the i-th drop-path rate too.
    """

    def __init__(self, dim: int, mixer: BiMambaMixer, drop_path: float = 0.0,
                 norm_eps: float = 1e-5, residual_in_fp32: bool = True):
        super().__init__()
        self.norm = nn.RMSNorm(dim, eps=norm_eps)
        self.mixer = mixer
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.residual_in_fp32 = residual_in_fp32

    def forward(self, x: Tensor) -> Tensor:
        """x: (b, l, D) residual stream -> (b, l, D), fp32 when residual_in_fp32."""
        if self.residual_in_fp32:
            x = x.float()
        return x + self.drop_path(self.mixer(self.norm(x.to(self.norm.weight.dtype))))


# ----------------------------------------------------------------------------- model


def mixer_blocks(embed_dim: int, depth: int, drop_path_rate: float, norm_eps: float, residual_in_fp32: bool,
                 mixer: Callable[..., nn.Module] | None = None, **mixer_kwargs) -> nn.ModuleList:
    """`depth` VimBlocks of mixer(embed_dim, **mixer_kwargs) (default BiMambaMixer; the SSD
    family passes BiSSDMixer), drop path rising linearly from 0 to drop_path_rate over the
    blocks: the stack every family of these blocks builds."""
    mixer = BiMambaMixer if mixer is None else mixer
    rates = torch.linspace(0, drop_path_rate, depth).tolist()
    return nn.ModuleList([
        VimBlock(embed_dim, mixer(embed_dim, **mixer_kwargs), drop_path=rate, norm_eps=norm_eps,
                 residual_in_fp32=residual_in_fp32)
        for rate in rates
    ])


class MixerStack:
    """What every model built of mixer blocks (in `self.layers`) exposes: the scan backend,
    the Δ scale, the learned λ, the SSM parameters exempt from weight decay, Mamba's init of
    the residual-branch output projections. Mixed into VisionMamba and SequenceMamba (and
    through them the SSD family). A mixer provides `scan_backend`, `delta_scale`,
    `learns_lambda`, `lam_stats` (recorded with add_lambda_stats) and `out_proj`."""

    layers: nn.ModuleList

    def set_scan_backend(self, name: str) -> None:
        """Run every scan of the model on backend `name` ("auto" or a key of discbench.scan.BACKENDS)."""
        check_scan_backend(name)
        for block in self.layers:
            block.mixer.scan_backend = name

    @property
    def scan_backend(self) -> str:
        return self.layers[0].mixer.scan_backend

    def set_delta_scale(self, scale: float) -> None:
        """Multiply every step Δ (after softplus; every layer, both scan directions) by `scale`
        from now on; 1.0 restores the model as trained. For a change of sampling rate: a model
        trained on L samples of a signal, run on L′ samples of it, takes scale L/L′."""
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"delta_scale must be a finite number > 0, got {scale!r}")
        for block in self.layers:
            block.mixer.delta_scale = float(scale)

    @property
    def delta_scale(self) -> float:
        return self.layers[0].mixer.delta_scale

    @contextlib.contextmanager
    def delta_scaled(self, scale: float) -> Iterator[None]:
        """`with model.delta_scaled(s):` runs the block with every Δ × s, then restores the scale."""
        previous = self.delta_scale
        self.set_delta_scale(scale)
        try:
            yield
        finally:
            self.set_delta_scale(previous)

    @property
    def learns_lambda(self) -> bool:
        """Whether the mixers project a per-token λ (a method with `takes_lam`; each mixer's
        `learns_lambda`)."""
        return any(block.mixer.learns_lambda for block in self.layers)

    @contextlib.contextmanager
    def recording_lambda(self) -> Iterator[list[dict]]:
        """`with model.recording_lambda() as summary:` every forward inside adds the λ it computes
        to running sums; on exit `summary` holds one record per layer (0-based) and direction:
        {layer, direction ("forward"/"backward"), mean, std (over every token of every input),
        count}. Empty for a model without λ."""
        summary: list[dict] = []
        mixers = [block.mixer for block in self.layers if block.mixer.learns_lambda]
        for mixer in mixers:
            mixer.lam_stats = {}
        try:
            yield summary
        finally:
            for layer, block in enumerate(self.layers):
                stats = getattr(block.mixer, "lam_stats", None) or {}
                for direction, (total, squares, count) in ((d, t.tolist()) for d, t in stats.items()):
                    mean = total / count
                    std = math.sqrt(max(squares / count - mean * mean, 0.0))
                    summary.append({"layer": layer, "direction": direction, "mean": mean, "std": std,
                                    "count": int(count)})
            for mixer in mixers:
                mixer.lam_stats = None

    def _ssm_no_weight_decay(self) -> set[str]:
        """Full names of the SSM parameters exempt from weight decay (A_log, A_b_log, D, D_b)."""
        return {name for name, _ in self.named_parameters()
                if name.rsplit(".", 1)[-1] in ("A_log", "A_b_log", "D", "D_b")}

    def _init_residual_projections(self, depth: int) -> None:
        """GPT-2's scheme, as Mamba: each block's out_proj scaled by 1/sqrt(depth)."""
        for block in self.layers:
            nn.init.kaiming_uniform_(block.mixer.out_proj.weight, a=math.sqrt(5))
            with torch.no_grad():
                block.mixer.out_proj.weight /= math.sqrt(depth)



class VisionMamba(MixerStack, nn.Module):
    """Vim: images (b, in_chans, H, W) -> logits (b, num_classes).

    cls_token: "middle" (Vim: one class token inserted at position M//2 of the M patch tokens),
    "head" (at position 0), "double" (at both ends, their outputs averaged), "none" (pool all
    tokens). pool: with cls_token="none", "mean" averages the token features before the head;
    "max" applies the head to every token and takes the max over tokens (the paper's "max pool",
    as in the upstream code). drop_rate: dropout after the position embedding (upstream's
    pos_drop). drop_path_rate: stochastic depth, rising linearly from 0 to this over the blocks.
    conv, dt_min, dt_max: passed to every BiMambaMixer (conv "causal" or "none"; Mamba's Δ
    initialisation range).
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 192,
        depth: int = 24,
        d_state: int = 16,
        expand: int = 2,
        d_conv: int = 4,
        cls_token: str = "middle",
        pool: str = "mean",
        bidirectional: str = "ssm_conv",
        conv: str = "causal",
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        discretization: str = "zoh",
        variant: str = "canonical",
        scan_backend: str = "auto",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_eps: float = 1e-5,
        residual_in_fp32: bool = True,
    ):
        super().__init__()
        _check_choice("cls_token", cls_token, CLS_TOKEN_CHOICES)
        _check_choice("pool", pool, POOL_CHOICES)
        _check_choice("bidirectional", bidirectional, BIDIRECTIONAL_CHOICES)
        img_hw, patch_hw = to_2tuple(img_size), to_2tuple(patch_size)
        for name, value in (("embed_dim", embed_dim), ("depth", depth), ("d_state", d_state),
                            ("expand", expand), ("d_conv", d_conv), ("in_chans", in_chans),
                            ("img_size", min(img_hw)), ("patch_size", min(patch_hw))):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be ≥ 0 (0: no head), got {num_classes}")
        if any(i % p for i, p in zip(img_hw, patch_hw)):
            raise ValueError(f"img_size {img_hw} must be a multiple of patch_size {patch_hw}")
        if not 0.0 <= drop_path_rate < 1.0 or not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate and drop_path_rate must be in [0, 1), got {drop_rate}, {drop_path_rate}")
        method = get_method(discretization, variant)
        self.discretization, self.variant = method.name, method.variant

        self.num_classes = num_classes
        self.embed_dim = self.num_features = self.head_hidden_size = embed_dim
        self.cls_token_mode = cls_token
        self.pool = pool
        self.bidirectional = bidirectional
        self.grad_checkpointing = False

        self.patch_embed = PatchEmbed(img_size=img_hw, patch_size=patch_hw, in_chans=in_chans,
                                      embed_dim=embed_dim)
        num_patches = self.patch_embed.num_patches
        if cls_token == "double":
            self.cls_token_head = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.cls_token_tail = nn.Parameter(torch.zeros(1, 1, embed_dim))
        elif cls_token != "none":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.num_prefix_tokens = {"none": 0, "double": 2}.get(cls_token, 1)
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + self.num_prefix_tokens, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)

        self.layers = mixer_blocks(embed_dim, depth, drop_path_rate, norm_eps, residual_in_fp32,
                                   d_state=d_state, d_conv=d_conv, expand=expand, dt_min=dt_min,
                                   dt_max=dt_max, bidirectional=bidirectional, conv=conv,
                                   discretization=method.name, variant=method.variant,
                                   scan_backend=scan_backend)
        self.norm_f = nn.RMSNorm(embed_dim, eps=norm_eps)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights(depth)

    def _init_weights(self, depth: int) -> None:
        """Upstream Vim's initialisation (its segm_init_weights followed by Mamba's _init_weights)."""
        lecun_normal_(self.patch_embed.proj.weight)
        nn.init.zeros_(self.patch_embed.proj.bias)
        if isinstance(self.head, nn.Linear):
            trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)
        trunc_normal_(self.pos_embed, std=0.02)
        for name in self._cls_token_names():
            trunc_normal_(getattr(self, name), std=0.02)
        self._init_residual_projections(depth)

    def _cls_token_names(self) -> tuple[str, ...]:
        return {"none": (), "double": ("cls_token_head", "cls_token_tail")}.get(
            self.cls_token_mode, ("cls_token",))

    # -- timm conventions ----------------------------------------------------------------

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Full names of parameters exempt from weight decay: position embedding, class tokens, A_log, D."""
        return {"pos_embed", *self._cls_token_names(), *self._ssm_no_weight_decay()}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh head for `num_classes` (0: none); global_pool, if given, sets `pool` ("mean"/"max")."""
        if global_pool is not None:
            _check_choice("global_pool", global_pool, POOL_CHOICES)
            self.pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)

    # -- forward -------------------------------------------------------------------------

    def _class_token_positions(self, num_patches: int) -> list[int]:
        return {"middle": [num_patches // 2], "head": [0], "double": [0, num_patches + 1],
                "none": []}[self.cls_token_mode]

    def _insert_class_tokens(self, x: Tensor) -> Tensor:
        """(b, M, D) patch tokens -> (b, M + num_prefix_tokens, D) with the class token(s) placed."""
        batch, num_patches = x.shape[:2]
        if self.cls_token_mode == "double":
            head = self.cls_token_head.expand(batch, -1, -1)
            tail = self.cls_token_tail.expand(batch, -1, -1)
            return torch.cat([head, x, tail], dim=1)
        if self.cls_token_mode == "none":
            return x
        (position,) = self._class_token_positions(num_patches)
        cls = self.cls_token.expand(batch, -1, -1)
        return torch.cat([x[:, :position], cls, x[:, position:]], dim=1)

    def forward_features(self, x: Tensor) -> Tensor:
        """Images (b, C, H, W) -> normalised token features (b, M + num_prefix_tokens, D)."""
        x = self._insert_class_tokens(self.patch_embed(x))
        x = self.pos_drop(x + self.pos_embed)
        for block in self.layers:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.norm_f(x.to(self.norm_f.weight.dtype))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Token features (b, L, D) -> logits (b, num_classes), or with pre_logits what the head reads.

        pre_logits gives (b, D) — the class token(s) or the mean-pooled tokens — except for
        pool="max" without class token, where the head reads every token: (b, L, D).
        """
        positions = self._class_token_positions(x.shape[1] - self.num_prefix_tokens)
        if positions:
            features = torch.stack([x[:, p] for p in positions]).mean(0)
        elif self.pool == "mean":
            features = x.mean(dim=1)
        else:
            features = x
        if pre_logits:
            return features
        logits = self.head(features)
        return logits.amax(dim=1) if features.dim() == 3 else logits

    def forward(self, x: Tensor) -> Tensor:
        """Images (b, in_chans, H, W) -> logits (b, num_classes)."""
        return self.forward_head(self.forward_features(x))


# ----------------------------------------------------------------------------- registry

# Architecture defaults per registered name; every one of them can be overridden by kwargs.
VIM_CONFIGS: dict[str, dict] = {
    "vim_tiny_patch16_224": dict(img_size=224, patch_size=16, embed_dim=192, depth=24, d_state=16),
    "vim_small_patch16_224": dict(img_size=224, patch_size=16, embed_dim=384, depth=24, d_state=16),
    "vim_base_patch16_224": dict(img_size=224, patch_size=16, embed_dim=768, depth=24, d_state=16),
    "vim_nano": dict(img_size=32, patch_size=4, embed_dim=96, depth=6, d_state=16),
    "vim_micro": dict(img_size=32, patch_size=4, embed_dim=48, depth=4, d_state=16),
}

# Old-style timm pretrained cfgs: data settings only; no weights exist (no url, no hub id).
default_cfgs = {
    name: dict(input_size=(3, *to_2tuple(cfg["img_size"])), num_classes=1000, interpolation="bicubic",
               crop_pct=0.9 if cfg["img_size"] >= 224 else 1.0, mean=IMAGENET_DEFAULT_MEAN,
               std=IMAGENET_DEFAULT_STD, first_conv="patch_embed.proj", classifier="head",
               fixed_input_size=True)
    for name, cfg in VIM_CONFIGS.items()
}

# Arguments timm.create_model always passes to an entrypoint; they concern weight files only.
_TIMM_WEIGHT_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def entrypoint_arguments(name: str, pretrained: bool, kwargs: dict) -> dict:
    """The model arguments of a timm entrypoint call of any discbench family: `pretrained` is
    refused (no weights exist and nothing is ever downloaded), timm's weight-file arguments dropped."""
    if pretrained:
        raise ValueError(
            f"{name}: no pretrained weights exist for discbench's models and nothing is ever "
            "downloaded; use pretrained=False (with timm.create_model(..., checkpoint_path=...) "
            "to load a local checkpoint)")
    return {key: value for key, value in kwargs.items() if key not in _TIMM_WEIGHT_KWARGS}


def create_image_model(model_cls: type, configs: dict[str, dict], cfgs: dict[str, dict], name: str,
                       pretrained: bool, **kwargs) -> nn.Module:
    """`model_cls` built with `name`'s architecture defaults (configs) overridden by kwargs, its
    timm pretrained_cfg (cfgs[name]) updated to the classes and input size it was built with."""
    model = model_cls(**{**configs[name], **entrypoint_arguments(name, pretrained, kwargs)})
    in_chans = model.patch_embed.proj.in_channels
    cfg = dict(cfgs[name], architecture=name, num_classes=model.num_classes,
               input_size=(in_chans, *model.patch_embed.img_size))
    model.pretrained_cfg = model.default_cfg = cfg
    return model


def _create_vim(name: str, pretrained: bool, **kwargs) -> VisionMamba:
    return create_image_model(VisionMamba, VIM_CONFIGS, default_cfgs, name, pretrained, **kwargs)


@register_model
def vim_tiny_patch16_224(pretrained: bool = False, **kwargs) -> VisionMamba:
    """Vim-Ti: D = 192, depth 24, d_state 16 (7.15 M parameters with 1000 classes)."""
    return _create_vim("vim_tiny_patch16_224", pretrained, **kwargs)


@register_model
def vim_small_patch16_224(pretrained: bool = False, **kwargs) -> VisionMamba:
    """Vim-S: D = 384, depth 24, d_state 16 (25.8 M parameters with 1000 classes)."""
    return _create_vim("vim_small_patch16_224", pretrained, **kwargs)


@register_model
def vim_base_patch16_224(pretrained: bool = False, **kwargs) -> VisionMamba:
    """Vim-B: D = 768, depth 24, d_state 16 (97.6 M parameters with 1000 classes)."""
    return _create_vim("vim_base_patch16_224", pretrained, **kwargs)


@register_model
def vim_nano(pretrained: bool = False, **kwargs) -> VisionMamba:
    """CPU-study size: D = 96, depth 6, d_state 16; 32×32 images, 4×4 patches by default."""
    return _create_vim("vim_nano", pretrained, **kwargs)


@register_model
def vim_micro(pretrained: bool = False, **kwargs) -> VisionMamba:
    """Test/CPU-study size: D = 48, depth 4, d_state 16; 32×32 images, 4×4 patches by default."""
    return _create_vim("vim_micro", pretrained, **kwargs)
